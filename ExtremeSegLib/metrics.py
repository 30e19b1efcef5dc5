"""Segmentation quality measures against a reference.

Masks are "nonzero = object". Distances are in millimetres and honour the voxel spacing.
Conventions for empty masks (so that a benchmark never crashes on a missed structure):

==========================  ======  =====  =========  ======
prediction / reference      Dice    HD95   precision  recall
==========================  ======  =====  =========  ======
both empty                  1.0     0.0    1.0        1.0
prediction empty only       0.0     inf    0.0        0.0
reference empty only        0.0     inf    0.0        0.0
==========================  ======  =====  =========  ======
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError

#: the metrics :func:`evaluate` reports, in this order
METRICS = ("dice", "hd95", "precision", "recall")


def _masks(prediction, reference):
    p = np.asarray(prediction) > 0
    r = np.asarray(reference) > 0
    if p.shape != r.shape:
        raise InputError(f"the prediction's shape {p.shape} differs from the reference's {r.shape}; "
                         "resample the prediction onto the reference image first")
    return p, r


def dice(prediction, reference) -> float:
    """Dice overlap of two binary masks (nonzero = object); 1.0 when both are empty."""
    p = np.asarray(prediction) > 0
    r = np.asarray(reference) > 0
    denom = int(p.sum()) + int(r.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, r).sum()) / denom


def iou(prediction, reference) -> float:
    """Intersection over union (Jaccard index) of two binary masks (nonzero = object); 1.0 when both are empty."""
    p, r = _masks(prediction, reference)
    union = int(np.logical_or(p, r).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, r).sum()) / union


def precision(prediction, reference) -> float:
    """Fraction of the predicted voxels that are in the reference (1.0 when both are empty)."""
    p, r = _masks(prediction, reference)
    if not p.any():
        return 1.0 if not r.any() else 0.0
    return float(np.logical_and(p, r).sum() / p.sum())


def recall(prediction, reference) -> float:
    """Fraction of the reference voxels that are predicted (sensitivity; 1.0 when both are empty)."""
    p, r = _masks(prediction, reference)
    if not r.any():
        return 1.0 if not p.any() else 0.0
    return float(np.logical_and(p, r).sum() / r.sum())


def _surface(mask: np.ndarray) -> np.ndarray:
    """Object voxels with a face neighbour outside the object (voxels on the grid's edge included)."""
    return mask & ~ndi.binary_erosion(mask, border_value=0)


def surface_distances(prediction, reference, spacing=(1.0, 1.0, 1.0)):
    """Distances (mm) from each prediction surface voxel to the reference surface, and back.

    Surfaces are the masks' boundary voxels (face connectivity); distances are between voxel centres,
    measured with a Euclidean distance transform that honours ``spacing`` (mm per array axis).
    Returns ``(prediction_to_reference, reference_to_prediction)``; both masks must be non-empty.
    """
    p, r = _masks(prediction, reference)
    if not p.any() or not r.any():
        raise InputError("surface distances need two non-empty masks")
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (p.ndim,) or np.any(spacing <= 0):
        raise InputError(f"spacing must be {p.ndim} positive numbers (mm), got {spacing.tolist()}")
    sp, sr = _surface(p), _surface(r)
    to_reference = ndi.distance_transform_edt(~sr, sampling=spacing)
    to_prediction = ndi.distance_transform_edt(~sp, sampling=spacing)
    return to_reference[sp], to_prediction[sr]


def hd95(prediction, reference, spacing=(1.0, 1.0, 1.0)) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between the two masks' surfaces.

    The larger of the two directed 95th percentiles (prediction to reference and back), as MedPy and
    MONAI compute it. Both empty: 0.0; one empty: ``inf`` (see the module's table).
    """
    p, r = _masks(prediction, reference)
    if not p.any() and not r.any():
        return 0.0
    if not p.any() or not r.any():
        return float("inf")
    a, b = surface_distances(p, r, spacing)
    return float(max(np.percentile(a, 95), np.percentile(b, 95)))


def evaluate(prediction, reference, spacing, structures: dict) -> dict:
    """Per-structure quality of a label map against a reference label map of the same shape.

    ``structures`` maps a name to the label values that make it up (e.g. ``{"hippocampus": [1, 2]}``,
    ``{"RV": [1], "Myo": [2], "LV": [3]}``); the same values are taken from both maps.
    Returns ``{name: {"dice", "hd95" (mm), "precision", "recall"}}``.
    """
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    if prediction.shape != reference.shape:
        raise InputError(f"the prediction's shape {prediction.shape} differs from the reference's "
                         f"{reference.shape}; resample the prediction onto the reference image first")
    if not structures:
        raise InputError('no structures to evaluate; name at least one, e.g. {"object": [1]}')
    out = {}
    for name, values in structures.items():
        values = [int(v) for v in np.atleast_1d(values)]
        p = np.isin(prediction, values)
        r = np.isin(reference, values)
        out[name] = {
            "dice": dice(p, r),
            "hd95": hd95(p, r, spacing),
            "precision": precision(p, r),
            "recall": recall(p, r),
        }
    return out
