"""CRF regularised loss: the dense form is the paper's sum, the bilateral grid approximates it closely."""

import numpy as np
import pytest
import torch

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.training.crf_loss import CRFLoss, bilateral_filter_exact, bilateral_filter_grid, crf_energy


def _ellipsoid_patch(shape, spacing, seed=0):
    """An ellipsoid brighter than its surroundings, noisy, and a soft prediction roughly matching it."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    inside = ((grids[0] / 7) ** 2 + (grids[1] / 9) ** 2 + (grids[2] / 8) ** 2) < 1
    image = torch.from_numpy((1.5 * inside + 0.2 * rng.normal(size=shape)).astype(np.float32))[None]
    logit = torch.from_numpy((4.0 * inside - 2 + rng.normal(size=shape)).astype(np.float32))
    fg = torch.sigmoid(logit)[None]
    return image, torch.stack([1 - fg, fg], dim=1), inside


def test_exact_energy_is_the_papers_double_sum():
    image, prob, _ = _ellipsoid_patch((4, 5, 3), (1.0, 1.5, 4.0))
    spacing, s_mm, s_int = (1.0, 1.5, 4.0), 3.0, 0.5
    axes = [np.arange(n) * s for n, s in zip((4, 5, 3), spacing)]
    pos = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    f = prob[0, 1].numpy().ravel().astype(np.float64)
    inten = image[0].numpy().ravel().astype(np.float64)
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2 * s_mm ** 2) - (inten[:, None] - inten[None]) ** 2 / (2 * s_int ** 2))
    expected = f @ kernel @ (1 - f) / f.size
    got = crf_energy(prob, image, spacing, s_mm, s_int, method="exact")
    assert float(got) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("spacing,sigma_mm,sigma_intensity", [((1.0, 1.0, 1.0), 15.0, 0.05),
                                                               ((1.5, 1.5, 4.0), 15.0, 0.05),
                                                               ((1.0, 1.0, 1.0), 4.0, 0.5)])
def test_grid_approximates_the_exact_filter(spacing, sigma_mm, sigma_intensity):
    shape = (16, 18, 8) if spacing[2] > 2 else (16, 18, 16)
    image, prob, _ = _ellipsoid_patch(shape, spacing)
    values = 1 - prob[:, 1:]
    exact = bilateral_filter_exact(values, image, spacing, sigma_mm, sigma_intensity)
    grid = bilateral_filter_grid(values, image, spacing, sigma_mm, sigma_intensity)
    assert float((grid - exact).norm() / exact.norm()) < 0.05
    e_exact = crf_energy(prob, image, spacing, sigma_mm, sigma_intensity, "exact")
    e_grid = crf_energy(prob, image, spacing, sigma_mm, sigma_intensity, "grid")
    assert float(e_grid / e_exact) == pytest.approx(1.0, abs=0.03)


def test_grid_gradient_matches_the_exact_gradient():
    spacing = (1.0, 1.0, 2.0)
    image, prob, _ = _ellipsoid_patch((14, 16, 8), spacing)
    logits = torch.log(prob).clone().requires_grad_(True)
    grads = []
    for method in ("exact", "grid"):
        logits.grad = None
        CRFLoss(spacing, sigma_mm=6.0, sigma_intensity=0.3, weight=1.0, method=method)(logits, image).backward()
        grads.append(logits.grad.clone().ravel())
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert float(cosine) > 0.99


def test_energy_prefers_labels_that_follow_the_image():
    spacing = (1.0, 1.0, 1.0)
    image, _, inside = _ellipsoid_patch((20, 22, 20), spacing)
    follows = torch.from_numpy(inside.astype(np.float32))[None]
    cuts = torch.zeros_like(follows)
    cuts[:, :10] = 1.0  # a plane through the ellipsoid, same area scale
    for method in ("grid",):
        e_follow = crf_energy(torch.stack([1 - follows, follows], 1), image, spacing, 15.0, 0.5, method)
        e_cut = crf_energy(torch.stack([1 - cuts, cuts], 1), image, spacing, 15.0, 0.5, method)
        assert float(e_follow) < 0.5 * float(e_cut)


def test_splitting_a_class_adds_the_pairs_between_its_parts():
    spacing = (1.0, 1.0, 1.0)
    image, prob, _ = _ellipsoid_patch((8, 9, 8), spacing)
    three = torch.cat([prob[:, :1], 0.5 * prob[:, 1:], 0.5 * prob[:, 1:]], dim=1)
    two = crf_energy(prob, image, spacing, 5.0, 0.5, "exact")
    # splitting the foreground in two halves adds the pairs between the halves: the energy can only grow
    assert float(crf_energy(three, image, spacing, 5.0, 0.5, "exact")) > float(two)


def test_bad_settings_are_refused():
    with pytest.raises(InputError):
        CRFLoss((1, 1, 1), sigma_mm=0)
    with pytest.raises(InputError):
        crf_energy(torch.ones(1, 2, 2, 2, 2) / 2, torch.zeros(1, 2, 2, 2), (1, 1, 1), method="lattice")
