"""Live template preview for surface points, on MRML nodes, without a GUI.

While the user places surface points on a volume, :class:`SurfaceTemplatePreview` keeps a model node showing
the deformed template (``ExtremeSegLib.pseudolabel.surface_template``), warm-started from the previous fit so
that an added or moved point costs one or two sparse solves. Its mask (the template rasterised on the
volume's grid, what the Weak-Net recipe trains from) is kept with it and can be shown as a segmentation.
Training itself recomputes the template from the exported points with the same defaults, so what the
preview shows is what training uses (the warm fit, grown point by point, and a cold fit of the same points are
nearby local fits of the same model: their masks agree to a Dice of about 0.98 in the tests).

Wiring for the GUI (the panel connects, this module only computes)::

    preview = SurfaceTemplatePreview(volume_node, points_node)
    for event in (slicer.vtkMRMLMarkupsNode.PointAddedEvent,
                  slicer.vtkMRMLMarkupsNode.PointModifiedEvent,   # a point dragged (fires while dragging)
                  slicer.vtkMRMLMarkupsNode.PointRemovedEvent):
        tags.append(points_node.AddObserver(event, lambda caller, event: preview.update()))
    # on module exit / node change: points_node.RemoveObserver(tag) for each tag, preview.remove()

``update()`` never raises for bad points: while fewer than 4 points are placed, or they are flat, it keeps
the last template and returns ``None``, with the reason in :attr:`SurfaceTemplatePreview.message` (show it
under the point list). PointModifiedEvent fires on every mouse move of a drag; an update took 3-10 ms
(median, at most 28 ms) for 25-250 points on the 2-core benchmark CPU (``benchmarks/surface_points.py``), plus
the model's refresh, so no throttling is needed.

Imports only slicer's MRML classes (through :mod:`ExtremeSegLib.mrml`), vtk and the core.
"""

from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

from ExtremeSegLib import mrml
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io.segmentations import Segment

# ExtremeSegLib.pseudolabel is imported where it is used: its package needs scikit-image, which Slicer may not
# have installed yet when it loads this module at startup.

#: the template's colour in the views (the surface points' yellow, a little darker)
TEMPLATE_COLOR = (0.85, 0.7, 0.1)


def polydata_from_mesh(vertices_ras: np.ndarray, faces: np.ndarray) -> vtk.vtkPolyData:
    """A vtkPolyData of triangles with point coordinates ``vertices_ras`` (world RAS mm)."""
    points = vtk.vtkPoints()
    points.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(vertices_ras, dtype=np.float64), deep=True))
    cells = vtk.vtkCellArray()
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_support.numpy_to_vtkIdTypeArray(np.ascontiguousarray(faces, dtype=np.int64).ravel(),
                                                        deep=True))
    polydata = vtk.vtkPolyData()
    polydata.SetPoints(points)
    polydata.SetPolys(cells)
    return polydata


class SurfaceTemplatePreview:
    """The template of ``points_node``'s surface points on ``volume_node``, shown as a model node.

    Args:
        volume_node: the scalar volume the points are placed on (its world geometry checks the points and
            receives the mask).
        points_node: a markups point list (``vtkMRMLMarkupsFiducialNode``) of surface points.
        model_node: the model node to keep updated (default: a new one named ``<points name> template``).
        template_params: settings of :class:`ExtremeSegLib.pseudolabel.surface_template.SurfaceTemplate`
            (leave the defaults to preview what training uses).
    """

    def __init__(self, volume_node, points_node, model_node=None, **template_params):
        self.volume_node = volume_node
        self.points_node = points_node
        from ExtremeSegLib.pseudolabel.surface_template import SurfaceTemplate

        self.geometry = mrml.geometry_from_node(volume_node)
        self.template = SurfaceTemplate(self.geometry, **template_params)
        self.model_node = model_node
        self.message = "place at least 4 points on the object's boundary"
        self._mask = None

    @property
    def mesh(self):
        """The last template (a ``TemplateMesh``, vertices world RAS mm); ``None`` before the first good update."""
        return self.template.mesh

    def _placed_points(self) -> np.ndarray:
        if self.points_node.GetNumberOfDefinedControlPoints() == 0:
            return np.zeros((0, 3))
        return mrml.points_from_markups_node(self.points_node)[0]

    def update(self):
        """Refit to the node's placed points and refresh the model; ``None`` (and :attr:`message`) when the
        points cannot carry a template yet, the last template then stays shown."""
        try:
            mesh = self.template.update(self._placed_points())
        except InputError as err:
            self.message = str(err)
            return None
        self._mask = None
        self.message = (f"template through {len(self.template.points)} points, {mesh.volume_mm3 / 1000.0:.2f} ml; "
                        f"points {mesh.fit_error_mm:.2f} mm from it on average")
        self._show(mesh)
        return mesh

    def _show(self, mesh) -> None:
        if self.model_node is None or self.model_node.GetScene() is None:
            scene = self.points_node.GetScene()
            self.model_node = scene.AddNewNodeByClass("vtkMRMLModelNode", f"{self.points_node.GetName()} template")
            self.model_node.CreateDefaultDisplayNodes()
            display = self.model_node.GetDisplayNode()
            display.SetColor(*TEMPLATE_COLOR)
            display.SetOpacity(0.5)
            display.SetVisibility2D(True)  # the outline on the slice views, where the points are placed
        self.model_node.SetAndObservePolyData(polydata_from_mesh(mesh.vertices, mesh.faces))

    def mask(self) -> np.ndarray:
        """The template rasterised on the volume's grid, bool ``[i, j, k]`` (cached until the next update).

        :class:`InputError` before the first template.
        """
        if self._mask is None:
            self._mask = self.template.mask()
        return self._mask

    def show_segmentation(self, segmentation_node=None, name: str = "Template"):
        """Add the mask as a NEW segment ``<name> (ExtremeSeg)`` (in a new segmentation node by default);
        returns ``(segmentation_node, segment_id)``. Existing segments are left untouched."""
        node, ids = mrml.add_segments([Segment(name, self.mask(), TEMPLATE_COLOR)], self.volume_node,
                                      segmentation_node, name=f"{self.points_node.GetName()} template")
        return node, ids[0]

    def remove(self) -> None:
        """Remove the model node from the scene (when the preview is switched off)."""
        if self.model_node is not None and self.model_node.GetScene() is not None:
            self.model_node.GetScene().RemoveNode(self.model_node)
        self.model_node = None
