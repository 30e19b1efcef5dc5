"""Pseudo-label makers: weak annotations -> dense soft labels with a trust weight."""

from .cues import confidence_map, point_heatmaps
from .extreme_points import extreme_points_pseudolabel
from .geodesic import extreme_point_paths, geodesic_cost, shortest_path
from .label import PseudoLabel
from .random_walker import random_walker
from .surface_template import SurfaceTemplate, TemplateMesh, fit_surface_template, surface_points_pseudolabel

__all__ = [
    "PseudoLabel",
    "SurfaceTemplate",
    "TemplateMesh",
    "confidence_map",
    "extreme_point_paths",
    "extreme_points_pseudolabel",
    "fit_surface_template",
    "geodesic_cost",
    "point_heatmaps",
    "random_walker",
    "shortest_path",
    "surface_points_pseudolabel",
]
