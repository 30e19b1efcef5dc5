"""Model grids (crop + resample, both ways), inputs, normalisation, patches and augmentation."""

import numpy as np
import pytest
from conftest import make_ellipsoid

from ExtremeSegLib.annotations import ExtremePoints
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.simulate import simulate_extreme_points
from ExtremeSegLib.training.data import (
    Augmentation,
    CaseFrame,
    InputSpec,
    Normalisation,
    TrainingVolume,
    augment,
    frame_case,
    network_inputs,
    pad_to,
    sample_patch,
)

OBLIQUE = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def test_normalisations():
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 20.0, (20, 20, 20))
    x[0, 0, 0] = 1e6  # an outlier must not squash everything else
    z = Normalisation("zscore").apply(x)
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3 and z.max() < 4
    p = Normalisation("percentile", 1, 99).apply(x)
    assert p.min() == 0.0 and p.max() == 1.0
    ct = Normalisation.for_modality("ct").apply(np.array([-1000.0, 40.0, 3000.0]))
    assert ct.tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(InputError, match="unknown normalisation"):
        Normalisation("minmax")
    with pytest.raises(InputError, match="unknown modality"):
        Normalisation.for_modality("pet")


def test_frame_crops_resamples_and_maps_back():
    image, label = make_ellipsoid(shape=(40, 36, 30), spacing=(1.0, 1.2, 1.5), direction=OBLIQUE)
    points = ExtremePoints.from_points(simulate_extreme_points(label), image)
    spec = InputSpec(pad_mm=5.0, spacing_mm=(2.0, 2.0, 3.0)).resolved("mri", None)
    frame = frame_case(image, spec, points)
    lo, hi = points.box_index(image, 5.0)
    assert frame.lo.tolist() == lo.tolist() and frame.hi.tolist() == hi.tolist()
    assert np.allclose(frame.grid.spacing, (2.0, 2.0, 3.0), rtol=0.1)
    # the model grid covers the same field of view: its outer voxel edges are the crop's
    crop = image.crop(lo, hi)
    for index_grid, index_crop in ((-0.5, -0.5), (np.asarray(frame.grid.shape) - 0.5, np.asarray(crop.shape) - 0.5)):
        assert np.allclose(frame.grid.index_to_ras(np.broadcast_to(index_grid, 3)),
                           crop.index_to_ras(np.broadcast_to(index_crop, 3)), atol=1e-6)
    one_hot = np.stack([label.array == 0, label.array == 1]).astype(np.float32)
    back = frame.to_image(frame.to_model(one_hot), fill=[1.0, 0.0])
    assert back.shape == (2,) + image.shape
    recovered = back[1] >= 0.5
    overlap = 2 * np.sum(recovered & (label.array > 0)) / (recovered.sum() + label.array.sum())
    assert overlap > 0.9  # a 2-3x coarser grid and back
    outside = np.ones(image.shape, bool)
    outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
    assert np.all(back[0][outside] == 1.0) and np.all(back[1][outside] == 0.0)


def test_inputs_are_the_image_then_the_cues_at_the_clicks():
    image, label = make_ellipsoid()
    points = ExtremePoints.from_points(simulate_extreme_points(label), image)
    spec = InputSpec(cues=("heatmap", "confidence")).resolved("mri", image.spacing)
    frame = frame_case(image, spec, points)
    inputs = network_inputs(frame, spec, points)
    assert inputs.shape == (3,) + frame.grid.shape and inputs.dtype == np.float32
    assert spec.channels == ["image", "heatmap", "confidence"]
    clicks = np.rint(frame.grid.ras_to_index(points.points_ras)).astype(int)
    assert np.allclose(inputs[1][tuple(clicks.T)], 1.0, atol=0.05)
    with pytest.raises(InputError, match="extreme points"):
        frame_case(image, spec, None)
    whole = InputSpec(cues=(), crop_to_points=False).resolved("mri", image.spacing)
    assert not whole.needs_points and frame_case(image, whole).grid.shape == image.shape


def volume_with_object():
    target = np.zeros((2, 12, 12, 12), np.float32)
    target[0] = 1.0
    target[:, 4:8, 4:8, 4:8] = [[[[0.0]]], [[[1.0]]]]
    image = target[1:2] * 2.0 - 1.0
    return TrainingVolume(image, target, np.ones((12, 12, 12), np.float32))


def test_padding_is_unknown_background_and_patches_find_the_object():
    padded = pad_to(volume_with_object(), (16, 12, 14))
    assert padded.weight.shape == (16, 12, 14)
    assert padded.weight[:2].sum() == 0 and np.all(padded.target[0, :2] == 1.0)
    assert padded.inputs.shape == (1, 16, 12, 14)
    rng = np.random.default_rng(0)
    for _ in range(10):
        _, target, _ = sample_patch(padded, (6, 6, 6), rng, foreground_fraction=1.0)
        assert target.shape == (2, 6, 6, 6) and target[1].any()


def test_augmentation_keeps_image_and_labels_aligned():
    volume = volume_with_object()
    rng = np.random.default_rng(1)
    aug = Augmentation(flip_probability=0.5, rotate_probability=1.0, max_rotation_deg=10, intensity_scale=0.0,
                       intensity_shift=0.0)
    for _ in range(5):
        x, y, w = augment(volume.inputs, volume.target, volume.weight, rng, (1.0, 1.0, 1.0), aug)
        assert x.shape == volume.inputs.shape and y.shape == volume.target.shape and w.shape == volume.weight.shape
        assert np.array_equal(x[0] > 0, y[1] > 0.5)  # the object moved with its label
        assert np.allclose(y.sum(axis=0), 1.0, atol=1e-5)
    flipped_only = Augmentation(flip_probability=1.0, rotate_probability=0.0, intensity_scale=0.0, intensity_shift=0.0)
    x, y, _ = augment(volume.inputs, volume.target, volume.weight, rng, (1.0, 1.0, 1.0), flipped_only)
    assert np.array_equal(x, volume.inputs[:, ::-1, ::-1, ::-1])
    with pytest.raises(InputError, match="share the grid"):
        TrainingVolume(volume.inputs, volume.target[:, :5], volume.weight)


def test_frame_of_the_whole_image_is_the_identity():
    image, _ = make_ellipsoid(shape=(10, 12, 8))
    frame = CaseFrame.build(image, image.spacing)
    assert frame.grid.same_geometry(image)
    assert np.array_equal(frame.grid.array, image.array)
