"""Geodesic paths: they join the two points through adjacent voxels and follow low cost."""

import numpy as np
import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.masks import block_mean
from ExtremeSegLib.pseudolabel.geodesic import (
    extreme_point_paths,
    geodesic_cost,
    gradient_magnitude,
    path_grid_factors,
    shortest_path,
)


def _u_corridor(shape=(30, 30, 5)):
    """Cost 1 in a U-shaped corridor, 100 elsewhere: the straight line between the U's tips is expensive."""
    cost = np.full(shape, 100.0)
    cost[3:6, 3:27, :] = 1.0     # left arm (along J)
    cost[24:27, 3:27, :] = 1.0   # right arm
    cost[3:27, 24:27, :] = 1.0   # bottom joining the arms
    return cost


def test_path_connects_the_points_through_adjacent_voxels():
    cost = _u_corridor()
    start, end = (4, 4, 2), (25, 4, 2)
    path = shortest_path(cost, start, end)
    assert tuple(path[0]) == start and tuple(path[-1]) == end
    steps = np.abs(np.diff(path, axis=0))
    assert np.all(steps.max(axis=1) == 1)


def test_path_stays_on_low_cost_voxels():
    cost = _u_corridor()
    path = shortest_path(cost, (4, 4, 2), (25, 4, 2))
    assert np.all(cost[tuple(path.T)] == 1.0)
    assert path[:, 1].max() >= 24  # it went round the U, not across


def test_spacing_changes_the_cheapest_route():
    # Two routes of equal voxel count; with 5 mm along K the route through K is longer in mm.
    cost = np.full((9, 3, 9), 1.0)
    path_iso = shortest_path(cost, (0, 1, 4), (8, 1, 4), spacing=(1, 1, 1))
    assert np.all(path_iso[:, 2] == 4)
    cost[4, :, 4] = 50.0  # a wall in the middle: go round it along K or... along J is out of the grid
    around = shortest_path(cost, (0, 1, 4), (8, 1, 4), spacing=(1, 1, 5))
    assert np.all(cost[tuple(around.T)] == 1.0)
    assert np.abs(around[:, 2] - 4).max() == 1  # one step aside in K, no more: steps along K cost 5 mm


def test_gradient_cost_keeps_the_path_inside_a_homogeneous_object():
    # A bright bar bent at a right angle; the two ends of the bar are joined inside the bar.
    image = np.zeros((30, 30, 6))
    image[4:9, 4:26, 1:5] = 1.0
    image[4:26, 21:26, 1:5] = 1.0
    cost = geodesic_cost(image, start=(6, 5, 3), euclidean_weight=0.05, gradient_weight=1.0, sigma_mm=0.5)
    path = shortest_path(cost, (6, 5, 3), (24, 23, 3))
    assert image[tuple(path.T)].mean() > 0.95


def test_auto_scale_puts_both_terms_in_zero_one():
    image = np.random.default_rng(0).normal(size=(12, 10, 8)) * 50.0
    cost = geodesic_cost(image, (1.0, 2.0, 3.0), start=(0, 0, 0), euclidean_weight=0.0, floor=0.0)
    assert cost.max() == pytest.approx(1.0, rel=1e-5)
    flat = geodesic_cost(np.zeros((12, 10, 8)), (1.0, 2.0, 3.0), start=(0, 0, 0), gradient_weight=0.0, floor=0.0)
    far = np.linalg.norm(np.array([11, 9, 7]) * [1.0, 2.0, 3.0])
    assert flat.max() == pytest.approx(1.0 / far, rel=1e-5)


def test_gradient_magnitude_is_per_mm():
    ramp = np.broadcast_to(np.arange(10.0)[None, None, :], (5, 5, 10)).copy()  # 1 unit per voxel along K
    assert gradient_magnitude(ramp, (1.0, 1.0, 2.0))[2, 2, 5] == pytest.approx(0.5)


def test_extreme_point_paths_returns_three_joined_paths():
    image = np.zeros((20, 20, 20))
    ends = np.array([[[2, 10, 10], [17, 10, 10]], [[10, 2, 10], [10, 17, 10]], [[10, 10, 2], [10, 10, 17]]], float)
    paths = extreme_point_paths(image, ends)
    assert len(paths) == 3
    for path, (lo, hi) in zip(paths, ends):
        assert np.array_equal(path[0], lo) and np.array_equal(path[-1], hi)


def test_bad_points_and_costs_are_refused():
    with pytest.raises(InputError, match="outside"):
        shortest_path(np.ones((5, 5, 5)), (0, 0, 0), (5, 0, 0))
    with pytest.raises(InputError, match="positive"):
        shortest_path(np.zeros((5, 5, 5)), (0, 0, 0), (4, 0, 0))


def _path_cost(cost, path, spacing):
    """A path's cost as MCP_Geometric defines it: step length (mm) x mean of the two voxels' costs."""
    steps = np.linalg.norm(np.diff(path, axis=0) * np.asarray(spacing, dtype=float), axis=1)
    values = cost[tuple(path.T)]
    return float(np.sum(steps * (values[1:] + values[:-1]) / 2))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.7, 2.0)])
def test_coarse_then_band_path_costs_close_to_the_full_search(spacing):
    # smooth random costs: many near-equal routes, the hardest case for a corridor found on a coarser grid
    from scipy import ndimage as ndi

    rng = np.random.default_rng(1)
    cost = ndi.gaussian_filter(rng.random((60, 40, 30)), 2.0) + 0.05
    start, end = (0, 20, 15), (59, 22, 14)
    full = shortest_path(cost, start, end, spacing)
    coarse = shortest_path(cost, start, end, spacing, coarse_factors=(2, 2, 1))
    assert tuple(coarse[0]) == start and tuple(coarse[-1]) == end
    assert np.all(np.abs(np.diff(coarse, axis=0)).max(axis=1) == 1)
    full_cost, coarse_cost = _path_cost(cost, full, spacing), _path_cost(cost, coarse, spacing)
    assert full_cost <= coarse_cost + 1e-9  # the full search is optimal ...
    assert coarse_cost <= 1.05 * full_cost  # ... and the band finds a path within 5 % of it


def test_coarse_search_still_goes_round_a_wall():
    cost = _u_corridor((40, 40, 6))
    cost[3:6, 3:37] = 1.0
    cost[34:37, 3:37] = 1.0
    cost[3:37, 34:37] = 1.0
    path = shortest_path(cost, (4, 4, 2), (35, 4, 2), coarse_factors=(2, 2, 2))
    assert np.mean(cost[tuple(path.T)] == 1.0) > 0.95
    assert path[:, 1].max() >= 34


def test_unrefined_coarse_path_joins_the_block_centres_in_the_corridor():
    cost = _u_corridor((40, 40, 6))
    cost[3:6, 3:37] = 1.0
    cost[34:37, 3:37] = 1.0
    cost[3:37, 34:37] = 1.0
    start, end = (4, 4, 2), (35, 4, 2)
    path = shortest_path(cost, start, end, coarse_factors=(2, 2, 2), refine=False)
    assert tuple(path[0]) == start and tuple(path[-1]) == end
    assert np.all(np.abs(np.diff(path, axis=0)).max(axis=1) == 1)  # 26-adjacent steps, no voxel twice in a row
    assert path[:, 1].max() >= 34 and np.mean(cost[tuple(path.T)] == 1.0) > 0.9  # still round the wall
    refined = shortest_path(cost, start, end, coarse_factors=(2, 2, 2))
    assert _path_cost(cost, refined, (1.0, 1.0, 1.0)) <= _path_cost(cost, path, (1.0, 1.0, 1.0)) + 1e-9


def test_block_mean_averages_whole_and_partial_blocks():
    array = np.arange(5 * 4 * 3, dtype=float).reshape(5, 4, 3)
    out = block_mean(array, (2, 2, 1))
    assert out.shape == (3, 2, 3)
    assert out[0, 0, 0] == pytest.approx(array[0:2, 0:2, 0].mean())
    assert out[2, 1, 2] == pytest.approx(array[4:5, 2:4, 2].mean())  # the last, partial block along I


def test_path_grid_factors_coarsen_only_large_regions_and_keep_the_object_resolved():
    assert list(path_grid_factors((60, 60, 10), (1.4, 1.4, 10.0), 60.0)) == [1, 1, 1]  # ACDC: searched whole
    assert list(path_grid_factors((200, 150, 90), (1.0, 1.0, 1.0), 86.0)) == [3, 3, 3]  # 27 times fewer
    assert list(path_grid_factors((400, 400, 40), (0.5, 0.5, 5.0), 120.0)) == [4, 4, 1]  # thick slices stay
    assert list(path_grid_factors((200, 150, 90), (1.0, 1.0, 1.0), 30.0)) == [1, 1, 1]  # a small object in it
    with pytest.raises(InputError, match="max_voxels"):
        path_grid_factors((200, 150, 90), (1.0, 1.0, 1.0), 90.0, max_voxels=0)


def test_bad_coarse_factors_are_refused():
    with pytest.raises(InputError, match="coarse_factors"):
        shortest_path(np.ones((5, 5, 5)), (0, 0, 0), (4, 4, 4), coarse_factors=(0, 1, 1))
