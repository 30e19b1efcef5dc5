"""The recipes a user can pick, as a static table that imports nothing heavy (no torch, MONAI or scikit-image).

The Slicer panel lists its methods from here when it opens, before PyTorch is installed or loaded; the recipe
classes (:mod:`ExtremeSegLib.recipes`) take their ``title`` and ``annotation`` from the same rows, and a test
checks that the table and the registry agree. A new recipe adds one row here and one class there.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the annotation kinds the Slicer panel offers ("labels", the fully supervised reference, is not one of them)
ANNOTATIONS = ("extreme points", "surface points", "scribbles")


@dataclass(frozen=True)
class RecipeEntry:
    """One recipe as a user sees it.

    ``name``: the job config's ``"recipe"``; ``title``: what the Method list shows; ``annotation``: the kind of
    annotation each training volume needs (one of :data:`ANNOTATIONS`, or ``"labels"``); ``clicks_at_inference``:
    whether the trained model needs the clicks of a new volume (``False``: fully automatic).
    """

    name: str
    title: str
    annotation: str
    clicks_at_inference: bool
    summary: str = ""


CATALOG = (
    RecipeEntry("extreme_points", "Extreme points (random walker, refinement rounds)", "extreme points", True,
                "6 clicks per object; random-walker pseudo-labels refined over rounds; the model needs the 6 clicks "
                "of each new volume."),
    RecipeEntry("inextremis", "Extreme points, fully automatic (InExtremIS: deep geodesics, CRF loss)",
                "extreme points", False,
                "6 clicks per training object; geodesics between the clicks from the network as it trains and a CRF "
                "loss; the model segments new volumes without clicks."),
    RecipeEntry("scribbles", "Scribbles (seed areas, CRF, MC-dropout uncertainty)", "scribbles", False,
                "scribbles per class; random-walker seed areas, dense-CRF recursions; fully automatic model."),
    RecipeEntry("weak_net", "Surface points (deformed template, Weak-Net)", "surface points", False,
                "points on each object's surface; a template deformed to them supervises a segmentation U-Net, a "
                "reconstruction U-Net sharpens its boundaries; fully automatic model."),
    RecipeEntry("fully_supervised", "Full labels (the reference for weak recipes)", "labels", False,
                "dense expert labels; the same network and budget as the weak recipes; by default the whole image "
                "in and a fully automatic model (a job that adds the click inputs gets a model that needs them)."),
)


def recipe_entry(name: str) -> RecipeEntry:
    """The catalog row of recipe ``name`` (``KeyError`` if there is none)."""
    for entry in CATALOG:
        if entry.name == name:
            return entry
    raise KeyError(name)


def recipes_for(annotation: str | None = None) -> list:
    """The catalog rows for one annotation kind (all rows when ``annotation`` is ``None``)."""
    return [entry for entry in CATALOG if annotation is None or entry.annotation == annotation]
