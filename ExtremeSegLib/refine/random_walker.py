"""Random-walker regularisation between training rounds (paper 000 step 4).

The prediction's class regions are eroded by a radius in mm into seeds, and the random walker
(:func:`ExtremeSegLib.pseudolabel.random_walker.random_walker`) relabels the uncertain band between them.
Departure from the paper: the walker in the band may also be pulled towards the prediction itself
(``prior_weight``), because the plain walker made the labels worse every round here (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

from ..masks import erode_mm, normalise_intensities
from ..pseudolabel.random_walker import random_walker
from ..volume import Volume


def random_walker_regularisation(grid: Volume, probabilities: np.ndarray, erosion_mm: float, beta: float = 130.0,
                                 background=None, device="cpu", prior_weight: float = 0.0) -> np.ndarray:
    """New class probabilities from a network's prediction, by the random walker between eroded regions.

    Each class's region (argmax) is eroded by ``erosion_mm`` into seeds; the random walker fills the band
    between them on the grid's intensities normalised to 0..1. Classes the prediction misses keep no seed
    and get probability 0; a prediction of one class everywhere is returned as that class, one-hot.

    Parameters
    ----------
    grid : Volume
        The image on the model grid, array ``(I, J, K)``, spacing in mm.
    probabilities : ndarray of float, shape (C, I, J, K)
        The network's class probabilities on ``grid``.
    erosion_mm : float
        Erosion radius (mm, honouring spacing) of each class region before it becomes seeds.
    beta : float, optional
        Edge sensitivity of the random walker.
    background : ndarray of bool, shape (I, J, K), optional
        Voxels that are background seeds (class 0) whatever the prediction says.
    device : str or torch.device, optional
        Where the random walker solves.
    prior_weight : float, optional
        > 0 also pulls every voxel of the band towards the prediction (the random walker with priors), so
        that only clear image edges move the boundary; 0 is the paper's plain walker.

    Returns
    -------
    ndarray of float32, shape (C, I, J, K)
        The regularised class probabilities.
    """
    hard = np.argmax(probabilities, axis=0)
    seeds = np.full(grid.shape, -1, dtype=np.int16)
    for c in range(probabilities.shape[0]):
        seeds[erode_mm(hard == c, erosion_mm, grid.spacing)] = c
    if background is not None:
        seeds[background] = 0
    present = np.unique(seeds[seeds >= 0])
    if len(present) < 2:  # nothing to walk between: the prediction is one class everywhere
        out = np.zeros_like(probabilities, dtype=np.float32)
        out[int(present[0]) if len(present) else 0] = 1.0
        return out
    # classes without seeds are left out of the walk (the solver needs a seed per class), then put back at 0
    remap = np.full(probabilities.shape[0], -1, dtype=np.int16)
    remap[present] = np.arange(len(present))
    prior = probabilities[present] / np.maximum(probabilities[present].sum(axis=0, keepdims=True), 1e-6)
    walked = random_walker(normalise_intensities(grid.array), np.where(seeds >= 0, remap[seeds], -1).astype(np.int16),
                           grid.spacing, beta=beta, device=device, prior=prior if prior_weight > 0 else None,
                           prior_weight=prior_weight)
    out = np.zeros(probabilities.shape, dtype=np.float32)
    out[present] = walked
    return out
