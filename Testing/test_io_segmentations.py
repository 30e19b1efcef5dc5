"""Segments <-> label maps and the .seg.nrrd format (ours -> ours; Slicer cross-checks are in test_io_slicer_files)."""

import nrrd
import numpy as np
import pytest
from test_io_volumes import rotation

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import (
    Segment,
    labelmap_to_segments,
    read_segmentation,
    segments_to_labelmap,
    write_segmentation,
    write_volume,
)
from ExtremeSegLib.volume import Volume

SHAPE = (12, 10, 8)


def geometry():
    return Volume.from_spacing(np.zeros(SHAPE, np.uint8), spacing=(0.8, 1.1, 2.5), origin=(5.0, -7.0, 11.0),
                               direction=rotation(0.1, 0.4, -0.3))


def box(lo, hi):
    mask = np.zeros(SHAPE, bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return mask


def test_labelmap_segments_round_trip_keeps_values():
    labels = np.zeros(SHAPE, np.int16)
    labels[box((1, 1, 1), (4, 4, 4))] = 1
    labels[box((6, 6, 2), (9, 9, 5))] = 3
    segments = labelmap_to_segments(geometry().with_array(labels), names={1: "RV", 2: "Myo", 3: "LV"})
    summary = [(s.name, s.label_value, int(s.mask.sum())) for s in segments]
    assert summary == [("RV", 1, 27), ("Myo", 2, 0), ("LV", 3, 27)]
    back = segments_to_labelmap(segments, geometry())
    np.testing.assert_array_equal(back.array, labels)
    assert back.same_geometry(geometry())


def test_unnamed_labels_and_positions():
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 0, 0] = 5
    assert [s.name for s in labelmap_to_segments(geometry().with_array(labels))] == ["Label_5"]
    plain = [Segment("a", box((0, 0, 0), (2, 2, 2))), Segment("b", box((3, 3, 3), (4, 4, 4)))]
    assert set(np.unique(segments_to_labelmap(plain, geometry()).array)) == {0, 1, 2}


def test_overlap_and_duplicate_values_are_refused():
    a, b = Segment("A", box((0, 0, 0), (4, 4, 4))), Segment("B", box((3, 3, 3), (6, 6, 6)))
    with pytest.raises(InputError, match="'A' and 'B' overlap in 1 voxels"):
        segments_to_labelmap([a, b], geometry())
    c = Segment("C", box((8, 8, 6), (9, 9, 7)), label_value=1)
    with pytest.raises(InputError, match="'A' and 'C' both have label value 1"):
        segments_to_labelmap([a, c], geometry())


def test_segment_validation():
    with pytest.raises(InputError, match="other than 0 and 1"):
        Segment("bad", np.full(SHAPE, 2))
    with pytest.raises(InputError, match="colour"):
        Segment("bad", box((0, 0, 0), (1, 1, 1)), color=(2.0, 0.0, 0.0))
    assert Segment("ok", np.ones(SHAPE, np.uint8)).mask.dtype == bool


def test_single_layer_round_trip(tmp_path):
    segments = [Segment("Liver", box((1, 1, 1), (5, 6, 4)), (0.8, 0.2, 0.1), "liver_id"),
                Segment("Empty", np.zeros(SHAPE, bool)),
                Segment("Tumour", box((7, 2, 5), (10, 4, 8)), (0.1, 0.9, 0.3))]
    path = write_segmentation(tmp_path / "s.seg.nrrd", geometry(), segments)
    data, header = nrrd.read(str(path))
    assert data.ndim == 3 and header["Segment1_Layer"] == "0"
    assert header["Segment0_Extent"] == header["Segment1_Extent"] == "1 9 1 5 1 7"  # the layer's box
    grid, read = read_segmentation(path)
    assert grid.same_geometry(geometry(), atol_mm=1e-6)
    assert [s.name for s in read] == ["Liver", "Empty", "Tumour"]
    assert [s.segment_id for s in read] == ["liver_id", "Segment_2", "Segment_3"]
    assert read[0].color == (0.8, 0.2, 0.1)
    for written, got in zip(segments, read):
        np.testing.assert_array_equal(got.mask, written.mask)


def test_overlapping_segments_are_written_in_layers(tmp_path):
    segments = [Segment("A", box((0, 0, 0), (6, 6, 6))), Segment("B", box((4, 4, 4), (9, 9, 8))),
                Segment("C", box((10, 0, 0), (12, 2, 2))), Segment("D", box((5, 5, 5), (7, 7, 7)))]
    path = write_segmentation(tmp_path / "layers.seg.nrrd", geometry(), segments)
    data, header = nrrd.read(str(path))
    assert data.shape == (3,) + SHAPE and header["kinds"][0] == "list"
    assert [header[f"Segment{n}_Layer"] for n in range(4)] == ["0", "1", "0", "2"]
    grid, read = read_segmentation(path)
    for written, got in zip(segments, read):
        np.testing.assert_array_equal(got.mask, written.mask)
    assert grid.same_geometry(geometry(), atol_mm=1e-6)


def test_cropped_file_is_placed_by_its_offset(tmp_path):
    """A file stored as Slicer does with "crop to minimum extent": data box + offset + reference geometry."""
    ref = geometry()
    mask = box((3, 2, 4), (6, 5, 7))
    stored = mask[3:6, 2:5, 4:7].astype(np.uint8)
    lps = np.diag([-1.0, -1.0, 1.0])
    origin_ras = ref.index_to_ras([3, 2, 4])
    geometry_text = "".join(f"{v!r};" for v in ref.ijk_to_ras.ravel().tolist()) + "0;11;0;9;0;7;"
    header = {
        "space": "left-posterior-superior", "kinds": ["domain"] * 3,
        "space directions": (lps @ ref.ijk_to_ras[:3, :3]).T, "space origin": lps @ origin_ras,
        "Segment0_ID": "S1", "Segment0_Name": "Lesion", "Segment0_Color": "1 0 0", "Segment0_LabelValue": "1",
        "Segment0_Layer": "0", "Segment0_Extent": "0 2 0 2 0 2",
        "Segmentation_ReferenceImageExtentOffset": "3 2 4",
        "Segmentation_ConversionParameters": f"Reference image geometry|{geometry_text}|desc&",
    }
    nrrd.write(str(tmp_path / "crop.seg.nrrd"), stored, header)
    grid, (segment,) = read_segmentation(tmp_path / "crop.seg.nrrd")
    assert grid.shape == SHAPE and grid.same_geometry(ref, atol_mm=1e-6)
    np.testing.assert_array_equal(segment.mask, mask)


def test_plain_labelmaps_read_as_segments(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[box((1, 1, 1), (3, 3, 3))] = 2
    for name in ("l.nrrd", "l.nii.gz"):
        path = write_volume(geometry().with_array(labels), tmp_path / name)
        grid, segments = read_segmentation(path)
        assert [(s.name, s.label_value) for s in segments] == [("Label_2", 2)]
        np.testing.assert_array_equal(segments[0].mask, labels == 2)
        assert grid.same_geometry(geometry(), atol_mm=1e-4)


# -- bad input -------------------------------------------------------------------------------------
def test_segmentation_without_segments(tmp_path):
    header = {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": np.zeros(3),
              "Segmentation_MasterRepresentation": "Binary labelmap",
              "Segmentation_ReferenceImageExtentOffset": "0 0 0"}
    nrrd.write(str(tmp_path / "none.seg.nrrd"), np.zeros((2, 2, 2), np.uint8), header)
    with pytest.raises(InputError, match="contains no segments"):
        read_segmentation(tmp_path / "none.seg.nrrd")
    write_volume(geometry(), tmp_path / "zeros.nrrd")
    with pytest.raises(InputError, match="contains no segments"):
        read_segmentation(tmp_path / "zeros.nrrd")


def test_missing_and_truncated(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_segmentation(tmp_path / "none.seg.nrrd")
    path = write_segmentation(tmp_path / "s.seg.nrrd", geometry(), [Segment("A", np.ones(SHAPE, bool))])
    (tmp_path / "cut.seg.nrrd").write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InputError, match="could not be read as NRRD"):
        read_segmentation(tmp_path / "cut.seg.nrrd")


def test_writer_refusals(tmp_path):
    one = [Segment("A", box((0, 0, 0), (2, 2, 2)))]
    with pytest.raises(InputError, match=r"\.seg\.nrrd"):
        write_segmentation(tmp_path / "s.nrrd", geometry(), one)
    with pytest.raises(InputError, match="no segments"):
        write_segmentation(tmp_path / "s.seg.nrrd", geometry(), [])
    with pytest.raises(InputError, match="has shape"):
        write_segmentation(tmp_path / "s.seg.nrrd", geometry(), [Segment("A", np.zeros((3, 3, 3), bool))])
    write_segmentation(tmp_path / "s.seg.nrrd", geometry(), one)
    with pytest.raises(InputError, match="already exists"):
        write_segmentation(tmp_path / "s.seg.nrrd", geometry(), one)
