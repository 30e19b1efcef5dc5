"""Extreme points -> pseudo-label: the maker on a synthetic ellipsoid, the CLI end to end, bad inputs, real data."""

import numpy as np
import pytest
from conftest import make_ellipsoid

from ExtremeSegLib.annotations import ExtremePoints
from ExtremeSegLib.cli import main
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io.markups import write_points
from ExtremeSegLib.io.segmentations import read_segmentation
from ExtremeSegLib.io.volumes import read_image, write_volume
from ExtremeSegLib.masks import close_mm, convex_slices, fill_enclosed_holes
from ExtremeSegLib.metrics import dice
from ExtremeSegLib.pseudolabel.extreme_points import extreme_points_pseudolabel, near_paths, relaxed_box
from ExtremeSegLib.simulate import simulate_extreme_points

ROTATION = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def ellipsoid_case():
    image, label = make_ellipsoid(shape=(44, 40, 30), direction=ROTATION)
    extreme = ExtremePoints.from_points(simulate_extreme_points(label), image)
    return image, label, extreme


def test_maker_reaches_a_high_dice_on_an_ellipsoid(ellipsoid_case):
    image, label, extreme = ellipsoid_case
    result = extreme_points_pseudolabel(image, extreme)
    assert result.probabilities.shape == (2,) + image.shape
    assert result.geometry is image
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-6)
    assert dice(result.hard() == 1, label.array) > 0.9
    assert np.all(result.weight == 1.0)


def test_outside_the_relaxed_box_is_background(ellipsoid_case):
    image, _, extreme = ellipsoid_case
    result = extreme_points_pseudolabel(image, extreme, box_margin_mm=2.0)
    lo, hi = relaxed_box(extreme, image, 2.0)
    outside = np.ones(image.shape, bool)
    outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
    assert outside.any() and np.all(result.probabilities[1][outside] == 0.0)


def test_trust_seeds_weights_only_the_seeds(ellipsoid_case):
    image, label, extreme = ellipsoid_case
    result = extreme_points_pseudolabel(image, extreme, trust="seeds")
    trusted = result.weight == 1.0
    assert np.all((result.weight == 0.0) | trusted)
    # trusted voxels: everything outside the box and the dilated paths inside the object
    assert 0 < np.count_nonzero(~trusted) < image.array.size
    assert np.all(result.hard()[trusted & (label.array > 0)] == 1)


def test_click_noise_costs_little(ellipsoid_case):
    image, label, _ = ellipsoid_case
    noisy = ExtremePoints.from_points(simulate_extreme_points(label, noise_mm=1.5, seed=3), image)
    assert dice(extreme_points_pseudolabel(image, noisy).hard() == 1, label.array) > 0.85


def test_intensity_rerouting_keeps_paths_from_clicks_that_missed_inside_the_object():
    # a thin object and clicks 2.5 mm off (per coordinate): paths from clicks outside it run along its rim
    image, label = make_ellipsoid(shape=(44, 30, 24), radii_mm=(18.0, 5.0, 4.0), spacing=(1.0, 1.0, 1.0), noise=0.1)
    scores, wrong = {0.0: [], 1.0: []}, {0.0: 0, 1.0: 0}
    for seed in (2, 3, 4):
        clicks = ExtremePoints.from_points(simulate_extreme_points(label, noise_mm=2.5, seed=seed), image)
        for weight in scores:
            # the walker's settings pinned (beta 300, no background seeds, no hull): only the paths differ
            result = extreme_points_pseudolabel(image, clicks, trust="seeds", path_radius_mm=1.0, beta=300.0,
                                                background_distance_mm="off", convex=False,
                                                path_intensity_weight=weight)
            scores[weight].append(dice(result.hard() == 1, label.array))
            wrong[weight] += np.count_nonzero((result.weight == 1) & (result.hard() == 1) & (label.array == 0))
    assert np.mean(scores[1.0]) > 0.9 > np.mean(scores[0.0]) + 0.15
    assert wrong[1.0] < 0.5 * wrong[0.0]


def test_rerouting_rounds_on_coarser_blocks_give_the_same_label(monkeypatch):
    # a large region (path_search_voxels forces it): the re-routing rounds search on blocks coarser than the
    # final search's and are not refined; their paths only feed the intensity model, so the pseudo-label is the
    # one that rounds on the final search's blocks give
    from ExtremeSegLib.pseudolabel import extreme_points as maker

    image, label = make_ellipsoid(shape=(72, 72, 72), radii_mm=(34.0, 33.0, 33.0), spacing=(1.0, 1.0, 1.0),
                                  noise=0.3)
    clicks = ExtremePoints.from_points(simulate_extreme_points(label, noise_mm=2.0, seed=2), image)
    labels, factors = [], []
    for shrink, across in ((maker.ROUND_SEARCH_SHRINK, maker.ROUND_VOXELS_ACROSS), (1, 24.0)):
        monkeypatch.setattr(maker, "ROUND_SEARCH_SHRINK", shrink)
        monkeypatch.setattr(maker, "ROUND_VOXELS_ACROSS", across)
        chosen = {}
        labels.append(extreme_points_pseudolabel(image, clicks, path_search_voxels=40_000, chosen=chosen).hard())
        factors.append((chosen["path_grid_factors"], chosen["round_path_grid_factors"]))
    assert factors[1][1] == factors[1][0] == factors[0][0] and max(factors[0][0]) > 1  # shrink 1: the final blocks
    assert min(factors[0][1]) > max(factors[0][0])  # the default: coarser rounds
    assert dice(labels[0] == 1, labels[1] == 1) > 0.98
    assert dice(labels[0] == 1, label.array) > 0.9


def test_fill_enclosed_holes_equals_scipy_in_3d_then_per_slice():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    for shape, spacing in (((40, 34, 9), (1.0, 1.0, 5.0)), ((30, 7, 28), (1.0, 4.0, 1.0))):
        mask = ndi.gaussian_filter(rng.random(shape), 1.2) > 0.5
        expected = ndi.binary_fill_holes(mask)
        axis = int(np.argmax(spacing))
        for k in range(shape[axis]):
            plane = tuple(k if a == axis else slice(None) for a in range(3))
            expected[plane] = ndi.binary_fill_holes(expected[plane])
        filled = fill_enclosed_holes(mask, spacing)
        assert (filled & ~mask).sum() > 10  # the masks have holes
        np.testing.assert_array_equal(filled, expected)
    assert not fill_enclosed_holes(np.zeros((4, 4, 4), bool), (1, 1, 1)).any()
    assert fill_enclosed_holes(np.ones((4, 4, 4), bool), (1, 1, 1)).all()


def test_closing_in_mm_matches_a_ball_element_and_survives_large_radii():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    mask = ndi.binary_opening(rng.random((30, 28, 9)) > 0.55)
    spacing = (1.4, 1.4, 10.0)
    radius = 3.0
    half = np.floor(radius / np.asarray(spacing)).astype(int)
    grid = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    element = sum(g * g for g in grid) <= radius ** 2
    pad = [(h, h) for h in half]
    expected = ndi.binary_closing(np.pad(mask, pad), element)[tuple(slice(h, -h or None) for h in half)]
    np.testing.assert_array_equal(close_mm(mask, radius, spacing), expected)
    # a ventricle-sized radius on a cardiac grid (SciPy's element-based closing ran out of memory here)
    ring = np.zeros((232, 256, 10), bool)
    ring[60:160, 60:160, 2:8] = True
    ring[90:130, 90:130, 2:8] = False
    ring[108:112, 60:90, 2:8] = False  # a notch 4 voxels wide
    closed = close_mm(ring, 38.0, (1.37, 1.37, 10.0))
    assert closed[110, 70, 4] and closed[110, 110, 4] and not closed[10, 10, 4]


def test_closing_on_blocks_fills_notches_and_keeps_the_mask_boundary():
    from scipy import ndimage as ndi

    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (80, 70, 40)], indexing="ij"), axis=-1)
    mask = np.sum(((grid - [40, 35, 20]) / [36.0, 31.0, 17.0]) ** 2, axis=-1) <= 1.0
    mask[38:42, :25, :] = False  # a slit 4 voxels wide
    exact = close_mm(mask, 20.0, (1.0, 1.0, 1.0), voxels_per_radius=np.inf)
    blocks = close_mm(mask, 20.0, (1.0, 1.0, 1.0))  # 20 voxels per radius: blocks of 2
    assert np.all(blocks >= mask) and blocks[40, 15, 20] and exact[40, 15, 20]
    assert not blocks[2, 2, 2]  # the box's corner, outside the ellipsoid, stays out
    assert dice(blocks, exact) > 0.99
    outline = mask & ~ndi.binary_erosion(mask)
    assert np.array_equal(blocks[outline], exact[outline])


def test_near_paths_matches_a_distance_transform_of_the_whole_region():
    from scipy import ndimage as ndi

    shape, spacing = (50, 40, 12), (0.8, 0.8, 3.0)
    paths = [np.stack([np.arange(2, 48), 20 + (np.arange(2, 48) // 10), np.full(46, 6)], axis=1),
             np.stack([np.full(30, 25), np.arange(5, 35), np.full(30, 5)], axis=1)]
    on_path = np.zeros(shape, bool)
    for path in paths:
        on_path[tuple(path.T)] = True
    for radius in (0.0, 2.5, 8.0):
        expected = ndi.distance_transform_edt(~on_path, sampling=spacing) <= radius
        np.testing.assert_array_equal(near_paths(shape, paths, spacing, radius), expected)


def test_convex_slices_fill_each_thick_slice_to_its_hull():
    mask = np.zeros((40, 40, 5), bool)
    yy, xx = np.mgrid[:40, :40]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 12 ** 2
    mask[..., 1:4] = disc[..., None]
    mask[14:26, 20:33, 2] = False  # a bite out of the middle slice's edge: not convex there
    hull = convex_slices(mask, (1.5, 1.5, 10.0))
    assert hull[20, 28, 2] and not hull[20, 20, 0]  # bite filled; the empty slice stays empty
    assert np.all(hull >= mask)
    # a convex slice keeps its shape (the digital disc gains at most a few rim pixels); the bitten one grows
    assert np.count_nonzero(hull[..., 1] & ~mask[..., 1]) < 0.08 * disc.sum()
    assert np.count_nonzero(hull[..., 2] & ~mask[..., 2]) > 0.5 * np.count_nonzero(mask[..., 1] & ~mask[..., 2])
    # slices are taken across the coarsest axis: here the first one
    assert convex_slices(np.moveaxis(mask, 2, 0), (10.0, 1.5, 1.5))[2, 20, 28]


def test_convex_option_grows_the_label_only_inside_the_box(ellipsoid_case):
    image, label, extreme = ellipsoid_case
    plain = extreme_points_pseudolabel(image, extreme).hard() == 1
    convex = extreme_points_pseudolabel(image, extreme, convex=True).hard() == 1
    assert np.all(convex >= plain)
    assert dice(convex, label.array) > 0.9
    lo, hi = relaxed_box(extreme, image, 1.0)
    outside = np.ones(image.shape, bool)
    outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
    assert not np.any(convex & outside)


def test_nan_intensities_are_refused(ellipsoid_case):
    image, _, extreme = ellipsoid_case
    array = image.array.copy()
    array[5, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        extreme_points_pseudolabel(image.with_array(array), extreme)


def test_a_region_too_large_for_memory_is_refused(ellipsoid_case):
    image, _, extreme = ellipsoid_case
    with pytest.raises(InputError, match="GiB"):
        extreme_points_pseudolabel(image, extreme, memory_limit_bytes=1024)


def test_bad_parameters_are_refused(ellipsoid_case):
    image, _, extreme = ellipsoid_case
    with pytest.raises(InputError, match="trust"):
        extreme_points_pseudolabel(image, extreme, trust="some")
    with pytest.raises(InputError, match="box_margin_mm"):
        extreme_points_pseudolabel(image, extreme, box_margin_mm=-1.0)
    with pytest.raises(InputError, match="path_intensity_weight"):
        extreme_points_pseudolabel(image, extreme, path_intensity_weight=-1.0)
    with pytest.raises(InputError, match="path_intensity_rounds"):
        extreme_points_pseudolabel(image, extreme, path_intensity_rounds=0)


# -- command line ---------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path, ellipsoid_case):
    image, label, extreme = ellipsoid_case
    image_path = write_volume(image, tmp_path / "image.nii.gz")
    points_path = write_points(tmp_path / "points.mrk.json", extreme.points_ras[[3, 0, 5, 1, 4, 2]])  # any order
    return tmp_path, image_path, points_path, label


def test_cli_end_to_end(files, capsys):
    folder, image_path, points_path, label = files
    out, prob = folder / "out.seg.nrrd", folder / "prob.nii.gz"
    argv = ["pseudolabel", "--image", str(image_path), "--points", str(points_path), "--out", str(out),
            "--probability", str(prob), "--segment-name", "Tumour", "--path-radius-mm", "2"]
    assert main(argv) == 0
    geometry, segments = read_segmentation(out)
    assert [s.name for s in segments] == ["Tumour"]
    assert geometry.same_geometry(label)
    assert dice(segments[0].mask, label.array) > 0.9
    probability = read_image(prob)
    assert probability.same_geometry(label) and 0.0 <= probability.array.min() and probability.array.max() <= 1.0
    assert np.array_equal(probability.array > 0.5, segments[0].mask)

    before = out.read_bytes()
    assert main(argv) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(argv + ["--overwrite"]) == 0
    assert main(argv + ["--overwrite", "--convex"]) == 0  # the shape prior only adds voxels
    assert np.all(read_segmentation(out)[1][0].mask >= segments[0].mask)


@pytest.mark.parametrize("points, message", [
    (lambda p: p[:5], "exactly 6"),
    (lambda p: np.vstack([p[:5], p[4:5]]), "same spot"),
    (lambda p: np.vstack([p[:5], [[500.0, 500.0, 500.0]]]), "outside the image"),
])
def test_cli_surfaces_bad_points(files, capsys, points, message):
    folder, image_path, points_path, _ = files
    from ExtremeSegLib.io.markups import read_points

    ras, _ = read_points(points_path)
    bad = write_points(folder / "bad.mrk.json", points(ras))
    code = main(["pseudolabel", "--image", str(image_path), "--points", str(bad), "--out", str(folder / "o.seg.nrrd")])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "bad.mrk.json" in err
    assert not (folder / "o.seg.nrrd").exists()


def test_cli_surfaces_a_collapsed_axis(files, capsys):
    folder, image_path, _, _ = files
    image = read_image(image_path)
    flat = image.index_to_ras(np.array([[5, 20, 15], [30, 20, 15], [18, 5, 15], [18, 35, 15],
                                        [18, 20, 15.2], [18, 21, 15]], float))
    bad = write_points(folder / "flat.mrk.json", flat)
    assert main(["pseudolabel", "--image", str(image_path), "--points", str(bad),
                 "--out", str(folder / "o.seg.nrrd")]) == 2
    assert "no extent along image axis" in capsys.readouterr().err


def test_cli_refuses_a_wrong_output_name(files, capsys):
    folder, image_path, points_path, _ = files
    assert main(["pseudolabel", "--image", str(image_path), "--points", str(points_path),
                 "--out", str(folder / "o.nii.gz")]) == 2
    assert ".seg.nrrd" in capsys.readouterr().err


# -- real data ------------------------------------------------------------------------------------
def test_benchmark_adapter_on_real_cases(shared_data):
    from ExtremeSegLib.evaluation import MethodOptions, discover_cases
    from ExtremeSegLib.evaluation.methods import extreme_points_random_walker as benchmark_method
    from ExtremeSegLib.io.volumes import read_labelmap

    case = discover_cases(shared_data / "hippocampus")[0]
    prediction = benchmark_method(case, MethodOptions(structures={"hippocampus": [1, 2]}))
    reference = read_labelmap(case.label)
    assert prediction.same_geometry(reference)
    assert dice(prediction.array == 1, reference.array > 0) > 0.6

    acdc = discover_cases(shared_data / "acdc")[0]
    prediction = benchmark_method(acdc, MethodOptions(structures={"RV": [1], "LV": [3]}))
    reference = read_labelmap(acdc.label)
    assert set(np.unique(prediction.array)) <= {0, 1, 3}
    assert dice(prediction.array == 3, reference.array == 3) > 0.5


def test_intensity_likelihood_ratio_bins_equal_digitize_over_0_to_1():
    from ExtremeSegLib.pseudolabel.extreme_points import intensity_likelihood_ratio

    x = np.clip(np.random.default_rng(1).normal(0.5, 0.4, (30, 20, 10)), 0, 1)
    seeds = np.where(x > 0.6, 1, 0).astype(np.int16)
    edges = np.linspace(0.0, 1.0, 33)
    which = np.clip(np.digitize(x, edges) - 1, 0, 31)
    ratio = intensity_likelihood_ratio(x, seeds, bins=32)
    # one value per bin: voxels of a bin share it, and the bright bins lean to the foreground
    for b in (0, 10, 31):
        assert np.ptp(ratio[which == b]) == 0
    assert ratio[which == 31].min() > 0.5 > ratio[which == 0].max()
