"""Full supervision: the same network, inputs and budget as a weak recipe, trained on the dense labels.

This is the reference every weak result is reported against. Its defaults (:attr:`FullySupervisedRecipe.defaults`,
under the job's own keys) are those of the fully automatic recipes: the whole image in, no click channels, no
clipping to clicks, so that a job naming only the recipe, the classes and the cases (image + label) needs no points
file. A reference for the click-based ``extreme_points`` recipe sets that recipe's inputs
(``"inputs": {"cues": ["heatmap"], "crop_to_points": true}``, points per case) so that both models see the same input.
"""

from __future__ import annotations

import numpy as np

from ..pseudolabel.label import PseudoLabel
from .recipe import Recipe


class FullySupervisedRecipe(Recipe):
    """Dense labels (``label`` per case, mapped to classes by ``classes[].label_values``); one training round."""

    name = "fully_supervised"
    refines = False

    def needs(self, config) -> tuple:
        return super().needs(config) + ("label",)

    def initial_label(self, job, case) -> PseudoLabel:
        probabilities = case.reference_on_grid(job.num_classes)
        return PseudoLabel(probabilities, np.ones(probabilities.shape[1:], np.float32), case.frame.grid)
