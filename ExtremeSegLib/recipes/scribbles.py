"""Paper 004: scribbles only -> random-walker seed areas -> partial cross-entropy -> recursions (CRF, MC dropout).

1. Seed areas (:mod:`ExtremeSegLib.pseudolabel.scribbles`): the multi-class random walker from each case's
   scribbles, a class kept where its probability exceeds ``tau``; the rest is unknown (weight 0, no loss).
2. Training (the shared engine) on the seed areas; the paper's loss is cross-entropy (``training.loss: "ce"``,
   partial: unknown voxels are ignored). All classes (e.g. RV, Myo, LV) at once.
3. Recursion (the E step, :meth:`ScribblesRecipe.refine`): the network's prediction relabels every voxel, the seed
   areas clamped: with ``crf`` the dense CRF (:func:`~ExtremeSegLib.refine.crf.dense_crf`) on the prediction, else
   its argmax (the paper's "base"); with ``uncertainty`` ``mc_passes`` forward passes with dropout and Welch's
   t-test between the top two classes' logits reset unsure voxels to unknown. The network is retrained from its
   previous weights (M step) until consecutive labellings agree (``rounds.agreement``) or ``rounds.max_rounds``.

The recipe's defaults (:attr:`ScribblesRecipe.defaults`, under the job's own keys): no click inputs, partial
cross-entropy, dropout 0.5 in the 3 innermost levels. Settings live in the job's ``pseudolabel`` section
(:class:`ScribbleSettings`). Scribble files are label maps (``background_value``, one value per class from
``classes[].label_values``, ``unannotated_value``) or a Slicer ``.seg.nrrd`` whose segments are named after the
classes plus one "background" segment. Example
(``extremeseg train --config job.json``; validation cases need only an image and a label; a slice-wise network
trains on whole slices unless ``training.patch_size`` says otherwise; no flips, as cardiac images share one
orientation)::

    {"recipe": "scribbles", "output": "run",
     "classes": [{"name": "RV", "label_values": [1]}, {"name": "Myo", "label_values": [2]},
                 {"name": "LV", "label_values": [3]}],
     "cases": [{"image": "p1_image.nii.gz", "scribble": "p1_scribble.nii.gz"}, ...],
     "network": {"slice_wise": true},
     "training": {"batch_size": 4, "augmentation": {"flip_probability": 0}},
     "pseudolabel": {"tau": 0.99, "crf": true, "uncertainty": true}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..errors import InputError
from ..pseudolabel.label import PseudoLabel
from ..pseudolabel.scribbles import (
    MODES,
    UNPAINTED,
    random_walker_probabilities,
    read_scribbles,
    seed_areas,
    seeds_to_pseudolabel,
)
from ..refine.crf import PAPER_PIXEL_MM, dense_crf, require_crf_memory
from ..refine.uncertainty import mc_dropout_relabel, mc_dropout_sampler
from .config import from_plain
from .recipe import Recipe, case_name


@dataclass(frozen=True)
class ScribbleSettings:
    """The ``pseudolabel`` section of a scribble job (defaults: the paper's cardiac settings).

    Seed areas: ``tau`` (probability threshold), ``beta`` (random-walker edge sensitivity), ``walk`` ("2d" per slice
    across the thickest axis, or "3d"). Scribble files: ``background_value``, ``unannotated_value`` (default: number
    of classes + 1), ``segment_classes`` (``{segment name: class name}`` for ``.seg.nrrd`` segments not named after
    their class). Recursions: ``crf`` with its weights and sigmas (mm for positions, the network's normalised
    intensities for ``crf_sigma_beta``), ``uncertainty`` with ``mc_passes`` and ``p_threshold``.
    """

    tau: float = 0.99
    beta: float = 130.0
    walk: str = "2d"
    background_value: int = 0
    unannotated_value: Optional[int] = None
    segment_classes: Dict[str, Any] = field(default_factory=dict)
    crf: bool = True
    crf_appearance_weight: float = 5.0
    crf_smoothness_weight: float = 10.0
    crf_sigma_alpha_mm: float = 2 * PAPER_PIXEL_MM
    crf_sigma_beta: float = 0.1
    crf_sigma_gamma_mm: float = 5 * PAPER_PIXEL_MM
    crf_iterations: int = 5
    uncertainty: bool = True
    mc_passes: int = 50
    p_threshold: float = 0.05

    def __post_init__(self):
        checks = [
            (0.0 < self.tau < 1.0, "pseudolabel.tau must lie in (0, 1) (the paper: 0.99)"),
            (self.beta > 0, "pseudolabel.beta must be positive"),
            (self.walk in MODES, f"pseudolabel.walk must be one of {list(MODES)}"),
            (min(self.crf_appearance_weight, self.crf_smoothness_weight) >= 0, "pseudolabel.crf weights must be >= 0"),
            (min(self.crf_sigma_alpha_mm, self.crf_sigma_beta, self.crf_sigma_gamma_mm) > 0,
             "pseudolabel.crf sigmas must be positive"),
            (self.crf_iterations >= 1, "pseudolabel.crf_iterations must be at least 1"),
            (self.mc_passes >= 2, "pseudolabel.mc_passes must be at least 2 (the paper: 50)"),
            (0.0 < self.p_threshold < 1.0, "pseudolabel.p_threshold must lie in (0, 1) (the paper: 0.05)"),
            (all(isinstance(v, str) for v in self.segment_classes.values()),
             "pseudolabel.segment_classes must map segment names to class names"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


class ScribblesRecipe(Recipe):
    """Scribbles (label map or ``.seg.nrrd`` per case) -> fully automatic multi-class model."""

    name = "scribbles"
    refines = True
    # no clicks; the paper's partial cross-entropy; dropout in the innermost levels for MC-dropout uncertainty
    defaults = {"network": {"dropout": 0.5, "dropout_levels": 3}, "training": {"loss": "ce"}}

    def __init__(self):
        self._seeds = {}  # case name -> seed areas on the model grid (int16, -1 unknown)

    @staticmethod
    def settings(config) -> ScribbleSettings:
        return from_plain(ScribbleSettings, config.pseudolabel, "pseudolabel")

    def check(self, config) -> None:
        settings = self.settings(config)
        # only training cases need scribbles (``needs`` would ask the validation cases too: the model needs none)
        self.require_training_file(config, "scribble", "needs image and scribble for every training case")
        self.require_no_click_inputs(config, "uses no clicks")
        if settings.uncertainty and config.network.dropout <= 0:
            raise InputError("MC-dropout uncertainty needs a network with dropout: set network.dropout (the paper: 0.5 "
                             "in the innermost levels, network.dropout_levels) or pseudolabel.uncertainty to false")
        known = {c.name.strip().lower() for c in config.classes} | {"background"}
        unknown = [c for c in settings.segment_classes.values() if c.strip().lower() not in known]
        if unknown:
            raise InputError(f"pseudolabel.segment_classes maps a segment to {unknown[0]!r}, which is not a class "
                             f"({', '.join(config.class_names)}) nor \"background\"")
        self._require_every_class_marked(config, settings)

    @staticmethod
    def _require_every_class_marked(config, settings) -> None:
        """:class:`InputError` naming a class no training case's scribbles mark (it would train as absent)."""
        files = [case.scribble for case in config.cases]
        if not all(Path(f).is_file() for f in files):
            return  # the missing file is reported by JobConfig.require_files
        marked = set()
        for path in files:
            strokes = read_scribbles(path, None, config.class_names, [c.label_values for c in config.classes],
                                     settings.background_value, settings.unannotated_value, settings.segment_classes)
            marked.update(np.unique(strokes.labels.array[strokes.labels.array >= 0]).tolist())
        never = [name for n, name in enumerate(config.class_names, start=1) if n not in marked]
        if never:
            raise InputError(f"class {never[0]!r} is marked by no scribble in the {len(files)} training cases; paint "
                             "strokes of it in at least one case, or remove it from \"classes\"")

    # -- seed areas -----------------------------------------------------------------------------------------
    def _walk(self, job, case):
        """(seed areas, random-walker probabilities) on the case's model grid."""
        settings = self.settings(job.config)
        config = next(c for c in job.config.cases if case_name(c) == case.name)
        classes = job.config.classes
        scribbles = read_scribbles(config.scribble, case.image, job.config.class_names,
                                   [c.label_values for c in classes], settings.background_value,
                                   settings.unannotated_value, settings.segment_classes)
        probabilities = random_walker_probabilities(case.image, scribbles, job.num_classes, settings.beta,
                                                    settings.walk, device=job.device.type)
        seeds = seed_areas(probabilities, settings.tau)
        painted = scribbles.labels.array >= 0
        seeds[painted] = scribbles.labels.array[painted]
        on_grid = case.frame.to_model(seeds[None], "nearest")[0].astype(np.int16)
        self._seeds[case.name] = on_grid
        return on_grid, case.frame.to_model(probabilities, "linear")

    def seed_map(self, job, case) -> np.ndarray:
        """The case's seed areas on its model grid (computed once per job, again after a resume)."""
        if case.name not in self._seeds:
            self._walk(job, case)
        return self._seeds[case.name]

    def initial_label(self, job, case) -> PseudoLabel:
        settings = self.settings(job.config)
        if settings.crf:  # before any training: a volume too large for the CRF must not fail at the first recursion
            require_crf_memory(case.frame.grid.shape, case.frame.grid.spacing, settings.crf_sigma_alpha_mm,
                               float(np.ptp(case.inputs[0])), settings.crf_sigma_beta)
        seeds, probabilities = self._walk(job, case)
        # unknown voxels carry the random walker's guess (no loss there; it is what the round table scores)
        return seeds_to_pseudolabel(seeds, job.num_classes, case.frame.grid, probabilities)

    # -- recursions -----------------------------------------------------------------------------------------
    def refine(self, job, case, probabilities, label) -> PseudoLabel:
        settings = self.settings(job.config)
        seeds = self.seed_map(job, case)
        grid = case.frame.grid
        if settings.crf:
            probabilities = dense_crf(
                probabilities, case.inputs[0], grid.spacing, seeds, appearance_weight=settings.crf_appearance_weight,
                smoothness_weight=settings.crf_smoothness_weight, sigma_alpha_mm=settings.crf_sigma_alpha_mm,
                sigma_beta=settings.crf_sigma_beta, sigma_gamma_mm=settings.crf_sigma_gamma_mm,
                iterations=settings.crf_iterations)
        labels = np.argmax(probabilities, axis=0).astype(np.int16)
        if settings.uncertainty:
            mc_labels, unsure = self._mc_dropout(job, case, seeds, settings)
            if not settings.crf:  # the paper: the class with the highest mean softmax
                labels = mc_labels
            labels[unsure] = UNPAINTED
        labels = np.where(seeds >= 0, seeds, labels)
        return seeds_to_pseudolabel(labels, job.num_classes, grid, probabilities)

    def _mc_dropout(self, job, case, seeds, settings):
        """(labels, unsure) on the model grid from MC dropout over the box of the unknown voxels (at least one
        patch large; outside it everything is a seed)."""
        labels = np.zeros(seeds.shape, dtype=np.int16)
        unsure = np.zeros(seeds.shape, dtype=bool)
        free = np.argwhere(seeds < 0)
        if not len(free):
            return labels, unsure
        shape = np.asarray(seeds.shape)
        patch = np.minimum(np.asarray(job.patch_size), shape)
        lo, extent = free.min(axis=0), free.max(axis=0) + 1 - free.min(axis=0)
        size = np.maximum(extent, patch)
        lo = np.clip(lo - (size - extent) // 2, 0, shape - size)
        box = tuple(slice(int(a), int(a + n)) for a, n in zip(lo, size))
        with mc_dropout_sampler(job.network, case.inputs[(slice(None),) + box], job.patch_size, job.device) as sample:
            box_labels, box_unsure, _ = mc_dropout_relabel(sample, settings.mc_passes, settings.p_threshold,
                                                           job.progress.check_cancelled)
        labels[box] = box_labels
        unsure[box] = box_unsure
        return labels, unsure
