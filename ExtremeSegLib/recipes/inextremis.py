"""Paper 001 (InExtremIS): extreme points at training time only -> a fully automatic model, trained end to end.

Supervision comes from the 6 clicks of each training volume and nothing else:

- background: every voxel outside the tight box through the clicks relaxed by ``box_margin_mm`` (mm per side;
  default 2 mm, the paper's 4 voxels of its 0.4-0.5 mm in-plane scans; the margin only has to cover click error,
  and every mm beyond it is unlabelled room that a box-shaped model fills: on a hippocampus validation subset of
  the training split 2 mm scored 0.371 Dice against 0.286 with 4 mm, ``docs/benchmarks.md``);
- foreground: the 6 clicks, and the geodesics joining each pair of opposite clicks inside the tight box,
  recomputed from the current network at every training step (cost: Euclidean + image gradient + the network's
  background probability, the paper's automatic scaling; :mod:`~ExtremeSegLib.pseudolabel.deep_geodesics`);
- every other voxel is unlabelled (trust 0).

The loss (:class:`~ExtremeSegLib.training.geodesic_objective.GeodesicObjective`) is Dice + cross-entropy +
class-balanced focal loss on the labelled voxels plus ``crf_weight`` times the CRF regularised loss over the whole
patch (:mod:`~ExtremeSegLib.training.crf_loss`). One training round, no refinement.

The network sees the whole image (no crop to the clicks, no click channels), so the model file says
``"clicks_at_inference": false`` and ``extremeseg predict --model M --image I --out O.seg.nrrd`` needs no points.
The recipe's defaults (:attr:`InExtremISRecipe.defaults`, under the job's own keys): no click inputs, the paper's
loss, no rotation or scaling (the clicks ride along with the patch as a click-code channel, which flips and crops keep
exact), no clipping of predictions to clicks. Settings live in the job's ``pseudolabel`` section
(:class:`InExtremISSettings`); ``geodesics`` and ``crf_weight`` give the paper's ablation. Example::

    {"recipe": "inextremis", "output": "run",
     "classes": [{"name": "hippocampus", "label_values": [1, 2]}],
     "cases": [{"image": "c1.nii.gz", "points": "c1.mrk.json"}, ...],
     "pseudolabel": {"geodesics": "deep", "crf_weight": 1e-4}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import InputError
from ..pseudolabel.deep_geodesics import GEODESIC_COSTS, click_codes
from ..pseudolabel.extreme_points import extreme_points_pseudolabel
from ..pseudolabel.label import PseudoLabel
from ..training import crf_loss, distributed
from ..training.geodesic_objective import GeodesicObjective
from .config import from_plain
from .recipe import Recipe


@dataclass(frozen=True)
class InExtremISSettings:
    """The ``pseudolabel`` section of an InExtremIS job (defaults: the paper's).

    ``box_margin_mm``: the tight box's relaxation (mm per side) beyond which voxels are background.
    ``geodesics``: the path cost (``deep``: Euclidean + gradient + network; ``gradient_euclidean``; ``gradient``) or
    ``None`` for no paths. ``crf_weight``: lambda of the CRF loss (0 = none), with ``crf_sigma_mm`` (spatial, mm)
    and ``crf_sigma_intensity`` (the network's normalised intensity units).
    """

    box_margin_mm: float = 2.0
    geodesics: Optional[str] = "deep"
    crf_weight: float = crf_loss.WEIGHT
    crf_sigma_mm: float = crf_loss.SIGMA_MM
    crf_sigma_intensity: float = crf_loss.SIGMA_INTENSITY

    def __post_init__(self):
        if self.geodesics is not None and self.geodesics not in GEODESIC_COSTS:
            raise InputError(f"pseudolabel.geodesics must be one of {sorted(GEODESIC_COSTS)} or null, "
                             f"got {self.geodesics!r}")
        if not self.box_margin_mm >= 0:
            raise InputError(f"pseudolabel.box_margin_mm must be >= 0, got {self.box_margin_mm}")
        if not (self.crf_weight >= 0 and self.crf_sigma_mm > 0 and self.crf_sigma_intensity > 0):
            raise InputError("pseudolabel: crf_weight must be >= 0, crf_sigma_mm and crf_sigma_intensity > 0")


class InExtremISRecipe(Recipe):
    """Extreme points (6 clicks per training case) -> fully automatic model (no clicks at inference)."""

    name = "inextremis"
    refines = False
    defaults = {"training": {"loss": "dice_ce_focal", "augmentation": {"rotate_probability": 0.0}}}

    @staticmethod
    def settings(config) -> InExtremISSettings:
        return from_plain(InExtremISSettings, config.pseudolabel, "pseudolabel")

    def needs(self, config) -> tuple:
        return ()  # training cases need points (checked below); validation cases, as at inference, only an image

    def check(self, config) -> None:
        self.settings(config)
        self.require_one_object(config, "6 clicks bound one object")
        self.require_training_file(config, "points", "trains from the 6 extreme points of every training case")
        self.require_no_click_inputs(config, "trains a fully automatic model (no clicks at inference)")
        if config.postprocess.clip_to_points:
            raise InputError("the inextremis model gets no clicks at inference: set \"postprocess\": "
                             "{\"clip_to_points\": false}")
        for key in ("rotate_probability", "scale_probability"):  # resampling a patch blurs its click code
            if config.training.augment and getattr(config.training.augmentation, key) > 0:
                raise InputError("the inextremis recipe carries the clicks through augmentation, which rotations "
                                 f"and scaling would blur: set training.augmentation.{key} to 0")

    def initial_label(self, job, case) -> PseudoLabel:
        """Background outside the relaxed box and foreground at the clicks (trusted); the tight box is shown as
        foreground but untrusted (what the round table scores as the pseudo-label)."""
        grid = case.frame.grid
        settings = self.settings(job.config)
        tight = self._box(case, 0.0)
        relaxed = self._box(case, settings.box_margin_mm)
        clicks = click_codes(case.points.index(grid), grid.shape) > 0
        foreground = (tight | clicks).astype(np.float32)
        weight = (~relaxed | clicks).astype(np.float32)
        return PseudoLabel(np.stack([1.0 - foreground, foreground]), weight, grid)

    def planning_labels(self, job, cases, labels, progress) -> list:
        """The extreme-point maker's pseudo-label of each case's clicks (its defaults: the ``extreme_points``
        recipe's round 0). The round-0 labels trust only the clicks as foreground, which the planner reads as a
        structure a few mm across (ACDC LV: 2.9 mm, a 1.445 mm grid where full supervision planned 2.427 mm), so
        the grid would be finer than the object needs and the runs not comparable at equal budget."""
        return distributed.map_cases(
            lambda case: extreme_points_pseudolabel(case.frame.grid, case.points, device=job.device.type), cases,
            progress, "object-sized labels for planning the grid")

    def training_target(self, job, case, label) -> np.ndarray:
        grid = case.frame.grid
        extra = np.stack([self._box(case, 0.0), click_codes(case.points.index(grid), grid.shape)]).astype(np.float32)
        return np.concatenate([label.probabilities, extra])

    def loss(self, job) -> GeodesicObjective:
        settings = self.settings(job.config)
        return GeodesicObjective(job.inputs.spacing_mm, settings.geodesics, settings.crf_weight, settings.crf_sigma_mm,
                                 settings.crf_sigma_intensity, job.config.training.loss)

    @staticmethod
    def _box(case, margin_mm: float) -> np.ndarray:
        grid = case.frame.grid
        lo, hi = case.points.box_index(grid, margin_mm)
        box = np.zeros(grid.shape, dtype=bool)
        box[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
        return box
