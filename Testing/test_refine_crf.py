"""Dense CRF: the Gaussian filters against brute-force sums, and mean-field inference on a noisy labelling."""

import numpy as np
import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.refine.crf import BilateralGrid, bilateral_grid_bytes, dense_crf, require_crf_memory, spatial_filter

SPACING = np.array([1.5, 1.2, 6.0])


def positions_mm(shape, spacing):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return idx * spacing


def kernels_brute_force(image, spacing, sigma_alpha, sigma_beta, sigma_gamma):
    """Exact appearance and smoothness kernel matrices (N, N), self included."""
    p = positions_mm(image.shape, spacing)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    i2 = (image.ravel()[:, None] - image.ravel()[None]) ** 2
    return np.exp(-d2 / (2 * sigma_alpha ** 2) - i2 / (2 * sigma_beta ** 2)), np.exp(-d2 / (2 * sigma_gamma ** 2))


def two_region_image(shape=(12, 10, 4), noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, dtype=int)
    truth[: shape[0] // 2] = 1
    image = truth + noise * rng.standard_normal(shape)
    return image, truth


@pytest.mark.parametrize("sigma_alpha, sigma_beta", [(2.7, 0.1), (2.7, 0.5), (5.0, 0.3), (20.0, 0.2)])
def test_bilateral_grid_matches_brute_force(sigma_alpha, sigma_beta):
    rng = np.random.default_rng(1)
    image = rng.random((12, 10, 4)) + np.repeat([0.0, 1.0], 6)[:, None, None]
    values = rng.random((2,) + image.shape)
    appearance, _ = kernels_brute_force(image, SPACING, sigma_alpha, sigma_beta, 1.0)
    exact = (values.reshape(2, -1) @ appearance.T).reshape(values.shape)
    approx = BilateralGrid(image, SPACING, sigma_alpha, sigma_beta).filter(values)
    error = np.abs(approx - exact)
    # the grid interpolates along the intensity axis (and along spatial axes finer than sigma / 2)
    assert error.max() <= 0.08 * exact.max()
    assert error.mean() <= 0.02 * exact.mean()


def test_spatial_filter_matches_brute_force():
    rng = np.random.default_rng(3)
    values = rng.random((3, 9, 8, 5))
    _, smooth = kernels_brute_force(np.zeros(values.shape[1:]), SPACING, 1.0, 1.0, 4.0)
    exact = (values.reshape(3, -1) @ smooth.T).reshape(values.shape)
    np.testing.assert_allclose(spatial_filter(values, SPACING, 4.0), exact, rtol=0, atol=0.02 * exact.max())


def energy(labels, unary, image, spacing, w_a, w_s, sigma_alpha, sigma_beta, sigma_gamma):
    """The CRF energy of a labelling, summed over all voxel pairs (symmetrically normalised kernels)."""
    appearance, smooth = kernels_brute_force(image, spacing, sigma_alpha, sigma_beta, sigma_gamma)
    flat = labels.ravel()
    u = np.take_along_axis(unary.reshape(unary.shape[0], -1), flat[None], 0).sum()
    differ = flat[:, None] != flat[None]
    pairwise = 0.0
    for w, k in ((w_a, appearance), (w_s, smooth)):
        np.fill_diagonal(k, 0.0)
        n = k.sum(1)
        pairwise += w * (k / np.sqrt(n[:, None] * n[None]))[differ].sum() / 2
    return u + pairwise


def noisy_prediction(truth, flip=0.25, seed=0):
    """Softmax-like probabilities that favour the true class but are wrong at ``flip`` of the voxels."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(truth.shape) < flip
    label = np.where(wrong, 1 - truth, truth)
    confidence = rng.uniform(0.6, 0.8, truth.shape)
    p1 = np.where(label == 1, confidence, 1 - confidence)
    return np.stack([1 - p1, p1]).astype(np.float32)


def test_mean_field_lowers_the_energy_and_fixes_noisy_labels():
    image, truth = two_region_image()
    probabilities = noisy_prediction(truth)
    params = dict(appearance_weight=5.0, smoothness_weight=3.0, sigma_alpha_mm=4.0, sigma_beta=0.2, sigma_gamma_mm=3.0)
    q = dense_crf(probabilities, image, SPACING, iterations=5, **params)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)
    before, after = probabilities.argmax(0), q.argmax(0)
    unary = -np.log(probabilities)
    e_before = energy(before, unary, image, SPACING, 5.0, 3.0, 4.0, 0.2, 3.0)
    e_after = energy(after, unary, image, SPACING, 5.0, 3.0, 4.0, 0.2, 3.0)
    assert e_after < e_before
    assert (before != truth).mean() > 0.15
    assert (after != truth).mean() < 0.02


def test_clamped_seeds_keep_their_class_and_pull_their_neighbours():
    image, truth = two_region_image()
    probabilities = np.full((2,) + image.shape, 0.5, dtype=np.float32)  # the network knows nothing
    probabilities[:, 0, 0, 0] = [0.999, 0.001]  # and is confidently wrong at a seed
    clamp = np.full(image.shape, -1)
    clamp[0, 0, 0] = 1
    clamp[-1, -1, -1] = 0
    clamp[2, 5, 1] = 1
    clamp[9, 4, 2] = 0
    q = dense_crf(probabilities, image, SPACING, clamp, appearance_weight=5.0, smoothness_weight=1.0,
                  sigma_alpha_mm=4.0, sigma_beta=0.2, sigma_gamma_mm=2.0, iterations=10)
    assert q[1, 0, 0, 0] == 1.0 and q[0, -1, -1, -1] == 1.0
    # the appearance kernel carries the seeds' classes through each bright / dark region
    assert (q.argmax(0) == truth).mean() > 0.95


def test_all_clamped_returns_the_seeds():
    image, truth = two_region_image(shape=(4, 4, 2))
    q = dense_crf(np.full((2,) + image.shape, 0.5, np.float32), image, SPACING, truth)
    np.testing.assert_array_equal(q.argmax(0), truth)


def test_bad_input_is_refused():
    image, truth = two_region_image(shape=(4, 4, 2))
    probabilities = noisy_prediction(truth)
    with pytest.raises(InputError, match="shape"):
        dense_crf(probabilities[:, :3], image, SPACING)
    with pytest.raises(InputError, match="clamp"):
        dense_crf(probabilities, image, SPACING, np.full(image.shape, 2))
    with pytest.raises(InputError, match="spacing"):
        dense_crf(probabilities, image, [1.0, 0.0, 1.0])
    with pytest.raises(InputError, match="sigma"):
        dense_crf(probabilities, image, SPACING, sigma_beta=0.0)


def test_crf_memory_estimate_holds_and_large_volumes_are_refused():
    import tracemalloc

    image = two_region_image(shape=(40, 36, 6))[0]
    values = np.ones((1,) + image.shape, dtype=np.float32)
    tracemalloc.start()
    BilateralGrid(image, SPACING, 2.0, 0.1).filter(values)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    estimate = bilateral_grid_bytes(image.shape, SPACING, 2.0, float(np.ptp(image)), 0.1)
    assert 0.5 * peak < estimate < 2.0 * peak
    # a CT-sized volume at the paper's sigmas: refused up front, nothing allocated
    with pytest.raises(InputError, match="crf to false"):
        require_crf_memory((512, 512, 300), (0.7, 0.7, 1.0), 2.7, 8.0, 0.1)
    with pytest.raises(InputError, match="GiB"):
        BilateralGrid(image, SPACING, 2.0, 0.1, memory_limit_bytes=estimate / 2)
