"""Pictures of a result: reference and predicted contours over the image on three orthogonal slices.

Plain numpy RGB written as PNG with imageio (a scikit-image dependency), so the core needs no matplotlib.
Slices are drawn with their physical aspect ratio (a 10 mm ACDC slice is ten times taller than a 1 mm pixel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..volume import Volume

REFERENCE_RGB = (0, 230, 0)
PREDICTION_RGB = (255, 40, 40)
BOTH_RGB = (255, 230, 0)
_GAP_PX = 4


def _grey(image: np.ndarray) -> np.ndarray:
    """Image -> uint8 with a 1-99 percentile window."""
    values = np.asarray(image, dtype=np.float32)
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    scaled = np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return np.nan_to_num(scaled * 255).astype(np.uint8)


def _contour(labels: np.ndarray) -> np.ndarray:
    """Pixels of a labelled region whose 4-neighbour has another label (inner edge of each region)."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        step = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= step
        edge[tuple(hi)] |= step
    # the grid's edge closes regions that touch it
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    return edge & (labels > 0)


def _resample_index(n: int, spacing: float, pixel_mm: float) -> np.ndarray:
    """Source voxel of each output pixel along one axis (nearest neighbour at ``pixel_mm``)."""
    size = max(1, int(round(n * spacing / pixel_mm)))
    return np.minimum(((np.arange(size) + 0.5) * pixel_mm / spacing).astype(int), n - 1)


def _view_box(image: Volume, labels, margin_mm: float):
    """Index box ``(lo, hi)`` around the labelled voxels of any of ``labels``, grown by ``margin_mm`` or by
    a quarter of the object's extent (whichever is larger) per side; the whole grid when nothing is labelled."""
    shape = np.asarray(image.shape)
    union = np.zeros(image.shape, dtype=bool)
    for array in labels:
        union |= array > 0
    if not union.any():
        return np.zeros(3, dtype=int), shape
    idx = np.argwhere(union)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    pad = np.ceil(np.maximum(margin_mm, 0.25 * (hi - lo) * image.spacing) / image.spacing).astype(int)
    return np.maximum(lo - pad, 0), np.minimum(hi + pad, shape)


def overlay_slices(image: Volume, reference, prediction, margin_mm: float = 20.0,
                   min_size_px: int = 256) -> np.ndarray:
    """RGB picture (H, W, 3) uint8: three slices through the object side by side.

    ``reference`` and ``prediction`` are integer label maps on ``image``'s grid (0 = background); the edges
    of their regions are drawn green (reference), red (prediction), yellow where they coincide.
    The view is cropped to the labelled voxels of both plus ``margin_mm`` and centred on the reference's
    centroid (the prediction's when the reference is empty). Panels, left to right: the planes normal to
    voxel axes K, J and I, each with the other higher axis pointing up. Pixels are square in mm (the
    physical aspect ratio); the largest panel side is at least ``min_size_px``.
    """
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    lo, hi = _view_box(image, (reference, prediction), margin_mm)
    view = tuple(slice(a, b) for a, b in zip(lo, hi))
    reference, prediction = reference[view], prediction[view]
    image = image.crop(lo, hi)
    centre = (np.asarray(image.shape) - 1) / 2.0
    for labels in (reference, prediction):
        if labels.any():
            centre = np.argwhere(labels > 0).mean(axis=0)
            break
    centre = np.clip(np.rint(centre).astype(int), 0, np.asarray(image.shape) - 1)
    spacing = image.spacing
    extent_mm = np.asarray(image.shape) * spacing
    pixel_mm = min(float(spacing.min()), float(extent_mm.max()) / min_size_px)
    grey = _grey(image.array)

    panels = []
    for normal in (2, 1, 0):
        u, v = [a for a in range(3) if a != normal]
        take = [slice(None)] * 3
        take[normal] = centre[normal]
        rows = _resample_index(image.shape[v], spacing[v], pixel_mm)[::-1]  # higher index up
        cols = _resample_index(image.shape[u], spacing[u], pixel_mm)

        def plane(volume, take=tuple(take), rows=rows, cols=cols):  # bound now: B023
            return volume[take].T[np.ix_(rows, cols)]  # (v, u) after the transpose

        rgb = np.repeat(plane(grey)[..., None], 3, axis=2)
        ref_edge, pred_edge = _contour(plane(reference)), _contour(plane(prediction))
        rgb[ref_edge] = REFERENCE_RGB
        rgb[pred_edge] = PREDICTION_RGB
        rgb[ref_edge & pred_edge] = BOTH_RGB
        panels.append(rgb)

    height = max(p.shape[0] for p in panels)
    padded = []
    for p in panels:
        top = (height - p.shape[0]) // 2
        canvas = np.zeros((height, p.shape[1] + _GAP_PX, 3), dtype=np.uint8)
        canvas[top:top + p.shape[0], :p.shape[1]] = p
        padded.append(canvas)
    return np.concatenate(padded, axis=1)[:, :-_GAP_PX]


def write_overlay_png(path, image: Volume, reference, prediction, **kwargs) -> Path:
    """Write :func:`overlay_slices` as a PNG file; returns its path."""
    import imageio.v3 as iio

    from ..io.volumes import write_atomically

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = overlay_slices(image, reference, prediction, **kwargs)
    return write_atomically(path, True, lambda tmp: iio.imwrite(tmp, picture))
