"""Segmentation quality measures against a reference."""

from __future__ import annotations

import numpy as np


def dice(prediction, reference) -> float:
    """Dice overlap of two binary masks (nonzero = object); 1.0 when both are empty."""
    p = np.asarray(prediction) > 0
    r = np.asarray(reference) > 0
    denom = int(p.sum()) + int(r.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, r).sum()) / denom
