"""The live surface-template preview on real slicer-core MRML nodes: follows added, moved and removed points,
keeps the last template for bad points, shows its mask as a segmentation, honours the volume's transform."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ExtremeSeg"))

from conftest import make_ellipsoid  # noqa: E402
from slicer_scene import require_slicer, vtk_matrix  # noqa: E402

require_slicer()

import vtk  # noqa: E402
from ExtremeSegSlicerLib.surface_template import SurfaceTemplatePreview  # noqa: E402

from ExtremeSegLib import mrml  # noqa: E402
from ExtremeSegLib.metrics import dice  # noqa: E402
from ExtremeSegLib.pseudolabel import fit_surface_template  # noqa: E402
from ExtremeSegLib.simulate import simulate_surface_points  # noqa: E402

ROTATION = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _model_points(model_node) -> np.ndarray:
    polydata = model_node.GetPolyData()
    return np.array([polydata.GetPoint(n) for n in range(polydata.GetNumberOfPoints())])


def test_preview_follows_points_as_they_are_placed_moved_and_removed(mrml_scene):
    image, label = make_ellipsoid(direction=ROTATION)
    points = simulate_surface_points(label, 30, seed=2)
    volume_node = mrml.add_volume_node(image, "MRI", scene=mrml_scene.scene)
    points_node = mrml.add_markups_node(np.zeros((0, 3)), name="Surface", scene=mrml_scene.scene)
    preview = SurfaceTemplatePreview(volume_node, points_node)
    assert preview.update() is None and "got 0" in preview.message and preview.model_node is None

    for xyz in points[:3]:
        points_node.AddControlPoint(vtk.vtkVector3d(*xyz))
    assert preview.update() is None and "at least 4" in preview.message and preview.model_node is None
    for xyz in points[3:]:  # the user clicks on, one point at a time (the GUI calls update on PointAddedEvent)
        points_node.AddControlPoint(vtk.vtkVector3d(*xyz))
        preview.update()
    model = preview.model_node
    assert model is not None and model.GetScene() is mrml_scene.scene and model.GetName() == "Surface template"
    np.testing.assert_allclose(_model_points(model), preview.mesh.vertices)
    assert model.GetPolyData().GetNumberOfCells() == len(preview.mesh.faces)
    assert dice(preview.mask(), label.array) > 0.85
    cold = fit_surface_template(image, points)  # what training computes from the exported points
    assert dice(preview.mask(), cold.mask(image)) > 0.97  # grown from 4 points: a nearby local fit

    before = _model_points(model)
    points_node.SetNthControlPointPosition(0, *(points[0] + [2.0, 0.0, 0.0]))  # a point dragged
    preview.update()
    assert preview.model_node is model and not np.allclose(_model_points(model), before)

    for _ in range(27):  # all but 3 removed: the last template stays, with the reason
        points_node.RemoveNthControlPoint(0)
    last = _model_points(model)
    assert preview.update() is None and "at least 4" in preview.message
    np.testing.assert_allclose(_model_points(model), last)

    preview.remove()
    assert model.GetScene() is None and preview.model_node is None


def test_flat_points_keep_the_last_template_and_say_why(mrml_scene):
    image, label = make_ellipsoid()
    points = simulate_surface_points(label, 20, seed=1)
    volume_node = mrml.add_volume_node(image, "MRI", scene=mrml_scene.scene)
    points_node = mrml.add_markups_node(points, name="Surface", scene=mrml_scene.scene)
    preview = SurfaceTemplatePreview(volume_node, points_node)
    good = preview.update()
    for n in range(points_node.GetNumberOfControlPoints()):
        xyz = points[n].copy()
        xyz[2] = points[0, 2]
        points_node.SetNthControlPointPosition(n, *xyz)
    assert preview.update() is None and "one plane" in preview.message and preview.mesh is good


def test_mask_as_a_segmentation_and_under_a_transform(mrml_scene):
    image, label = make_ellipsoid(direction=ROTATION)
    scene = mrml_scene.scene
    volume_node = mrml.add_volume_node(image, "MRI", scene=scene)
    shift = np.eye(4)
    shift[:3, 3] = [10.0, -5.0, 3.0]
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(vtk_matrix(shift))
    volume_node.SetAndObserveTransformNodeID(transform.GetID())
    # points placed in world coordinates, where the user sees the transformed volume
    points_world = simulate_surface_points(label, 40, seed=5) + shift[:3, 3]
    points_node = mrml.add_markups_node(points_world, name="Surface", scene=scene)
    preview = SurfaceTemplatePreview(volume_node, points_node)
    preview.update()
    assert dice(preview.mask(), label.array) > 0.85

    segmentation_node, segment_id = preview.show_segmentation()
    shown = mrml.segments_from_node(segmentation_node, volume_node, [segment_id])[0]
    assert shown.name == "Template (ExtremeSeg)" and np.array_equal(shown.mask, preview.mask())
