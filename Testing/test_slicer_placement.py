"""Guided placement of extreme points and surface points (the messages under the module's point list)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ExtremeSeg"))

from conftest import make_ellipsoid  # noqa: E402
from ExtremeSegSlicerLib.placement import axis_label, extreme_points_guide, surface_points_guide  # noqa: E402

from ExtremeSegLib.simulate import simulate_extreme_points  # noqa: E402
from ExtremeSegLib.volume import Volume  # noqa: E402


@pytest.fixture(scope="module")
def case():
    image, label = make_ellipsoid(shape=(40, 36, 30), radii_mm=(14.0, 9.0, 8.0))
    clicks = simulate_extreme_points(label)  # order: I-low, I-high, J-low, J-high, K-low, K-high
    return image, clicks


def test_axis_labels_follow_the_image_direction():
    image = Volume.from_spacing(np.zeros((4, 4, 4)))
    assert [axis_label(image, a) for a in range(3)] == [
        "I (left-right)", "J (posterior-anterior)", "K (inferior-superior)"]
    flipped = Volume.from_spacing(np.zeros((4, 4, 4)), direction=np.diag([-1.0, -1.0, 1.0]))  # LPS-ordered
    assert axis_label(flipped, 0) == "I (right-left)"


def test_no_points_explains_the_task(case):
    image, _ = case
    guide = extreme_points_guide(np.zeros((0, 3)), image)
    assert guide.count == 0 and not guide.complete and not guide.error
    assert "6 extreme points" in guide.message and "K (inferior-superior)" in guide.message


def test_partial_clicks_name_the_missing_axes(case):
    image, clicks = case
    # the user clicked the two K ends, then the two I ends (shuffled)
    order = [5, 1, 4, 0]
    guide = extreme_points_guide(clicks[order], image)
    assert guide.pairs[0] == (4, 2) and guide.pairs[2] == (3, 1) and guide.pairs[1] == ()
    assert "4 of 6" in guide.message
    assert "Missing: both ends along J (posterior-anterior)" in guide.message
    assert not guide.complete and not guide.error


def test_a_fifth_click_is_paired_by_elimination(case):
    image, clicks = case
    guide = extreme_points_guide(clicks[[0, 1, 4, 5, 2]], image)
    assert guide.pairs[1] == (5,)
    assert "Point 5 has no partner: click the object's opposite end along J (posterior-anterior)" in guide.message


def test_a_lone_click_with_two_free_axes_asks_for_its_partner(case):
    image, clicks = case
    guide = extreme_points_guide(clicks[[2, 3, 0]], image)
    assert guide.pairs[1] == (1, 2)
    assert "Point 3 has no partner" in guide.message and "other axis" in guide.message


def test_six_clicks_in_any_order_are_complete(case):
    image, clicks = case
    order = [3, 0, 5, 2, 1, 4]
    guide = extreme_points_guide(clicks[order], image)
    assert guide.complete and not guide.error
    # point numbers are the user's click numbers: click n (1-based) is clicks[order[n - 1]]
    assert guide.pairs == ((2, 5), (4, 1), (6, 3))


@pytest.mark.parametrize("edit, message", [
    (lambda c, img: np.vstack([c, c[:1] + 5.0]), "remove 1"),
    (lambda c, img: np.vstack([c[:3], c[2:3]]), "same spot"),
    (lambda c, img: np.vstack([c[:2], img.index_to_ras([[80.0, 10.0, 10.0]])]), "outside the image"),
    (lambda c, img: np.vstack([c[:5], c[4:5] + [0.3, 0.0, 0.0]]), "points 5 and 6 are the same spot"),
])
def test_bad_clicks_are_reported(case, edit, message):
    image, clicks = case
    guide = extreme_points_guide(edit(clicks, image), image)
    assert guide.error and not guide.complete
    assert message in guide.message


def test_six_clicks_without_extent_report_the_core_validation(case):
    image, clicks = case
    flat = clicks.copy()
    k_index = image.ras_to_index(flat)
    k_index[:, 2] = 15.0  # all clicks in one slice: no K extent
    k_index[4, 0] += 3  # (the K "ends" moved apart in-plane so they are not the same spot)
    guide = extreme_points_guide(image.index_to_ras(k_index), image)
    assert guide.error and "no extent along image axis K" in guide.message


def test_surface_points_count_and_validation(case):
    image, clicks = case
    assert "at least 6" in surface_points_guide(np.zeros((0, 3)), image).message
    guide = surface_points_guide(clicks[:4], image)
    assert "add 2 more" in guide.message and not guide.complete
    extra = image.index_to_ras([[20.0, 18.0, 8.0], [20.0, 11.0, 15.0]])
    assert surface_points_guide(np.vstack([clicks, extra]), image).complete
    bad = surface_points_guide(np.vstack([clicks, image.index_to_ras([[-9.0, 0, 0]])]), image)
    assert bad.error and "outside the image" in bad.message
