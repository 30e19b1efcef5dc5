"""Inter-extreme-point geodesics for a training batch (paper 001, Sec. 3.2), recomputed at every iteration.

Each pair of opposite clicks is joined by the minimum-cost path inside the tight box through the clicks, with the
cost per mm of :func:`~ExtremeSegLib.pseudolabel.geodesic.geodesic_cost`: Euclidean length + image gradient
(both scaled to 0..1 automatically, the paper's policy) + the network's current background probability ("deep
geodesics"). The voxels on the paths are the recipe's foreground supervision.

Clicks travel through patch sampling and augmentation as a *click-code* channel: 0 everywhere except the click
voxels, which hold ``2 * axis + end + 1`` (1..6; ``end`` 0 for the low and 1 for the high click of the pair along
``axis``). Flips and crops move the codes with the image; a pair whose click fell outside the patch is skipped.
Paths are found with scikit-image's ``MCP_Geometric`` (a Cython Dijkstra on the 26-neighbour grid, BSD): on the
recipes' boxes it takes tens of ms per path on one CPU core (``benchmarks/train_inextremis.py`` measures it).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .geodesic import geodesic_cost, gradient_magnitude, shortest_path

#: the cost variants of the paper's ablation: which terms the path length adds up
GEODESIC_COSTS = {
    "gradient": dict(euclidean=False, network=False),
    "gradient_euclidean": dict(euclidean=True, network=False),
    "deep": dict(euclidean=True, network=True),
}


def click_codes(extreme_index: np.ndarray, shape) -> np.ndarray:
    """The click-code volume (uint8, ``shape``) of 6 clicks.

    Parameters
    ----------
    extreme_index : (3, 2, 3) voxel indices of the pairs (as ``ExtremePoints.index``), rounded and clipped to
        the grid
    shape : the grid's shape (I, J, K)
    """
    codes = np.zeros(tuple(shape), dtype=np.uint8)
    index = np.clip(np.round(np.asarray(extreme_index, dtype=float)), 0, np.asarray(shape) - 1).astype(int)
    for axis in range(3):
        for end in range(2):
            codes[tuple(index[axis, end])] = 2 * axis + end + 1
    return codes


def decode_clicks(codes: np.ndarray) -> list:
    """The pairs present in a click-code patch: a list of ``(axis, start, end)`` with voxel index arrays (3,)."""
    codes = np.rint(np.asarray(codes)).astype(int)
    pairs = []
    for axis in range(3):
        ends = [np.argwhere(codes == 2 * axis + end + 1) for end in range(2)]
        if len(ends[0]) and len(ends[1]):
            pairs.append((axis, ends[0][0], ends[1][0]))
    return pairs


def geodesic_paths_mask(image: np.ndarray, codes: np.ndarray, box: np.ndarray, spacing_mm=(1.0, 1.0, 1.0),
                        background_probability: np.ndarray = None, cost: str = "deep") -> np.ndarray:
    """Voxels on the geodesics between the opposite clicks of one patch (bool, ``image.shape``).

    Parameters
    ----------
    image : (I, J, K) float, the (normalised) image patch
    codes : (I, J, K) click codes (see the module docstring)
    box : (I, J, K) bool or 0/1, the tight box through the clicks (the paths' domain), as seen in this patch
    spacing_mm : voxel size in mm
    background_probability : (I, J, K) in [0, 1], the network's background probability (needed by ``deep``)
    cost : one of :data:`GEODESIC_COSTS`
    """
    if cost not in GEODESIC_COSTS:
        raise InputError(f"unknown geodesic cost {cost!r}; choose one of {sorted(GEODESIC_COSTS)}")
    terms = GEODESIC_COSTS[cost]
    if terms["network"] and background_probability is None:
        raise InputError("deep geodesics need the network's background probability")
    mask = np.zeros(image.shape, dtype=bool)
    inside = np.argwhere(np.asarray(box) > 0.5)
    pairs = decode_clicks(codes)
    if not len(inside) or not pairs:
        return mask
    lo, hi = inside.min(axis=0), inside.max(axis=0) + 1
    region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub_image = np.asarray(image, dtype=np.float32)[region]
    gradient = gradient_magnitude(sub_image, spacing_mm)
    sub_background = None if not terms["network"] else np.asarray(background_probability, np.float32)[region]
    sub_mask = mask[region]
    for _, start, end in pairs:
        start, end = np.clip(start - lo, 0, hi - lo - 1), np.clip(end - lo, 0, hi - lo - 1)
        path_cost = geodesic_cost(sub_image, spacing_mm, start=start, euclidean_weight=float(terms["euclidean"]),
                                  gradient=gradient, background_probability=sub_background)
        path = shortest_path(path_cost, start, end, spacing_mm)
        sub_mask[tuple(path.T)] = True
    return mask


def batch_geodesic_masks(images: np.ndarray, codes: np.ndarray, boxes: np.ndarray, spacing_mm,
                         background_probability: np.ndarray = None, cost: str = "deep") -> np.ndarray:
    """:func:`geodesic_paths_mask` for each patch of a batch: ``(B, I, J, K)`` arrays in, bool ``(B, I, J, K)`` out."""
    return np.stack([
        geodesic_paths_mask(images[n], codes[n], boxes[n], spacing_mm,
                            None if background_probability is None else background_probability[n], cost)
        for n in range(len(images))
    ])
