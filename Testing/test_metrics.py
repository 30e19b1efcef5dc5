import math

import numpy as np
import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.metrics import dice, evaluate, hd95, iou, precision, recall, surface_distances


def cube(shape, lo, size):
    m = np.zeros(shape, dtype=np.uint8)
    m[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size] = 1
    return m


def test_hd95_of_two_cubes_apart_on_an_anisotropic_grid():
    # 3x3x3 cubes, the prediction 5 voxels further along k (3 mm voxels). Every prediction voxel but the
    # centre is on its surface: 9 at k=7 (3 voxels = 9 mm from the reference face at k=4), 8 at k=8 (12 mm),
    # 9 at k=9 (15 mm). The 95th percentile of those 26 distances is 15 mm, the same both ways.
    spacing = (1.0, 2.0, 3.0)
    ref = cube((8, 8, 12), (2, 2, 2), 3)
    pred = cube((8, 8, 12), (2, 2, 7), 3)
    a, b = surface_distances(pred, ref, spacing)
    assert sorted(a.tolist()) == [9.0] * 9 + [12.0] * 8 + [15.0] * 9
    assert sorted(b.tolist()) == sorted(a.tolist())
    assert hd95(pred, ref, spacing) == pytest.approx(15.0)
    # the same shift along i (1 mm voxels) is 5 mm: the spacing is honoured per axis
    pred_i = cube((12, 8, 8), (7, 2, 2), 3)
    assert hd95(pred_i, cube((12, 8, 8), (2, 2, 2), 3), spacing) == pytest.approx(5.0)
    assert dice(pred, ref) == 0.0 and precision(pred, ref) == 0.0 and recall(pred, ref) == 0.0


def test_overlap_measures_of_shifted_cubes():
    # 4x4x4 reference, prediction shifted one voxel along j: 48 of 64 voxels shared
    ref = cube((10, 10, 10), (2, 2, 2), 4)
    pred = cube((10, 10, 10), (2, 3, 2), 4)
    assert dice(pred, ref) == pytest.approx(0.75)
    assert precision(pred, ref) == pytest.approx(0.75)
    # prediction larger than the reference: all of the reference found, 64 of 216 predicted voxels right
    big = cube((10, 10, 10), (1, 1, 1), 6)
    assert recall(big, ref) == 1.0 and precision(big, ref) == pytest.approx(64 / 216)
    # spacing (1, 2, 1): the 152 surface voxels of the big cube lie 1 mm (64 face voxels across i and k),
    # sqrt(2) (16 edge voxels), 2 mm (32 face voxels across j), sqrt(5) (32 edge voxels) and sqrt(6) mm
    # (8 corners) from the reference surface; numpy's 95th percentile of them is at rank 143.45.
    # Back, 48 reference surface voxels are 1 mm away and 8 are 2 mm: 95th percentile 2 mm.
    expected = np.sqrt(5) + 0.45 * (np.sqrt(6) - np.sqrt(5))
    assert hd95(big, ref, (1.0, 2.0, 1.0)) == pytest.approx(expected)


def test_identical_masks_and_empty_conventions():
    ref = cube((6, 6, 6), (1, 1, 1), 3)
    assert hd95(ref, ref, (1, 1, 5)) == 0.0 and dice(ref, ref) == 1.0
    empty = np.zeros_like(ref)
    assert hd95(empty, empty) == 0.0 and precision(empty, empty) == 1.0 and recall(empty, empty) == 1.0
    assert math.isinf(hd95(empty, ref)) and math.isinf(hd95(ref, empty))
    assert precision(empty, ref) == 0.0 and recall(empty, ref) == 0.0
    assert precision(ref, empty) == 0.0 and recall(ref, empty) == 0.0


def test_evaluate_per_structure_label_values():
    ref = np.zeros((12, 12, 12), dtype=np.int16)
    ref[2:6, 2:6, 2:6] = 1
    ref[6:10, 2:6, 2:6] = 2
    pred = ref.copy()
    pred[6:10, 2:6, 2:6] = 0  # structure 2 missed entirely
    result = evaluate(pred, ref, (1.0, 1.0, 2.0), {"one": [1], "two": [2], "both": [1, 2]})
    assert result["one"] == {"dice": 1.0, "hd95": 0.0, "precision": 1.0, "recall": 1.0}
    assert result["two"]["dice"] == 0.0 and math.isinf(result["two"]["hd95"])
    assert result["both"]["dice"] == pytest.approx(2 * 64 / (64 + 128))
    assert result["both"]["precision"] == 1.0 and result["both"]["recall"] == 0.5
    with pytest.raises(InputError, match="shape"):
        evaluate(pred[:-1], ref, (1, 1, 1), {"one": [1]})
    with pytest.raises(InputError, match="no structures"):
        evaluate(pred, ref, (1, 1, 1), {})


def test_iou_agrees_with_dice_and_handles_empty_masks():
    ref = cube((8, 8, 8), (1, 1, 1), 4)  # 64 voxels
    pred = cube((8, 8, 8), (1, 1, 3), 4)  # shifted by 2 along k: 32 shared
    assert iou(pred, ref) == pytest.approx(32 / 96)
    d = dice(pred, ref)
    assert iou(pred, ref) == pytest.approx(d / (2 - d))
    empty = np.zeros_like(ref)
    assert iou(empty, empty) == 1.0 and iou(pred, empty) == 0.0
