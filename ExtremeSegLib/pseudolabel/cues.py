"""Cue channels computed from clicks, fed to the networks beside the image.

- :func:`point_heatmaps`: Gaussian blobs at the clicks (paper 000's extra input channel), peak 1.
- :func:`confidence_map`: paper 002's confidence map from extreme points, generalised from 2D (4 points,
  2 segments) to 3D (6 points, 3 segments).

Both are computed in RAS millimetres from each voxel centre, so they honour spacing and direction.
"""

from __future__ import annotations

import numpy as np

from ..annotations import ExtremePoints
from ..errors import InputError
from ..volume import Volume

#: voxels computed at once (bounds the memory of the confidence map on large grids)
_CHUNK_VOXELS = 4_000_000


def point_heatmaps(points_ras, geometry: Volume, sigma_mm: float = 3.0) -> np.ndarray:
    """Gaussian blobs at the clicks: the max over the points of ``exp(-d^2 / (2 sigma^2))``.

    Each blob is computed only in its 4-sigma window; values beyond 4 sigma (below ``exp(-8)``) are 0.

    Parameters
    ----------
    points_ras : array_like, shape (N, 3)
        Points in RAS mm.
    geometry : Volume
        The grid the heatmap lies on (shape ``(I, J, K)``, IJK-to-RAS in mm).
    sigma_mm : float, optional
        Standard deviation of each blob in mm (> 0).

    Returns
    -------
    ndarray of float32, shape (I, J, K)
        Peak 1 at each point; ``d`` is the distance in mm from the voxel centre to the point.
    """
    pts = np.asarray(points_ras, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(pts)):
        raise InputError("point heatmap: a point has a NaN or infinite coordinate")
    if not sigma_mm > 0:
        raise InputError(f"point heatmap: sigma must be positive (mm), got {sigma_mm}")
    out = np.zeros(geometry.shape, dtype=np.float32)
    reach_mm = 4.0 * sigma_mm
    half = np.ceil(reach_mm / geometry.spacing).astype(int)  # |delta index_a| <= |delta mm| / spacing_a
    shape = np.asarray(geometry.shape)
    for p in pts:
        centre = np.round(geometry.ras_to_index(p)).astype(int)
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, shape)
        if np.any(hi <= lo):
            continue  # the blob does not reach the grid
        idx = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1)
        d2 = np.sum((geometry.index_to_ras(idx) - p) ** 2, axis=-1)
        blob = np.where(d2 <= reach_mm ** 2, np.exp(-d2 / (2.0 * sigma_mm ** 2)), 0.0).astype(np.float32)
        window = out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        np.maximum(window, blob, out=window)
    return out


def _segment_frame(extreme: ExtremePoints):
    """Per segment: its ends a, b (RAS), unit direction u, length, and the centre's coordinate along it.

    The centre c is the point closest (least squares) to the three lines through the segments: the 3D
    counterpart of the 2D paper's intersection of the two segments (which generally do not meet in 3D).
    """
    ends = np.asarray(extreme.ras, dtype=float)  # (3, 2, 3)
    a, b = ends[:, 0], ends[:, 1]
    length = np.linalg.norm(b - a, axis=1)
    u = (b - a) / np.maximum(length, 1e-9)[:, None]
    projector = np.eye(3)[None] - u[:, :, None] * u[:, None, :]  # onto each line's normal plane
    lhs = projector.sum(axis=0)
    rhs = np.einsum("sij,sj->i", projector, a)
    centre = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    t_centre = np.clip(np.einsum("si,si->s", centre[None] - a, u), 0.0, length)
    return a, u, length, t_centre


def confidence_map(extreme: ExtremePoints, geometry: Volume, min_spread_mm: float | None = None) -> np.ndarray:
    """Paper 002's confidence that a voxel lies on the object, generalised to 3D.

    For each of the 3 segments joining opposite extreme points, d_s = distance (mm) from the voxel to the
    segment divided by the object's spread along the segment on the voxel's side of the centre c (the
    distance from c's projection to that end; 002's Algorithm 1). The 2D formula f = 1 / (1 + d1 * d2),
    d1 = min and d2 = root-sum-of-squares of the normalised distances, is applied over the 3 segments:
    f = 1 on every segment, and it decays with the distance from them, faster where the object is thin.

    Parameters
    ----------
    extreme : ExtremePoints
        The 6 clicks (RAS mm).
    geometry : Volume
        The grid of the map (shape ``(I, J, K)``).
    min_spread_mm : float, optional
        Lower bound of the spreads (mm), so that a centre close to one end does not make f collapse on that
        side; default: the largest voxel size.

    Returns
    -------
    ndarray of float32, shape (I, J, K)
        Values in (0, 1].
    """
    a, u, length, t_centre = _segment_frame(extreme)
    floor = float(geometry.spacing.max()) if min_spread_mm is None else float(min_spread_mm)
    spread_lo = np.maximum(t_centre, floor)
    spread_hi = np.maximum(length - t_centre, floor)
    out = np.empty(geometry.shape, dtype=np.float32)
    nj, nk = geometry.shape[1], geometry.shape[2]
    step = max(1, _CHUNK_VOXELS // (nj * nk))
    jk = np.stack(np.meshgrid(np.arange(nj), np.arange(nk), indexing="ij"), axis=-1).reshape(-1, 2)
    for i0 in range(0, geometry.shape[0], step):
        i1 = min(i0 + step, geometry.shape[0])
        ii = np.repeat(np.arange(i0, i1), nj * nk)
        idx = np.column_stack([ii, np.tile(jk, (i1 - i0, 1))]).astype(float)
        x = geometry.index_to_ras(idx)  # (M, 3)
        d = np.empty((3, len(x)))
        for s in range(3):
            t = (x - a[s]) @ u[s]
            closest = a[s] + np.clip(t, 0.0, length[s])[:, None] * u[s]
            dist = np.linalg.norm(x - closest, axis=1)
            d[s] = dist / np.where(t > t_centre[s], spread_hi[s], spread_lo[s])
        d1 = d.min(axis=0)
        d2 = np.sqrt(np.sum(d * d, axis=0))
        out[i0:i1] = (1.0 / (1.0 + d1 * d2)).reshape(i1 - i0, nj, nk)
    return out
