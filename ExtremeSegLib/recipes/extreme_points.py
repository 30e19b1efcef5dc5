"""Paper 000: extreme points -> random-walker pseudo-label -> 3D FCN with a point-heatmap channel, soft Dice
-> random-walker regularisation rounds.

Steps 1-2 (the first pseudo-label) are :func:`ExtremeSegLib.pseudolabel.extreme_points.extreme_points_pseudolabel`
on each case's model grid (its keywords come from the job's ``pseudolabel`` section). Step 3 is the shared
engine (inputs: image + Gaussian heatmaps of the clicks; loss: soft Dice on the probabilities). Step 4
(:func:`random_walker_regularisation`): the prediction's foreground (P >= 0.5) and background are each eroded
by ``rounds.erosion_mm`` and the random walker relabels the gap between them; everything outside the clicks'
relaxed box stays background. Departure: the walker in the gap is also pulled towards the prediction
(``rounds.prior_weight``, 0 = the paper's walker), because the plain walker made the labels worse every round here.
The paper's ImageNet-pretrained 2D encoder is not used (no weights are downloaded).
"""

from __future__ import annotations

import inspect

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ..pseudolabel.extreme_points import PARAMETER_RANGES, extreme_points_pseudolabel, normalise_intensities
from ..pseudolabel.label import PseudoLabel
from ..pseudolabel.random_walker import random_walker
from ..ranges import check_keywords
from ..volume import Volume
from .rounds import Recipe


def erode_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Voxels of ``mask`` farther than ``radius_mm`` (Euclidean, honouring spacing) from anything outside it.

    A region thinner than twice the radius keeps its core: the radius is capped at half the region's largest
    inner distance, so each non-empty region still gives seeds.
    """
    if not mask.any():
        return mask.copy()
    inner = ndi.distance_transform_edt(mask, sampling=spacing)
    return inner > min(radius_mm, 0.5 * float(inner.max()))


def random_walker_regularisation(grid: Volume, probabilities: np.ndarray, erosion_mm: float, beta: float = 130.0,
                                 background=None, device="cpu", prior_weight: float = 0.0) -> np.ndarray:
    """Paper 000 step 4: new class probabilities ``(C,) + grid`` from a prediction ``(C,) + grid``.

    Each class's region (argmax) is eroded by ``erosion_mm`` into seeds; the random walker (``beta``, on the
    grid's intensities normalised to 0..1) fills the uncertain band between them. ``background``: voxels that
    are background seeds whatever the prediction says (bool, grid shape). Classes the prediction misses keep
    no seed (and get probability 0). ``prior_weight`` > 0 also pulls every voxel of the band towards the
    prediction itself (the random walker with priors), so that only clear image edges move the boundary.
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


class ExtremePointsRecipe(Recipe):
    """Extreme points (6 clicks per case) -> weakly supervised model that segments with the user's clicks."""

    name = "extreme_points"
    title = "Extreme points (random walker, refinement rounds)"
    annotation = "extreme points"
    refines = True

    def needs(self, config) -> tuple:
        return ("points",)

    def check(self, config) -> None:
        if len(config.classes) != 1:
            raise InputError(f"the extreme_points recipe segments one object per case (6 clicks bound one object); "
                             f"the config lists {len(config.classes)} classes")
        # before the run starts: names, types and ranges of the maker's keywords
        check_keywords(config.pseudolabel, extreme_points_pseudolabel, PARAMETER_RANGES, "pseudolabel", ("device",))

    def initial_label(self, job, case) -> PseudoLabel:
        return extreme_points_pseudolabel(case.frame.grid, case.points, device=job.device.type,
                                          **job.config.pseudolabel)

    def refine(self, job, case, probabilities, label) -> PseudoLabel:
        grid = case.frame.grid
        margin = job.config.pseudolabel.get("box_margin_mm",
                                            inspect.signature(extreme_points_pseudolabel).parameters["box_margin_mm"].default)
        lo, hi = case.points.box_index(grid, margin)
        outside = np.ones(grid.shape, dtype=bool)
        outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
        rounds = job.config.rounds
        walked = random_walker_regularisation(grid, probabilities, rounds.erosion_mm, rounds.beta, outside,
                                              job.device.type, prior_weight=rounds.prior_weight)
        return PseudoLabel(walked, label.weight, grid)
