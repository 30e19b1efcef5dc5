"""The recipe contract: what a method supplies to the shared loop (:func:`~.loop.run_job`) and what it is given.

A recipe (:class:`Recipe`) supplies the first pseudo-label of a case, the loss (or an engine ``Objective``), and
(optionally) how to refine a case's pseudo-label from the network's prediction between rounds. Its hooks get
the :class:`RunningJob` (config, device, network, plan) and the :class:`PreparedCase` (image, model grid,
network inputs, annotations). ``title`` and ``annotation`` come from the recipe's row in
:mod:`ExtremeSegLib.recipe_catalog` (the table the Slicer panel reads without importing torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..annotations import ExtremePoints
from ..errors import InputError
from ..evaluation.cases import volume_stem
from ..io.markups import read_points
from ..io.volumes import read_image, read_labelmap
from ..progress import Progress
from ..pseudolabel.label import PseudoLabel
from ..recipe_catalog import recipe_entry
from ..training.data import CaseFrame, InputSpec, frame_case, network_inputs
from ..training.inference import predict_probabilities
from ..training.losses import build_loss
from ..volume import Volume
from .config import CaseConfig, JobConfig, with_defaults

# -- cases ------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class PreparedCase:
    """A case ready for training: its image, model grid (``frame``), network inputs and annotations.

    ``reference``: class indices (0 = background, n = ``config.classes[n - 1]``) on the image grid, from the
    label file (``None`` without one). Recipes read other annotations (scribbles) from the case's config.
    """

    name: str
    image: Volume
    frame: CaseFrame
    inputs: np.ndarray
    points: Optional[ExtremePoints] = None
    reference: Optional[np.ndarray] = None

    def reference_on_grid(self, num_classes: int) -> np.ndarray:
        """The reference as class probabilities ``(C,) + grid`` (one-hot, linearly resampled)."""
        one_hot = np.stack([(self.reference == c) for c in range(num_classes)]).astype(np.float32)
        return self.frame.to_model(one_hot, "linear")


def class_indices(labels: np.ndarray, classes) -> np.ndarray:
    """Label values -> class indices (uint8): 0 background, n for ``classes[n - 1].label_values``."""
    out = np.zeros(labels.shape, dtype=np.uint8)
    for n, cls in enumerate(classes, start=1):
        out[np.isin(labels, cls.label_values)] = n
    return out


def case_name(case: CaseConfig) -> str:
    return case.name or volume_stem(Path(case.image)) or Path(case.image).name


def read_case(case: CaseConfig, classes, extreme_points: bool = True) -> tuple:
    """``(image, points or None, reference or None)`` from the case's files; the points file is read as the
    object's 6 extreme points unless ``extreme_points`` is false (a recipe that reads its own points)."""
    image = read_image(case.image)
    points = None
    if case.points and extreme_points:
        try:
            points = ExtremePoints.from_points(read_points(case.points)[0], image)
        except InputError as err:  # say which case's file it is
            raise InputError(f"{case.points}: {err}") from None
    reference = None
    if case.label:
        label = read_labelmap(case.label)
        image.require_same_geometry(label, f"the label {case.label}")
        reference = class_indices(label.array, classes)
    return image, points, reference


def require_classes_in_labels(config, references) -> None:
    """:class:`InputError` naming a class none of the label files marks (``references``: the cases' class-index
    maps, ``None`` for cases without a label): its ``label_values`` are surely wrong, and it would score Dice 0."""
    labelled = [r for r in references if r is not None]
    for n, cls in enumerate(config.classes, start=1):
        if labelled and not any(np.any(r == n) for r in labelled):
            raise InputError(f"class {cls.name!r}: its label_values {list(cls.label_values)} occur in none of the "
                             f"{len(labelled)} label files; set the values that mark it in \"classes\"")


def prepare_case(case: CaseConfig, name: str, read: tuple, spec: InputSpec) -> PreparedCase:
    image, points, reference = read
    frame = frame_case(image, spec, points)
    return PreparedCase(name, image, frame, network_inputs(frame, spec, points), points, reference)


# -- recipes ------------------------------------------------------------------------------------------------

#: the inputs and clean-up of a model that needs no clicks (its catalog row's ``clicks_at_inference`` is false):
#: the whole image in, no click channels, nothing clipped to a box; a recipe's own ``defaults`` win
FULLY_AUTOMATIC_DEFAULTS = {"inputs": {"cues": [], "crop_to_points": False}, "postprocess": {"clip_to_points": False}}


class Recipe:
    """What a method supplies to the shared loop. Subclasses set ``name`` and override what they change."""

    name = ""
    #: what a user picks in the Slicer panel, and which annotation (e.g. "extreme points") the recipe trains from:
    #: taken from the recipe's row in :data:`~ExtremeSegLib.recipe_catalog.CATALOG` (a recipe without a row sets them)
    title = ""
    annotation = ""
    #: whether :meth:`refine` relabels between rounds (else one training round)
    refines = False
    #: config sections this recipe sets differently from the generic defaults (a job's own keys win); a recipe
    #: whose catalog row says its model needs no clicks gets :data:`FULLY_AUTOMATIC_DEFAULTS` under its own
    defaults: dict = {}
    #: whether a case's ``points`` file holds the object's 6 extreme points (``PreparedCase.points``); a recipe
    #: with other points (surface points) sets it false and reads the file itself
    extreme_points = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        try:
            entry = recipe_entry(cls.name)
        except KeyError:
            return
        cls.title, cls.annotation = entry.title, entry.annotation
        if not entry.clicks_at_inference:
            cls.defaults = with_defaults(cls.__dict__.get("defaults", {}), FULLY_AUTOMATIC_DEFAULTS)

    def require_one_object(self, config: JobConfig, why: str) -> None:
        """:class:`InputError` unless the job has exactly one foreground class (``why``: what bounds one object)."""
        if len(config.classes) != 1:
            raise InputError(f"the {self.name} recipe segments one object per case ({why}); the config lists "
                             f"{len(config.classes)} classes")

    def require_training_file(self, config: JobConfig, key: str, purpose: str) -> None:
        """:class:`InputError` naming the first training case without its ``key`` file (``"points"``,
        ``"scribble"``); ``purpose`` says what the recipe needs it for. Validation cases are not asked."""
        for n, case in enumerate(config.cases, start=1):
            if getattr(case, key) is None:
                raise InputError(f"case {n} ({case.name or case.image}) has no {key} file; the {self.name} recipe "
                                 f"{purpose}")

    def require_no_click_inputs(self, config: JobConfig, reason: str) -> None:
        """:class:`InputError` when the job's inputs would need clicks at inference (click cues, crop to the clicks)."""
        if config.inputs.cues or config.inputs.crop_to_points:
            raise InputError(f"the {self.name} recipe {reason}: set \"inputs\": {{\"cues\": [], "
                             "\"crop_to_points\": false} in the job config")

    def needs(self, config: JobConfig) -> tuple:
        """Per-case files training needs besides the image (``points``, ``label``, ``scribble``)."""
        return ("points",) if config.inputs.needs_points else ()

    def check(self, config: JobConfig) -> None:
        """Recipe-specific checks of the config (:class:`InputError`)."""

    def initial_label(self, job: "RunningJob", case: PreparedCase) -> PseudoLabel:
        """The first pseudo-label of a case, on its model grid (``case.frame.grid``)."""
        raise NotImplementedError

    def planning_labels(self, job: "RunningJob", cases: list, labels: list, progress: Progress) -> Optional[list]:
        """The labels the model grid is planned from (``recipes/loop.py:plan_spacing``), one per case on the median
        grid; only rank 0's are used under torchrun (others may return ``None``). Default: the round-0 ``labels``.
        A recipe whose trusted round-0 foreground is not object-shaped gives an object-sized estimate instead
        (planning only: training still uses ``labels``), since the planner reads trusted voxels as the
        structure's thickness."""
        return labels

    def loss(self, job: "RunningJob") -> torch.nn.Module:
        return build_loss(job.config.training.loss)

    def training_target(self, job: "RunningJob", case: PreparedCase, label: PseudoLabel) -> np.ndarray:
        """What the engine trains towards, ``(C + extra,) + grid``: the label's probabilities, then any channels
        the recipe's :class:`~ExtremeSegLib.training.engine.Objective` reads (cropped and flipped with the patch)."""
        return label.probabilities

    def refine(self, job: "RunningJob", case: PreparedCase, probabilities: np.ndarray,
               label: PseudoLabel) -> PseudoLabel:
        """The next round's pseudo-label from the network's ``probabilities`` ``(C,) + grid`` and the current one."""
        raise NotImplementedError


@dataclass(eq=False)
class RunningJob:
    """A job while it runs: its config, recipe, device, run folder, network and what was planned for it.

    The loop builds one and hands it to every recipe hook (``job``).
    """

    config: JobConfig
    recipe: Recipe
    progress: Progress
    device: torch.device
    folder: Path
    inputs: InputSpec = None
    network: torch.nn.Module = None
    network_params: dict = field(default_factory=dict)
    patch_size: tuple = None
    multiple: tuple = None

    @property
    def num_classes(self) -> int:
        return len(self.config.classes) + 1

    @property
    def state_dir(self) -> Path:
        return self.folder / "state"

    def predict(self, case: PreparedCase) -> np.ndarray:
        """Class probabilities ``(C,) + grid`` of the current network for a case."""
        return predict_probabilities(self.network, case.inputs, self.patch_size, self.device, self.config.training.amp,
                                     progress=self.progress)


