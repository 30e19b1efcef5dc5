"""The scribble effect's compute step on real slicer-core MRML nodes: preview, class mapping, apply, undo."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ExtremeSeg"))

from conftest import make_ellipsoid  # noqa: E402
from slicer_scene import require_slicer  # noqa: E402

require_slicer()

import slicer  # noqa: E402
from ExtremeSegSlicerLib.scribble_preview import (  # noqa: E402
    apply_preview,
    compute_scribble_preview,
    scribble_class_ids,
    show_preview,
)

from ExtremeSegLib import mrml  # noqa: E402
from ExtremeSegLib.errors import InputError  # noqa: E402
from ExtremeSegLib.io.segmentations import Segment  # noqa: E402
from ExtremeSegLib.metrics import dice  # noqa: E402


def _two_objects():
    """Two bright ellipsoids of different brightness on a dark background (image, labels 0/1/2)."""
    image, big = make_ellipsoid(shape=(40, 36, 24), radii_mm=(10.0, 8.0, 7.0), spacing=(1.0, 1.0, 1.5))
    labels = big.array.astype(np.uint8)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in labels.shape], indexing="ij"), -1).astype(float)
    small = np.sum(((idx - [7.0, 7.0, 12.0]) * [1.0, 1.0, 1.5] / [4.0, 4.0, 4.0]) ** 2, -1) <= 1.0
    labels[small] = 2
    array = np.where(labels == 1, 1.0, np.where(labels == 2, 0.5, 0.0)).astype(np.float32)
    array += 0.03 * np.random.default_rng(0).standard_normal(array.shape).astype(np.float32)
    return image.with_array(array), image.with_array(labels)


def _ball(shape, centre, radius):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return np.sum((idx - np.asarray(centre)) ** 2, -1) <= radius ** 2


@pytest.fixture
def scribbled(mrml_scene):
    """A volume node and a segmentation node holding a user segment plus 3 scribble segments."""
    image, labels = _two_objects()
    scene = mrml_scene.scene
    volume_node = mrml.add_volume_node(image, "MRI", scene=scene)
    user = Segment("Liver (user)", _ball(image.shape, (30, 28, 3), 2), (0.1, 0.2, 0.3))
    bg = np.zeros(image.shape, bool)
    bg[0:3, 20:36, :] = True  # strokes in the background, away from both objects
    bg[36:40, 0:10, :] = True
    scribbles = [
        user,
        Segment("Background", bg, (0.5, 0.5, 0.5)),
        Segment("Big", _ball(image.shape, (20, 18, 12), 2), (0.9, 0.3, 0.2)),
        Segment("Small", _ball(image.shape, (7, 7, 12), 1), (0.2, 0.4, 0.9)),
    ]
    node, ids = mrml.add_segments(scribbles, volume_node, name="Scribbles", suffix="", scene=scene)
    return volume_node, node, dict(zip(["user", "background", "big", "small"], ids)), labels


def _masks(node, volume_node):
    return {s.segment_id: s.mask for s in mrml.segments_from_node(node, volume_node)}


def test_classes_are_mapped_background_first(scribbled):
    volume_node, node, ids, _ = scribbled
    order = scribble_class_ids(node, "Background", [ids["big"], ids["background"], ids["small"]])
    assert order == [ids["background"], ids["big"], ids["small"]]
    with pytest.raises(InputError, match="choose which segment is the background"):
        scribble_class_ids(node, "Liver (user)", [ids["big"], ids["small"]])
    with pytest.raises(InputError, match="at least two segments"):
        scribble_class_ids(node, ids["background"], [ids["background"]])


def test_preview_segments_both_structures(scribbled):
    volume_node, node, ids, truth = scribbled
    preview = compute_scribble_preview(node, volume_node, ids["background"],
                                       [ids["background"], ids["big"], ids["small"]])
    assert [c.name for c in preview.classes] == ["Background", "Big", "Small"]
    assert preview.labels.same_geometry(mrml.geometry_from_node(volume_node))
    assert dice(preview.labels.array == 1, truth.array == 1) > 0.9
    assert dice(preview.labels.array == 2, truth.array == 2) > 0.85
    result = preview.result_segments()
    assert [(s.name, s.color) for s in result] == [("Big", (0.9, 0.3, 0.2)), ("Small", (0.2, 0.4, 0.9))]


def test_preview_node_shows_the_result(scribbled, mrml_scene):
    volume_node, node, ids, _ = scribbled
    preview = compute_scribble_preview(node, volume_node, "Background", [ids["background"], ids["big"]])
    preview_node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "preview")
    show_preview(preview, preview_node)
    show_preview(preview, preview_node)  # an update replaces, it does not pile up
    shown = mrml.segments_from_node(preview_node, volume_node)
    assert [s.name for s in shown] == ["Big"]
    assert np.array_equal(shown[0].mask, preview.labels.array == 1)


def test_apply_adds_new_segments_and_undo_restores_the_scribbles(scribbled):
    volume_node, node, ids, _ = scribbled
    before = _masks(node, volume_node)
    preview = compute_scribble_preview(node, volume_node, ids["background"],
                                       [ids["background"], ids["big"], ids["small"]])
    history = slicer.vtkSegmentationHistory()  # what the Segment Editor's saveStateForUndo() saves into
    history.SetSegmentation(node.GetSegmentation())
    history.SaveState()
    new_ids = apply_preview(preview, node)

    segmentation = node.GetSegmentation()
    assert [segmentation.GetSegment(i).GetName() for i in new_ids] == ["Big (ExtremeSeg)", "Small (ExtremeSeg)"]
    after = _masks(node, volume_node)
    for segment_id, mask in before.items():  # the user's segment and every scribble untouched
        assert np.array_equal(after[segment_id], mask)
    assert np.array_equal(after[new_ids[0]], preview.labels.array == 1)

    assert history.IsRestorePreviousStateAvailable()
    history.RestorePreviousState()
    restored = _masks(node, volume_node)
    assert sorted(restored) == sorted(before)
    for segment_id, mask in before.items():
        assert np.array_equal(restored[segment_id], mask)


def test_an_unpainted_class_is_named(scribbled, mrml_scene):
    volume_node, node, ids, _ = scribbled
    empty = node.GetSegmentation().AddEmptySegment("", "Tumor")
    with pytest.raises(InputError, match="segment 'Tumor' has no painted voxels"):
        compute_scribble_preview(node, volume_node, ids["background"], [ids["background"], empty])


def test_a_model_prior_must_match_the_classes(scribbled):
    volume_node, node, ids, truth = scribbled
    shape = truth.shape
    prior = np.zeros((2,) + shape, np.float32)
    prior[1] = truth.array == 1
    prior[0] = 1 - prior[1]
    with pytest.raises(InputError, match="predicts 2 classes but 3 segments"):
        compute_scribble_preview(node, volume_node, ids["background"],
                                 [ids["background"], ids["big"], ids["small"]], prior=prior, prior_weight=1.0)
    preview = compute_scribble_preview(node, volume_node, ids["background"], [ids["background"], ids["big"]],
                                       prior=prior, prior_weight=1.0)
    assert dice(preview.labels.array == 1, truth.array == 1) > 0.9


def test_overlapping_strokes_and_duplicate_names_are_refused(scribbled, mrml_scene):
    volume_node, node, ids, _ = scribbled
    clash = Segment("Big copy", _ball(tuple(volume_node.GetImageData().GetDimensions()), (20, 18, 12), 1))
    _, (clash_id,) = mrml.add_segments([clash], volume_node, node, suffix="")
    with pytest.raises(InputError, match="overlap"):
        compute_scribble_preview(node, volume_node, ids["background"], [ids["background"], ids["big"], clash_id])
    node.GetSegmentation().GetSegment(clash_id).SetName("big")
    with pytest.raises(InputError, match="two segments are named 'Big'"):
        compute_scribble_preview(node, volume_node, ids["background"], [ids["background"], ids["big"], clash_id])
