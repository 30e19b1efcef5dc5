"""Our files against Slicer's own storage nodes (slicer-core): what we write Slicer opens, and the reverse.

Only Slicer code is used on the Slicer side (storage nodes, slicer.util, the Segmentations logic), so a
convention error on our side cannot cancel itself out.
"""

import numpy as np
import pytest
from slicer_scene import HAVE_SLICER, SLICER_MISSING_REASON, load_node, save_node, vtk_matrix
from test_io_volumes import oblique_volume, rotation

from ExtremeSegLib.io import (
    Segment,
    read_points,
    read_segmentation,
    read_volume,
    write_points,
    write_segmentation,
    write_volume,
)
from ExtremeSegLib.io.segmentations import segment_color
from ExtremeSegLib.volume import Volume

pytestmark = pytest.mark.skipif(not HAVE_SLICER, reason=str(SLICER_MISSING_REASON))

if HAVE_SLICER:
    import slicer
    import vtk
    from slicer.util import arrayFromVolume, updateVolumeFromArray


def ijk_to_ras_of(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def slicer_volume_node(scene, volume: Volume, class_name="vtkMRMLScalarVolumeNode", name="ref"):
    """A volume node made with Slicer's own helpers ([k, j, i] arrays)."""
    node = scene.AddNewNodeByClass(class_name, name)
    node.SetIJKToRASMatrix(vtk_matrix(volume.ijk_to_ras))
    updateVolumeFromArray(node, np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    return node


def exported_mask(mrml_scene, segmentation_node, segment_id, reference_node) -> np.ndarray:
    """Slicer's own export of one segment onto the reference volume's grid, as [i, j, k]."""
    labelmap = mrml_scene.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    logic = mrml_scene.logic("Segmentations")
    assert logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, reference_node)
    return arrayFromVolume(labelmap).transpose(2, 1, 0) != 0


# -- volumes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v.nrrd", "v.nii.gz"])
def test_slicer_reads_our_volume(mrml_scene, tmp_path, name):
    volume = oblique_volume(np.int16)
    path = write_volume(volume, tmp_path / name)
    node = load_node(mrml_scene.scene, "vtkMRMLScalarVolumeNode", "vtkMRMLVolumeArchetypeStorageNode", path)
    np.testing.assert_array_equal(arrayFromVolume(node).transpose(2, 1, 0), volume.array)
    np.testing.assert_allclose(ijk_to_ras_of(node), volume.ijk_to_ras, atol=1e-4)


@pytest.mark.parametrize("name", ["v.nrrd", "v.nii.gz"])
def test_we_read_slicer_volume(mrml_scene, tmp_path, name):
    volume = oblique_volume(np.float32)
    node = slicer_volume_node(mrml_scene.scene, volume)
    read = read_volume(save_node(node, tmp_path / name, "vtkMRMLVolumeArchetypeStorageNode"))
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(read.ijk_to_ras, volume.ijk_to_ras, atol=1e-4)


# -- segmentations ---------------------------------------------------------------------------------
def segment_geometry():
    return Volume.from_spacing(np.zeros((14, 11, 9), np.uint8), spacing=(0.9, 1.4, 3.0), origin=(30.0, -4.0, 12.5),
                               direction=rotation(-0.25, 0.15, 0.6))


def box(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return mask


@pytest.mark.parametrize("overlapping", [False, True])
def test_slicer_reads_our_segmentation(mrml_scene, tmp_path, overlapping):
    geometry = segment_geometry()
    shape = geometry.shape
    segments = [Segment("Liver", box(shape, (1, 1, 1), (7, 6, 5)), (0.8, 0.3, 0.2)),
                Segment("Spleen", box(shape, (9, 7, 5), (13, 10, 8)), (0.2, 0.3, 0.9)),
                Segment("Lesion", box(shape, (5, 4, 3), (8, 8, 7)) if overlapping
                        else box(shape, (0, 8, 7), (2, 10, 9)))]
    path = write_segmentation(tmp_path / "ours.seg.nrrd", geometry, segments)
    node = load_node(mrml_scene.scene, "vtkMRMLSegmentationNode", "vtkMRMLSegmentationStorageNode", path)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    assert segmentation.GetNumberOfLayers() == (2 if overlapping else 1)
    reference = slicer_volume_node(mrml_scene.scene, geometry)
    for n, written in enumerate(segments):
        segment_id = segmentation.GetNthSegmentID(n)
        segment = segmentation.GetSegment(segment_id)
        assert segment.GetName() == written.name
        np.testing.assert_allclose(segment.GetColor(), segment_color(written, n), atol=1e-5)
        np.testing.assert_array_equal(exported_mask(mrml_scene, node, segment_id, reference), written.mask)
    # The reference geometry Slicer will edit on is the grid we wrote.
    stored = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(
        segmentation.GetConversionParameter("Reference image geometry"), stored)
    matrix = vtk.vtkMatrix4x4()
    stored.GetImageToWorldMatrix(matrix)
    stored_matrix = [[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]
    np.testing.assert_allclose(stored_matrix, geometry.ijk_to_ras, atol=1e-9)
    assert stored.GetDimensions() == shape


@pytest.mark.parametrize("crop", [False, True])
def test_we_read_slicer_segmentation(mrml_scene, tmp_path, crop):
    """Slicer builds a two-layer segmentation from label maps and saves it (optionally cropped)."""
    scene = mrml_scene.scene
    geometry = segment_geometry()
    shape = geometry.shape
    labels = np.zeros(shape, np.uint8)
    labels[box(shape, (2, 2, 2), (6, 6, 5))] = 1
    labels[box(shape, (8, 5, 4), (12, 9, 7))] = 2
    overlap = box(shape, (4, 4, 3), (10, 7, 6))  # covers parts of both labels
    reference = slicer_volume_node(scene, geometry)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "S")
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    logic = mrml_scene.logic("Segmentations")
    for array in (labels, overlap.astype(np.uint8)):  # two imports: two layers
        labelmap = slicer_volume_node(scene, geometry.with_array(array), "vtkMRMLLabelMapVolumeNode", "labels")
        assert logic.ImportLabelmapToSegmentationNode(labelmap, node)
    segmentation = node.GetSegmentation()
    segmentation.GetNthSegment(0).SetName("RV")
    segmentation.GetNthSegment(0).SetColor(0.1, 0.2, 0.3)
    assert segmentation.GetNumberOfLayers() == 2

    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetCropToMinimumExtent(crop)
    storage.SetFileName(str(tmp_path / "slicer.seg.nrrd"))
    assert storage.WriteData(node)

    grid, segments = read_segmentation(tmp_path / "slicer.seg.nrrd")
    assert grid.same_geometry(geometry, atol_mm=1e-4)
    assert [s.name for s in segments][0] == "RV" and len(segments) == 3
    np.testing.assert_allclose(segments[0].color, (0.1, 0.2, 0.3), atol=1e-5)
    np.testing.assert_array_equal(segments[0].mask, labels == 1)
    np.testing.assert_array_equal(segments[1].mask, labels == 2)
    np.testing.assert_array_equal(segments[2].mask, overlap)
    assert [s.segment_id for s in segments] == [segmentation.GetNthSegmentID(n) for n in range(3)]


# -- markups ---------------------------------------------------------------------------------------
POINTS = np.array([[12.5, -3.25, 40.0], [-7.0, 8.0, -9.5], [0.5, 0.0, 1.0]])


def test_slicer_reads_our_points(mrml_scene, tmp_path):
    path = write_points(tmp_path / "p.mrk.json", POINTS, labels=["top", "bottom", "left"])
    node = load_node(mrml_scene.scene, "vtkMRMLMarkupsFiducialNode", "vtkMRMLMarkupsJsonStorageNode", path)
    assert node.GetNumberOfControlPoints() == 3
    got = np.array([node.GetNthControlPointPosition(n) for n in range(3)])
    np.testing.assert_allclose(got, POINTS, atol=1e-9)
    assert [node.GetNthControlPointLabel(n) for n in range(3)] == ["top", "bottom", "left"]


@pytest.mark.parametrize("name, storage", [("s.mrk.json", "vtkMRMLMarkupsJsonStorageNode"),
                                           ("s.fcsv", "vtkMRMLMarkupsFiducialStorageNode")])
def test_we_read_slicer_points(mrml_scene, tmp_path, name, storage):
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "F")
    for n, xyz in enumerate(POINTS):
        node.AddControlPoint(vtk.vtkVector3d(*xyz), f"pt {n}")
    unplaced = node.AddControlPoint(vtk.vtkVector3d(1, 1, 1), "not placed")
    node.UnsetNthControlPointPosition(unplaced)
    points, labels = read_points(save_node(node, tmp_path / name, storage))
    np.testing.assert_allclose(points, POINTS, atol=1e-6)
    assert labels == ["pt 0", "pt 1", "pt 2"]
