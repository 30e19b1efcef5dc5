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
from ..masks import close_mm, convex_slices, fill_enclosed_holes, keep_connected_to, normalise_intensities
from ..ranges import AT_LEAST_0, COUNT, POSITIVE
from ..volume import Volume
from .adaptive import CLEAR_CONTRAST, background_reach_mm, has_thick_slices, path_contrast, regime, wants_convex
from .cues import confidence_map
from .geodesic import extreme_point_paths, gradient_magnitude, path_grid_factors
from .label import PseudoLabel
from .random_walker import memory_estimate, random_walker

#: refuse regions whose random walker would need more memory than this (bytes); see ``memory_limit_bytes``
DEFAULT_MEMORY_LIMIT = 4 * 1024 ** 3

#: large regions: the re-routing rounds search their paths on blocks making up to this many times fewer voxels
#: than the final search's (``path_search_voxels``), the object still this many blocks across (the final search:
#: 24); 1 and 24 search them on the final search's blocks
ROUND_SEARCH_SHRINK = 8
ROUND_VOXELS_ACROSS = 12.0

#: numeric parameters of :func:`extreme_points_pseudolabel` -> the values they accept (the command line, the
#: job config's ``pseudolabel`` section and ``benchmark --option`` check against the same table)
#: (``background_distance_mm`` is a number, the word "off" or None: the maker checks it itself)
PARAMETER_RANGES = {
    "box_margin_mm": AT_LEAST_0, "path_radius_mm": AT_LEAST_0, "path_radius_fraction": POSITIVE,
    "euclidean_weight": AT_LEAST_0, "gradient_weight": AT_LEAST_0,
    "gradient_sigma_mm": AT_LEAST_0, "path_intensity_weight": AT_LEAST_0, "path_intensity_rounds": COUNT,
    "path_search_voxels": COUNT, "beta": POSITIVE, "conductance_power": AT_LEAST_0,
    "intensity_prior_weight": AT_LEAST_0, "shape_prior_weight": AT_LEAST_0, "closing_fraction": AT_LEAST_0,
    "tol": POSITIVE, "clear_contrast": POSITIVE, "memory_limit_bytes": POSITIVE,
}


def near_paths(shape, paths, spacing, radius_mm: float) -> np.ndarray:
    """Voxels within a distance of any voxel of the paths (Euclidean, honouring spacing).

    One distance transform per path, in its bounding box grown by the radius, not in the whole region: a path
    runs along one axis, so its box is a thin slab (exact: every voxel within the radius lies in that box).

    Parameters
    ----------
    shape : sequence of 3 ints
        The region's shape ``(I, J, K)``.
    paths : sequence of ndarrays of int, shape (N_a, 3)
        Voxel indices of each path in the region (an empty path adds nothing).
    spacing : sequence of 3 floats
        Voxel size in mm per axis.
    radius_mm : float
        The distance (mm); 0 gives the path voxels themselves.

    Returns
    -------
    ndarray of bool, shape (I, J, K)
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
    """Random-walker seeds on a region's grid from the geodesic paths.

    The ends of each path are extreme points, on the object's surface: only path voxels at least
    ``path_radius_mm`` from both ends are dilated, so the seeds do not spill out of the object there (the path
    itself stays a seed all along).

    Parameters
    ----------
    shape : sequence of 3 ints
        The region's shape ``(I, J, K)``.
    paths : sequence of ndarrays of int, shape (N_a, 3)
        Voxel indices of each path in the region.
    spacing : sequence of 3 floats
        Voxel size in mm per axis.
    relaxed_lo, relaxed_hi : sequence of 3 ints
        The relaxed box inside the region (voxel indices, ``hi`` exclusive).
    path_radius_mm : float
        Dilation radius of the paths (mm).
    background_distance_mm : float, optional
        Voxels farther than this (mm) from every path are background seeds too (``None``: off).

    Returns
    -------
    ndarray of int16, shape (I, J, K)
        1 = dilated paths, 0 = outside the relaxed box or far from the paths, -1 = unknown.
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
    """The object's size for scaled radii: the shortest distance between opposite clicks.

    Parameters
    ----------
    points : ExtremePoints
        The 6 clicks (RAS mm).

    Returns
    -------
    float
        Distance in mm.
    """
    return float(np.linalg.norm(points.ras[:, 1] - points.ras[:, 0], axis=1).min())


def relaxed_box(points: ExtremePoints, image: Volume, margin_mm: float):
    """The tight box through the clicks (``ExtremePoints.box_index``) grown by a margin per side, clipped.

    The margin is rounded to the nearest whole number of voxels per axis (not up), so that a 2 mm margin does
    not add a whole 10 mm slice on anisotropic images.

    Parameters
    ----------
    points : ExtremePoints
        The 6 clicks (RAS mm).
    image : Volume
        The grid the box is on.
    margin_mm : float
        Margin per side (mm).

    Returns
    -------
    lo, hi : ndarray of int, shape (3,)
        Voxel indices of the box on ``image``'s grid (``hi`` exclusive).
    """
    lo, hi = points.box_index(image, 0.0)
    pad = np.floor(margin_mm / image.spacing + 0.5).astype(int)
    return np.maximum(lo - pad, 0), np.minimum(hi + pad, image.shape)


def extreme_points_pseudolabel(image: Volume, points: ExtremePoints, *, box_margin_mm: float = 1.0,
                               path_radius_mm: float | None = None, path_radius_fraction: float | None = None,
                               background_distance_mm: float | str | None = None, euclidean_weight: float = 10.0,
                               gradient_weight: float = 1.0, auto_scale: bool = True, gradient_sigma_mm: float = 1.0,
                               path_intensity_weight: float = 1.0, path_intensity_rounds: int = 2,
                               path_search_voxels: int = 100_000,
                               beta: float | None = None, conductance_power: float = 1.0,
                               intensity_prior_weight: float = 0.0, shape_prior_weight: float = 0.0,
                               keep_connected: bool = True, closing_fraction: float = 0.25, fill_holes: bool = True,
                               convex: bool | None = None, trust: str = "all", solver: str = "auto", tol: float = 1e-3,
                               device="cpu", clear_contrast: float = CLEAR_CONTRAST,
                               memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
                               chosen: dict | None = None) -> PseudoLabel:
    """Pseudo-label (background, foreground) of the object the 6 extreme points bound.

    The settings a user does not give are chosen from the image and the clicks (``beta``, the seed paths'
    radius, the background seeds, the convex prior: :mod:`.adaptive`), so one set of defaults serves the
    hippocampus and ACDC alike (``benchmarks/results/pseudolabel_defaults.md``); explicit values override.

    Parameters
    ----------
    image : Volume
        The image, array ``(I, J, K)`` (finite), spacing in mm.
    points : ExtremePoints
        The 6 clicks (RAS mm).
    box_margin_mm : float, optional
        The tight box through the clicks is relaxed by this much per side (click noise; rounded to whole voxels
        per axis); beyond it everything is background.
    path_radius_mm : float, optional
        The geodesic paths are dilated by this radius (mm) into foreground seeds; ``None`` (default):
        ``path_radius_fraction`` of the smallest distance between opposite clicks, at least 1 mm (paper 000 notes
        that the dilation depends on the organ's size).
    path_radius_fraction : float, optional
        ``None`` (default): chosen from the object's contrast (:mod:`.adaptive`: 0.1 for a clear object, 0.04
        for a faint one).
    background_distance_mm : float or "off", optional
        Voxels farther than this (mm) from every path are background seeds too (``"off"``: none; paper 000 uses
        30 mm for spleen and liver). ``None`` (default): chosen from the data, off for a clear object; for a faint
        one just beyond where a first walk puts the object, the distance from the paths within which 99 % of its
        voxels lie (:func:`.adaptive.background_reach_mm`; one more walk).
    euclidean_weight, gradient_weight, auto_scale : optional
        The path cost terms (:func:`.geodesic.geodesic_cost`), each scaled to 0..1 by paper 001's automatic
        policy, then weighted (a Euclidean weight of 10 keeps the paths from running round the object along its
        dark rim, e.g. the myocardium round the left ventricle).
    gradient_sigma_mm : float, optional
        Gaussian smoothing (mm) of the intensities before the gradient.
    path_intensity_weight : float, optional
        > 0 (default 1; 0 = off) re-routes the paths ``path_intensity_rounds`` times through voxels whose
        intensity looks like the paths' own (cost term ``weight * P(background | intensity)`` from histograms of
        the path voxels and the background seeds, paper 001's deep geodesics with an intensity model in place of
        a network): a path from a click that missed the object (click noise) enters it sooner and stays inside.
        With 2 mm click noise it raised hippocampus pseudo-labels from 0.730 to 0.759 and ACDC LV from 0.839 to
        0.854 (docs/benchmarks.md); it costs one more Dijkstra per path and round, about double the maker's time
        on large regions.
    path_intensity_rounds : int, optional
    path_search_voxels : int, optional
        Regions with more voxels are searched for paths on blocks of whole voxels making about this many, then
        the paths are refined at full resolution in a band around the coarse ones
        (:func:`.geodesic.path_grid_factors`, :func:`.geodesic.shortest_path`): the search visits most of the
        region, so this bounds the paths' time on large regions (the hippocampus and ACDC are searched whole).
        The re-routing rounds' paths, which only feed the intensity model, are searched on blocks making up to
        :data:`ROUND_SEARCH_SHRINK` times fewer voxels (the object :data:`ROUND_VOXELS_ACROSS` blocks across) and not
        refined.
    beta : float, optional
        Random-walker edge sensitivity (paper 000: 130 with scikit-image's convention); the walker
        (:func:`.random_walker.random_walker`) runs on intensities normalised to 0..1 in the region. ``None``
        (default): chosen from the object's contrast (:mod:`.adaptive`: 600 clear, 300 faint).
    conductance_power : float, optional
        Coupling across thick slices (1 measured best on ACDC; 2 = diffusion in mm, 0 = per voxel).
    intensity_prior_weight : float, optional
        Pull towards an intensity model (histograms of the seeds) (0 = off).
    shape_prior_weight : float, optional
        Pull towards the 3D confidence map (:func:`.cues.confidence_map`) (0 = off; helps compact objects, hurts
        curved ones).
    keep_connected : bool, optional
        Keep only the foreground connected to the paths.
    closing_fraction : float, optional
        Close notches narrower than this fraction of the smallest click distance (trabeculae at the ventricle's
        wall).
    fill_holes : bool, optional
        Fill enclosed holes (3D and per slice across the coarsest axis).
    convex : bool, optional
        A shape prior: each slice across the coarsest axis becomes its convex hull (:func:`convex_slices`; for
        objects convex in those slices, e.g. the left ventricle's cavity, never for the myocardium's ring).
        ``None`` (default): taken on stacks of thick slices where the label already fills 90 % of its slices'
        hulls (:func:`.adaptive.wants_convex`).
    trust : {"all", "seeds"}, optional
        Weight 1 everywhere, or weight 1 on seeds only.
    solver, tol, device : optional
        Passed to the random walker.
    clear_contrast : float, optional
        Contrast along the paths (region standard deviations) from which an object counts as clear
        (:func:`.adaptive.regime`).
    memory_limit_bytes : int, optional
        :class:`InputError` when the random walker's estimated memory for the region exceeds it.
    chosen : dict, optional
        Filled with what the maker chose: ``contrast``, ``clear``, ``beta``, ``path_radius_mm``,
        ``background_distance_mm`` (None = off), ``convex``, ``path_grid_factors`` (the final paths' search blocks),
        ``round_path_grid_factors`` (the re-routing rounds').

    Returns
    -------
    PseudoLabel
        Probabilities ``(2, I, J, K)`` and weight ``(I, J, K)`` on ``image``'s grid; P(foreground) = 0 outside
        the relaxed box.
    """
    if trust not in ("all", "seeds"):
        raise InputError(f"trust must be 'all' or 'seeds', got {trust!r}")
    if convex not in (True, False, None):
        raise InputError(f"convex must be true, false or left out (chosen from the data), got {convex!r}")
    numbers = dict(box_margin_mm=box_margin_mm, path_radius_mm=path_radius_mm,
                   path_radius_fraction=path_radius_fraction, euclidean_weight=euclidean_weight,
                   gradient_weight=gradient_weight, gradient_sigma_mm=gradient_sigma_mm,
                   path_intensity_weight=path_intensity_weight, path_intensity_rounds=path_intensity_rounds,
                   path_search_voxels=path_search_voxels, beta=beta, conductance_power=conductance_power,
                   intensity_prior_weight=intensity_prior_weight, shape_prior_weight=shape_prior_weight,
                   closing_fraction=closing_fraction, tol=tol, clear_contrast=clear_contrast,
                   memory_limit_bytes=memory_limit_bytes)
    for name, value in numbers.items():
        if value is not None:
            PARAMETER_RANGES[name].check(value, name)
    if background_distance_mm is not None and background_distance_mm != "off":
        POSITIVE.check(background_distance_mm,
                       "background_distance_mm (a distance in mm, 'off', or left out: chosen from the data)")
    image.require_finite()
    spacing = image.spacing
    size_mm = smallest_extent_mm(points)
    auto_background = background_distance_mm is None
    fixed_background = None if background_distance_mm in (None, "off") else float(background_distance_mm)

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
    factors = path_grid_factors(shape, spacing, size_mm, path_search_voxels)
    # the re-routing rounds' paths only feed the next round's intensity model: on a large region their corridor
    # is found on larger blocks (up to 8x fewer, the object 12 blocks across) and not refined at full resolution
    round_factors = factors if np.all(factors == 1) else path_grid_factors(
        shape, spacing, size_mm, max(path_search_voxels // ROUND_SEARCH_SHRINK, 1), ROUND_VOXELS_ACROSS)
    gradient = gradient_magnitude(intensities, spacing, gradient_sigma_mm)  # shared by every re-routing round

    rounds = int(path_intensity_rounds) if path_intensity_weight > 0 else 0

    def paths_and_seeds(last, **cost):
        # no dilation of the seed paths yet (the intensity model takes the paths alone)
        paths = extreme_point_paths(intensities, clicks, spacing, factors if last else round_factors, refine=last,
                                    euclidean_weight=euclidean_weight, gradient_weight=gradient_weight,
                                    auto_scale=auto_scale, gradient=gradient, **cost)
        return paths, seeds_from_paths(shape, paths, spacing, relaxed_lo - lo, relaxed_hi - lo, 0.0, fixed_background)

    paths, seeds = paths_and_seeds(rounds == 0)
    if not np.any(seeds == 0):
        raise InputError(
            "the extreme points span the whole image, so no voxel is known to be background; "
            "crop the image with some margin around the object, or set background_distance_mm"
        )
    for done in range(1, rounds + 1):
        # the foreground model from the paths alone: their dilation reaches over the object's edge more often
        model = np.where(seeds == 0, 0, -1).astype(np.int16)
        model[tuple(np.concatenate(paths).T)] = 1
        unlike = 1.0 - intensity_likelihood_ratio(intensities, model)
        paths, seeds = paths_and_seeds(done == rounds, background_probability=unlike,
                                       background_weight=path_intensity_weight)

    # settings left to the data (adaptive.py): the object's contrast along its final paths picks the regime
    contrast = path_contrast(intensities, paths)
    picked = regime(contrast, spacing, clear_contrast)
    beta = picked["beta"] if beta is None else beta
    if path_radius_mm is None:
        fraction = picked["path_radius_fraction"] if path_radius_fraction is None else path_radius_fraction
        path_radius_mm = max(1.0, fraction * size_mm)
    seeds = seeds_from_paths(shape, paths, spacing, relaxed_lo - lo, relaxed_hi - lo, path_radius_mm,
                             fixed_background)
    prior, prior_weight = None, intensity_prior_weight + shape_prior_weight
    if prior_weight > 0:
        likely = np.zeros(shape)
        if intensity_prior_weight > 0:
            likely += intensity_prior_weight * intensity_likelihood_ratio(intensities, seeds)
        if shape_prior_weight > 0:
            likely += shape_prior_weight * confidence_map(points, region)
        likely /= prior_weight
        prior = np.stack([1.0 - likely, likely])

    def walk():
        return random_walker(intensities, seeds, spacing, beta=beta, solver=solver, tol=tol, device=device,
                             prior=prior, prior_weight=prior_weight, conductance_power=conductance_power)

    background_distance_mm = fixed_background
    if auto_background and not picked["clear"]:
        # a faint object leaks: background seeds just beyond where a first walk puts it
        first = keep_connected_to(walk()[1] > 0.5, seeds == 1)
        background_distance_mm = background_reach_mm(first, paths, spacing)
        seeds[(seeds < 0) & ~near_paths(shape, paths, spacing, background_distance_mm)] = 0
    probs = walk()
    fg = postprocess(probs[1], seeds, spacing, keep_connected, fill_holes, closing_fraction * size_mm)
    if convex is None and not has_thick_slices(spacing):
        convex = False  # the hulls are only worth computing where the rule could take them
    if convex is not False:
        hard = fg > 0.5
        hull = convex_slices(hard, spacing)
        if convex is None:
            convex = wants_convex(float(hard.sum() / max(int(hull.sum()), 1)), spacing)
        if convex:
            fg[hull & ~hard & (seeds != 0)] = 1.0
    if chosen is not None:
        chosen.update({"contrast": contrast, "clear": picked["clear"], "beta": float(beta),
                       "path_radius_mm": float(path_radius_mm), "background_distance_mm": background_distance_mm,
                       "convex": bool(convex), "path_grid_factors": [int(f) for f in factors],
                       "round_path_grid_factors": [int(f) for f in round_factors]})

    full = np.zeros(image.shape, dtype=np.float32)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    full[sl] = fg
    weight = np.ones(image.shape, dtype=np.float32)
    if trust == "seeds":
        weight[sl] = (seeds >= 0).astype(np.float32)
    return PseudoLabel.from_foreground(full, image, weight)


def postprocess(foreground: np.ndarray, seeds: np.ndarray, spacing, keep_connected: bool = True,
                fill_holes: bool = True, closing_mm: float = 0.0, convex: bool = False) -> np.ndarray:
    """Clean P(foreground) with what the seeds and the object's shape say.

    Disconnected foreground (from the seeds 1) is set to 0; notches narrower than ``closing_mm`` (morphological
    closing), enclosed holes and, with ``convex``, the rest of each slice's convex hull are set to 1; background
    seeds are set to 0. Each step works on the mask P > 0.5 (helpers in :mod:`ExtremeSegLib.masks`).

    Parameters
    ----------
    foreground : ndarray of float, shape (I, J, K)
        P(foreground) on the region.
    seeds : ndarray of int, shape (I, J, K)
        1 = foreground seeds, 0 = background seeds, -1 = unknown (:func:`seeds_from_paths`).
    spacing : sequence of 3 floats
        Voxel size in mm per axis.
    keep_connected, fill_holes, convex : bool, optional
        Which steps run.
    closing_mm : float, optional
        Closing radius (mm; 0 = no closing).

    Returns
    -------
    ndarray of float, shape (I, J, K)
        The cleaned P(foreground) (a copy).
    """
    fg = foreground.copy()
    if keep_connected:
        hard = fg > 0.5
        fg[hard & ~keep_connected_to(hard, seeds == 1)] = 0.0
    if closing_mm > 0:
        hard = fg > 0.5
        fg[close_mm(hard, closing_mm, spacing) & ~hard] = 1.0
    if fill_holes:
        hard = fg > 0.5
        fg[fill_enclosed_holes(hard, spacing) & ~hard] = 1.0
    if convex:
        hard = fg > 0.5
        fg[convex_slices(hard, spacing) & ~hard] = 1.0
    fg[seeds == 0] = 0.0  # outside the relaxed box (and far from the paths) is background by construction
    return fg


def intensity_likelihood_ratio(intensities: np.ndarray, seeds: np.ndarray, bins: int = 32,
                               smoothing_bins: float = 1.5) -> np.ndarray:
    """P(foreground | intensity) from smoothed histograms of the seeds.

    Parameters
    ----------
    intensities : ndarray, shape (I, J, K)
        Intensities normalised to 0..1.
    seeds : ndarray of int, shape (I, J, K)
        1 = foreground, 0 = background, other values ignored.
    bins : int, optional
        Histogram bins over 0..1.
    smoothing_bins : float, optional
        Gaussian smoothing of each histogram (in bins).

    Returns
    -------
    ndarray of float, shape (I, J, K)
        ``h_fg / (h_bg + h_fg)`` at each voxel's intensity.
    """
    # equal bins over 0..1: the bin is floor(x * bins) (np.digitize's binary search is 10x slower)
    which = np.clip((np.asarray(intensities, dtype=np.float32) * bins).astype(np.intp), 0, bins - 1)
    hist = []
    for c in (0, 1):
        h = np.bincount(which[seeds == c], minlength=bins).astype(float)
        h = ndi.gaussian_filter1d(h, smoothing_bins, mode="nearest") + 1e-6
        hist.append(h / h.sum())
    ratio = hist[1] / (hist[0] + hist[1])
    return ratio[which]

