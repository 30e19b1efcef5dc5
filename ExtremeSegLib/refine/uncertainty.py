"""Monte Carlo dropout uncertainty (paper 004, Sec. 2.4): which voxels the network cannot label reliably.

``passes`` stochastic forward passes with dropout on give, per voxel and class, a sample of logits. The two
classes with the highest mean softmax are compared with Welch's t-test on their logits; where the test cannot
tell them apart (``p >= p_threshold``) the voxel is reset to unknown, elsewhere it takes the top class.
The passes are accumulated on the fly (sums in float64), so memory does not grow with ``passes``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import numpy as np
from scipy import special

from ..errors import InputError


def welch_t_test(mean_a, var_a, n_a, mean_b, var_b, n_b):
    """Two-sided Welch's t-test from sample means and variances, element-wise.

    Like ``scipy.stats.ttest_ind(a, b, equal_var=False)``, except where both variances are 0: ``p`` is then 0 if
    the means differ and 1 if they are equal (scipy gives NaN there: no evidence either way, which for
    relabelling means "unsure").

    Parameters
    ----------
    mean_a, mean_b : array_like
        Sample means (broadcastable shapes).
    var_a, var_b : array_like
        Unbiased (``ddof=1``) sample variances.
    n_a, n_b : int
        Sample sizes.

    Returns
    -------
    t, p : ndarray
        The statistic and the two-sided p-value, broadcast shape.
    """
    mean_a, var_a, mean_b, var_b = (np.asarray(x, dtype=np.float64) for x in (mean_a, var_a, mean_b, var_b))
    if n_a < 2 or n_b < 2:
        raise InputError("Welch's t-test needs at least 2 samples per group")
    sa, sb = var_a / n_a, var_b / n_b
    se2 = sa + sb
    diff = mean_a - mean_b
    degenerate = se2 <= 0
    safe = np.where(degenerate, 1.0, se2)
    t = diff / np.sqrt(safe)
    dof = safe ** 2 / np.where(degenerate, 1.0, sa ** 2 / (n_a - 1) + sb ** 2 / (n_b - 1))
    p = special.stdtr(dof, -np.abs(t)) * 2.0
    t = np.where(degenerate, np.where(diff == 0, 0.0, np.copysign(np.inf, diff)), t)
    p = np.where(degenerate, np.where(diff == 0, 1.0, 0.0), p)
    return t, p


class LogitSamples:
    """Running statistics of stochastic logits ``(C, ...)``: per class the logits' sum and sum of squares and
    the softmax's sum."""

    def __init__(self):
        self.count = 0
        self.logit_sum = self.logit_sq_sum = self.softmax_sum = None

    def add(self, logits: np.ndarray) -> None:
        logits = np.asarray(logits, dtype=np.float64)
        if self.count and logits.shape != self.logit_sum.shape:
            raise InputError(f"MC dropout: a pass gave logits of shape {logits.shape}, "
                             f"earlier ones {self.logit_sum.shape}")
        e = np.exp(logits - logits.max(axis=0, keepdims=True))
        softmax = e / e.sum(axis=0, keepdims=True)
        if not self.count:
            self.logit_sum, self.logit_sq_sum, self.softmax_sum = (np.zeros_like(logits) for _ in range(3))
        self.logit_sum += logits
        self.logit_sq_sum += logits * logits
        self.softmax_sum += softmax
        self.count += 1

    @property
    def mean_softmax(self) -> np.ndarray:
        return self.softmax_sum / self.count

    def mean_and_variance(self):
        """Per-class mean and unbiased variance of the logits, ``(C, ...)`` each."""
        n = self.count
        mean = self.logit_sum / n
        var = np.maximum(self.logit_sq_sum - n * mean * mean, 0.0) / (n - 1)
        return mean, var

    def relabel(self, p_threshold: float = 0.05):
        """``(labels, unknown, p)``: top class by mean softmax, where Welch's test between the top two classes'
        logits gives ``p >= p_threshold``, and the p-values ``(...)``."""
        if self.count < 2:
            raise InputError("MC dropout needs at least 2 forward passes")
        order = np.argsort(self.mean_softmax, axis=0)
        top, second = order[-1], order[-2]
        mean, var = self.mean_and_variance()
        pick = lambda a, idx: np.take_along_axis(a, idx[None], axis=0)[0]  # noqa: E731
        _, p = welch_t_test(pick(mean, top), pick(var, top), self.count, pick(mean, second), pick(var, second),
                            self.count)
        return top.astype(np.uint8), p >= p_threshold, p


def mc_dropout_relabel(sample_logits: Callable[[], np.ndarray], passes: int = 50, p_threshold: float = 0.05,
                       check_cancelled: Callable[[], None] | None = None):
    """Relabel from Monte Carlo dropout passes (paper 004's uncertainty step).

    Parameters
    ----------
    sample_logits : callable
        ``sample_logits()`` returns one stochastic logits array ``(C, ...)`` (dropout on).
    passes : int, optional
        Stochastic passes.
    p_threshold : float, optional
        A voxel is unknown where Welch's t-test between the logits of its two most probable classes gives
        ``p >= p_threshold``.
    check_cancelled : callable, optional
        Called between passes (raises to cancel).

    Returns
    -------
    labels : ndarray of uint8, shape (...)
        The most probable class of the mean softmax.
    unknown : ndarray of bool, shape (...)
        Voxels whose label is not sure.
    mean : ndarray of float32, shape (C, ...)
        Mean softmax over the passes.
    """
    if passes < 2:
        raise InputError(f"MC dropout needs at least 2 forward passes, got {passes}")
    if not 0.0 < p_threshold < 1.0:
        raise InputError(f"the t-test's p threshold must lie in (0, 1), got {p_threshold}")
    samples = LogitSamples()
    for _ in range(passes):
        if check_cancelled is not None:
            check_cancelled()
        samples.add(sample_logits())
    labels, unknown, _ = samples.relabel(p_threshold)
    return labels, unknown, samples.mean_softmax.astype(np.float32)


@contextmanager
def mc_dropout_sampler(network, inputs: np.ndarray, patch_size, device, overlap: float = 0.25, batch: int = 8):
    """A sampler of stochastic logits of a network over one volume (a context manager).

    The network is put in evaluation mode with dropout on, and evaluated with Gaussian-weighted sliding windows;
    its mode is restored afterwards.

    Parameters
    ----------
    network : torch.nn.Module
    inputs : ndarray, shape (C_in, I, J, K)
        Network inputs on the model grid.
    patch_size : sequence of 3 ints
        Sliding-window size in voxels.
    device : torch.device
    overlap : float, optional
        Window overlap fraction.
    batch : int, optional
        Windows per forward pass.

    Yields
    ------
    callable
        ``sample()`` returning one logits array ``(C, I, J, K)``.
    """
    import torch
    from monai.inferers import sliding_window_inference

    from ..training.networks import enable_mc_dropout

    was_training = network.training
    enable_mc_dropout(network)
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))[None].to(device)
    roi = tuple(int(n) for n in patch_size)

    def sample() -> np.ndarray:
        with torch.no_grad():
            logits = sliding_window_inference(x, roi_size=roi, sw_batch_size=batch, predictor=network,
                                              overlap=overlap, mode="gaussian")
        return torch.as_tensor(logits)[0].float().cpu().numpy()

    try:
        yield sample
    finally:
        network.train(was_training)
