"""Scribbles -> seed areas (paper 004, Sec. 2.1): random-walker probabilities kept only where they are sure.

Scribbles arrive as a label map (``.nii.gz`` / ``.nrrd``: one value for the background strokes, one per class,
one for "not painted"; ACDC: 0 background, 1 RV, 2 Myo, 3 LV, 4 unannotated) or as the segments of a Slicer
``.seg.nrrd`` painted in the Segment Editor (one segment per class, named after it, and a background segment).
Both become *class-indexed* :class:`~ExtremeSegLib.annotations.Scribbles`: ``-1`` not painted, ``0``
background, ``n`` the n-th foreground class.

The multi-class random walker (:func:`~.random_walker.random_walker`, spacing-aware) turns them into class
probabilities; a voxel keeps its most probable class only where that probability exceeds ``tau`` (paper:
0.99 for cardiac MRI) and is unknown elsewhere. The walk runs per slice (``mode="2d"``, along the thickest
axis) or in 3D; which is better is measured in ``benchmarks/results/scribbles_seeds.md``.
"""

from __future__ import annotations

import re

import numpy as np

from ..annotations import Scribbles
from ..errors import InputError
from ..masks import normalise_intensities
from ..volume import Volume
from .label import PseudoLabel
from .random_walker import random_walker

#: value of "not painted" in a class-indexed scribble map
UNPAINTED = -1
#: a segment is the background when its name contains this word (case-insensitive), as the Slicer module names it
BACKGROUND_WORD = "background"
MODES = ("2d", "3d")


def _class_indexed(labels: Volume, what: str) -> Scribbles:
    try:
        return Scribbles(labels, unannotated=UNPAINTED, background=0)
    except InputError as err:
        raise InputError(f"{what}: {err}") from None


def scribbles_from_labelmap(labels: Volume, class_values, background: int = 0, unannotated: int | None = None,
                            what: str = "the scribbles") -> Scribbles:
    """Class-indexed scribbles from a scribble label map.

    Parameters
    ----------
    labels : Volume
        The scribble label map, array ``(I, J, K)`` of label values.
    class_values : sequence of sequences of int
        For each foreground class, the label values that mark its strokes (e.g. ``[[1], [2], [3]]``).
    background : int, optional
        Value of the background strokes.
    unannotated : int, optional
        Value of unpainted voxels (default: the number of classes + 1, the ACDC convention and what the Slicer
        module exports).
    what : str, optional
        How error messages name the scribbles.

    Returns
    -------
    Scribbles
        Class-indexed strokes on the label map's grid (0 = background, n = class n, :data:`UNPAINTED` elsewhere).
    """
    array = np.asarray(labels.array)
    class_values = [tuple(int(v) for v in values) for values in class_values]
    unannotated = len(class_values) + 1 if unannotated is None else int(unannotated)
    known = {background: 0, unannotated: UNPAINTED}
    for n, values in enumerate(class_values, start=1):
        for v in values:
            if v in known:
                raise InputError(f"{what}: label value {v} is given two meanings (class {n} and "
                                 f"{'background' if known[v] == 0 else 'unannotated' if known[v] < 0 else known[v]}); "
                                 "give every class, the background and 'unannotated' their own value")
            known[v] = n
    present = np.unique(array)
    unknown = [int(v) for v in present if int(v) not in known]
    if unknown:
        raise InputError(f"{what}: label value {unknown[0]} is neither the background ({background}), "
                         f"'unannotated' ({unannotated}) nor a class's value "
                         f"({sorted(v for v in known if known[v] > 0)}); fix the file or the classes' label_values")
    lookup = np.full(len(present), UNPAINTED, dtype=np.int16)
    for n, v in enumerate(present):
        lookup[n] = known[int(v)]
    out = lookup[np.searchsorted(present, array)]
    return _class_indexed(labels.with_array(out), what)


def scribbles_from_segments(geometry: Volume, segments, class_names, segment_classes: dict | None = None,
                            what: str = "the scribble segmentation") -> Scribbles:
    """Class-indexed scribbles from Segment Editor segments (e.g. :func:`~ExtremeSegLib.io.read_segmentation`).

    A segment whose name contains "background" (any case) is the background; any other segment names its class
    (exactly one of ``class_names``, ignoring case and surrounding spaces), or is mapped to one by
    ``segment_classes``. Unknown names, empty segments and strokes painted in two segments are refused with
    :class:`InputError`.

    Parameters
    ----------
    geometry : Volume
        The segmentation's grid (shape ``(I, J, K)``).
    segments : sequence of Segment
        Masks ``(I, J, K)`` on ``geometry``'s grid, with names.
    class_names : sequence of str
        The foreground classes in order (class n = ``class_names[n - 1]``).
    segment_classes : dict, optional
        ``{segment name: class name or "background"}``.
    what : str, optional
        How error messages name the scribbles.

    Returns
    -------
    Scribbles
        Class-indexed strokes on ``geometry``'s grid.
    """
    def key(name):
        return re.sub(r"\s+", " ", str(name).strip().lower())

    classes = {key(name): n for n, name in enumerate(class_names, start=1)}
    mapping = {key(s): key(c) for s, c in (segment_classes or {}).items()}
    out = np.full(geometry.shape, UNPAINTED, dtype=np.int16)
    owner = {}
    for segment in segments:
        name = key(segment.name)
        target = mapping.get(name, name)
        if target == BACKGROUND_WORD or (name not in mapping and BACKGROUND_WORD in name):
            index = 0
        elif target in classes:
            index = classes[target]
        else:
            raise InputError(f"{what}: segment {segment.name!r} is neither a class ({', '.join(class_names)}) nor "
                             "the background; rename it, remove it, or map it in pseudolabel.segment_classes")
        if segment.mask.shape != geometry.shape:
            raise InputError(f"{what}: segment {segment.name!r} does not lie on the segmentation's grid")
        if not segment.mask.any():
            raise InputError(f"{what}: segment {segment.name!r} is empty; paint some strokes in it or remove it")
        clash = segment.mask & (out != UNPAINTED) & (out != index)
        if clash.any():
            where = tuple(int(v) for v in np.argwhere(clash)[0])
            raise InputError(f"{what}: segments {owner[int(out[where])]!r} and {segment.name!r} overlap in "
                             f"{int(clash.sum())} voxels (e.g. voxel {list(where)}); a stroke must belong to one "
                             "class: erase the overlap in one of them")
        out[segment.mask] = index
        owner.setdefault(index, segment.name)
    return _class_indexed(geometry.with_array(out), what)


def read_scribbles(path, image: Volume, class_names, class_values, background: int = 0,
                   unannotated: int | None = None, segment_classes: dict | None = None) -> Scribbles:
    """Class-indexed scribbles from a file on ``image``'s grid.

    Parameters
    ----------
    path : str or Path
        A ``.seg.nrrd`` (segments by name, :func:`scribbles_from_segments`) or a label map (values,
        :func:`scribbles_from_labelmap`).
    image : Volume
        The image the scribbles were drawn on; its geometry must match.
    class_names : sequence of str
        Foreground class names (for segments).
    class_values : sequence of sequences of int
        Foreground label values (for label maps).
    background, unannotated : int, optional
        Label-map values of background strokes and unpainted voxels.
    segment_classes : dict, optional
        ``{segment name: class name or "background"}``.

    Returns
    -------
    Scribbles
        Class-indexed strokes on ``image``'s grid.
    """
    from ..io.segmentations import read_segmentation
    from ..io.volumes import read_labelmap

    what = f"scribbles {path}"
    if str(path).lower().endswith(".seg.nrrd"):
        geometry, segments = read_segmentation(path)
        scribbles = scribbles_from_segments(geometry, segments, class_names, segment_classes, what)
    else:
        scribbles = scribbles_from_labelmap(read_labelmap(path), class_values, background, unannotated, what)
    image.require_same_geometry(scribbles.labels, f"the {what}")
    return scribbles


def _walk(image: np.ndarray, seeds: np.ndarray, spacing, num_classes: int, beta: float, solver: str, tol: float,
          device) -> np.ndarray:
    """Random-walker probabilities ``(num_classes, ...)`` from seeds of any subset of the classes.

    Classes without a seed get probability 0; a single seeded class takes everything; no seed: all zeros.
    """
    out = np.zeros((num_classes,) + image.shape, dtype=np.float32)
    present = np.unique(seeds[seeds >= 0])
    if len(present) == 1:
        out[present[0]] = 1.0
    elif len(present) > 1:
        remap = np.full(num_classes, -1, dtype=np.int16)
        remap[present] = np.arange(len(present))
        local = np.where(seeds >= 0, remap[np.maximum(seeds, 0)], -1).astype(np.int16)
        out[present] = random_walker(image, local, spacing, beta=beta, solver=solver, tol=tol, device=device)
    return out


def random_walker_probabilities(image: Volume, scribbles: Scribbles, num_classes: int, beta: float = 130.0,
                                mode: str = "2d", solver: str | None = None, tol: float = 1e-4,
                                device="cpu") -> np.ndarray:
    """Multi-class random-walker probabilities from class-indexed scribbles.

    Intensities are normalised to 0..1 (1st-99th percentile) first.

    Parameters
    ----------
    image : Volume
        The image, array ``(I, J, K)``, spacing in mm.
    scribbles : Scribbles
        Class-indexed strokes on ``image``'s grid.
    num_classes : int
        Classes including the background.
    beta : float, optional
        Edge sensitivity of the walker.
    mode : {"2d", "3d"}, optional
        ``"2d"``: one walk per slice across the thickest voxel axis (a slice without strokes gets all zeros,
        i.e. no class; a slice with strokes of one class only gets that class); ``"3d"``: one walk in the volume.
    solver : str, optional
        See :func:`~.random_walker.random_walker`; default ``"direct"`` per slice (exact, and fastest on a slice
        of ~10^5 voxels), ``"auto"`` in 3D.
    tol : float, optional
        Relative residual of the iterative solvers.
    device : str or torch.device, optional
        Where the walker solves.

    Returns
    -------
    ndarray of float32, shape (num_classes, I, J, K)
        Class probabilities.
    """
    if mode not in MODES:
        raise InputError(f"unknown random-walker mode {mode!r}; choose one of {list(MODES)}")
    scribbles.require_matches(image)
    seeds = scribbles.labels.array.astype(np.int16)
    if seeds.max() >= num_classes:
        raise InputError(f"the scribbles hold class {int(seeds.max())}, but there are only {num_classes - 1} classes")
    intensities = normalise_intensities(image.array)
    spacing = image.spacing
    if mode == "3d":
        return _walk(intensities, seeds, spacing, num_classes, beta, solver or "auto", tol, device)
    axis = int(np.argmax(spacing))
    out = np.zeros((num_classes,) + image.shape, dtype=np.float32)
    for k in range(image.shape[axis]):
        sl = [slice(None)] * 3
        sl[axis] = slice(k, k + 1)
        sl = tuple(sl)
        out[(slice(None),) + sl] = _walk(intensities[sl], seeds[sl], spacing, num_classes, beta,
                                         solver or "direct", tol, device)
    return out


def seed_areas(probabilities: np.ndarray, tau: float = 0.99) -> np.ndarray:
    """The voxels whose most probable class is sure enough.

    Parameters
    ----------
    probabilities : ndarray, shape (C, I, J, K)
        Class probabilities.
    tau : float, optional
        Probability the most probable class must exceed.

    Returns
    -------
    ndarray of int16, shape (I, J, K)
        That class where its probability exceeds ``tau``, ``-1`` (unknown) elsewhere.
    """
    if not 0.0 < tau < 1.0:
        raise InputError(f"tau must lie in (0, 1), got {tau}")
    best = np.argmax(probabilities, axis=0).astype(np.int16)
    return np.where(np.max(probabilities, axis=0) > tau, best, np.int16(UNPAINTED))


def seeds_to_pseudolabel(seeds: np.ndarray, num_classes: int, geometry: Volume,
                         unknown_probabilities: np.ndarray | None = None) -> PseudoLabel:
    """A pseudo-label from a partial label map: one-hot where known, weight 1 there and 0 elsewhere.

    Unknown voxels carry no loss; they hold ``unknown_probabilities`` (a best guess, e.g. the random walker's
    or the network's, which is what :meth:`PseudoLabel.hard` then shows), or the background's one-hot.

    Parameters
    ----------
    seeds : ndarray of int, shape (I, J, K)
        Class indices, ``-1`` = unknown.
    num_classes : int
        Classes including the background.
    geometry : Volume
        The grid of ``seeds``.
    unknown_probabilities : ndarray, shape (C, I, J, K), optional
        What unknown voxels hold.

    Returns
    -------
    PseudoLabel
        Probabilities ``(C, I, J, K)`` and weight ``(I, J, K)`` on ``geometry``.
    """
    seeds = np.asarray(seeds)
    known = seeds >= 0
    probabilities = np.zeros((num_classes,) + seeds.shape, dtype=np.float32)
    for c in range(num_classes):
        probabilities[c][seeds == c] = 1.0
    if unknown_probabilities is None:
        probabilities[0][~known] = 1.0
    else:
        probabilities[:, ~known] = np.asarray(unknown_probabilities, dtype=np.float32)[:, ~known]
    return PseudoLabel(probabilities, known.astype(np.float32), geometry)


def scribble_seed_areas(image: Volume, scribbles: Scribbles, num_classes: int, tau: float = 0.99,
                        beta: float = 130.0, mode: str = "2d", solver: str | None = None, tol: float = 1e-4,
                        device="cpu") -> PseudoLabel:
    """Seed areas of one volume (paper 004's step 1) as a pseudo-label on the image grid.

    Strokes are always seed areas of their class.

    Parameters
    ----------
    image, scribbles, num_classes, beta, mode, solver, tol, device
        The random walk's image ``(I, J, K)``, strokes, class count (with the background) and settings: see
        :func:`random_walker_probabilities`.
    tau : float, optional
        Probability a voxel's class must exceed (:func:`seed_areas`).

    Returns
    -------
    PseudoLabel
        Weight 1 on seed areas, 0 where unknown.
    """
    probabilities = random_walker_probabilities(image, scribbles, num_classes, beta, mode, solver, tol, device)
    seeds = seed_areas(probabilities, tau)
    painted = scribbles.labels.array >= 0
    seeds[painted] = scribbles.labels.array[painted]
    return seeds_to_pseudolabel(seeds, num_classes, image)
