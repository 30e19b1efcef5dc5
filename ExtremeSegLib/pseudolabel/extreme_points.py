"""Extreme points -> pseudo-label (paper 000 steps 1-2, with paper 001's geodesic terms).

1. The tight box through the 6 clicks, relaxed by ``box_margin_mm``: everything outside it is background.
2. The three geodesic paths joining opposite clicks (:mod:`.geodesic`), dilated by ``path_radius_mm``, are
   foreground seeds; voxels farther than ``background_distance_mm`` from every path are background seeds.
3. A random walker (:mod:`.random_walker`) on the intensities normalised in the box gives P(foreground),
   optionally pulled towards an intensity model learnt from the seeds (``intensity_prior_weight``) or towards
   the 3D confidence map (``shape_prior_weight``).
4. Post-processing: only the foreground connected to the paths is kept; narrow notches are closed and
   enclosed holes filled (set to P = 1); everything outside the relaxed box is P = 0.

Memory bound: the random walker needs about :func:`.random_walker.memory_estimate` bytes for the region (the
relaxed box plus one voxel); above ``memory_limit_bytes`` (default 4 GiB, about a 365^3-voxel region with the
default solver) the maker refuses with an :class:`InputError` rather than swapping.

The result is a :class:`PseudoLabel` on the whole image grid: P(foreground) = 0 outside the relaxed box.
Its ``weight`` depends on ``trust``: ``"all"`` (default) = 1 everywhere, as paper 000 trains a soft Dice on
the whole probability map; ``"seeds"`` = 1 only on the seeds (paths and outside the relaxed box), 0 elsewhere,
for partial losses (paper 001).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..annotations import ExtremePoints
from ..errors import InputError
from ..volume import Volume
from .cues import confidence_map
from .geodesic import extreme_point_paths, gradient_magnitude, path_grid_factors
from .label import PseudoLabel
from .random_walker import memory_estimate, random_walker

#: refuse regions whose random walker would need more memory than this (bytes); see ``memory_limit_bytes``
DEFAULT_MEMORY_LIMIT = 4 * 1024 ** 3



def normalise_intensities(array: np.ndarray, low_percentile: float = 1.0, high_percentile: float = 99.0) -> np.ndarray:
    """Map the [low, high] percentiles of ``array`` to [0, 1] (clipped), float64."""
    data = np.asarray(array, dtype=np.float64)
    lo, hi = np.percentile(data, [low_percentile, high_percentile])
    if hi <= lo:
        return np.zeros_like(data)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0)


def near_paths(shape, paths, spacing, radius_mm: float) -> np.ndarray:
    """Voxels within ``radius_mm`` (Euclidean, honouring spacing) of any voxel of ``paths`` ((N, 3) index arrays).

    One distance transform per path, in its bounding box grown by the radius, not in the whole region: a path
    runs along one axis, so its box is a thin slab (exact: every voxel within the radius lies in that box).
    """
    spacing = np.asarray(spacing, dtype=float)
    near = np.zeros(shape, dtype=bool)
    reach = np.ceil(max(radius_mm, 0.0) / spacing).astype(int)
    for path in paths:
        if len(path) == 0:
            continue
        lo = np.maximum(path.min(0) - reach, 0)
        hi = np.minimum(path.max(0) + reach + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        away = np.ones(tuple(hi - lo), dtype=bool)
        away[tuple((path - lo).T)] = False
        near[box] |= ndi.distance_transform_edt(away, sampling=spacing) <= radius_mm
    return near


def seeds_from_paths(shape, paths, spacing, relaxed_lo, relaxed_hi, path_radius_mm: float,
                     background_distance_mm: float | None = None) -> np.ndarray:
    """Seeds on a region's grid: 1 = dilated paths, 0 = outside the relaxed box or far from the paths, -1 = unknown.

    ``relaxed_lo``/``relaxed_hi``: the relaxed box inside the region (index, hi exclusive). The ends of each path
    are extreme points, on the object's surface: only path voxels at least ``path_radius_mm`` from both ends are
    dilated, so the seeds do not spill out of the object there (the path itself stays a seed all along).
    """
    spacing = np.asarray(spacing, dtype=float)
    on_path = np.zeros(shape, dtype=bool)
    cores = []
    for path in paths:
        on_path[tuple(path.T)] = True
        mm = path * spacing
        from_ends = np.minimum(np.linalg.norm(mm - mm[0], axis=1), np.linalg.norm(mm - mm[-1], axis=1))
        cores.append(path[from_ends >= path_radius_mm])
    seeds = np.full(shape, -1, dtype=np.int16)
    inside = np.zeros(shape, dtype=bool)
    inside[tuple(slice(a, b) for a, b in zip(relaxed_lo, relaxed_hi))] = True
    seeds[~inside] = 0
    if background_distance_mm is not None:
        seeds[~near_paths(shape, paths, spacing, background_distance_mm)] = 0
    dilated = near_paths(shape, cores, spacing, path_radius_mm) if path_radius_mm > 0 else on_path
    seeds[(dilated | on_path) & inside] = 1
    return seeds


def smallest_extent_mm(points: ExtremePoints) -> float:
    """The shortest of the three distances between opposite clicks (mm): the object's size for scaled radii."""
    return float(np.linalg.norm(points.ras[:, 1] - points.ras[:, 0], axis=1).min())


def relaxed_box(points: ExtremePoints, image: Volume, margin_mm: float):
    """The tight box through the clicks (``ExtremePoints.box_index``) grown by ``margin_mm`` per side, clipped.

    The margin is rounded to the nearest whole number of voxels per axis (not up), so that a 2 mm margin does
    not add a whole 10 mm slice on anisotropic images.
    """
    lo, hi = points.box_index(image, 0.0)
    pad = np.floor(margin_mm / image.spacing + 0.5).astype(int)
    return np.maximum(lo - pad, 0), np.minimum(hi + pad, image.shape)


def _slices_across_coarsest_axis(shape, spacing):
    """Index tuples of the 2D slices across the axis with the largest voxel size (the first on a tie)."""
    axis = int(np.argmax(spacing))
    for index in range(shape[axis]):
        plane = [slice(None)] * 3
        plane[axis] = index
        yield tuple(plane)


def fill_enclosed(mask: np.ndarray, spacing) -> np.ndarray:
    """``mask`` with its holes filled in 3D and in every slice across the coarsest axis.

    The per-slice fill catches holes that open only through a neighbouring slice, common with thick slices
    (ACDC: papillary muscles inside the left ventricle).
    """
    filled = ndi.binary_fill_holes(mask)
    for plane in _slices_across_coarsest_axis(mask.shape, spacing):
        filled[plane] = ndi.binary_fill_holes(filled[plane])
    return filled


def convex_slices(mask: np.ndarray, spacing) -> np.ndarray:
    """``mask`` replaced, slice by slice across the coarsest axis, by the convex hull of each slice's part.

    A shape prior for objects that are convex in those slices (a ventricle's cavity in short-axis slices, with
    the trabeculae and papillary muscles the random walker leaves out); not for rings or curved objects.
    """
    from skimage.morphology import convex_hull_image

    hull = mask.copy()
    for plane in _slices_across_coarsest_axis(mask.shape, spacing):
        if hull[plane].any():
            hull[plane] = convex_hull_image(mask[plane])
    return hull


def keep_connected_to(foreground: np.ndarray, seeds_mask: np.ndarray) -> np.ndarray:
    """The 26-connected components of ``foreground`` that touch ``seeds_mask``."""
    labels, n = ndi.label(foreground, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return foreground
    touched = np.unique(labels[seeds_mask & foreground])
    return np.isin(labels, touched[touched > 0])


def extreme_points_pseudolabel(image: Volume, points: ExtremePoints, *, box_margin_mm: float = 1.0,
                               path_radius_mm: float | None = None, path_radius_fraction: float = 0.06,
                               background_distance_mm: float | None = None, euclidean_weight: float = 10.0,
                               gradient_weight: float = 1.0, auto_scale: bool = True, gradient_sigma_mm: float = 1.0,
                               path_intensity_weight: float = 1.0, path_intensity_rounds: int = 2,
                               path_voxels_across: float = 24.0,
                               beta: float = 300.0, conductance_power: float = 1.0,
                               intensity_prior_weight: float = 0.0, shape_prior_weight: float = 0.0,
                               keep_connected: bool = True, closing_fraction: float = 0.25, fill_holes: bool = True,
                               convex: bool = False, trust: str = "all", solver: str = "auto", tol: float = 1e-3,
                               device="cpu",
                               memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT) -> PseudoLabel:
    """Pseudo-label (background, foreground) of the object the 6 extreme points bound.

    Defaults were tuned on 40 hippocampus and 20 ACDC cases and hold for both (see
    ``benchmarks/results/pseudolabel_extreme.md``).

    Seeds
      box_margin_mm: the tight box through the clicks is relaxed by this much per side (click noise; rounded to
        whole voxels per axis); beyond it everything is background.
      path_radius_mm: the geodesic paths are dilated by this radius (mm) into foreground seeds; None (default):
        ``path_radius_fraction`` of the smallest distance between opposite clicks, at least 1 mm (paper 000 notes
        that the dilation depends on the organ's size).
      background_distance_mm: voxels farther than this from every path are background seeds too (None: off;
        paper 000 uses 30 mm for spleen and liver).
    Paths (:func:`.geodesic.geodesic_cost`)
      euclidean_weight, gradient_weight, auto_scale: the cost terms, each scaled to 0..1 by paper 001's automatic
        policy, then weighted (a Euclidean weight of 10 keeps the paths from running round the object along its
        dark rim, e.g. the myocardium round the left ventricle); gradient_sigma_mm: Gaussian smoothing (mm) of the
        intensities before the gradient.
      path_intensity_weight: > 0 (default 1; 0 = off) re-routes the paths ``path_intensity_rounds`` times through
        voxels whose intensity looks like the paths' own (cost term ``weight * P(background | intensity)`` from
        histograms of the path voxels and the background seeds, paper 001's deep geodesics with an intensity model
        in place of a network): a path from a click that missed the object (click noise) enters it sooner and
        stays inside. With 2 mm click noise it raised
        hippocampus pseudo-labels from 0.730 to 0.759 and ACDC LV from 0.839 to 0.854 (docs/benchmarks.md); it
        costs one more Dijkstra per path and round, about double the maker's time on large regions.
      path_voxels_across: paths are searched on a grid coarsened (whole blocks of voxels) until the smallest
        click distance spans this many blocks, then refined at full resolution in a band around the coarse path
        (:func:`.geodesic.shortest_path`); objects smaller than that in voxels (hippocampus, ACDC) are searched
        at full resolution. The search visits most of the region, so this sets the maker's time on large ones.
    Random walker (:func:`.random_walker.random_walker`; intensities normalised to 0..1 in the region)
      beta: edge sensitivity (paper 000: 130 with scikit-image's convention; 300 measured better here).
      conductance_power: coupling across thick slices (1 measured best on ACDC; 2 = diffusion in mm, 0 = per voxel).
      intensity_prior_weight: pull towards an intensity model (histograms of the seeds) (0 = off).
      shape_prior_weight: pull towards the 3D confidence map (:func:`.cues.confidence_map`) (0 = off; helps
        compact objects, hurts curved ones).
      solver, tol, device: passed on.
    Output
      keep_connected: keep only the foreground connected to the paths. closing_fraction: close notches narrower
        than this fraction of the smallest click distance (trabeculae at the ventricle's wall). fill_holes: fill
        enclosed holes (3D and per slice across the coarsest axis). convex: a shape prior, off by default: each
        slice across the coarsest axis becomes its convex hull (:func:`convex_slices`; for objects convex in
        those slices, e.g. the left ventricle's cavity, never for the myocardium's ring).
      trust: ``"all"`` (weight 1 everywhere) or ``"seeds"`` (weight 1 on seeds only).
      memory_limit_bytes: :class:`InputError` when the random walker's estimated memory for the region exceeds it.
    """
    if trust not in ("all", "seeds"):
        raise InputError(f"trust must be 'all' or 'seeds', got {trust!r}")
    for name, value in (("box_margin_mm", box_margin_mm), ("path_radius_mm", path_radius_mm),
                        ("closing_fraction", closing_fraction), ("path_intensity_weight", path_intensity_weight)):
        if value is not None and not value >= 0:
            raise InputError(f"{name} must be >= 0, got {value}")
    if int(path_intensity_rounds) != path_intensity_rounds or path_intensity_rounds < 1:
        raise InputError(f"path_intensity_rounds must be a whole number >= 1, got {path_intensity_rounds}")
    image.require_finite()
    spacing = image.spacing
    size_mm = smallest_extent_mm(points)
    if path_radius_mm is None:
        path_radius_mm = max(1.0, path_radius_fraction * size_mm)

    # Region = relaxed box plus one voxel of background all round (clipped at the image border).
    relaxed_lo, relaxed_hi = relaxed_box(points, image, box_margin_mm)
    lo = np.maximum(relaxed_lo - 1, 0)
    hi = np.minimum(relaxed_hi + 1, image.shape)
    shape = tuple(int(v) for v in hi - lo)
    needed = memory_estimate(shape, 2, solver)
    if needed > memory_limit_bytes:
        raise InputError(
            f"the region around the extreme points is {shape[0]} x {shape[1]} x {shape[2]} voxels; the random walker "
            f"would need about {needed / 1024 ** 3:.1f} GiB, more than the {memory_limit_bytes / 1024 ** 3:.1f} GiB "
            "allowed; check that the points bound one object, or resample the image to a coarser spacing"
        )
    region = image.crop(lo, hi)
    intensities = normalise_intensities(region.array)

    clicks = points.index(image) - lo
    factors = path_grid_factors(spacing, size_mm, path_voxels_across)
    gradient = gradient_magnitude(intensities, spacing, gradient_sigma_mm)  # shared by every re-routing round

    def seeds_along(radius_mm, **cost):
        paths = extreme_point_paths(intensities, clicks, spacing, factors, euclidean_weight=euclidean_weight,
                                    gradient_weight=gradient_weight, auto_scale=auto_scale, gradient=gradient, **cost)
        return paths, seeds_from_paths(shape, paths, spacing, relaxed_lo - lo, relaxed_hi - lo, radius_mm,
                                       background_distance_mm)

    rounds = int(path_intensity_rounds) if path_intensity_weight > 0 else 0
    # paths that only feed the next round's intensity model need no dilation (the model takes the paths alone)
    paths, seeds = seeds_along(path_radius_mm if rounds == 0 else 0.0)
    if not np.any(seeds == 0):
        raise InputError(
            "the extreme points span the whole image, so no voxel is known to be background; "
            "crop the image with some margin around the object, or set background_distance_mm"
        )
    for n in range(rounds):
        # the foreground model from the paths alone: their dilation reaches over the object's edge more often
        model = np.where(seeds == 0, 0, -1).astype(np.int16)
        model[tuple(np.concatenate(paths).T)] = 1
        unlike = 1.0 - intensity_likelihood_ratio(intensities, model)
        paths, seeds = seeds_along(path_radius_mm if n == rounds - 1 else 0.0, background_probability=unlike,
                                   background_weight=path_intensity_weight)
    prior, prior_weight = None, intensity_prior_weight + shape_prior_weight
    if prior_weight > 0:
        likely = np.zeros(shape)
        if intensity_prior_weight > 0:
            likely += intensity_prior_weight * intensity_likelihood_ratio(intensities, seeds)
        if shape_prior_weight > 0:
            likely += shape_prior_weight * confidence_map(points, region)
        likely /= prior_weight
        prior = np.stack([1.0 - likely, likely])
    probs = random_walker(intensities, seeds, spacing, beta=beta, solver=solver, tol=tol, device=device,
                          prior=prior, prior_weight=prior_weight, conductance_power=conductance_power)
    fg = postprocess(probs[1], seeds, spacing, keep_connected, fill_holes, closing_fraction * size_mm, convex)

    full = np.zeros(image.shape, dtype=np.float32)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    full[sl] = fg
    weight = np.ones(image.shape, dtype=np.float32)
    if trust == "seeds":
        weight[sl] = (seeds >= 0).astype(np.float32)
    return PseudoLabel.from_foreground(full, image, weight)


def close_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Morphological closing of ``mask`` by a ball of ``radius_mm`` (mm, honouring spacing).

    Done with two Euclidean distance transforms instead of a structuring element: time and memory do not grow
    with the radius (SciPy's binary morphology with a 55 x 55 x 7 ball, a ventricle's closing, ran out of memory).
    The closing lies inside the mask's bounding box (it lies inside its convex hull), so only that box is
    computed, padded by the radius so that the box's border does not erode what touches it.
    """
    if not mask.any():
        return mask.copy()
    where = np.argwhere(mask)
    box = tuple(slice(a, b + 1) for a, b in zip(where.min(0), where.max(0)))
    pad = np.ceil(radius_mm / np.asarray(spacing, dtype=float)).astype(int) + 1
    padded = np.pad(mask[box], [(p, p) for p in pad])
    dilated = ndi.distance_transform_edt(~padded, sampling=spacing) <= radius_mm
    closed = ndi.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    out = mask.copy()
    out[box] |= closed[tuple(slice(p, -p) for p in pad)]
    return out


def postprocess(foreground: np.ndarray, seeds: np.ndarray, spacing, keep_connected: bool = True,
                fill_holes: bool = True, closing_mm: float = 0.0, convex: bool = False) -> np.ndarray:
    """P(foreground) cleaned: disconnected foreground (from the seeds 1) set to 0; notches narrower than
    ``closing_mm`` (morphological closing), enclosed holes and, with ``convex``, the rest of each slice's convex
    hull set to 1; background seeds 0."""
    fg = foreground.copy()
    if keep_connected:
        hard = fg > 0.5
        fg[hard & ~keep_connected_to(hard, seeds == 1)] = 0.0
    if closing_mm > 0:
        hard = fg > 0.5
        fg[close_mm(hard, closing_mm, spacing) & ~hard] = 1.0
    if fill_holes:
        hard = fg > 0.5
        fg[fill_enclosed(hard, spacing) & ~hard] = 1.0
    if convex:
        hard = fg > 0.5
        fg[convex_slices(hard, spacing) & ~hard] = 1.0
    fg[seeds == 0] = 0.0  # outside the relaxed box (and far from the paths) is background by construction
    return fg


def intensity_likelihood_ratio(intensities: np.ndarray, seeds: np.ndarray, bins: int = 32,
                               smoothing_bins: float = 1.5) -> np.ndarray:
    """P(foreground | intensity) from smoothed histograms of the foreground (1) and background (0) seeds."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(intensities, edges) - 1, 0, bins - 1)
    hist = []
    for c in (0, 1):
        h = np.bincount(which[seeds == c], minlength=bins).astype(float)
        h = ndi.gaussian_filter1d(h, smoothing_bins, mode="nearest") + 1e-6
        hist.append(h / h.sum())
    ratio = hist[1] / (hist[0] + hist[1])
    return ratio[which]


def _option_value(value):
    """``--option`` values arrive as numbers or strings: map "true"/"false"/"none" to Python."""
    if isinstance(value, str) and value.lower() in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[value.lower()]
    return value


def benchmark_method(case, options):
    """Benchmark adapter (``ExtremeSegLib.evaluation.run_benchmark``): one pseudo-label per structure.

    Each structure of ``options.structures`` gets its own 6 clicks simulated from the reference (seeded per case
    as the ``extreme-box`` baseline does, so both see the same clicks) and its own pseudo-label; where several
    structures claim a voxel (P > 0.5) the most probable wins. ``options.extra`` holds maker parameters
    (``--option beta=300``). Returns the label map (a :class:`Volume` on the image grid).
    """
    from ..io.volumes import read_image, read_labelmap
    from ..simulate import simulate_extreme_points

    image = read_image(case.image)
    reference = read_labelmap(case.label)
    params = {key: _option_value(value) for key, value in options.extra.items()}
    rng = np.random.default_rng(options.case_seed(case))
    out = np.zeros(image.shape, dtype=np.int16)
    best = np.zeros(image.shape, dtype=np.float32)
    for values in options.structures.values():
        mask = np.isin(reference.array, values)
        if not mask.any():
            continue
        clicks = simulate_extreme_points(reference.with_array(mask), options.noise_mm, seed=rng.integers(2**32))
        foreground = extreme_points_pseudolabel(image, ExtremePoints.from_points(clicks, image), **params).probabilities[1]
        wins = (foreground > 0.5) & (foreground > best)
        out[wins] = values[0]
        best[wins] = foreground[wins]
    return image.with_array(out)
