import itertools

import numpy as np
import pytest

from ExtremeSegLib.annotations import ExtremePoints, Scribbles, SurfacePoints
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.volume import Volume

IMAGE = Volume.from_spacing(np.zeros((30, 40, 20)), (1.0, 0.8, 2.5), (5, -3, 7))
INDEX = np.array([[3, 20, 10], [25, 18, 9], [12, 4, 11], [13, 35, 8], [14, 21, 1], [15, 19, 18]], float)


@pytest.mark.parametrize("order", list(itertools.permutations(range(6)))[::37])
def test_extreme_points_paired_whatever_the_order(order):
    ras = IMAGE.index_to_ras(INDEX[list(order)])
    ep = ExtremePoints.from_points(ras, IMAGE)
    assert np.allclose(ep.index(IMAGE).reshape(6, 3), INDEX)
    lo, hi = ep.box_index(IMAGE, pad_mm=2.0)  # 2 mm = 2, 3, 1 voxels; clipped to the grid
    assert lo.tolist() == [3 - 2, 4 - 3, 0]
    assert hi.tolist() == [25 + 1 + 2, 35 + 1 + 3, 20]


def test_extreme_points_tolerate_click_noise():
    rng = np.random.default_rng(1)
    noisy = INDEX + rng.normal(0, 1.0, INDEX.shape)
    ep = ExtremePoints.from_points(IMAGE.index_to_ras(noisy[::-1]), IMAGE)
    assert np.allclose(ep.index(IMAGE).reshape(6, 3), noisy)


@pytest.mark.parametrize(
    "points, message",
    [
        (INDEX[:5], "expected exactly 6"),
        (np.vstack([INDEX, INDEX[:1] + 3]), "expected exactly 6"),
        (np.vstack([INDEX[:5], INDEX[:1]]), "same spot"),
        (np.vstack([INDEX[:5], [[12, 45, 8]]]), "outside the image"),
        (np.vstack([INDEX[:5], [[np.nan, 1, 1]]]), "NaN"),
    ],
)
def test_extreme_points_bad_input(points, message):
    with pytest.raises(InputError, match=message):
        ExtremePoints.from_points(IMAGE.index_to_ras(points), IMAGE)


def test_extreme_points_collapsed_axis():
    flat = INDEX.copy()
    flat[:, 2] = 10.0  # all clicks on one K slice: no extent along K
    with pytest.raises(InputError, match="no extent along image axis K"):
        ExtremePoints.from_points(IMAGE.index_to_ras(flat), IMAGE)


def test_scribbles_classes_and_seeds():
    lab = np.full((6, 6, 3), 4, np.uint8)
    lab[0] = 0
    lab[3, 3] = 3
    lab[2, 2] = 1
    s = Scribbles(IMAGE.crop([0, 0, 0], [6, 6, 3]).with_array(lab))
    assert s.classes == [0, 1, 3]
    seeds = s.seeds()
    assert seeds[0, 0, 0] == 0 and seeds[2, 2, 0] == 1 and seeds[3, 3, 1] == 2 and seeds[5, 5, 2] == -1


@pytest.mark.parametrize("fill, message", [(0, "no foreground"), (1, "no background")])
def test_scribbles_missing_classes(fill, message):
    lab = np.full((4, 4, 4), 4, np.uint8)
    lab[0] = fill
    with pytest.raises(InputError, match=message):
        Scribbles(Volume.from_spacing(lab))


def test_scribbles_geometry_must_match():
    s = Scribbles(Volume.from_spacing(np.array([[[0, 1]]], np.uint8), (1, 1, 2)), unannotated=4)
    with pytest.raises(InputError, match="geometry"):
        s.require_matches(Volume.from_spacing(np.zeros((1, 1, 2))))


def test_surface_points_validated():
    pts = IMAGE.index_to_ras(INDEX)
    assert SurfacePoints.from_points(pts, IMAGE).ras.shape == (6, 3)
    with pytest.raises(InputError, match="at least 6"):
        SurfacePoints.from_points(pts[:3], IMAGE)
