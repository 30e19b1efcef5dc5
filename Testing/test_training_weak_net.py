"""Weak-Net's objective: the boundary band, the template-only case, gradients to both networks, checkpoints."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from test_training_engine import CPU, PATCH, ellipsoid_volume, tiny_network

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.training.data import TrainingVolume
from ExtremeSegLib.training.engine import TrainingSettings, fit, load_checkpoint
from ExtremeSegLib.training.networks import build_network, plan_network
from ExtremeSegLib.training.weak_net import WeakNetObjective, binary_straight_through, boundary_band


def reconstruction_network():
    kernels, strides = plan_network((1.0, 1.0, 1.0), PATCH, min_feature_size=2, max_levels=3)
    torch.manual_seed(1)
    return build_network(1, 1, kernels, strides, [4, 8, 16])


def batch():
    volumes = [ellipsoid_volume(seed)[0] for seed in (0, 1)]
    crop = tuple(slice(0, n) for n in PATCH)
    x = torch.from_numpy(np.stack([v.inputs[(slice(None),) + crop] for v in volumes]))
    y = torch.from_numpy(np.stack([(v.target[(slice(None),) + crop] > 0.5).astype(np.float32) for v in volumes]))
    w = torch.ones((2,) + PATCH)
    return x, y, w


def test_boundary_band_is_the_box_neighbourhood_of_the_boundary():
    mask = np.zeros((2, 20, 20, 12), dtype=bool)
    mask[:, 5:14, 6:12, 3:9] = True
    band = boundary_band(torch.from_numpy(mask.astype(np.float32)), (2, 1, 0)).numpy()
    box = np.ones((1, 5, 3, 1), dtype=bool)
    expected = ndi.binary_dilation(mask, box) & ndi.binary_dilation(~mask, box)
    assert np.array_equal(band, expected)
    assert not boundary_band(torch.ones((1, 8, 8, 8)), (2, 2, 2)).any()  # no boundary, no band


def test_lambda_zero_is_the_template_cross_entropy_alone():
    network, _ = tiny_network()
    reconstruction = reconstruction_network()
    x, y, w = batch()
    objective = WeakNetObjective(reconstruction, 0.0, (1.0, 1.0, 1.0))
    loss, logits = objective(network, x, y, w)
    expected = torch.nn.functional.cross_entropy(logits, y.argmax(1))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in reconstruction.parameters())  # not even evaluated


def test_reconstruction_term_trains_both_networks():
    network, _ = tiny_network()
    reconstruction = reconstruction_network()
    x, y, w = batch()
    plain, _ = WeakNetObjective(reconstruction, 0.0, (1.0, 1.0, 1.0))(network, x, y, w)
    loss, _ = WeakNetObjective(reconstruction, 1.0, (1.0, 1.0, 1.0))(network, x, y, w)
    assert float(loss.detach()) > float(plain.detach())
    loss.backward()
    assert all(p.grad is not None for p in reconstruction.parameters())
    # the image term reaches the segmentation network through its probabilities
    network.zero_grad()
    only_image = WeakNetObjective(reconstruction, 1.0, (1.0, 1.0, 1.0))
    total, _ = only_image(network, x, y, torch.zeros_like(w))  # no trusted voxel: the image term alone
    total.backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in network.parameters())


def test_fit_optimises_and_checkpoints_the_reconstruction_network(tmp_path):
    network, multiple = tiny_network()
    reconstruction = reconstruction_network()
    before = [p.detach().clone() for p in reconstruction.parameters()]
    volumes = [ellipsoid_volume(seed)[0] for seed in range(4)]
    volumes = [TrainingVolume(v.inputs, (v.target > 0.5).astype(np.float32), v.weight) for v in volumes]
    objective = WeakNetObjective(reconstruction, 0.5, (1.0, 1.0, 1.0))
    fit(network, volumes, TrainingSettings(epochs=2, steps_per_epoch=2, batch_size=2), spacing_mm=(1.0, 1.0, 1.0),
        patch_size=PATCH, multiple=multiple, device=CPU, checkpoint=tmp_path / "ck.pt", loss_fn=objective)
    assert any(not torch.equal(a, b) for a, b in zip(before, reconstruction.parameters()))
    state = load_checkpoint(tmp_path / "ck.pt")
    saved = {k: v for k, v in state["objective"].items() if k.startswith("reconstruction.")}
    assert saved and all(torch.equal(saved[f"reconstruction.{k}"], v) for k, v in reconstruction.state_dict().items())


@pytest.mark.parametrize("kwargs", [{"lam": -1.0}, {"lam": float("nan")}, {"lam": 1.0, "boundary_mm": 0.0},
                                    {"lam": 1.0, "far_weight": 2.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(InputError):
        WeakNetObjective(reconstruction_network(), spacing_mm=(1.0, 1.0, 1.0), **kwargs)


def test_straight_through_is_binary_forward_and_identity_backward():
    probabilities = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0], requires_grad=True)
    hard = binary_straight_through(probabilities)
    assert hard.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    (hard * torch.arange(5.0)).sum().backward()
    assert probabilities.grad.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_reconstruction_reads_only_the_segmentation():
    """The reconstruction network gets the thresholded segmentation: faint probabilities carry nothing to it."""
    network, _ = tiny_network()
    reconstruction = reconstruction_network()
    seen = []
    reconstruction.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    x, y, w = batch()
    WeakNetObjective(reconstruction, 1.0, (1.0, 1.0, 1.0))(network, x, y, w)
    values = torch.unique(seen[0])
    assert set(values.tolist()) <= {0.0, 1.0}


def test_reconstruction_term_is_in_units_of_the_image_variance():
    """lambda means the same whatever the image's intensity scale: a zero reconstruction of a zero-mean image
    costs lambda x mean(x^2) / var(x) = lambda, with x or 10 x."""
    network, _ = tiny_network()
    reconstruction = reconstruction_network()
    for p in reconstruction.parameters():
        torch.nn.init.zeros_(p)  # reconstructs 0 everywhere
    x, y, w = batch()
    x = x - x.mean(dim=(1, 2, 3, 4), keepdim=True)
    none = torch.zeros_like(w)  # no trusted voxel: the image term alone
    objective = WeakNetObjective(reconstruction, 2.0, (1.0, 1.0, 1.0), far_weight=1.0)
    loss, _ = objective(network, x, y, none)
    scaled, _ = objective(network, 10 * x, y, none)
    n = x[0].numel()
    assert float(loss.detach()) == pytest.approx(2.0 * (n - 1) / n, rel=1e-4)
    assert float(scaled.detach()) == pytest.approx(float(loss.detach()), rel=1e-4)
