"""Cue channels: Gaussian point heatmaps (peaks in mm) and the 3D confidence map from extreme points."""

import numpy as np
import pytest

from ExtremeSegLib.annotations import ExtremePoints
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.pseudolabel.cues import confidence_map, point_heatmaps
from ExtremeSegLib.volume import Volume

ROTATION = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # I -> A, J -> -R


def _geometry(shape=(30, 26, 12), spacing=(1.0, 1.5, 4.0), direction=ROTATION):
    return Volume.from_spacing(np.zeros(shape, np.float32), spacing, origin=(10.0, -5.0, 20.0), direction=direction)


def test_heatmap_peaks_at_the_points_and_decays_in_mm():
    geometry = _geometry()
    peaks = np.array([[8, 10, 5], [20, 15, 7]])
    heat = point_heatmaps(geometry.index_to_ras(peaks), geometry, sigma_mm=3.0)
    assert heat.dtype == np.float32 and heat.shape == geometry.shape and heat.max() == pytest.approx(1.0)
    for p in peaks:
        assert heat[tuple(p)] == pytest.approx(1.0)
    # one voxel along K is 4 mm, along J 1.5 mm: the value follows the distance in mm
    assert heat[8, 10, 6] == pytest.approx(np.exp(-16 / 18), rel=1e-4)
    assert heat[8, 11, 5] == pytest.approx(np.exp(-2.25 / 18), rel=1e-4)
    assert heat[0, 0, 0] == 0.0


def test_heatmap_of_a_point_between_voxels_and_outside_the_grid():
    geometry = _geometry(direction=None)
    ras = geometry.index_to_ras([[10.5, 10, 5]])
    heat = point_heatmaps(ras, geometry, sigma_mm=2.0)
    assert heat[10, 10, 5] == pytest.approx(heat[11, 10, 5]) and heat[10, 10, 5] < 1.0
    far = point_heatmaps(geometry.index_to_ras([[-100, 0, 0]]), geometry, sigma_mm=2.0)
    assert far.max() == 0.0
    with pytest.raises(InputError):
        point_heatmaps(ras, geometry, sigma_mm=0.0)


def _extreme(geometry, index):
    return ExtremePoints.from_points(geometry.index_to_ras(np.asarray(index, float)), geometry)


def test_confidence_map_is_one_on_the_segments_and_decays():
    geometry = _geometry(shape=(31, 31, 11), spacing=(1.0, 1.0, 3.0), direction=None)
    extreme = _extreme(geometry, [[3, 15, 5], [27, 15, 5], [15, 5, 5], [15, 25, 5], [15, 15, 1], [15, 15, 9]])
    conf = confidence_map(extreme, geometry)
    assert conf.shape == geometry.shape and conf.dtype == np.float32
    assert np.all((conf > 0) & (conf <= 1))
    for i in range(3, 28):
        assert conf[i, 15, 5] == pytest.approx(1.0)   # on the I segment
    assert conf[15, 15, 3] == pytest.approx(1.0)      # on the K segment
    ray = conf[20, 15, 5:11]                           # moving away from the I segment along K
    assert np.all(np.diff(ray) < 0)
    assert conf[30, 0, 0] < 0.2 * conf[20, 15, 6]


def test_confidence_map_normalises_by_the_spread_on_each_side():
    # The J segment's centre is near its low end: the map decays faster on that (short) side.
    geometry = _geometry(shape=(31, 41, 9), spacing=(1.0, 1.0, 1.0), direction=None)
    extreme = _extreme(geometry, [[5, 10, 4], [25, 10, 4], [15, 5, 4], [15, 35, 4], [15, 10, 1], [15, 10, 7]])
    conf = confidence_map(extreme, geometry)
    # the centre is (15, 10, 4); both voxels are 4 mm off the J segment (along K), 4 voxels either side of the
    # centre along J, at the same distances from the I and K segments
    short_side, long_side = conf[15, 6, 8], conf[15, 14, 8]
    assert short_side < long_side
