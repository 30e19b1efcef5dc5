"""From a case (image + annotation) to network inputs and training patches.

A case is cropped around its object (the extreme points' box padded by ``pad_mm``) and resampled to the
model's voxel spacing: that is the *model grid*. :class:`CaseFrame` maps arrays between the image grid and
the model grid (both ways), so pseudo-labels, predictions and references can move between them. Inputs
are the normalised image plus cue channels; patches are sampled (biased to the object) and augmented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Affine, Rotate

from ..annotations import ExtremePoints
from ..errors import InputError
from ..volume import Volume

# -- intensity normalisation ---------------------------------------------------------------------------

NORMALISATION_MODES = ("zscore", "percentile", "window", "none")


@dataclass(frozen=True)
class Normalisation:
    """How image intensities become network inputs (recorded in the model file).

    - ``zscore``: clip to the [lower, upper] percentiles of the region, then zero mean / unit variance (MRI);
    - ``percentile``: map the [lower, upper] percentiles to [0, 1], clipped;
    - ``window``: map the intensity window [lower, upper] (e.g. Hounsfield units) to [0, 1], clipped (CT);
    - ``none``: unchanged.
    """

    mode: str = "zscore"
    lower: float = 0.5
    upper: float = 99.5

    def __post_init__(self):
        if self.mode not in NORMALISATION_MODES:
            raise InputError(f"unknown normalisation {self.mode!r}; choose one of {list(NORMALISATION_MODES)}")
        if not self.lower < self.upper:
            raise InputError(f"normalisation: lower ({self.lower}) must be below upper ({self.upper})")
        if self.mode in ("zscore", "percentile") and not (0 <= self.lower and self.upper <= 100):
            raise InputError("normalisation: percentiles must lie in [0, 100]")

    @classmethod
    def for_modality(cls, modality: str) -> "Normalisation":
        """Defaults: MRI robust z-score (0.5-99.5 percentiles), CT soft-tissue window [-160, 240] HU."""
        defaults = {"mri": cls("zscore", 0.5, 99.5), "ct": cls("window", -160.0, 240.0),
                    "other": cls("percentile", 0.5, 99.5)}
        if modality not in defaults:
            raise InputError(f"unknown modality {modality!r}; choose one of {sorted(defaults)}")
        return defaults[modality]

    def apply(self, array) -> np.ndarray:
        x = np.asarray(array, dtype=np.float32)
        if self.mode == "none":
            return x.copy()
        if self.mode == "window":
            return np.clip((x - self.lower) / (self.upper - self.lower), 0.0, 1.0).astype(np.float32)
        lo, hi = np.percentile(x, [self.lower, self.upper])
        if self.mode == "percentile":
            return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
        x = np.clip(x, lo, hi)
        return ((x - x.mean()) / max(float(x.std()), 1e-6)).astype(np.float32)


# -- what the network sees -----------------------------------------------------------------------------

CUES = ("heatmap", "confidence")


@dataclass(frozen=True)
class InputSpec:
    """The network's input: region, voxel spacing, intensity normalisation and cue channels.

    ``crop_to_points``: the model grid is the extreme points' box padded by ``pad_mm`` (else the whole image).
    ``normalisation``: ``None`` until resolved from the modality (:meth:`Normalisation.for_modality`).
    ``spacing_mm``: the model grid's voxel size (``None`` until resolved from the training images).
    ``cues``: extra channels after the image: ``heatmap`` (Gaussians of ``heatmap_sigma_mm`` on the clicks),
    ``confidence`` (the extreme points' 3D confidence map).
    """

    normalisation: Optional[Normalisation] = None
    cues: Tuple[str, ...] = ("heatmap",)
    heatmap_sigma_mm: float = 3.0
    crop_to_points: bool = True
    pad_mm: float = 20.0
    spacing_mm: Optional[Tuple[float, float, float]] = None

    def __post_init__(self):
        unknown = [c for c in self.cues if c not in CUES]
        if unknown:
            raise InputError(f"unknown cue channel {unknown[0]!r}; choose among {list(CUES)}")
        if self.heatmap_sigma_mm <= 0 or self.pad_mm < 0:
            raise InputError("heatmap_sigma_mm must be > 0 and pad_mm >= 0")
        object.__setattr__(self, "cues", tuple(self.cues))
        if self.spacing_mm is not None:
            spacing = tuple(float(s) for s in self.spacing_mm)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise InputError(f"spacing_mm must be 3 positive numbers, got {list(self.spacing_mm)}")
            object.__setattr__(self, "spacing_mm", spacing)

    def resolved(self, modality: str, spacing_mm) -> "InputSpec":
        """This spec with the normalisation (from ``modality``) and the spacing filled in where unset."""
        return replace(self, normalisation=self.normalisation or Normalisation.for_modality(modality),
                       spacing_mm=self.spacing_mm or tuple(float(s) for s in spacing_mm))

    @property
    def channels(self) -> list:
        return ["image"] + list(self.cues)

    @property
    def needs_points(self) -> bool:
        return self.crop_to_points or bool(self.cues)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cues"] = list(self.cues)
        d["spacing_mm"] = None if self.spacing_mm is None else list(self.spacing_mm)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        d = dict(d)
        d["normalisation"] = Normalisation(**d["normalisation"])
        d["cues"] = tuple(d["cues"])
        return cls(**d)


# -- image grid <-> model grid ---------------------------------------------------------------------------

def resample(array: np.ndarray, shape, mode: str = "linear") -> np.ndarray:
    """Resample ``(C, I, J, K)`` to ``(C,) + shape`` (voxel edges aligned; ``linear`` or ``nearest``)."""
    array = np.asarray(array)
    shape = tuple(int(n) for n in shape)
    if array.shape[1:] == shape:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if mode == "linear":
        out = F.interpolate(tensor, size=shape, mode="trilinear", align_corners=False)
    else:
        out = F.interpolate(tensor, size=shape, mode="nearest-exact")
    return out[0].numpy().astype(array.dtype if mode == "nearest" else np.float32)


def resampled_geometry(volume: Volume, shape) -> np.ndarray:
    """IJK-to-RAS matrix of ``volume``'s field of view sampled on ``shape`` voxels (edges aligned)."""
    factor = np.asarray(volume.shape, dtype=float) / np.asarray(shape, dtype=float)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(factor)
    index_map[:3, 3] = (factor - 1.0) / 2.0
    return volume.ijk_to_ras @ index_map


@dataclass(frozen=True, eq=False)
class CaseFrame:
    """A crop box ``[lo, hi)`` of an image, resampled onto ``grid`` (the model grid, raw intensities)."""

    image_shape: tuple
    lo: np.ndarray
    hi: np.ndarray
    grid: Volume

    @classmethod
    def build(cls, image: Volume, spacing_mm, box=None) -> "CaseFrame":
        lo, hi = box if box is not None else (np.zeros(3, int), np.asarray(image.shape))
        crop = image.crop(lo, hi)
        shape = np.maximum(1, np.round(np.asarray(crop.shape) * crop.spacing / np.asarray(spacing_mm))).astype(int)
        array = resample(crop.array[None].astype(np.float32), shape)[0]
        grid = Volume(array, resampled_geometry(crop, shape))
        return cls(tuple(image.shape), np.asarray(lo, int), np.asarray(lo, int) + crop.shape, grid)

    @property
    def crop_shape(self) -> tuple:
        return tuple(int(n) for n in self.hi - self.lo)

    def to_model(self, array: np.ndarray, mode: str = "linear") -> np.ndarray:
        """``(C,) + image shape`` -> ``(C,) + model grid shape``."""
        lo, hi = self.lo, self.hi
        crop = np.asarray(array)[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        return resample(crop, self.grid.shape, mode)

    def to_image(self, array: np.ndarray, fill) -> np.ndarray:
        """``(C,) + model grid shape`` -> ``(C,) + image shape``; outside the crop each channel is ``fill[c]``."""
        array = np.asarray(array)
        crop = resample(array, self.crop_shape, "linear" if np.issubdtype(array.dtype, np.floating) else "nearest")
        out = np.empty((array.shape[0],) + tuple(self.image_shape), dtype=crop.dtype)
        out[:] = np.asarray(fill, dtype=crop.dtype).reshape(-1, 1, 1, 1)
        lo, hi = self.lo, self.hi
        out[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = crop
        return out


def frame_case(image: Volume, spec: InputSpec, points: ExtremePoints = None) -> CaseFrame:
    """The model grid of one case: the points' padded box (when the spec crops) at the spec's spacing."""
    if spec.spacing_mm is None or spec.normalisation is None:
        raise ValueError("resolve the input spec (spacing, normalisation) before framing cases")  # a bug, not input
    if spec.needs_points and points is None:
        raise InputError(
            "this model needs the object's extreme points (it was trained with "
            f"{'a crop around them' if spec.crop_to_points else 'their cue channels'}); give 6 extreme points"
        )
    box = points.box_index(image, spec.pad_mm) if spec.crop_to_points else None
    return CaseFrame.build(image, spec.spacing_mm, box)


def network_inputs(frame: CaseFrame, spec: InputSpec, points: ExtremePoints = None) -> np.ndarray:
    """``(channels, model grid)`` float32: the normalised image, then the cue channels in ``spec.cues`` order."""
    from ..pseudolabel.cues import confidence_map, point_heatmaps

    channels = [spec.normalisation.apply(frame.grid.array)]
    for cue in spec.cues:
        if cue == "heatmap":
            channels.append(point_heatmaps(points.points_ras, frame.grid, spec.heatmap_sigma_mm))
        else:
            channels.append(confidence_map(points, frame.grid))
    return np.stack([np.asarray(c, dtype=np.float32) for c in channels])


def median_spacing(images) -> tuple:
    """Median voxel size (mm) per axis over the training images: the finest model spacing the planner uses."""
    return tuple(float(s) for s in np.median(np.stack([im.spacing for im in images]), axis=0))


#: the planner's candidate model grids keep the thinnest labelled structure this many voxels across, coarsest first
VOXELS_ACROSS = (3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0)
#: ... and the first whose round trip (labels down to it and back) keeps every class's Dice at least this
MIN_ROUND_TRIP_DICE = 0.99
#: the percentile of a class's distance transform that stands for its half thickness
THICKNESS_PERCENTILE = 95.0


def grid_axes(spacing_mm, slice_axis: Optional[int] = None, anisotropy_ratio: float = 2.0) -> list:
    """The finely sampled ("in-plane") axes: spacing under ``anisotropy_ratio`` x the finest, never
    ``slice_axis`` (a slice-wise network sees each slice apart). The network's pooling condition
    (:func:`~.networks.plan_network`) and the planner's grid both ask this."""
    spacing = np.asarray(spacing_mm, dtype=float)
    axes = [a for a in range(3) if a != slice_axis]
    finest = spacing[axes].min()
    return [a for a in axes if spacing[a] < anisotropy_ratio * finest]


def structure_thickness_mm(classes: np.ndarray, spacing_mm, num_classes: int, axes,
                           percentile: float = THICKNESS_PERCENTILE) -> np.ndarray:
    """How thick each foreground class is (mm) across ``axes``: 2 x the ``percentile`` of its Euclidean
    distance transform over its voxels, computed within each slice across the other axes.

    ``classes``: class indices ``(I, J, K)`` (0 background; -1 unknown, e.g. untrusted voxels of a
    pseudo-label: it bounds a class like background, so a partly known structure can only look thinner);
    returns ``(num_classes - 1,)``, NaN for a class with no voxel. A band ``n`` voxels wide gives about
    ``n`` x spacing; a disc of diameter ``d`` about 0.8 ``d`` (a percentile, not the maximum: one stray wide
    spot must not decide).
    """
    from scipy import ndimage

    axes = list(axes)
    others = [a for a in range(3) if a not in axes]
    stack = np.moveaxis(classes, others + axes, range(3)).reshape((-1,) + tuple(classes.shape[a] for a in axes))
    sampling = [float(spacing_mm[a]) for a in axes]
    out = np.full(num_classes - 1, np.nan)
    inner = (slice(1, -1),) * len(axes)  # padded by one voxel: a class touching the array's edge ends there
    for c in range(1, num_classes):
        # the distance from each voxel of the class to the nearest voxel outside it, within its slice
        distances = [ndimage.distance_transform_edt(np.pad(piece == c, 1), sampling=sampling)[inner][piece == c]
                     for piece in stack if (piece == c).any()]
        if distances:
            out[c - 1] = 2.0 * np.percentile(np.concatenate(distances), percentile)
    return out


def coarsest_spacing(median_mm, thickness_mm, axes, voxels_across: float, extent_mm=None, min_grid: int = 1) -> tuple:
    """A model spacing: along ``axes`` as coarse as keeps the thinnest structure (``thickness_mm``, one figure
    per class, NaN ignored) ``voxels_across`` voxels across and the case (``extent_mm`` per axis, the median
    field of view) ``min_grid`` voxels long, never finer than ``median_mm``; other axes unchanged."""
    spacing = [float(s) for s in median_mm]
    thickness = np.asarray(thickness_mm, dtype=float)
    if not np.isfinite(thickness).any():
        return tuple(spacing)
    step = float(np.nanmin(thickness)) / voxels_across
    for a in axes:
        longest = np.inf if extent_mm is None else float(extent_mm[a]) / min_grid
        spacing[a] = max(spacing[a], min(step, longest))
    return tuple(spacing)


def round_trip_dice(classes: np.ndarray, shape, num_classes: int) -> np.ndarray:
    """Dice per foreground class ``(num_classes - 1,)`` of a label map after a round trip through a grid of
    ``shape`` voxels (one-hot, linear down and back up, most probable class): what a model grid costs a
    perfect prediction. ``classes`` as in :func:`structure_thickness_mm` (-1 voxels are not scored)."""
    from ..metrics import dice

    one_hot = np.stack([classes == c for c in range(num_classes)]).astype(np.float32)
    back = np.argmax(resample(resample(one_hot, shape), classes.shape), axis=0)
    known = classes >= 0
    return np.array([dice((back == c) & known, classes == c) if (classes == c).any() else np.nan
                     for c in range(1, num_classes)])


# -- training patches --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TrainingVolume:
    """One case on its model grid: inputs ``(C_in, ...)``, target probabilities ``(C, ...)``, trust ``(...)``."""

    inputs: np.ndarray
    target: np.ndarray
    weight: np.ndarray

    def __post_init__(self):
        if not (self.inputs.shape[1:] == self.target.shape[1:] == self.weight.shape):
            raise InputError(
                f"inputs {self.inputs.shape}, target {self.target.shape} and weight {self.weight.shape} "
                "must share the grid"
            )

    @cached_property
    def foreground(self) -> np.ndarray:
        """Voxel indices ``(N, 3)`` where a foreground class is most probable and trusted."""
        return np.argwhere((np.argmax(self.target, axis=0) > 0) & (self.weight > 0))


def pad_to(volume: TrainingVolume, patch_size) -> TrainingVolume:
    """Pad (symmetrically) to at least ``patch_size``: image 0, target background, weight 0 (unknown)."""
    shape = np.asarray(volume.weight.shape)
    extra = np.maximum(np.asarray(patch_size) - shape, 0)
    if not extra.any():
        return volume
    pad = [(int(e // 2), int(e - e // 2)) for e in extra]
    target = np.pad(volume.target, [(0, 0)] + pad)
    target[0][np.pad(np.zeros(shape, bool), pad, constant_values=True)] = 1.0
    return TrainingVolume(np.pad(volume.inputs, [(0, 0)] + pad), target, np.pad(volume.weight, pad))


@dataclass(frozen=True)
class Augmentation:
    """Random flips per axis, a small rotation, a random in-plane scaling, and image intensity scale/shift (cue
    channels untouched). Probabilities are per patch.

    ``scale_probability`` / ``max_scale``: the patch is magnified by a factor drawn log-uniformly from
    ``[1 / (1 + max_scale), 1 + max_scale]`` (the default 0.4: 0.71-1.4, nnU-Net's range) along its finely sampled
    axes (:func:`grid_axes`; thick slices keep their spacing). Off by default (rule and figures:
    ``docs/training.md``).
    """

    flip_probability: float = 0.5
    rotate_probability: float = 0.2
    max_rotation_deg: float = 15.0
    scale_probability: float = 0.0
    max_scale: float = 0.4
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1

    def __post_init__(self):
        checks = [(0.0 <= p <= 1.0, f"training.augmentation.{name} must lie in [0, 1], got {p}")
                  for name, p in (("flip_probability", self.flip_probability),
                                  ("rotate_probability", self.rotate_probability),
                                  ("scale_probability", self.scale_probability))]
        checks += [
            (0.0 <= self.max_rotation_deg <= 180.0,
             f"training.augmentation.max_rotation_deg must lie in [0, 180], got {self.max_rotation_deg}"),
            (0.0 <= self.max_scale <= 1.0,
             f"training.augmentation.max_scale must lie in [0, 1] (at most 2x either way), got {self.max_scale}"),
            (0.0 <= self.intensity_scale < 1.0,
             f"training.augmentation.intensity_scale must lie in [0, 1), got {self.intensity_scale}"),
            (self.intensity_shift >= 0.0,
             f"training.augmentation.intensity_shift must be >= 0, got {self.intensity_shift}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


def _resample_together(transform, inputs, target, weight):
    """Apply one spatial ``transform`` (a MONAI array transform) to inputs, target and weight as one stack, so
    that the label and its trust stay on the image's voxels."""
    stacked = np.concatenate([inputs, target, weight[None]]).astype(np.float32)
    moved = np.asarray(transform(torch.from_numpy(np.ascontiguousarray(stacked))))
    c_in, c_t = inputs.shape[0], target.shape[0]
    return moved[:c_in], moved[c_in:c_in + c_t], moved[-1]


def augment(inputs, target, weight, rng: np.random.Generator, spacing_mm, aug: Augmentation):
    """Augment one patch (all arrays channel-first except ``weight``); returns new arrays.

    Rotations turn about the thick-slice axis when the spacing is anisotropic (in-plane only),
    about a random axis otherwise; scaling magnifies the finely sampled axes the patch extends along (one factor
    for all of them); the image channel (0) gets a random gain and offset.
    """
    for axis in range(3):
        if rng.random() < aug.flip_probability:
            inputs, target, weight = (np.flip(inputs, axis + 1), np.flip(target, axis + 1), np.flip(weight, axis))
    if rng.random() < aug.rotate_probability:
        spacing = np.asarray(spacing_mm, dtype=float)
        axis = int(np.argmax(spacing)) if spacing.max() >= 2 * spacing.min() else int(rng.integers(3))
        angle = [0.0, 0.0, 0.0]
        angle[axis] = float(np.deg2rad(rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg)))
        inputs, target, weight = _resample_together(
            Rotate(angle, keep_size=True, mode="bilinear", padding_mode="border"), inputs, target, weight)
    # drawn only when enabled, so that runs without scaling keep their random stream (and recorded figures)
    if aug.scale_probability > 0 and rng.random() < aug.scale_probability:
        bound = np.log1p(aug.max_scale)
        magnify = float(np.exp(rng.uniform(-bound, bound)))
        axes = [a for a in grid_axes(spacing_mm) if weight.shape[a] > 1]
        # MONAI's scale maps output to input coordinates: a factor s shows the content 1/s as large
        scale = [1.0 / magnify if a in axes else 1.0 for a in range(3)]
        inputs, target, weight = _resample_together(
            Affine(scale_params=scale, mode="bilinear", padding_mode="border", image_only=True),
            inputs, target, weight)
    inputs = np.array(inputs, dtype=np.float32)
    inputs[0] = inputs[0] * (1.0 + rng.uniform(-aug.intensity_scale, aug.intensity_scale)) + \
        rng.uniform(-aug.intensity_shift, aug.intensity_shift)
    return inputs, np.ascontiguousarray(target, dtype=np.float32), np.ascontiguousarray(weight, dtype=np.float32)


def sample_patch(volume: TrainingVolume, patch_size, rng: np.random.Generator, foreground_fraction: float):
    """A random patch (arrays) of a volume already padded to ``patch_size``; with probability
    ``foreground_fraction`` it is centred on a random foreground voxel."""
    shape = np.asarray(volume.weight.shape)
    patch = np.asarray(patch_size)
    foreground = volume.foreground
    if len(foreground) and rng.random() < foreground_fraction:
        centre = foreground[rng.integers(len(foreground))]
        lo = np.clip(centre - patch // 2, 0, shape - patch)
    else:
        lo = np.array([rng.integers(0, n + 1) for n in shape - patch])
    sl = tuple(slice(int(a), int(a + n)) for a, n in zip(lo, patch))
    return volume.inputs[(slice(None),) + sl], volume.target[(slice(None),) + sl], volume.weight[sl]


def make_batch(volumes, indices, patch_size, rng, foreground_fraction, spacing_mm, augmentation=None):
    """Stack patches of ``volumes[indices]`` into tensors ``(B, C_in, ...)``, ``(B, C, ...)``, ``(B, ...)``."""
    xs, ys, ws = [], [], []
    for n in indices:
        x, y, w = sample_patch(volumes[n], patch_size, rng, foreground_fraction)
        if augmentation is not None:
            x, y, w = augment(x, y, w, rng, spacing_mm, augmentation)
        xs.append(np.ascontiguousarray(x, dtype=np.float32))
        ys.append(np.ascontiguousarray(y, dtype=np.float32))
        ws.append(np.ascontiguousarray(w, dtype=np.float32))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)), torch.from_numpy(np.stack(ws))
