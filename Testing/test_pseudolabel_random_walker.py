"""Random walker: agreement with scikit-image, seeds, several classes, anisotropy, priors, solvers, bad input."""

import importlib

import numpy as np
import pytest
from skimage.segmentation import random_walker as skimage_random_walker

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.pseudolabel.random_walker import (
    _coarse_weights,
    _Settings,
    _upsample_linear,
    edge_weights,
    memory_estimate,
    random_walker,
    solver_threads,
)


def _two_regions(shape=(24, 22, 20), seed=0):
    """A bright box in a dark volume, mild noise, seeds inside the box (1) and on two faces (0)."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape)
    image[6:16, 6:17, 5:15] = 1.0
    image += 0.1 * rng.standard_normal(shape)
    seeds = np.full(shape, -1, dtype=np.int16)
    seeds[9:13, 9:13, 8:12] = 1
    seeds[:2] = 0
    seeds[-2:] = 0
    return image, seeds


@pytest.mark.parametrize("solver, atol", [("direct", 1e-5), ("cg_j", 5e-3), ("cg_torch", 5e-3)])
def test_matches_scikit_image_two_classes(solver, atol):
    image, seeds = _two_regions()
    reference = skimage_random_walker(image, seeds + 1, beta=130, mode="bf", return_full_prob=True)
    probs = random_walker(image, seeds, beta=130, solver=solver, tol=1e-6)
    assert probs.dtype == np.float32 and probs.shape == (2,) + image.shape
    np.testing.assert_allclose(probs, reference, atol=atol)


@pytest.mark.parametrize("solver", ["direct", "cg_torch"])
def test_three_classes_sum_to_one_and_match_scikit_image(solver):
    image, seeds = _two_regions()
    seeds[:, :2] = 2
    reference = skimage_random_walker(image, seeds + 1, beta=130, mode="bf", return_full_prob=True)
    probs = random_walker(image, seeds, beta=130, solver=solver, tol=1e-6)
    assert probs.shape == (3,) + image.shape
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, reference, atol=5e-3)


def test_seeds_keep_their_class():
    image, seeds = _two_regions()
    probs = random_walker(image, seeds)
    for c in (0, 1):
        assert np.all(probs[c][seeds == c] == 1.0)
        assert np.all(probs[1 - c][seeds == c] == 0.0)
    inside, outside = probs[1][11, 11, 6], probs[1][2, 11, 10]
    assert inside > 0.9 and outside < 0.1


def test_anisotropic_spacing_reaches_as_far_in_mm():
    # Flat image, one seed voxel in the middle, background on the border. With 4 mm along K, two voxel steps
    # along K are 8 mm against 2 mm along I: diffusion in mm (conductance_power=2) must decay faster along K;
    # per-voxel coupling (power 0) is symmetric.
    image = np.zeros((21, 21, 21))
    seeds = np.full(image.shape, -1, dtype=np.int16)
    seeds[0], seeds[-1], seeds[:, 0], seeds[:, -1], seeds[:, :, 0], seeds[:, :, -1] = 0, 0, 0, 0, 0, 0
    seeds[10, 10, 10] = 1
    spacing = (1.0, 1.0, 4.0)
    mm = random_walker(image, seeds, spacing, solver="direct", conductance_power=2.0)[1]
    voxel = random_walker(image, seeds, spacing, solver="direct", conductance_power=0.0)[1]
    assert mm[10, 10, 12] < 0.5 * mm[12, 10, 10]
    assert voxel[10, 10, 12] == pytest.approx(voxel[12, 10, 10], rel=1e-4)


def test_coarse_to_fine_agrees_with_the_single_level_solve():
    # Coarse-to-fine keeps the coarse values where they are sure and re-solves the uncertain band: the labels
    # agree, the probabilities closely.
    image, seeds = _two_regions(shape=(64, 56, 40))
    single = random_walker(image, seeds, solver="cg_torch", tol=1e-5, multiscale=False)
    multi = random_walker(image, seeds, solver="cg_torch", tol=1e-5, multiscale=True)
    np.testing.assert_allclose(multi.sum(axis=0), 1.0, atol=1e-5)
    assert np.mean(np.argmax(multi, 0) == np.argmax(single, 0)) > 0.995
    assert np.mean(np.abs(multi - single)) < 0.02


def test_prior_decides_where_no_seed_reaches():
    # Two halves separated by a strong edge; seeds of both classes only in the left half, class 0 next to
    # the edge: without a prior the right half follows class 0, with a prior for class 1 it follows the prior.
    image = np.zeros((20, 10, 10))
    image[10:] = 1.0
    seeds = np.full(image.shape, -1, dtype=np.int16)
    seeds[0] = 1
    seeds[9] = 0
    prior = np.zeros((2,) + image.shape)
    prior[1] = 1.0  # the prior says "class 1" everywhere
    plain = random_walker(image, seeds, beta=2000, solver="direct")
    pulled = random_walker(image, seeds, beta=2000, solver="direct", prior=prior, prior_weight=0.05)
    assert plain[1][15].mean() < 0.05
    assert pulled[1][15].mean() > 0.95


def test_pyamg_solver_matches_when_installed():
    pytest.importorskip("pyamg")
    image, seeds = _two_regions()
    reference = random_walker(image, seeds, solver="direct")
    np.testing.assert_allclose(random_walker(image, seeds, solver="cg_mg", tol=1e-6), reference, atol=5e-3)


def test_bad_inputs_are_refused():
    image, seeds = _two_regions()
    bad = image.copy()
    bad[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        random_walker(bad, seeds)
    with pytest.raises(InputError, match="two classes"):
        random_walker(image, np.where(seeds == 1, -1, seeds).astype(np.int16))
    with pytest.raises(InputError, match="same 3D shape"):
        random_walker(image, seeds[:-1])
    with pytest.raises(InputError, match="unknown solver"):
        random_walker(image, seeds, solver="magic")
    with pytest.raises(InputError, match="no seed"):
        random_walker(image, np.where(seeds == 1, 2, seeds).astype(np.int16))


def test_slice_axis_walks_slices_apart():
    image, seeds = _two_regions()
    seeds[:2], seeds[-2:] = -1, -1
    seeds[:, :2] = 0  # every slice along I has seeds of both classes (class 1 only in 9..12)
    seeds[:, 9:13, 2] = 1
    together = random_walker(image, seeds, solver="direct", slice_axis=0)
    for i in (3, 10):
        alone = random_walker(image[i:i + 1], seeds[i:i + 1], solver="direct")
        np.testing.assert_allclose(together[:, i:i + 1], alone, atol=1e-6)
    with pytest.raises(InputError, match="slice 0 along axis 2 has no seed"):
        random_walker(image, np.where(np.arange(20) == 0, -1, seeds).astype(np.int16), slice_axis=2)
    with pytest.raises(InputError, match="slice_axis"):
        random_walker(image, seeds, slice_axis=3)


def test_slices_solved_on_threads_equal_the_serial_solve(monkeypatch):
    image, seeds = _two_regions()
    seeds[:2], seeds[-2:] = -1, -1
    seeds[:, :2] = 0
    seeds[:, 9:13, 2] = 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    serial = random_walker(image, seeds, solver="direct", slice_axis=0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert solver_threads() == 3
    np.testing.assert_array_equal(random_walker(image, seeds, solver="direct", slice_axis=0), serial)


def test_direct_coarse_to_fine_agrees_with_the_exact_solve():
    # a stack of slices large enough for a coarse level: the band is solved exactly, sure regions the band
    # contradicts are solved again: close to the exact solve
    rng = np.random.default_rng(1)
    ii, jj = np.meshgrid(np.arange(240), np.arange(240), indexing="ij")
    r = np.hypot(ii - 120, jj - 120)
    image = np.repeat(np.where(r < 40, 1.0, np.where(r < 50, 0.2, 0.6))[:, :, None], 3, axis=2)
    image += 0.05 * rng.standard_normal(image.shape)
    seeds = np.full(image.shape, -1, dtype=np.int16)
    seeds[(np.abs(r - 20) < 1)] = 2
    seeds[(np.abs(r - 45) < 1) & (ii > 120)] = 1
    seeds[(np.abs(r - 90) < 1)] = 0
    exact = random_walker(image, seeds, solver="direct", slice_axis=2)
    fast = random_walker(image, seeds, solver="direct", slice_axis=2, multiscale=True, band_tolerance=1e-3)
    np.testing.assert_allclose(fast.sum(axis=0), 1.0, atol=1e-6)
    assert np.abs(fast - exact).max() < 0.01
    assert np.mean(np.argmax(fast, 0) == np.argmax(exact, 0)) > 0.9999
    with pytest.raises(InputError, match="band_tolerance"):
        random_walker(image, seeds, band_tolerance=0.0)


def test_memory_estimate_grows_with_region_and_classes():
    assert memory_estimate((200, 150, 90), 2) > memory_estimate((100, 150, 90), 2)
    assert memory_estimate((100, 100, 100), 4) > memory_estimate((100, 100, 100), 2)


def test_coarse_to_fine_upsampling_is_linear_interpolation_between_block_centres():
    from scipy import ndimage as ndi

    # block j of 2 voxels has its centre at fine coordinate 2j + 0.5: a linear ramp there stays linear on the
    # fine grid, held constant beyond the outermost centres; an odd fine size is cropped
    ramp = np.arange(5.0)[:, None, None] * np.ones((5, 3, 1))
    fine = _upsample_linear(ramp, np.array([2, 1, 1]), (9, 3, 1))
    np.testing.assert_allclose(fine[:, 0, 0], np.clip((np.arange(9) - 0.5) / 2, 0, 4))
    assert fine.shape == (9, 3, 1)

    coarse = ndi.gaussian_filter(np.random.default_rng(0).random((10, 8, 6)), 1.5).astype(np.float32)
    fine = _upsample_linear(coarse, (2, 2, 1), (20, 16, 6))
    assert fine.shape == (20, 16, 6)
    expected = ndi.zoom(coarse, (2, 2, 1), order=1, mode="nearest", grid_mode=True)
    assert np.abs(fine - expected).max() < 1e-5
    # a partial last block (odd fine size) keeps the blocks' alignment from index 0
    assert np.allclose(_upsample_linear(coarse, (2, 2, 1), (19, 16, 6)), fine[:19])



def _settings(slice_axis=None, conductance_power=2.0):
    return _Settings(130.0, np.asarray(1.0), conductance_power, 2, "direct", 1e-3, None, "cpu", 0.0, slice_axis, 0.3)


def test_coarse_weights_put_the_fine_edges_in_series_along_and_in_parallel_across():
    rng = np.random.default_rng(0)
    image = rng.random((9, 6, 3))
    spacing = np.array([1.0, 1.0, 3.0])
    fine = edge_weights(image, spacing, 130.0, std=1.0, slice_axis=2)
    coarse = _coarse_weights(fine, np.array([2, 2, 1]), spacing, _settings(slice_axis=2))
    assert [c.shape for c in coarse] == [(4, 3, 3), (5, 2, 3), (5, 3, 2)]
    assert not coarse[2].any()  # slices stay apart
    w0 = np.pad(fine[0], [(0, 1), (0, 0), (0, 0)], mode="edge")  # the odd last block repeats its edge
    for i, j, k in [(0, 0, 0), (2, 1, 2), (3, 2, 1)]:
        rows = [2.0 / (0.5 / w0[2 * i, jj, k] + 1.0 / w0[2 * i + 1, jj, k] + 0.5 / w0[2 * i + 2, jj, k])
                for jj in (2 * j, 2 * j + 1)]
        assert np.isclose(coarse[0][i, j, k], np.mean(rows))
    # a constant image: the coarse grid's own weights, whatever the spacing
    flat = np.ones((8, 8, 4))
    for spacing in (np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.8, 2.5])):
        factors = np.array([2, 2, 1])
        expected = edge_weights(flat[::2, ::2], spacing * factors, 130.0, std=1.0)
        got = _coarse_weights(edge_weights(flat, spacing, 130.0, std=1.0), factors, spacing, _settings())
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-6)
    # an edge inside a block weakens both of its links along that axis
    step = np.zeros((8, 4, 1))
    step[5:] = 1.0
    links = _coarse_weights(edge_weights(step, (1, 1, 1), 130.0, std=0.1), np.array([2, 2, 1]), np.ones(3),
                            _settings())[0][:, 0, 0]
    assert links[1] < 1e-6 and links[2] < 1e-6
    assert np.isclose(links[0], 0.25)  # flat: the coarse grid's weight, (1 / 2) ** 2 (the third axis is not coarsened)


def test_slices_solve_with_blas_on_one_thread(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    image, seeds = _two_regions()
    seeds[:2], seeds[-2:] = -1, -1
    seeds[:, :2] = 0
    seeds[:, 9:13, 2] = 1
    walker_module = importlib.import_module("ExtremeSegLib.pseudolabel.random_walker")  # not the function
    seen, factor = [], walker_module._lu

    def recording_lu(lap):
        seen.extend(info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas")
        return factor(lap)

    monkeypatch.setattr(walker_module, "_lu", recording_lu)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        random_walker(image, seeds, solver="direct", slice_axis=0)
        assert seen and set(seen) == {1}
        assert {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"} == {2}
