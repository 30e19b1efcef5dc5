"""Recipes: one per method (paper), each a :class:`~.recipe.Recipe` run by the shared loop (:func:`~.loop.run_job`).

Python API (what ``extremeseg train`` / ``extremeseg predict``, the Slicer module and the console call)::

    from ExtremeSegLib.recipes import JobConfig, train, predict
    outputs = train(JobConfig.from_json("job.json"))            # -> {"model": ..., "segmentations": [...], ...}
    predict("run/model.pt", "image.nii.gz", "out.seg.nrrd", points="points.mrk.json")

Recipes register by name in :data:`RECIPES`; another method adds itself with :func:`register_recipe`, which also
hands its ``defaults`` down to :class:`JobConfig` (:data:`.config.RECIPE_DEFAULTS`). What the Slicer panel lists
without importing torch is :mod:`ExtremeSegLib.recipe_catalog`.
"""

from __future__ import annotations

from ..errors import InputError
from ..progress import Progress
from ..run_lock import RunLock
from .config import RECIPE_DEFAULTS, CaseConfig, ClassConfig, JobConfig, NetworkConfig, RoundsConfig
from .extreme_points import ExtremePointsRecipe
from .fully_supervised import FullySupervisedRecipe
from .inextremis import InExtremISRecipe
from .loop import run_job
from .recipe import PreparedCase, Recipe, RunningJob
from .scribbles import ScribblesRecipe
from .weak_net import WeakNetRecipe

#: recipe name (``"recipe"`` in a job config) -> Recipe class
RECIPES = {}


def register_recipe(recipe_class) -> None:
    """Make a :class:`Recipe` subclass available under its ``name``, its ``defaults`` applied by
    :meth:`JobConfig.from_dict` to the jobs that name it."""
    RECIPES[recipe_class.name] = recipe_class
    RECIPE_DEFAULTS[recipe_class.name] = recipe_class.defaults


register_recipe(ExtremePointsRecipe)
register_recipe(FullySupervisedRecipe)
register_recipe(ScribblesRecipe)
register_recipe(WeakNetRecipe)
register_recipe(InExtremISRecipe)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]()


def train(config: JobConfig, progress: Progress = None, resume: bool = False, config_path=None) -> dict:
    """Run a training job (see :mod:`.loop` for the run folder it writes); returns the outputs' paths.

    ``resume`` continues the run in ``config.output`` from its last checkpoint. ``config_path``: the JSON file
    the config came from, if it lies in the output folder (it is then not counted as existing content).
    """
    recipe = get_recipe(config.recipe)
    with RunLock(config.output) as lock:  # a second train on this folder, while this one runs, is refused
        return run_job(config, recipe, progress, resume, config_path, lock)


def predict(model, image, segmentation, points=None, probability=None, device: str = "auto",
            overwrite: bool = False, progress: Progress = None, postprocess: bool = True) -> dict:
    """Segment an image file with a model file (``points``: a ``.mrk.json`` for click-based models).

    Writes ``segmentation`` (``.seg.nrrd``) and, if given, the class probabilities to ``probability``; the label
    map is cleaned as the model file says unless ``postprocess=False``.
    """
    from ..training.inference import predict_file

    return predict_file(model, image, segmentation, points, probability, device, overwrite, progress, postprocess)


__all__ = ["CaseConfig", "ClassConfig", "JobConfig", "NetworkConfig", "RoundsConfig", "RunningJob", "PreparedCase",
           "Recipe",
           "RECIPES", "register_recipe", "get_recipe", "train", "predict", "run_job"]
