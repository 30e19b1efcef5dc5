"""MC-dropout uncertainty: Welch's t-test against SciPy, streamed statistics, relabelling, a real dropout network."""

import numpy as np
import pytest
import torch
from scipy import stats

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.refine.uncertainty import LogitSamples, mc_dropout_relabel, mc_dropout_sampler, welch_t_test
from ExtremeSegLib.training.networks import build_network, enable_mc_dropout


@pytest.mark.parametrize("n_a, n_b", [(50, 50), (5, 12), (2, 3)])
def test_welch_matches_scipy(n_a, n_b):
    rng = np.random.default_rng(n_a)
    a = rng.normal(0.0, rng.uniform(0.1, 3.0, 500), (n_a, 500))
    b = rng.normal(rng.uniform(-1, 1, 500), rng.uniform(0.1, 3.0, 500), (n_b, 500))
    t, p = welch_t_test(a.mean(0), a.var(0, ddof=1), n_a, b.mean(0), b.var(0, ddof=1), n_b)
    reference = stats.ttest_ind(a, b, equal_var=False)
    np.testing.assert_allclose(t, reference.statistic, rtol=1e-10)
    np.testing.assert_allclose(p, reference.pvalue, rtol=1e-8, atol=1e-14)


def test_welch_without_variance():
    t, p = welch_t_test([1.0, 1.0], [0.0, 0.0], 10, [0.0, 1.0], [0.0, 0.0], 10)
    assert p.tolist() == [0.0, 1.0] and t[0] == np.inf
    with pytest.raises(InputError, match="2 samples"):
        welch_t_test(0.0, 1.0, 1, 0.0, 1.0, 5)


def test_streamed_statistics_and_relabelling_match_the_batch_test():
    rng = np.random.default_rng(0)
    passes, shape = 30, (3, 4, 5, 2)
    centre = rng.normal(0, 1, shape)
    centre[1, 0] += 3.0  # class 1 clearly wins in the first row
    samples = centre + rng.normal(0, 1.0, (passes,) + shape)
    stream = LogitSamples()
    for s in samples:
        stream.add(s)
    mean, var = stream.mean_and_variance()
    np.testing.assert_allclose(mean, samples.mean(0), atol=1e-12)
    np.testing.assert_allclose(var, samples.var(0, ddof=1), rtol=1e-9)

    labels, unknown, p = stream.relabel(0.05)
    softmax = np.exp(samples) / np.exp(samples).sum(1, keepdims=True)
    order = np.argsort(softmax.mean(0), axis=0)
    top, second = order[-1], order[-2]
    a = np.take_along_axis(samples, top[None, None], 1)[:, 0]
    b = np.take_along_axis(samples, second[None, None], 1)[:, 0]
    reference = stats.ttest_ind(a, b, equal_var=False).pvalue
    np.testing.assert_array_equal(labels, top)
    np.testing.assert_allclose(p, reference, rtol=1e-8)
    np.testing.assert_array_equal(unknown, reference >= 0.05)
    assert not unknown[0].any() and (labels[0] == 1).all()
    assert unknown.any()  # elsewhere the classes' logits overlap


def test_relabel_refuses_bad_settings():
    with pytest.raises(InputError, match="2 forward passes"):
        mc_dropout_relabel(lambda: np.zeros((2, 3)), passes=1)
    with pytest.raises(InputError, match="p threshold"):
        mc_dropout_relabel(lambda: np.zeros((2, 3)), passes=5, p_threshold=1.5)


def test_mc_dropout_with_a_real_network_varies_and_relabels():
    torch.manual_seed(0)
    network = build_network(1, 3, [[3, 3, 1]] * 3, [[1, 1, 1], [2, 2, 1], [2, 2, 1]], [8, 16, 32],
                            dropout=0.5, dropout_levels=2)
    enable_mc_dropout(network)
    x = torch.randn(1, 1, 16, 16, 2)

    def sample():
        with torch.no_grad():
            return network(x)[0].numpy()

    first, second = sample(), sample()
    assert not np.allclose(first, second)  # dropout is on
    labels, unknown, mean_softmax = mc_dropout_relabel(sample, passes=8)
    assert labels.shape == unknown.shape == (16, 16, 2)
    np.testing.assert_allclose(mean_softmax.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, mean_softmax.argmax(0))
    network.eval()  # no dropout: identical passes, so every voxel whose top two classes differ is certain
    _, unknown_eval, _ = mc_dropout_relabel(sample, passes=3)
    assert not unknown_eval.any()


def test_sampler_slides_over_a_larger_volume_and_restores_the_mode():
    torch.manual_seed(1)
    network = build_network(1, 2, [[3, 3, 1]] * 3, [[1, 1, 1], [2, 2, 1], [2, 2, 1]], [8, 16, 32],
                            dropout=0.5, dropout_levels=2)
    network.train()
    inputs = np.random.default_rng(0).standard_normal((1, 24, 20, 3)).astype(np.float32)
    with mc_dropout_sampler(network, inputs, (16, 16, 1), torch.device("cpu")) as sample:
        assert not network.training  # evaluation mode (normalisation frozen) ...
        a, b = sample(), sample()
    assert a.shape == (2, 24, 20, 3) and not np.allclose(a, b)  # ... with dropout on
    assert network.training
