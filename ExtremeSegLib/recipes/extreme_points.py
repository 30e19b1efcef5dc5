"""Paper 000: extreme points -> random-walker pseudo-label -> 3D FCN with a point-heatmap channel, soft Dice
-> random-walker regularisation rounds.

Steps 1-2 (the first pseudo-label) are :func:`ExtremeSegLib.pseudolabel.extreme_points.extreme_points_pseudolabel`
on each case's model grid (its keywords come from the job's ``pseudolabel`` section). Step 3 is the shared
engine (inputs: image + Gaussian heatmaps of the clicks; loss: soft Dice on the probabilities). Step 4
(:func:`~ExtremeSegLib.refine.random_walker.random_walker_regularisation`): the prediction's foreground
(P >= 0.5) and background are each eroded by ``rounds.erosion_mm`` and the random walker relabels the gap
between them; everything outside the clicks' relaxed box stays background. Departure: the walker in the gap is
also pulled towards the prediction (``rounds.prior_weight``, 0 = the paper's walker), because the plain walker
made the labels worse every round here.
The paper's ImageNet-pretrained 2D encoder is not used (no weights are downloaded).
"""

from __future__ import annotations

import inspect

import numpy as np

from ..pseudolabel.extreme_points import PARAMETER_RANGES, extreme_points_pseudolabel
from ..pseudolabel.label import PseudoLabel
from ..ranges import check_keywords
from ..refine.random_walker import random_walker_regularisation
from .recipe import Recipe


class ExtremePointsRecipe(Recipe):
    """Extreme points (6 clicks per case) -> weakly supervised model that segments with the user's clicks."""

    name = "extreme_points"
    refines = True

    def needs(self, config) -> tuple:
        return ("points",)

    def check(self, config) -> None:
        self.require_one_object(config, "6 clicks bound one object")
        # before the run starts: names, types and ranges of the maker's keywords (not its report of its choice)
        check_keywords(config.pseudolabel, extreme_points_pseudolabel, PARAMETER_RANGES, "pseudolabel",
                       ("device", "chosen"))

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
