import json

import numpy as np
import pytest
from conftest import make_ellipsoid
from scipy import ndimage as ndi

from ExtremeSegLib.annotations import Scribbles, SurfacePoints
from ExtremeSegLib.cli import main
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.simulate import boundary_voxels, simulate_scribbles, simulate_surface_points
from ExtremeSegLib.volume import Volume


# -- surface points --------------------------------------------------------------------------------
def test_surface_points_lie_on_the_boundary_and_cover_it(ellipsoid):
    image, label = ellipsoid
    pts = simulate_surface_points(label, 20, seed=1)
    assert pts.shape == (20, 3)
    idx = np.rint(label.ras_to_index(pts)).astype(int)
    on_boundary = {tuple(v) for v in boundary_voxels(label.array).tolist()}
    assert all(tuple(v) in on_boundary for v in idx.tolist())
    # spread, not a clump: every boundary voxel is within 0.75 x the ellipsoid's smallest radius (8 mm)
    # of a point, and no two points are closer than 4 mm
    boundary_ras = label.index_to_ras(boundary_voxels(label.array).astype(float))
    nearest = np.min(np.linalg.norm(boundary_ras[:, None] - pts[None], axis=2), axis=1)
    assert nearest.max() < 6.0
    pair = np.linalg.norm(pts[:, None] - pts[None], axis=2) + np.eye(20) * 1e9
    assert pair.min() > 4.0
    SurfacePoints.from_points(pts, image)  # valid input for the surface-point makers


def test_surface_points_are_seeded_and_noisy():
    _, label = make_ellipsoid()
    a = simulate_surface_points(label, 12, seed=5)
    assert np.array_equal(a, simulate_surface_points(label, 12, seed=5))
    assert not np.array_equal(a, simulate_surface_points(label, 12, seed=6))
    noisy = simulate_surface_points(label, 12, seed=5, noise_mm=1.5)
    assert 0.5 < np.sqrt(np.mean((noisy - a) ** 2)) < 3.0
    assert np.all(label.contains_index(label.ras_to_index(noisy)))


def test_surface_points_refuse_bad_requests():
    _, label = make_ellipsoid()
    with pytest.raises(InputError, match="empty"):
        simulate_surface_points(label.with_array(np.zeros(label.shape)), 5)
    tiny = np.zeros(label.shape, dtype=np.uint8)
    tiny[5:7, 5:7, 5:7] = 1  # 8 voxels, all on the boundary
    with pytest.raises(InputError, match="only 8 boundary voxels"):
        simulate_surface_points(label.with_array(tiny), 9)
    with pytest.raises(InputError, match="at least 1"):
        simulate_surface_points(label, 0)


# -- scribbles -------------------------------------------------------------------------------------
def two_class_labels():
    """A ring (class 2) around a disk (class 1), extruded over 8 slices 5 mm apart: ACDC-like geometry."""
    shape, spacing = (80, 80, 8), (1.5, 1.5, 5.0)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot((ii - 40) * 1.5, (jj - 40) * 1.5)
    plane = np.where(r <= 20, 1, np.where(r <= 30, 2, 0))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[:, :, 1:7] = plane[:, :, None]
    return Volume.from_spacing(labels, spacing)


def test_scribbles_stay_inside_their_class_on_every_slice():
    labels = two_class_labels()
    scr = simulate_scribbles(labels, seed=0)
    s, gt = scr.array, labels.array
    assert set(np.unique(s).tolist()) == {0, 1, 2, 4}
    for c in (1, 2):
        assert np.all(gt[s == c] == c)  # no stroke leaves its class
        drawn = s == c
        # well inside: at least 3 mm (in-plane) from the class edge
        depth = np.stack([ndi.distance_transform_edt(gt[:, :, k] == c, sampling=(1.5, 1.5)) for k in range(8)], -1)
        assert depth[drawn].min() >= 3.0
        # every slice showing the class has a stroke (5 mm slices, gap 5 mm), covering 2-25 % of it
        for k in range(1, 7):
            assert drawn[:, :, k].any()
        coverage = drawn.sum() / (gt == c).sum()
        assert 0.02 < coverage < 0.25
    assert np.all(gt[s == 0] == 0) and np.all(s[:, :, [0, 7]] == 4)
    Scribbles(scr).require_matches(labels)  # valid input for the scribble pseudo-labels


def test_scribbles_are_seeded_and_skip_slices_on_fine_grids():
    _, label = make_ellipsoid(shape=(40, 36, 30), spacing=(1.0, 1.0, 1.0))
    a = simulate_scribbles(label, seed=1, slice_gap_mm=5.0)
    assert np.array_equal(a.array, simulate_scribbles(label, seed=1, slice_gap_mm=5.0).array)
    assert not np.array_equal(a.array, simulate_scribbles(label, seed=2, slice_gap_mm=5.0).array)
    drawn_slices = np.flatnonzero((a.array != 4).any(axis=(0, 1)))  # isotropic: slices along K
    assert len(drawn_slices) >= 3 and np.all(np.diff(drawn_slices) == 5)


def test_scribbles_refuse_bad_class_values():
    labels = two_class_labels()
    with pytest.raises(InputError, match=r"\[5\] are not in the ground truth"):
        simulate_scribbles(labels, classes=[1, 5])
    with pytest.raises(InputError, match="unannotated"):
        simulate_scribbles(labels.with_array(labels.array * 2), unannotated=4)  # class 4 clashes
    with pytest.raises(InputError, match="no object"):
        simulate_scribbles(labels.with_array(np.zeros(labels.shape, dtype=np.uint8)))
    only_disk = simulate_scribbles(labels, classes=[1])
    assert set(np.unique(only_disk.array).tolist()) == {0, 1, 4}


def test_scribble_coverage_resembles_the_acdc_hand_drawn_ones(shared_data):
    from ExtremeSegLib.io.volumes import read_labelmap

    for name in ("patient001_frame01", "patient029_frame01"):
        gt = read_labelmap(shared_data / "acdc" / f"{name}_label.nii.gz")
        real = read_labelmap(shared_data / "acdc" / f"{name}_scribble.nii.gz").array
        sim = simulate_scribbles(gt, seed=0).array
        for c in (1, 2, 3):
            region = gt.array == c
            real_cov = np.sum((real == c) & region) / region.sum()
            sim_cov = np.sum((sim == c) & region) / region.sum()
            assert 0.4 < sim_cov / real_cov < 2.5, (name, c, real_cov, sim_cov)
            assert np.all(gt.array[sim == c] == c)
            # like the real ones: a stroke on every slice that shows the class
            shown = region.any(axis=(0, 1))
            assert np.array_equal((sim == c).any(axis=(0, 1)), shown)


# -- extremeseg simulate ---------------------------------------------------------------------------
def test_simulate_command_writes_points_and_scribbles(tmp_path, capsys):
    from ExtremeSegLib.io.markups import read_points
    from ExtremeSegLib.io.volumes import read_labelmap, write_volume

    labels = two_class_labels()
    label_file = write_volume(labels, tmp_path / "gt.nii.gz")
    out = tmp_path / "points.mrk.json"
    assert main(["simulate", str(label_file), "--kind", "surface", "--n-points", "10", "--seed", "3",
                 "--label-value", "1", "--out", str(out)]) == 0
    points, _ = read_points(out)
    inner = labels.with_array(labels.array == 1)
    assert np.allclose(points, simulate_surface_points(inner, 10, seed=3), atol=1e-4)
    assert json.loads(out.read_text())["markups"][0]["coordinateSystem"] == "LPS"

    # an existing output is not replaced without --overwrite
    assert main(["simulate", str(label_file), "--kind", "extreme", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["simulate", str(label_file), "--kind", "extreme", "--out", str(out), "--overwrite"]) == 0
    assert len(read_points(out)[0]) == 6

    scribbles = tmp_path / "scribbles.nrrd"
    assert main(["simulate", str(label_file), "--kind", "scribbles", "--out", str(scribbles)]) == 0
    assert np.array_equal(read_labelmap(scribbles).array, simulate_scribbles(labels, seed=0).array)

    assert main(["simulate", str(label_file), "--kind", "scribbles", "--out", str(tmp_path / "s.mrk.json")]) == 2
    assert main(["simulate", str(label_file), "--kind", "extreme", "--label-value", "7",
                 "--out", str(tmp_path / "p.mrk.json")]) == 2
    assert "do not occur" in capsys.readouterr().err
