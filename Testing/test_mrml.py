"""The MRML adapter against real slicer-core MRML (module logics registered, no mocks)."""

import numpy as np
import pytest
from slicer_scene import HAVE_SLICER, SLICER_MISSING_REASON, load_node, save_node, vtk_matrix
from test_io_volumes import oblique_volume, rotation

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import Segment, read_points, read_segmentation, write_segmentation
from ExtremeSegLib.volume import Volume

pytestmark = pytest.mark.skipif(not HAVE_SLICER, reason=str(SLICER_MISSING_REASON))

if HAVE_SLICER:
    import slicer
    import vtk
    from slicer.util import arrayFromVolume

    from ExtremeSegLib import mrml


def linear_transform_node(scene, matrix):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    node.SetMatrixTransformToParent(vtk_matrix(matrix))
    return node


def nonlinear_transform_node(scene):
    """A thin-plate-spline warp: a real non-linear transform."""
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for xyz in [(0, 0, 0), (50, 0, 0), (0, 50, 0), (0, 0, 50), (30, 30, 30)]:
        source.InsertNextPoint(*xyz)
        target.InsertNextPoint(xyz[0] + (5 if xyz == (30, 30, 30) else 0), xyz[1], xyz[2])
    warp = vtk.vtkThinPlateSplineTransform()
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    node.SetAndObserveTransformToParent(warp)
    return node


MOVE = np.array([[0.0, -1.0, 0.0, 10.0], [1.0, 0.0, 0.0, -5.0], [0.0, 0.0, 1.0, 2.5], [0, 0, 0, 1.0]])


# -- volumes ---------------------------------------------------------------------------------------
def test_volume_node_round_trip_and_axis_order(mrml_scene):
    volume = oblique_volume(np.int16)
    node = mrml.add_volume_node(volume, "img", scene=mrml_scene.scene)
    assert node.IsA("vtkMRMLScalarVolumeNode") and node.GetDisplayNode() is not None
    # Slicer's own array is [k, j, i]; its IJK-to-RAS is ours.
    np.testing.assert_array_equal(arrayFromVolume(node)[3, 1, 5], volume.array[5, 1, 3])
    ras = [0.0, 0.0, 0.0, 1.0]
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    matrix.MultiplyPoint([5, 1, 3, 1], ras)
    np.testing.assert_allclose(ras[:3], volume.index_to_ras([5, 1, 3]), atol=1e-9)
    back = mrml.volume_from_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-12)


def test_labelmap_node(mrml_scene):
    labels = Volume.from_spacing(np.arange(24, dtype=np.int64).reshape(2, 3, 4) % 3)
    node = mrml.add_volume_node(labels, "labels", labelmap=True, scene=mrml_scene.scene)
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    back = mrml.volume_from_node(node)
    assert np.issubdtype(back.array.dtype, np.integer)
    np.testing.assert_array_equal(back.array, labels.array)


def test_scene_defaults_to_slicer_mrml_scene(mrml_scene):
    node = mrml.add_volume_node(oblique_volume(), "in the application scene")
    assert node.GetScene() is mrml_scene.scene


def test_linear_parent_transform_is_applied(mrml_scene):
    volume = oblique_volume()
    node = mrml.add_volume_node(volume, "moved", scene=mrml_scene.scene)
    node.SetAndObserveTransformNodeID(linear_transform_node(mrml_scene.scene, MOVE).GetID())
    world = mrml.volume_from_node(node)
    np.testing.assert_allclose(world.ijk_to_ras, MOVE @ volume.ijk_to_ras, atol=1e-12)


def test_nonlinear_parent_transform_is_refused(mrml_scene):
    node = mrml.add_volume_node(oblique_volume(), "warped", scene=mrml_scene.scene)
    node.SetAndObserveTransformNodeID(nonlinear_transform_node(mrml_scene.scene).GetID())
    with pytest.raises(InputError, match="non-linear transform 'warp'.*[Hh]arden"):
        mrml.volume_from_node(node)


def test_vector_and_empty_volumes_are_refused(mrml_scene):
    vector = mrml_scene.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(vector, np.zeros((3, 4, 5, 3), np.uint8))
    with pytest.raises(InputError, match="scalar volume"):
        mrml.volume_from_node(vector)
    empty = mrml_scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="has no voxels"):
        mrml.volume_from_node(empty)


# -- markups ---------------------------------------------------------------------------------------
POINTS = np.array([[1.0, 2.0, 3.0], [-4.5, 5.0, 60.0], [7.0, -8.0, 9.25]])


def test_markups_round_trip_in_world_coordinates(mrml_scene):
    node = mrml.add_markups_node(POINTS, ["a", "b", "c"], scene=mrml_scene.scene)
    unplaced = node.AddControlPoint(vtk.vtkVector3d(0, 0, 0), "later")
    node.UnsetNthControlPointPosition(unplaced)
    points, labels = mrml.points_from_markups_node(node)
    np.testing.assert_allclose(points, POINTS)
    assert labels == ["a", "b", "c"]
    node.SetAndObserveTransformNodeID(linear_transform_node(mrml_scene.scene, MOVE).GetID())
    moved, _ = mrml.points_from_markups_node(node)
    np.testing.assert_allclose(moved, POINTS @ MOVE[:3, :3].T + MOVE[:3, 3], atol=1e-9)


def test_markups_refusals(mrml_scene):
    empty = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "E")
    with pytest.raises(InputError, match="no placed points"):
        mrml.points_from_markups_node(empty)
    curve = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode", "C")
    with pytest.raises(InputError, match="point list"):
        mrml.points_from_markups_node(curve)


def test_markups_saved_by_slicer_read_by_us(mrml_scene, tmp_path):
    node = mrml.add_markups_node(POINTS, name="Clicks", scene=mrml_scene.scene)
    points, labels = read_points(save_node(node, tmp_path / "clicks.mrk.json", "vtkMRMLMarkupsJsonStorageNode"))
    np.testing.assert_allclose(points, POINTS, atol=1e-9)
    assert labels == ["Clicks-1", "Clicks-2", "Clicks-3"]


# -- segmentations ---------------------------------------------------------------------------------
def reference_volume():
    return Volume.from_spacing(np.zeros((16, 12, 10), np.int16), spacing=(0.8, 1.2, 2.5), origin=(-20.0, 8.0, 4.0),
                               direction=rotation(0.2, -0.35, 0.1))


def ball(shape, centre, radius):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return np.sum((idx - np.asarray(centre)) ** 2, axis=-1) <= radius ** 2


def test_add_segments_to_new_node_and_read_back(mrml_scene):
    volume = reference_volume()
    reference = mrml.add_volume_node(volume, "ref", scene=mrml_scene.scene)
    hippo = Segment("Hippocampus", ball(volume.shape, (6, 5, 4), 3.5), (0.9, 0.6, 0.1))
    node, ids = mrml.add_segments([hippo], reference, scene=mrml_scene.scene)
    segmentation = node.GetSegmentation()
    assert ids == [segmentation.GetNthSegmentID(0)]
    assert segmentation.GetSegment(ids[0]).GetName() == "Hippocampus (ExtremeSeg)"
    assert node.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is reference
    (read,) = mrml.segments_from_node(node, reference)
    np.testing.assert_array_equal(read.mask, hippo.mask)
    assert read.segment_id == ids[0] and read.name == "Hippocampus (ExtremeSeg)"
    np.testing.assert_allclose(read.color, (0.9, 0.6, 0.1), atol=1e-6)


def test_existing_segments_are_never_overwritten(mrml_scene):
    volume = reference_volume()
    first = Segment("Hippocampus", ball(volume.shape, (6, 5, 4), 3.5))
    node, (first_id,) = mrml.add_segments([first], volume, scene=mrml_scene.scene)
    # A second result, same name, overlapping the first, into the same (explicitly chosen) node.
    second = Segment("Hippocampus", ball(volume.shape, (8, 6, 5), 3.5))
    same_node, (second_id,) = mrml.add_segments([second], volume, segmentation_node=node)
    assert same_node is node and second_id != first_id
    segmentation = node.GetSegmentation()
    assert segmentation.GetSegment(second_id).GetName() == "Hippocampus (ExtremeSeg) 2"
    by_id = {s.segment_id: s for s in mrml.segments_from_node(node, volume)}
    np.testing.assert_array_equal(by_id[first_id].mask, first.mask)  # still whole
    np.testing.assert_array_equal(by_id[second_id].mask, second.mask)


def test_segments_resampled_onto_another_grid(mrml_scene):
    volume = reference_volume()
    mask = np.zeros(volume.shape, bool)
    mask[4:9, 3:7, 2:6] = True
    node, _ = mrml.add_segments([Segment("Box", mask)], volume, scene=mrml_scene.scene)
    # A crop of the reference grid: same voxels, shifted indices.
    crop = volume.crop((2, 1, 1), (14, 10, 8))
    (read,) = mrml.segments_from_node(node, crop, segments=["Box (ExtremeSeg)"])
    np.testing.assert_array_equal(read.mask, mask[2:14, 1:10, 1:8])


def test_segmentation_under_linear_transform(mrml_scene):
    volume = reference_volume()
    mask = ball(volume.shape, (8, 6, 5), 3.0)
    transform = linear_transform_node(mrml_scene.scene, MOVE)
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "moved")
    node.SetAndObserveTransformNodeID(transform.GetID())
    # Masks are given in world coordinates: stored through the inverse transform, read back in world.
    world_volume = Volume(volume.array, MOVE @ volume.ijk_to_ras)
    mrml.add_segments([Segment("Ball", mask)], world_volume, segmentation_node=node)
    (read,) = mrml.segments_from_node(node, world_volume)
    np.testing.assert_array_equal(read.mask, mask)
    node.SetAndObserveTransformNodeID(nonlinear_transform_node(mrml_scene.scene).GetID())
    with pytest.raises(InputError, match="non-linear"):
        mrml.segments_from_node(node, world_volume)


def test_segment_selection_errors(mrml_scene):
    volume = reference_volume()
    empty = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
    with pytest.raises(InputError, match="has no segments"):
        mrml.segments_from_node(empty, volume)
    node, _ = mrml.add_segments([Segment("A", ball(volume.shape, (5, 5, 5), 2))], volume, scene=mrml_scene.scene)
    with pytest.raises(InputError, match="no segment 'Liver'; its segments: A \\(ExtremeSeg\\)"):
        mrml.segments_from_node(node, volume, segments=["Liver"])
    with pytest.raises(InputError, match="has shape"):
        mrml.add_segments([Segment("B", np.zeros((2, 2, 2), bool))], volume, segmentation_node=node)


def test_empty_result_becomes_an_empty_segment(mrml_scene):
    volume = reference_volume()
    node, (segment_id,) = mrml.add_segments([Segment("Nothing", np.zeros(volume.shape, bool))], volume,
                                            scene=mrml_scene.scene)
    (read,) = mrml.segments_from_node(node, volume)
    assert read.segment_id == segment_id and not read.mask.any()


def test_surface_segmentation_is_voxelised_and_not_written_to(mrml_scene):
    volume = Volume.from_spacing(np.zeros((30, 30, 30), np.int16), origin=(-15.0, -15.0, -15.0))
    sphere = vtk.vtkSphereSource()
    sphere.SetRadius(8.0)
    sphere.SetThetaResolution(48)
    sphere.SetPhiResolution(48)
    sphere.Update()
    model = mrml_scene.scene.AddNewNodeByClass("vtkMRMLModelNode", "sphere")
    model.SetAndObservePolyData(sphere.GetOutput())
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surfaces")
    node.GetSegmentation().SetSourceRepresentationName("Closed surface")
    assert mrml_scene.logic("Segmentations").ImportModelToSegmentationNode(model, node)
    node.SetReferenceImageGeometryParameterFromVolumeNode(mrml.add_volume_node(volume, scene=mrml_scene.scene))
    (read,) = mrml.segments_from_node(node, volume)
    assert read.mask[15, 15, 15] and not read.mask[0, 0, 0]
    assert abs(read.mask.sum() / (4 / 3 * np.pi * 8.0 ** 3) - 1) < 0.1
    with pytest.raises(InputError, match="not as voxels"):
        mrml.add_segments([Segment("X", read.mask)], volume, segmentation_node=node)


def test_seg_nrrd_through_slicer_storage_nodes(mrml_scene, tmp_path):
    """What a user does: our results saved by Slicer, read by the CLI; our file loaded by Slicer, read back."""
    volume = reference_volume()
    reference = mrml.add_volume_node(volume, "ref", scene=mrml_scene.scene)
    a = Segment("A", ball(volume.shape, (5, 5, 4), 3))
    b = Segment("B", ball(volume.shape, (7, 6, 5), 3))  # overlaps A: a two-layer segmentation
    node, _ = mrml.add_segments([a, b], reference, scene=mrml_scene.scene)
    grid, saved = read_segmentation(save_node(node, tmp_path / "by_slicer.seg.nrrd", "vtkMRMLSegmentationStorageNode"))
    assert grid.same_geometry(volume, atol_mm=1e-4)
    assert [s.name for s in saved] == ["A (ExtremeSeg)", "B (ExtremeSeg)"]
    for ours, got in zip((a, b), saved):
        np.testing.assert_array_equal(got.mask, ours.mask)

    path = write_segmentation(tmp_path / "by_cli.seg.nrrd", volume, [a, b])
    loaded = load_node(mrml_scene.scene, "vtkMRMLSegmentationNode", "vtkMRMLSegmentationStorageNode", path)
    for ours, got in zip((a, b), mrml.segments_from_node(loaded, reference)):
        assert got.name == ours.name
        np.testing.assert_array_equal(got.mask, ours.mask)
