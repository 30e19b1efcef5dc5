"""Geodesic (minimum-cost) paths between extreme points.

Paper 000 joins each pair of opposite extreme points by Dijkstra's shortest path with the local image
gradient magnitude as the cost; paper 001 adds a Euclidean length term and scales both terms to 0..1
automatically (``1/gamma_e`` = the largest distance from the start inside the tight box, ``1/gamma_g`` =
the largest gradient magnitude there). Both are available here. Paths are found with scikit-image's
``MCP_Geometric`` (BSD; the GPL-licensed ``dijkstra3d`` was not an option) on the 26-neighbour grid, whose
step lengths honour the voxel spacing: the cost of a step is its length in mm times the mean of the two
voxels' costs, so a constant cost adds the Euclidean length and the gradient term is integrated along the
path in mm. Large regions are searched coarse-to-fine (:func:`shortest_path`).

An optional ``background_probability`` term (001's "deep geodesics", here from any probability map, e.g.
a first random walker or a network) makes paths stay inside the object.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.graph import MCP_Geometric

from ..errors import InputError
from ..masks import block_mean


def gradient_magnitude(image: np.ndarray, spacing=(1.0, 1.0, 1.0), sigma_mm: float = 0.0) -> np.ndarray:
    """Gradient magnitude (central differences), after optional Gaussian smoothing.

    Parameters
    ----------
    image : ndarray, shape (I, J, K)
        Intensities (any units).
    spacing : sequence of 3 floats, optional
        Voxel size in mm along I, J, K: the differences are taken per mm.
    sigma_mm : float, optional
        Smoothing standard deviation in mm (0 = none), converted per axis with ``spacing``.

    Returns
    -------
    ndarray of float32, shape (I, J, K)
        ``|grad image|`` in intensity units per mm (0 along axes of length 1).
    """
    data = np.asarray(image, dtype=np.float32)
    spacing = np.asarray(spacing, dtype=float)
    if sigma_mm > 0:
        data = ndi.gaussian_filter(data, sigma_mm / spacing, mode="nearest")
    parts = [np.gradient(data, spacing[a], axis=a) if data.shape[a] > 1 else np.zeros_like(data) for a in range(3)]
    return np.sqrt(sum(p * p for p in parts)).astype(np.float32)


def geodesic_cost(image: np.ndarray, spacing=(1.0, 1.0, 1.0), start=None, euclidean_weight: float = 1.0,
                  gradient_weight: float = 1.0, auto_scale: bool = True, sigma_mm: float = 0.0,
                  background_probability: np.ndarray | None = None, background_weight: float = 1.0,
                  floor: float = 1e-3, gradient: np.ndarray | None = None) -> np.ndarray:
    """Cost per mm of travel through each voxel.

    ``cost = euclidean_weight * gamma_e + gradient_weight * gamma_g * |grad image| + background_weight * P(bg)
    + floor``. With ``auto_scale`` (paper 001) gamma_e = 1 / (largest distance in mm from ``start`` to any voxel
    of the grid) and gamma_g = 1 / (largest gradient magnitude); otherwise both are 1. ``euclidean_weight=0``
    gives paper 000's pure gradient cost.

    Parameters
    ----------
    image : ndarray, shape (I, J, K)
        Intensities the gradient term is computed from.
    spacing : sequence of 3 floats, optional
        Voxel size in mm along I, J, K (distances and gradients in mm).
    start : sequence of 3 ints, optional
        Voxel index the automatic Euclidean scale is measured from (default: the grid's diagonal).
    euclidean_weight, gradient_weight : float, optional
        Weights of the length and gradient terms.
    auto_scale : bool, optional
        Scale both terms to 0..1 as paper 001 does.
    sigma_mm : float, optional
        Gaussian smoothing (mm) before the gradient; unused when ``gradient`` is given.
    background_probability : ndarray, shape (I, J, K), optional
        P(background) per voxel (clipped to 0..1), weighted by ``background_weight``: keeps paths inside the object.
    background_weight : float, optional
    floor : float, optional
        Added to every voxel so that each step's cost is positive.
    gradient : ndarray, shape (I, J, K), optional
        :func:`gradient_magnitude` of ``image`` if already computed.

    Returns
    -------
    ndarray of float32, shape (I, J, K)
        Cost per mm.
    """
    spacing = np.asarray(spacing, dtype=float)
    grad = gradient_magnitude(image, spacing, sigma_mm) if gradient is None else np.asarray(gradient, np.float32)
    gamma_e, gamma_g = 1.0, 1.0
    if auto_scale:
        if start is not None:
            corners = np.array(np.meshgrid(*[[0, n - 1] for n in grad.shape], indexing="ij")).reshape(3, -1).T
            far = float(np.max(np.linalg.norm((corners - np.asarray(start, dtype=float)) * spacing, axis=1)))
        else:
            far = float(np.linalg.norm((np.asarray(grad.shape) - 1) * spacing))
        gamma_e = 1.0 / max(far, 1e-6)
        gamma_g = 1.0 / max(float(grad.max()), 1e-12)
    cost = euclidean_weight * gamma_e + gradient_weight * gamma_g * grad + floor
    if background_probability is not None:
        bg = np.asarray(background_probability, dtype=np.float32)
        if bg.shape != grad.shape:
            raise InputError(f"background probability {bg.shape} does not match the image {grad.shape}")
        cost = cost + background_weight * np.clip(bg, 0.0, 1.0)
    return cost.astype(np.float32)


def _check_endpoints(cost: np.ndarray, start, end):
    """``start`` and ``end`` as rounded index tuples; :class:`InputError` when one lies outside the grid."""
    start = tuple(int(v) for v in np.round(start))
    end = tuple(int(v) for v in np.round(end))
    for name, p in (("start", start), ("end", end)):
        if any(v < 0 or v >= n for v, n in zip(p, cost.shape)):
            raise InputError(f"geodesic path: the {name} voxel {list(p)} lies outside the {list(cost.shape)} grid")
    return start, end


def _dijkstra(cost: np.ndarray, start, end, spacing) -> np.ndarray:
    """scikit-image's MCP_Geometric from ``start`` until ``end`` is reached; infinite cost = impassable."""
    mcp = MCP_Geometric(cost, fully_connected=True, sampling=tuple(float(s) for s in spacing))
    mcp.find_costs([start], [end])
    return np.asarray(mcp.traceback(end), dtype=np.int64)


def shortest_path(cost: np.ndarray, start, end, spacing=(1.0, 1.0, 1.0), coarse_factors=(1, 1, 1),
                  refine: bool = True) -> np.ndarray:
    """Minimum-cost path between two voxels (26-neighbour steps, step lengths in mm).

    A step costs its length in mm times the mean of the two voxels' costs (scikit-image's ``MCP_Geometric``).
    Dijkstra's search visits every voxel cheaper to reach than the end, most of the region; with
    ``coarse_factors`` above 1 the path is first found on blocks of that many voxels per axis (block-mean cost,
    block sizes in mm), then again at full resolution inside the band of one block's largest size around it:
    the full-resolution path wherever the coarse one found the right corridor, at a fraction of the time
    (within 5 % of the optimal cost on smooth random costs, ``Testing/test_pseudolabel_geodesic.py``).

    Parameters
    ----------
    cost : ndarray, shape (I, J, K)
        Cost per mm of each voxel (finite, positive), e.g. :func:`geodesic_cost`.
    start, end : sequence of 3 numbers
        Voxel indices (rounded) of the path's ends, inside the grid.
    spacing : sequence of 3 floats, optional
        Voxel size in mm per axis.
    coarse_factors : sequence of 3 ints, optional
        Block size per axis of the first, coarse search (all 1: one search at full resolution);
        see :func:`path_grid_factors`.
    refine : bool, optional
        With ``coarse_factors`` above 1: False returns the coarse path at full resolution without the second
        search (its block centres joined by straight steps, :func:`_join`): the corridor, not the best voxels.

    Returns
    -------
    ndarray of int, shape (N, 3)
        Voxel indices, ``start`` first and ``end`` last, consecutive voxels adjacent.
    """
    cost = np.asarray(cost, dtype=np.float64)
    start, end = _check_endpoints(cost, start, end)
    if not np.all(np.isfinite(cost)) or cost.min() <= 0:
        raise InputError("geodesic path: the cost must be finite and positive everywhere")
    spacing = np.asarray(spacing, dtype=float)
    factors = np.asarray(coarse_factors, dtype=int)
    if factors.shape != (3,) or np.any(factors < 1):
        raise InputError(f"geodesic path: coarse_factors must be 3 whole numbers >= 1, got {list(coarse_factors)}")
    if np.all(factors == 1):
        return _dijkstra(cost, start, end, spacing)
    coarse = _dijkstra(block_mean(cost, factors), tuple(np.asarray(start) // factors),
                       tuple(np.asarray(end) // factors), spacing * factors)
    # the band: within one block of the coarse path's block centres (consecutive centres are at most one block
    # diagonal apart, so the band is connected and holds start and end), searched in its bounding box only
    centres = np.minimum(coarse * factors + (factors - 1) // 2, np.asarray(cost.shape) - 1)
    if not refine:
        return _join(np.vstack([start, centres[1:-1], end]))
    radius = float(np.max(factors * spacing))
    reach = np.ceil(radius / spacing).astype(int)
    lo = np.maximum(np.minimum(centres.min(0), np.minimum(start, end)) - reach, 0)
    hi = np.minimum(np.maximum(centres.max(0), np.maximum(start, end)) + reach + 1, cost.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    away = np.ones(tuple(hi - lo), dtype=bool)
    away[tuple((np.vstack([centres, start, end]) - lo).T)] = False
    band = ndi.distance_transform_edt(away, sampling=spacing) <= radius
    local = np.where(band, cost[box], np.inf)
    return _dijkstra(local, tuple(np.asarray(start) - lo), tuple(np.asarray(end) - lo), spacing) + lo


def _join(points: np.ndarray) -> np.ndarray:
    """Voxels ``(N, 3)`` of the straight steps joining consecutive points ``(P, 3)`` (each voxel adjacent to the
    next, 26-neighbours), the first and last point included."""
    pieces = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        steps = int(np.abs(b - a).max())
        if steps:
            t = np.arange(1, steps + 1)[:, None] / steps
            pieces.append(np.round(a + t * (b - a)).astype(np.int64))
    return np.concatenate(pieces)


def path_grid_factors(shape, spacing, size_mm: float, max_voxels: int = 100_000,
                      voxels_across: float = 24.0) -> np.ndarray:
    """Block sizes for the coarse path search of a large region.

    Dijkstra's search visits most of the region, so a region of more than ``max_voxels`` voxels is searched on
    blocks of about equal size in mm that make about that many (finer axes are coarsened first, thick slices
    stay as they are), but never so coarse that the object's size spans fewer than ``voxels_across`` blocks: the
    coarse path only has to find the object's corridor. Regions of up to ``max_voxels`` (the hippocampus, ACDC's
    structures) are searched at full resolution.

    Parameters
    ----------
    shape : sequence of 3 ints
        The region's shape.
    spacing : sequence of 3 floats
        Voxel size in mm per axis.
    size_mm : float
        The object's size (mm), e.g. the smallest distance between opposite clicks.
    max_voxels : int, optional
        The largest region searched at full resolution (> 0).
    voxels_across : float, optional
        Blocks the object's size must still span (> 0).

    Returns
    -------
    ndarray of int, shape (3,)
        Whole numbers >= 1.
    """
    spacing = np.asarray(spacing, dtype=float)
    if not (max_voxels > 0 and voxels_across > 0):
        raise InputError(f"max_voxels and voxels_across must be > 0, got {max_voxels} and {voxels_across}")
    voxels = float(np.prod(shape))
    if voxels <= max_voxels:
        return np.ones(3, dtype=int)
    block_mm = min(float(spacing.min()) * (voxels / max_voxels) ** (1.0 / 3.0), size_mm / voxels_across)
    return np.maximum(np.round(block_mm / spacing), 1).astype(int)


def extreme_point_paths(image: np.ndarray, extreme_index: np.ndarray, spacing=(1.0, 1.0, 1.0),
                        coarse_factors=(1, 1, 1), refine: bool = True, **cost_params) -> list:
    """The 3 minimum-cost paths joining each pair of opposite extreme points.

    Parameters
    ----------
    image : ndarray, shape (I, J, K)
        Intensities.
    extreme_index : ndarray, shape (3, 2, 3)
        Voxel indices of the pairs (as ``ExtremePoints.index``), rounded and clipped to the grid.
    spacing : sequence of 3 floats, optional
        Voxel size in mm per axis.
    coarse_factors : sequence of 3 ints, optional
        See :func:`shortest_path`.
    refine : bool, optional
        See :func:`shortest_path`.
    **cost_params
        Passed to :func:`geodesic_cost` (the automatic scaling uses each path's start); its ``gradient``, when
        given, saves computing :func:`gradient_magnitude` again (``sigma_mm`` is then unused).

    Returns
    -------
    list of 3 ndarrays of int, shape (N_a, 3)
        The paths' voxel indices, one per pair.
    """
    extreme_index = np.clip(np.round(np.asarray(extreme_index, dtype=float)), 0, np.asarray(image.shape) - 1)
    sigma_mm = cost_params.pop("sigma_mm", 0.0)
    gradient = cost_params.pop("gradient", None)
    gradient = gradient_magnitude(image, spacing, sigma_mm) if gradient is None else gradient
    per_start = cost_params.get("auto_scale", True)  # the Euclidean scale depends on each path's start
    shared = None if per_start else geodesic_cost(image, spacing, gradient=gradient, **cost_params)
    paths = []
    for lo, hi in extreme_index.astype(int):
        cost = geodesic_cost(image, spacing, start=lo, gradient=gradient, **cost_params) if per_start else shared
        paths.append(shortest_path(cost, lo, hi, spacing, coarse_factors, refine))
    return paths
