import numpy as np

from ExtremeSegLib.annotations import ExtremePoints
from ExtremeSegLib.simulate import simulate_extreme_points


def test_extreme_points_lie_on_the_object_extremes(ellipsoid):
    image, label = ellipsoid
    pts = simulate_extreme_points(label)
    idx = np.rint(label.ras_to_index(pts)).astype(int)
    obj = np.argwhere(label.array > 0)
    for n, (axis, side) in enumerate([(a, s) for a in range(3) for s in (min, max)]):
        assert label.array[tuple(idx[n])] == 1
        assert idx[n, axis] == side(obj[:, axis])
    ep = ExtremePoints.from_points(pts[::-1], image)  # and they pair back per axis
    assert np.allclose(ep.points_ras, pts)


def test_click_noise_is_seeded_and_sized(ellipsoid):
    _, label = ellipsoid
    clean = simulate_extreme_points(label)
    a = simulate_extreme_points(label, noise_mm=2.0, seed=3)
    b = simulate_extreme_points(label, noise_mm=2.0, seed=3)
    c = simulate_extreme_points(label, noise_mm=2.0, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.5 < np.sqrt(np.mean((a - clean) ** 2)) < 4.0
