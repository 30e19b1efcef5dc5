"""Network planning (anisotropic kernels), cue channels, inner-level dropout."""

import pytest
import torch

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.training.networks import build_network, enable_mc_dropout, plan_network, total_stride


def test_thick_slices_get_in_plane_kernels_and_pooling():
    kernels, strides = plan_network((1.5, 1.5, 10.0), (96, 96, 10))
    assert kernels[0] == [3, 3, 1] and strides[1] == [2, 2, 1]  # no mixing across 10 mm slices at first
    assert kernels[-1] == [3, 3, 3]  # once in-plane spacing has caught up, full 3D
    assert all(s[2] == 1 for s in strides[:3])
    iso_kernels, iso_strides = plan_network((1.0, 1.0, 1.0), (40, 56, 40))
    assert all(k == [3, 3, 3] for k in iso_kernels) and iso_strides[1] == [2, 2, 2]
    assert total_stride(iso_strides).tolist() == [8, 8, 8]
    with pytest.raises(InputError, match="too small"):
        plan_network((1.0, 1.0, 1.0), (6, 6, 6))
    flat_kernels, flat_strides = plan_network((1.5, 1.5, 10.0), (96, 96, 10), slice_wise=True)  # 2D-like
    assert all(k[2] == 1 for k in flat_kernels) and all(s[2] == 1 for s in flat_strides)
    assert len(flat_strides) == 5 and flat_kernels[-1] == [3, 3, 1]


def test_network_takes_image_plus_cue_channels_on_an_anisotropic_patch():
    kernels, strides = plan_network((1.5, 1.5, 10.0), (32, 32, 8))
    network = build_network(3, 4, kernels, strides, [8, 16, 32, 64, 128])  # image + heatmap + confidence, 4 classes
    out = network(torch.randn(2, 3, 32, 32, 8))
    assert out.shape == (2, 4, 32, 32, 8)
    with pytest.raises(RuntimeError):
        network(torch.randn(2, 1, 32, 32, 8))  # the image alone is not what it was built for


def test_dropout_sits_in_the_inner_levels_and_samples_under_mc():
    kernels, strides = plan_network((1.0, 1.0, 1.0), (16, 16, 16), min_feature_size=2)
    network = build_network(1, 2, kernels, strides, [4, 8, 16, 32], dropout=0.5, dropout_levels=2)
    dropped = [name for name, m in network.named_modules() if isinstance(m, torch.nn.Dropout)]
    assert dropped and not any(name.startswith(("input_block", "output_block", "downsamples.0.")) for name in dropped)
    assert any(name.startswith("bottleneck") for name in dropped)
    x = torch.randn(1, 1, 16, 16, 16)
    network.eval()
    with torch.no_grad():
        assert torch.equal(network(x), network(x))
        enable_mc_dropout(network)
        assert not torch.equal(network(x), network(x))
    none = build_network(1, 2, kernels, strides, [4, 8, 16, 32])
    assert not any(isinstance(m, torch.nn.Dropout) for m in none.modules())


def test_slice_wise_network_is_a_2d_unet_run_on_every_slice():
    kernels, strides = plan_network((1.5, 10.0, 1.5), (32, 4, 32), slice_wise=True)  # thick axis J
    torch.manual_seed(0)
    network = build_network(1, 3, kernels, strides, [4, 8, 16, 32], slice_axis=1).eval()
    assert not any(isinstance(m, torch.nn.Conv3d) for m in network.modules())
    x = torch.randn(2, 1, 32, 4, 32)
    with torch.no_grad():
        out = network(x)
        one_slice = network.unet2d(x[:, :, :, 2])
    assert out.shape == (2, 3, 32, 4, 32)
    torch.testing.assert_close(out[:, :, :, 2], one_slice)  # slice 2's output depends on slice 2 alone
    with pytest.raises(InputError, match="slice axis"):
        build_network(1, 3, kernels, strides, [4, 8, 16, 32], slice_axis=0)  # kernels are 3 along axis 0
