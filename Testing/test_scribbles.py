"""Scribbles -> seed areas: reading label maps and .seg.nrrd segments, the random walker per slice / in 3D, tau."""

import numpy as np
import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import Segment, read_image, read_labelmap, write_segmentation, write_volume
from ExtremeSegLib.pseudolabel.extreme_points import normalise_intensities
from ExtremeSegLib.pseudolabel.random_walker import random_walker
from ExtremeSegLib.pseudolabel.scribbles import (
    random_walker_probabilities,
    read_scribbles,
    scribble_seed_areas,
    scribbles_from_labelmap,
    scribbles_from_segments,
    seed_areas,
)
from ExtremeSegLib.volume import Volume

SPACING = (1.5, 1.5, 6.0)
UNPAINTED_VALUE = 3  # two classes: 0 background, 1 ring, 2 disk, 3 not painted


def heart_phantom(shape=(40, 40, 4), spacing=SPACING, noise=0.1, seed=0):
    """A bright disk (class 2) in a dark ring (class 1) on a mid-grey background: (image, labels, scribble map)."""
    rng = np.random.default_rng(seed)
    ii, jj = np.meshgrid(*[np.arange(n) for n in shape[:2]], indexing="ij")
    r = np.hypot((ii - shape[0] / 2) * spacing[0], (jj - shape[1] / 2) * spacing[1])
    labels2d = np.where(r < 9, 2, np.where(r < 14, 1, 0))
    labels = np.repeat(labels2d[:, :, None], shape[2], axis=2).astype(np.uint8)
    image = np.choose(labels, [0.6, 0.2, 1.0]) + noise * rng.standard_normal(shape)
    scribble = np.full(shape, UNPAINTED_VALUE, dtype=np.uint8)
    c = shape[0] // 2
    scribble[c - 2:c + 3, c, :] = 2  # a stroke through the disk
    scribble[c - 8, c - 2:c + 3, :] = 1  # a stroke across the ring
    scribble[(np.abs(r - 19) < 0.8)[:, :, None] & np.ones(shape, bool)] = 0  # a background loop
    geometry = Volume.from_spacing(image.astype(np.float32), spacing, origin=(10.0, -5.0, 2.0))
    return geometry, geometry.with_array(labels), geometry.with_array(scribble)


def test_labelmap_scribbles_are_class_indexed():
    _, _, scribble = heart_phantom()
    scribbles = scribbles_from_labelmap(scribble, [[1], [2]])  # unannotated defaults to classes + 1 = 3
    seeds = scribbles.labels.array
    np.testing.assert_array_equal(seeds == -1, scribble.array == 3)
    np.testing.assert_array_equal(seeds[scribble.array == 2], 2)
    assert scribbles.classes == [0, 1, 2]
    swapped = scribbles_from_labelmap(scribble, [[2], [1]])  # class order follows the class list
    np.testing.assert_array_equal(swapped.labels.array[scribble.array == 2], 1)


def test_labelmap_scribbles_refuse_unknown_and_ambiguous_values():
    _, _, scribble = heart_phantom()
    with pytest.raises(InputError, match="label value 2 is neither"):
        scribbles_from_labelmap(scribble, [[1]], unannotated=3)
    with pytest.raises(InputError, match="two meanings"):
        scribbles_from_labelmap(scribble, [[1], [2, 3]])
    blank = scribble.with_array(np.where(scribble.array == 0, 3, scribble.array).astype(np.uint8))
    with pytest.raises(InputError, match="no background"):
        scribbles_from_labelmap(blank, [[1], [2]])


def test_seg_nrrd_segments_feed_the_seed_areas(tmp_path):
    """Scribbles painted as segments in Slicer's Segment Editor, saved as .seg.nrrd by the io module."""
    image, _, scribble = heart_phantom()
    segments = [Segment("Background", scribble.array == 0), Segment("Myocardium ring", scribble.array == 1),
                Segment(" DISK ", scribble.array == 2)]
    path = write_segmentation(tmp_path / "strokes.seg.nrrd", image, segments)
    scribbles = read_scribbles(path, image, ["ring", "disk"], [[1], [2]],
                               segment_classes={"Myocardium ring": "ring"})
    np.testing.assert_array_equal(scribbles.labels.array,
                                  scribbles_from_labelmap(scribble, [[1], [2]]).labels.array)
    label_file = write_volume(scribble, tmp_path / "strokes.nii.gz")
    from_file = read_scribbles(label_file, image, ["ring", "disk"], [[1], [2]])
    np.testing.assert_array_equal(from_file.labels.array, scribbles.labels.array)


def test_seg_nrrd_errors_name_the_segment(tmp_path):
    image, _, scribble = heart_phantom()
    background, ring = scribble.array == 0, scribble.array == 1
    cases = [
        ([Segment("Background", background), Segment("Aorta", ring)], "segment 'Aorta' is neither a class"),
        ([Segment("Background", background), Segment("ring", np.zeros_like(ring))], "segment 'ring' is empty"),
        ([Segment("Background", background | ring), Segment("ring", ring)], "overlap in"),
    ]
    for segments, message in cases:
        with pytest.raises(InputError, match=message):
            scribbles_from_segments(image, segments, ["ring", "disk"])
    path = write_segmentation(tmp_path / "overlap.seg.nrrd", image, cases[2][0])  # stored as two layers
    with pytest.raises(InputError, match="overlap in"):
        read_scribbles(path, image, ["ring", "disk"], [[1], [2]])
    other = Volume.from_spacing(image.array, (1.0, 1.0, 6.0))
    with pytest.raises(InputError, match="geometry"):
        read_scribbles(write_volume(scribble, tmp_path / "s.nrrd"), other, ["ring", "disk"], [[1], [2]])


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_seed_areas_respect_tau_and_are_right(mode):
    image, labels, scribble = heart_phantom()
    scribbles = scribbles_from_labelmap(scribble, [[1], [2]])
    probabilities = random_walker_probabilities(image, scribbles, 3, beta=1000.0, mode=mode)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-4)
    tau = 0.99
    label = scribble_seed_areas(image, scribbles, 3, tau=tau, beta=1000.0, mode=mode)
    known = label.weight > 0
    strokes = scribbles.labels.array >= 0
    assert np.all(probabilities.max(0)[known & ~strokes] > tau)
    assert np.all(probabilities.max(0)[~known] <= tau)
    accuracy = (label.hard()[known] == labels.array[known]).mean()
    assert accuracy > 0.98
    assert accuracy > (probabilities.argmax(0) == labels.array).mean()  # the sure part is the better part
    for c in (1, 2):  # and the seed areas grow well beyond the strokes
        assert np.sum(known & (label.hard() == c)) > 3 * np.sum(scribbles.labels.array == c)
    assert 0.02 < (~known).mean() < 0.2


def test_slices_without_strokes_stay_unknown_per_slice_but_not_in_3d():
    image, labels, scribble = heart_phantom()
    array = scribble.array.copy()
    array[:, :, 1] = UNPAINTED_VALUE
    scribbles = scribbles_from_labelmap(scribble.with_array(array), [[1], [2]])
    per_slice = scribble_seed_areas(image, scribbles, 3, beta=1000.0, mode="2d")
    in_3d = scribble_seed_areas(image, scribbles, 3, beta=1000.0, mode="3d")
    assert not per_slice.weight[:, :, 1].any()
    known = in_3d.weight[:, :, 1] > 0
    assert known.mean() > 0.5
    assert (in_3d.hard()[:, :, 1][known] == labels.array[:, :, 1][known]).mean() > 0.98


def test_per_slice_walk_is_one_walk_per_slice():
    # all slices walk in one call (no edges between them, beta per slice): the same as walking each slice alone,
    # also where a slice lacks a class (0 there) or has strokes of one class only (that class everywhere)
    image, labels, scribble = heart_phantom(shape=(40, 40, 5))
    array = scribble.array.copy()
    array[:, :, 1][array[:, :, 1] == 1] = UNPAINTED_VALUE  # slice 1: no ring stroke
    array[:, :, 3][array[:, :, 3] != 0] = UNPAINTED_VALUE  # slice 3: background strokes only
    image = image.with_array(image.array * np.linspace(1.0, 3.0, 5)[None, None])  # slices of different contrast
    scribbles = scribbles_from_labelmap(scribble.with_array(array), [[1], [2]])
    together = random_walker_probabilities(image, scribbles, 3, beta=1000.0, solver="direct", multiscale=False)
    intensities = normalise_intensities(image.array)
    for k in (0, 1, 4):
        seeds = scribbles.labels.array[:, :, k:k + 1]
        present = np.unique(seeds[seeds >= 0])
        local = np.where(seeds >= 0, np.searchsorted(present, np.maximum(seeds, 0)), -1).astype(np.int16)
        alone = random_walker(intensities[:, :, k:k + 1], local, SPACING, beta=1000.0, solver="direct")
        np.testing.assert_allclose(together[present][:, :, :, k:k + 1], alone, atol=1e-5)
    assert not together[1, :, :, 1].any()
    assert np.all(together[0, :, :, 3] == 1.0)


def test_coarse_to_fine_seed_areas_agree_with_the_exact_walk():
    # slices large enough for a coarse level; the coarse-to-fine walk decides the seed areas like the single-level
    # one on all but a few voxels (measured on ACDC in benchmarks/results/scribbles_seeds_speed.md)
    image, labels, scribble = heart_phantom(shape=(200, 200, 3), spacing=(0.3, 0.3, 6.0))
    scribbles = scribbles_from_labelmap(scribble, [[1], [2]])
    exact = random_walker_probabilities(image, scribbles, 3, beta=1000.0, multiscale=False)
    fast = random_walker_probabilities(image, scribbles, 3, beta=1000.0, multiscale=True)
    np.testing.assert_allclose(fast.sum(0), 1.0, atol=1e-5)
    assert np.abs(fast - exact).max() < 0.01
    assert np.mean(seed_areas(fast, 0.99) != seed_areas(exact, 0.99)) < 1e-3


def test_seed_areas_threshold():
    p = np.array([[0.995, 0.5, 0.001], [0.005, 0.5, 0.999]])[:, :, None, None]
    np.testing.assert_array_equal(seed_areas(p, 0.99)[:, 0, 0], [0, -1, 1])
    with pytest.raises(InputError, match="tau"):
        seed_areas(p, 1.0)


def test_acdc_seed_areas_are_accurate(shared_data):
    """One real volume with its hand-drawn scribbles: 2D seed areas, tau 0.99, against the expert labels."""
    stem = shared_data / "acdc" / "patient001_frame01"
    image = read_image(f"{stem}_image.nii.gz")
    reference = read_labelmap(f"{stem}_label.nii.gz").array
    scribbles = read_scribbles(f"{stem}_scribble.nii.gz", image, ["RV", "Myo", "LV"], [[1], [2], [3]])
    label = scribble_seed_areas(image, scribbles, 4, tau=0.99, beta=1000.0, mode="2d")
    known = label.weight > 0
    assert known.mean() > 0.8
    assert (label.hard()[known] == reference[known]).mean() > 0.995
    for c in (1, 2, 3):
        assert np.sum(known & (label.hard() == c)) > 1.5 * np.sum(scribbles.labels.array == c)
