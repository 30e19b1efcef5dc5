"""Weak annotations simulated from ground truth, reproducibly (a seed gives the same clicks)."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .volume import Volume


def simulate_extreme_points(mask: Volume, noise_mm: float = 0.0, seed=None) -> np.ndarray:
    """Six extreme-point clicks (RAS mm, shape (6, 3)) of the object ``mask.array > 0``.

    For each image axis, the two object voxels with the lowest and highest index; among ties (a flat
    extreme face) the voxel closest to the face's centroid, as a user would click its middle.
    ``noise_mm`` adds isotropic Gaussian click noise (standard deviation in mm per RAS coordinate);
    noisy clicks are kept inside the image. Order: I-low, I-high, J-low, J-high, K-low, K-high.
    """
    idx = np.argwhere(np.asarray(mask.array) > 0)
    if idx.size == 0:
        raise InputError("cannot simulate extreme points: the ground-truth mask is empty")
    picks = []
    for axis in range(3):
        for value in (idx[:, axis].min(), idx[:, axis].max()):
            face = idx[idx[:, axis] == value]
            centre = face.mean(axis=0)
            picks.append(face[np.argmin(np.sum((face - centre) ** 2, axis=1))])
    ras = mask.index_to_ras(np.asarray(picks, dtype=float))
    if noise_mm > 0:
        rng = np.random.default_rng(seed)
        ras = ras + rng.normal(0.0, noise_mm, ras.shape)
        index = np.clip(mask.ras_to_index(ras), 0, np.asarray(mask.shape) - 1)
        ras = mask.index_to_ras(index)
    return ras
