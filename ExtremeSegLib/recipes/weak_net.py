"""Paper 003: surface points -> deformed template -> Weak-Net (segmentation + reconstruction U-Nets).

1. Template (:mod:`ExtremeSegLib.pseudolabel.surface_template`): each training case's surface points (its
   ``points`` file, ``.mrk.json`` or ``.fcsv``, at least 4 points on the object's boundary) deform a sphere;
   the closed mesh rasterised on the case's model grid is the pseudo-label, trusted everywhere.
2. Training (the shared engine with :class:`~ExtremeSegLib.training.weak_net.WeakNetObjective`): the
   segmentation network (the job's DynUNet) learns the template by cross-entropy while a reconstruction network
   (the same U-Net plan, from the foreground probability back to the image) makes it follow the image's
   boundaries: ``CE + reconstruction_weight * boundary-weighted MSE`` (paper's lambda). With
   ``reconstruction_weight`` 0 the recipe is the template-supervised U-Net (the baseline).
3. Inference: the segmentation network alone, fully automatic (no points); a voxel is the object where its
   probability reaches ``postprocess.foreground_threshold`` (the paper's gamma, stored in the model file).

Settings (``pseudolabel`` section, :class:`WeakNetSettings`) and the recipe's defaults (whole image in, no
click channels, gamma 0.5). Example (``extremeseg train --config job.json``)::

    {"recipe": "weak_net", "output": "run",
     "classes": [{"name": "hippocampus", "label_values": [1, 2]}],
     "cases": [{"image": "case1.nii.gz", "points": "case1_surface.mrk.json"}, ...],
     "pseudolabel": {"reconstruction_weight": 0.1, "boundary_mm": 3.0}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..errors import InputError
from ..io.markups import read_points
from ..pseudolabel.label import PseudoLabel
from ..pseudolabel.surface_template import SurfaceTemplate, rasterize_mesh
from ..training.networks import build_network
from ..training.weak_net import WeakNetObjective
from .config import from_plain
from .recipe import Recipe, case_name


@dataclass(frozen=True)
class WeakNetSettings:
    """The ``pseudolabel`` section of a Weak-Net job.

    ``reconstruction_weight``: the paper's lambda (0 = template only); ``boundary_mm``: the band around the
    template's boundary where the reconstruction error counts fully, ``far_weight`` elsewhere;
    ``reconstruction_filters``: the reconstruction U-Net's filters per level (default: the segmentation
    network's); ``smoothness``, ``subdivisions``: the template's (see ``SurfaceTemplate``).
    """

    #: lambda in nats per unit of the image's variance; 0.1 was as good as 0 and 1 much worse on a validation
    #: subset of the hippocampus training split (docs/benchmarks.md, issue 17)
    reconstruction_weight: float = 0.1
    boundary_mm: float = 3.0
    far_weight: float = 0.1
    reconstruction_filters: Optional[List[int]] = None
    smoothness: float = 0.25
    subdivisions: int = 3


class WeakNetRecipe(Recipe):
    """Surface points per training case -> template pseudo-labels -> Weak-Net; a fully automatic model."""

    name = "weak_net"
    refines = False
    # gamma 0.5, the more probable class, which a MONAI Bundle export reproduces; 0.4 scored 0.02 IoU higher on a
    # short-budget validation subset (docs/benchmarks.md, issue 17), within the spread
    defaults = {"postprocess": {"foreground_threshold": 0.5}}
    #: the points files hold surface points, read by this recipe (not 6 extreme points)
    extreme_points = False

    @staticmethod
    def settings(config) -> WeakNetSettings:
        return from_plain(WeakNetSettings, config.pseudolabel, "pseudolabel")

    def needs(self, config) -> tuple:
        return ()  # the training cases' points are checked in check(): validation cases need none

    def check(self, config) -> None:
        self.require_one_object(config, "the surface points outline one")
        self.require_no_click_inputs(config, "trains a fully automatic model (its defaults)")
        self.require_training_file(config, "points", "needs the surface points (.mrk.json or .fcsv) of every "
                                   "training case")
        settings = self.settings(config)
        SurfaceTemplate.check_settings(settings.smoothness, settings.subdivisions)
        WeakNetObjective.check_settings(settings.reconstruction_weight, settings.boundary_mm, settings.far_weight)
        if settings.reconstruction_filters is not None and (
                not settings.reconstruction_filters or min(settings.reconstruction_filters) < 1):
            raise InputError("pseudolabel.reconstruction_filters must be a list of positive filter counts")

    def initial_label(self, job, case) -> PseudoLabel:
        settings = self.settings(job.config)
        config = next(c for c in job.config.cases if case_name(c) == case.name)
        points, _ = read_points(config.points)
        try:
            mesh = SurfaceTemplate(case.image, subdivisions=settings.subdivisions,
                                   smoothness=settings.smoothness).update(points)
        except InputError as err:
            raise InputError(f"case {case.name} ({config.points}): {err}") from None
        mask = rasterize_mesh(mesh.vertices, mesh.faces, case.frame.grid)
        if not mask.any():
            raise InputError(f"case {case.name} ({config.points}): the template holds no voxel of the image")
        return PseudoLabel.from_foreground(mask.astype(np.float32), case.frame.grid)

    def loss(self, job):
        settings = self.settings(job.config)
        params = dict(job.network_params, in_channels=job.num_classes - 1, out_channels=len(job.inputs.channels),
                      dropout=0.0)
        if settings.reconstruction_filters is not None:
            params["filters"] = list(settings.reconstruction_filters)
        return WeakNetObjective(build_network(**params), settings.reconstruction_weight, job.inputs.spacing_mm,
                                settings.boundary_mm, settings.far_weight, len(job.inputs.channels))
