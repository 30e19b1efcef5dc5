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
    coarsest_spacing,
    frame_case,
    grid_axes,
    network_inputs,
    pad_to,
    round_trip_dice,
    sample_patch,
    structure_thickness_mm,
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


def test_scaling_magnifies_the_plane_and_keeps_label_and_trust_on_the_image():
    # anisotropic (thick third axis): a disc in every slice; weight = 0.5 + 0.5 x foreground, so a trust map that
    # stayed behind, or a label moved apart from the image, shows
    ii, jj = np.mgrid[:32, :32]
    disc = ((ii - 15.5) ** 2 + (jj - 15.5) ** 2 <= 8 ** 2).astype(np.float32)
    fg = np.repeat(disc[..., None], 3, axis=2)
    volume = TrainingVolume(fg[None] * 2 - 1, np.stack([1 - fg, fg]), 0.5 + 0.5 * fg)
    only_scale = Augmentation(flip_probability=0.0, rotate_probability=0.0, scale_probability=1.0, max_scale=0.5,
                              intensity_scale=0.0, intensity_shift=0.0)
    rng = np.random.default_rng(3)
    ratios = []
    for _ in range(20):
        x, y, w = augment(volume.inputs, volume.target, volume.weight, rng, (1.0, 1.0, 5.0), only_scale)
        assert x.shape == volume.inputs.shape and y.shape == volume.target.shape and w.shape == volume.weight.shape
        assert np.array_equal(x[0] > 0, y[1] > 0.5)  # the object moved with its label
        assert np.allclose(w, 0.5 + 0.5 * y[1], atol=1e-5)  # and with its trust
        assert np.allclose(y.sum(axis=0), 1.0, atol=1e-5)
        assert np.array_equal(y[:, :, :, 0], y[:, :, :, 2])  # the thick axis is not resampled
        ratios.append((y[1, :, :, 1] > 0.5).sum() / disc.sum())
    # magnified by 1/1.5..1.5 per axis: the disc's area by 0.44..2.25 (pixelation aside), both ways
    assert 0.35 < min(ratios) < 0.8 and 1.25 < max(ratios) < 2.5
    off = Augmentation(flip_probability=0.0, rotate_probability=0.0, scale_probability=1.0, max_scale=0.0,
                       intensity_scale=0.0, intensity_shift=0.0)
    x, y, w = augment(volume.inputs, volume.target, volume.weight, rng, (1.0, 1.0, 5.0), off)
    assert np.allclose(y, volume.target, atol=1e-5) and np.allclose(x, volume.inputs, atol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"scale_probability": 1.5}, "training.augmentation.scale_probability must lie in [0, 1]"),
    ({"flip_probability": -0.1}, "training.augmentation.flip_probability must lie in [0, 1]"),
    ({"max_scale": 1.5}, "training.augmentation.max_scale must lie in [0, 1]"),
    ({"max_scale": -0.2}, "training.augmentation.max_scale must lie in [0, 1]"),
    ({"max_rotation_deg": 200}, "training.augmentation.max_rotation_deg must lie in [0, 180]"),
    ({"intensity_scale": 1.0}, "training.augmentation.intensity_scale must lie in [0, 1)"),
])
def test_augmentation_settings_are_checked(change, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Augmentation(**change)
    Augmentation(scale_probability=1.0, max_scale=1.0, max_rotation_deg=180)  # the bounds themselves are fine


def test_frame_of_the_whole_image_is_the_identity():
    image, _ = make_ellipsoid(shape=(10, 12, 8))
    frame = CaseFrame.build(image, image.spacing)
    assert frame.grid.same_geometry(image)
    assert np.array_equal(frame.grid.array, image.array)


# -- the planner's model grid -------------------------------------------------------------------------------

def band_and_square(spacing=(0.5, 0.5, 5.0)):
    """Class 1: a band 8 voxels wide across axis 0 (rows 10-17); class 2: a 20 x 20 square; 3 slices on axis 2."""
    classes = np.zeros((48, 40, 3), np.int16)
    classes[10:18] = 1
    classes[24:44, 10:30] = 2
    return classes, spacing


def test_thickness_is_twice_the_distance_transform_percentile_in_mm():
    classes, spacing = band_and_square()
    thickness = structure_thickness_mm(classes, spacing, 3, grid_axes(spacing))
    # the band's in-plane distances are 1, 2, 3, 4, 4, 3, 2, 1 voxels: 2 x its 95th percentile is 8 voxels
    assert thickness[0] == pytest.approx(8 * 0.5)
    assert 0.75 * 20 * 0.5 < thickness[1] < 20 * 0.5  # a square: below its width (a percentile, not the centre)
    unknown = classes.copy()
    unknown[14:18] = -1  # half the band untrusted: it bounds the band, which looks half as thick
    assert structure_thickness_mm(unknown, spacing, 3, [0, 1])[0] == pytest.approx(4 * 0.5)
    assert np.isnan(structure_thickness_mm(np.zeros_like(classes), spacing, 3, [0, 1])).all()


def test_grid_axes_are_the_finely_sampled_ones_except_a_slice_axis():
    assert grid_axes((0.5, 0.5, 5.0)) == [0, 1]
    assert grid_axes((1.0, 1.0, 1.0)) == [0, 1, 2]
    assert grid_axes((1.0, 1.0, 1.0), slice_axis=2) == [0, 1]


def test_coarsest_spacing_keeps_the_thinnest_structure_and_the_grid_floor():
    # the thinnest class (8 mm) 4 voxels across: 2 mm in-plane; the slice axis keeps its 5 mm
    assert coarsest_spacing((0.5, 0.5, 5.0), [8.0, np.nan, 20.0], [0, 1], 4.0) == (2.0, 2.0, 5.0)
    # a 40 mm field of view that must keep 32 voxels: at most 1.25 mm
    assert coarsest_spacing((0.5, 0.5, 5.0), [8.0], [0, 1], 4.0, extent_mm=(40, 40, 15), min_grid=32) == \
        (1.25, 1.25, 5.0)
    # never finer than the images
    assert coarsest_spacing((3.0, 3.0, 5.0), [8.0], [0, 1], 4.0) == (3.0, 3.0, 5.0)
    assert coarsest_spacing((1.0, 1.0, 5.0), [np.nan], [0, 1], 4.0) == (1.0, 1.0, 5.0)


def test_round_trip_dice_is_what_a_grid_costs_a_perfect_prediction():
    classes, _ = band_and_square()
    assert np.allclose(round_trip_dice(classes, classes.shape, 3), 1.0)
    thin = classes.copy()
    thin[thin == 1] = 0
    thin[9:12] = 1  # a band 3 voxels wide: a grid of 4 fine voxels per coarse one cannot hold it
    kept = round_trip_dice(thin, (12, 10, 3), 3)
    assert kept[0] < 0.9 < 0.95 < kept[1]
    assert np.isnan(round_trip_dice(np.zeros_like(classes), (12, 10, 3), 3)).all()
