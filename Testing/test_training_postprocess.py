"""Label-map post-processing: the clicks' box, one component per class, the convex shape prior."""

import numpy as np
import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.masks import largest_component
from ExtremeSegLib.recipes import JobConfig
from ExtremeSegLib.training.postprocess import PostprocessConfig, postprocess_labels

SPACING = (1.5, 1.5, 10.0)


def two_classes():
    labels = np.zeros((40, 40, 6), np.uint8)
    labels[5:20, 5:20, 1:5] = 1
    labels[30:33, 30:33, 2] = 1  # a stray blob of class 1
    labels[22:36, 8:20, 1:5] = 2
    labels[2:4, 36:38, 5] = 2  # a stray blob of class 2
    return labels


def test_each_class_keeps_its_largest_component():
    labels = two_classes()
    out = postprocess_labels(labels, SPACING, PostprocessConfig())
    assert out[31, 31, 2] == 0 and out[3, 37, 5] == 0
    assert np.count_nonzero(out == 1) == 15 * 15 * 4 and np.count_nonzero(out == 2) == 14 * 12 * 4
    assert labels[31, 31, 2] == 1  # the input is not changed
    off = PostprocessConfig(largest_component=False)
    assert np.array_equal(postprocess_labels(labels, SPACING, off), labels)


def test_largest_component_of_an_empty_mask_is_empty():
    assert not largest_component(np.zeros((4, 4, 4), bool)).any()


def test_outside_the_clicks_box_is_background_only_with_clicks():
    labels = two_classes()
    box = (np.array([0, 0, 0]), np.array([21, 40, 6]))
    clipped = postprocess_labels(labels, SPACING, PostprocessConfig(largest_component=False), box)
    assert not clipped[21:].any() and np.array_equal(clipped[:21], labels[:21])
    assert np.array_equal(postprocess_labels(labels, SPACING, PostprocessConfig(clip_to_points=False), box),
                          postprocess_labels(labels, SPACING, PostprocessConfig(), None))


def test_convex_fills_each_slice_but_takes_no_voxel_from_another_class():
    labels = np.zeros((40, 40, 4), np.uint8)
    labels[5:30, 5:30, 1:3] = 1
    labels[10:25, 20:30, 1:3] = 2  # class 2 bites into class 1's square
    labels[12:22, 5:12, 2] = 0  # a notch in class 1 that belongs to nobody
    out = postprocess_labels(labels, SPACING, PostprocessConfig(convex=True))
    assert np.all(out[12:22, 5:12, 2] == 1)  # the notch is filled
    assert np.array_equal(out == 2, labels == 2)  # class 2 keeps its voxels


def test_settings_are_checked_and_travel_in_the_job_config():
    with pytest.raises(InputError, match="box_margin_mm"):
        PostprocessConfig(box_margin_mm=-1.0)
    assert PostprocessConfig.from_description(None) == PostprocessConfig(False, 3.0, False, False)
    job = {"recipe": "extreme_points", "output": "run", "cases": [{"image": "a.nii.gz", "points": "a.mrk.json"}]}
    config = JobConfig.from_dict({**job, "postprocess": {"convex": True}})
    assert config.postprocess.convex and config.postprocess.largest_component
    assert JobConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="unknown key 'hull' in postprocess"):
        JobConfig.from_dict({**job, "postprocess": {"hull": True}})


def test_convex_can_name_the_classes_it_applies_to():
    labels = np.zeros((40, 40, 4), np.uint8)
    labels[5:30, 5:18, 1:3] = 1
    labels[12:22, 5:10, 2] = 0  # a notch in class 1
    labels[5:30, 22:35, 1:3] = 2
    labels[12:22, 30:35, 2] = 0  # the same notch in class 2
    names = ["RV", "LV"]
    out = postprocess_labels(labels, SPACING, PostprocessConfig(convex=("LV",)), class_names=names)
    assert np.all(out[12:22, 30:35, 2] == 2) and not out[12:22, 5:10, 2].any()  # only LV's notch is filled
    with pytest.raises(InputError, match="class names are needed"):
        postprocess_labels(labels, SPACING, PostprocessConfig(convex=("LV",)))
    job = {"recipe": "scribbles", "output": "run", "cases": [{"image": "a.nii.gz", "scribble": "a.nii.gz"}],
           "classes": [{"name": n, "label_values": [v]} for v, n in enumerate(names, start=1)]}
    config = JobConfig.from_dict({**job, "postprocess": {"convex": ["LV"]}})
    assert config.postprocess.convex == ("LV",) and JobConfig.from_dict(config.to_dict()) == config
    assert PostprocessConfig.from_description(config.to_dict()["postprocess"]) == config.postprocess
    with pytest.raises(InputError, match="postprocess.convex names 'Myo', which is not a class of the job"):
        JobConfig.from_dict({**job, "postprocess": {"convex": ["Myo"]}})
    with pytest.raises(InputError, match="postprocess.convex"):
        JobConfig.from_dict({**job, "postprocess": {"convex": "LV"}})
    with pytest.raises(InputError, match="true, false or a list of class names"):
        PostprocessConfig.from_description({"convex": "LV"})  # a hand-edited model file
