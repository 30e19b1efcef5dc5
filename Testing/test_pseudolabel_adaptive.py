"""Settings chosen from the data: the contrast along the paths picks the regime, a first walk places the
background seeds of a faint object, explicit settings override."""

import numpy as np
import pytest
from conftest import make_ellipsoid

from ExtremeSegLib.annotations import ExtremePoints
from ExtremeSegLib.cli import main
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io.markups import write_points
from ExtremeSegLib.io.volumes import write_volume
from ExtremeSegLib.metrics import dice
from ExtremeSegLib.pseudolabel.adaptive import (
    CLEAR,
    CLEAR_CONTRAST,
    FAINT,
    background_reach_mm,
    has_thick_slices,
    path_contrast,
    regime,
    wants_convex,
)
from ExtremeSegLib.pseudolabel.extreme_points import extreme_points_pseudolabel
from ExtremeSegLib.simulate import simulate_extreme_points


def _line(n=20, j=10, k=6):
    return np.stack([np.arange(2, 2 + n), np.full(n, j), np.full(n, k)], axis=1)


def test_contrast_is_high_for_a_bright_object_and_zero_for_none():
    rng = np.random.default_rng(0)
    region = 0.2 + 0.05 * rng.standard_normal((24, 20, 12))
    region[4:20, 6:14, 3:9] += 0.6
    assert path_contrast(region, [_line(14, 10, 6) + [2, 0, 0]]) > CLEAR_CONTRAST
    flat = 0.2 + 0.05 * rng.standard_normal((24, 20, 12))
    assert path_contrast(flat, [_line(14, 10, 6) + [2, 0, 0]]) < 0.5
    assert path_contrast(np.zeros((10, 10, 10)), [_line(5, 5, 5)]) == 0.0


def test_regime_switches_at_the_threshold():
    assert regime(CLEAR_CONTRAST) == {"clear": True, **CLEAR}
    assert regime(CLEAR_CONTRAST - 1e-6) == {"clear": False, **FAINT}
    assert regime(1.0, clear_contrast=0.5)["clear"]
    assert regime(0.2, (1.4, 1.4, 10.0))["clear"]  # thick slices: the clear settings whatever the contrast


def test_convex_slices_only_for_solid_objects_on_thick_slices():
    cine = (1.4, 1.4, 10.0)
    assert has_thick_slices(cine) and not has_thick_slices((1.0, 1.0, 1.5))
    assert wants_convex(0.95, cine)
    assert not wants_convex(0.8, cine)  # a crescent or a ring
    assert not wants_convex(0.95, (0.8, 0.8, 0.8))  # no slices to be convex in


def test_background_reach_is_the_object_not_the_tip_of_a_leak():
    # a tube of radius 3 mm round the path (about 560 voxels) and a one-voxel leak out to 12 mm (5 voxels, < 1 %)
    shape, spacing = (30, 21, 13), (1.0, 0.5, 2.0)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1) * np.asarray(spacing)
    path = _line(20, 10, 6)
    tube = np.hypot(grid[..., 1] - 5.0, grid[..., 2] - 12.0) <= 3.0
    tube[:2] = tube[22:] = False
    assert background_reach_mm(tube, [path], spacing) == pytest.approx(3.0, abs=0.3)
    leaky = tube.copy()
    leaky[10, 10, 8:] = True
    assert leaky[10, 10].sum() - tube[10, 10].sum() == 5
    assert background_reach_mm(leaky, [path], spacing) == pytest.approx(3.0, abs=0.3)
    assert background_reach_mm(leaky, [path], spacing, quantile=1.0) == pytest.approx(12.0)  # the leak's tip
    assert background_reach_mm(np.zeros(shape, bool), [path], spacing) == np.inf


@pytest.fixture(scope="module")
def bright_and_faint():
    """The same ellipsoid, once clear (a step of 1 over noise 0.05) and once faint (a step of 0.1 over noise 0.25)."""
    cases = {}
    for name, noise, scale in (("clear", 0.05, 1.0), ("faint", 0.25, 0.1)):
        image, label = make_ellipsoid(shape=(44, 40, 30), radii_mm=(14.0, 10.0, 9.0), noise=noise, seed=1)
        image = image.with_array(scale * label.array + noise * np.random.default_rng(2).standard_normal(image.shape))
        cases[name] = (image, label, ExtremePoints.from_points(simulate_extreme_points(label), image))
    return cases


def test_the_maker_reports_and_applies_the_regime_it_chose(bright_and_faint):
    image, label, extreme = bright_and_faint["clear"]
    chosen = {}
    fg = extreme_points_pseudolabel(image, extreme, chosen=chosen).probabilities[1] > 0.5
    assert chosen["clear"] and chosen["contrast"] >= CLEAR_CONTRAST
    assert chosen["beta"] == CLEAR["beta"] and chosen["background_distance_mm"] is None
    assert dice(fg, label.array) > 0.9

    image, label, extreme = bright_and_faint["faint"]
    chosen = {}
    extreme_points_pseudolabel(image, extreme, chosen=chosen)
    assert not chosen["clear"] and chosen["beta"] == FAINT["beta"]
    assert 0 < chosen["background_distance_mm"] < np.inf  # background seeds beyond the first walk's reach


def test_explicit_settings_override_the_choice(bright_and_faint):
    image, _, extreme = bright_and_faint["faint"]
    chosen = {}
    extreme_points_pseudolabel(image, extreme, beta=130.0, path_radius_mm=1.5, background_distance_mm="off",
                               chosen=chosen)
    assert chosen["beta"] == 130.0 and chosen["path_radius_mm"] == 1.5 and chosen["background_distance_mm"] is None
    extreme_points_pseudolabel(image, extreme, background_distance_mm=6.0, path_radius_fraction=0.1, chosen=chosen)
    assert chosen["background_distance_mm"] == 6.0
    assert chosen["path_radius_mm"] == pytest.approx(max(1.0, 0.1 * 2 * 9.0), rel=0.15)
    with pytest.raises(InputError, match="background_distance_mm"):
        extreme_points_pseudolabel(image, extreme, background_distance_mm="near")


def test_cli_prints_the_settings_and_takes_off_for_the_background(tmp_path, bright_and_faint, capsys):
    image, _, extreme = bright_and_faint["faint"]
    image_path = write_volume(image, tmp_path / "image.nii.gz")
    points_path = write_points(tmp_path / "points.mrk.json", extreme.points_ras)
    argv = ["pseudolabel", "--image", str(image_path), "--points", str(points_path)]
    assert main(argv + ["--out", str(tmp_path / "a.seg.nrrd")]) == 0
    assert "faint object" in capsys.readouterr().out
    assert main(argv + ["--out", str(tmp_path / "b.seg.nrrd"), "--background-distance-mm", "off"]) == 0
    assert "background seeds off" in capsys.readouterr().out
    assert main(argv + ["--out", str(tmp_path / "d.seg.nrrd"), "--no-convex"]) == 0
    assert "convex slices off" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(argv + ["--out", str(tmp_path / "c.seg.nrrd"), "--background-distance-mm", "near"])
    assert stop.value.code == 2
    assert "not a number" in capsys.readouterr().err
