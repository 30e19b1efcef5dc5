import numpy as np
import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.volume import Volume, geometry_matrix


def oblique_direction():
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def test_geometry_properties_round_trip():
    d = oblique_direction()
    v = Volume.from_spacing(np.zeros((4, 5, 6)), (0.7, 1.1, 3.0), (10, -20, 5), d)
    assert np.allclose(v.spacing, (0.7, 1.1, 3.0))
    assert np.allclose(v.direction, d)
    assert np.allclose(v.origin, (10, -20, 5))
    idx = np.array([[1.5, 2.0, 3.25], [0, 0, 0]])
    assert np.allclose(v.ras_to_index(v.index_to_ras(idx)), idx)
    # one step along j moves spacing[1] mm along direction column 1
    step = v.index_to_ras([0, 1, 0]) - v.index_to_ras([0, 0, 0])
    assert np.allclose(step, 1.1 * d[:, 1])


def test_crop_keeps_world_positions():
    v = Volume.from_spacing(np.arange(4 * 5 * 6).reshape(4, 5, 6), (1, 2, 3), (1, 2, 3), oblique_direction())
    c = v.crop([1, 2, 3], [3, 5, 6])
    assert c.shape == (2, 3, 3)
    assert c.array[0, 0, 0] == v.array[1, 2, 3]
    assert np.allclose(c.index_to_ras([1, 1, 1]), v.index_to_ras([2, 3, 4]))
    with pytest.raises(InputError, match="empty crop"):
        v.crop([3, 0, 0], [3, 5, 6])


def test_geometry_mismatch_and_nan_are_reported():
    a = Volume.from_spacing(np.zeros((4, 5, 6)), (1, 1, 1))
    b = Volume.from_spacing(np.zeros((4, 5, 6)), (1, 1, 1.01))
    assert a.same_geometry(a.with_array(np.ones((4, 5, 6))))
    with pytest.raises(InputError, match="does not share the image's geometry"):
        a.require_same_geometry(b, "the label map")
    nan = np.zeros((4, 5, 6), np.float32)
    nan[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="1 NaN"):
        a.with_array(nan).require_finite()


@pytest.mark.parametrize("bad", [np.zeros((4, 5)), np.zeros((0, 3, 3))])
def test_bad_arrays_rejected(bad):
    with pytest.raises(InputError):
        Volume(bad, np.eye(4))


def test_singular_matrix_rejected():
    with pytest.raises(InputError, match="singular"):
        Volume(np.zeros((2, 2, 2)), geometry_matrix((1, 0, 1)))
