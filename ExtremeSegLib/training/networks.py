"""U-Nets (MONAI DynUNet) planned from voxel spacing and patch size, the nnU-Net way.

Anisotropic data (ACDC: 1.5 x 1.5 x 10 mm) gets in-plane-only kernels (3x3x1) and in-plane-only pooling
until the in-plane spacing has caught up with the slice spacing; isotropic data gets 3x3x3 everywhere.
A slice-wise plan (1 along the thickest axis everywhere) is built as a 2D U-Net run on every slice.
The input is the image plus optional cue channels (point heatmaps, confidence map); dropout can be
limited to the innermost levels (MC dropout as in the scribble method). No pretrained weights: the paper's
ImageNet-initialised 2D encoder is not used, because nothing may be downloaded.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from monai.networks.nets import DynUNet

from ..errors import InputError
from .data import grid_axes

#: DynUNet needs at least this many resolution levels (input block, one down block, bottleneck).
MIN_LEVELS = 3
#: the smallest feature map (voxels along a pooled axis) the deepest level keeps
MIN_FEATURE_SIZE = 4


def plan_network(spacing_mm, patch_size, min_feature_size: int = MIN_FEATURE_SIZE, max_levels: int = 5,
                 anisotropy_ratio: float = 2.0, slice_wise: bool = False):
    """Kernel sizes and strides per level for a patch of ``patch_size`` voxels at ``spacing_mm``.

    An axis is pooled (stride 2) while its feature map stays >= ``min_feature_size`` voxels and its
    current spacing is less than ``anisotropy_ratio`` times the finest one; a kernel is 3 along an axis
    under the same spacing condition, else 1 (no mixing across thick slices). ``slice_wise`` makes the
    network 2D-like: kernel 1 and no pooling along the axis with the largest spacing, at every level.
    Returns ``(kernels, strides)``: lists of 3-lists, the first stride being ``[1, 1, 1]``.
    """
    spacing = np.asarray(spacing_mm, dtype=float)
    size = np.asarray(patch_size, dtype=float)
    across = int(np.argmax(spacing)) if slice_wise else None

    def usable(sp):  # axes fine enough (relative to the finest in-plane axis) to convolve and pool along
        axes = grid_axes(sp, across, anisotropy_ratio)
        return [a in axes for a in range(3)]

    kernels, strides = [[3 if u else 1 for u in usable(spacing)]], [[1, 1, 1]]
    while len(strides) < max_levels:
        pool = [u and n / 2 >= min_feature_size for u, n in zip(usable(spacing), size)]
        if not any(pool):
            break
        stride = [2 if p else 1 for p in pool]
        spacing, size = spacing * stride, np.ceil(size / stride)
        strides.append(stride)
        kernels.append([3 if u else 1 for u in usable(spacing)])
    if len(strides) < MIN_LEVELS:
        raise InputError(
            f"a patch of {list(map(int, patch_size))} voxels is too small for a U-Net (it allows only "
            f"{len(strides) - 1} poolings); use a patch of at least {2 * 2 * min_feature_size} voxels along "
            "the finely sampled axes"
        )
    return kernels, strides


def total_stride(strides) -> np.ndarray:
    """Product of the strides per axis: patch sizes must be multiples of it."""
    return np.prod(np.asarray(strides, dtype=int), axis=0)


class _ThenDropout(nn.Module):
    """A block followed by dropout on its output (after its normalisation and activation)."""

    def __init__(self, block: nn.Module, p: float):
        super().__init__()
        self.block = block
        self.dropout = nn.Dropout(p)

    def forward(self, *args):
        return self.dropout(self.block(*args))


class DropoutUNet(DynUNet):
    """DynUNet with one dropout layer after each block of the ``dropout_levels`` innermost resolution levels.

    A block belongs to the level of its output (0 = full resolution, ``L - 1`` = bottleneck); the
    output block never drops. ``dropout_levels=None`` means every level. The dropout acts on a block's
    output, not (as DynUNet's own ``dropout`` does) inside every convolution before its normalisation:
    that placement made a network trained with p = 0.5 far worse in evaluation mode than with dropout on
    (ACDC, whole-volume Dice), since instance normalisation then sees other statistics without dropout.
    """

    def __init__(self, *args, dropout: float = 0.0, dropout_levels=None, **kwargs):
        self._drop_p = float(dropout)
        self._drop_levels = dropout_levels
        super().__init__(*args, dropout=None, **kwargs)

    def _with_dropout(self, block: nn.Module, level: int) -> nn.Module:
        levels = len(self.strides)
        inner = levels if self._drop_levels is None else self._drop_levels
        return _ThenDropout(block, self._drop_p) if self._drop_p > 0 and level >= levels - inner else block

    def get_input_block(self):
        return self._with_dropout(super().get_input_block(), 0)

    def get_bottleneck(self):
        return self._with_dropout(super().get_bottleneck(), len(self.strides) - 1)

    def get_downsamples(self):
        return nn.ModuleList(self._with_dropout(block, level)
                             for level, block in enumerate(super().get_downsamples(), start=1))

    def get_upsamples(self):  # deepest first, as DynUNet orders them: block n outputs level L - 2 - n
        levels = len(self.strides)
        return nn.ModuleList(self._with_dropout(block, levels - 2 - n)
                             for n, block in enumerate(super().get_upsamples()))


class SliceWiseUNet(nn.Module):
    """A 2D U-Net applied to every slice of a 3D input along ``slice_axis`` (0, 1 or 2 of ``I, J, K``).

    Takes and returns ``(B, C, I, J, K)`` like the 3D networks, so training, sliding windows and MC dropout
    need not know; the slices are folded into the batch and run through 2D convolutions (several times
    faster on a CPU than 3x3x1 3D convolutions doing the same arithmetic).
    """

    def __init__(self, unet2d: nn.Module, slice_axis: int):
        super().__init__()
        self.unet2d = unet2d
        self.slice_axis = int(slice_axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.slice_axis + 2
        slices = x.movedim(dim, 1)  # (B, D, C, H, W)
        b, d = slices.shape[:2]
        out = self.unet2d(slices.reshape((b * d,) + slices.shape[2:]))
        return out.reshape((b, d) + out.shape[1:]).movedim(1, dim)


def build_network(in_channels: int, out_channels: int, kernels, strides, filters, dropout: float = 0.0,
                  dropout_levels=None, norm: str = "instance", slice_axis: Optional[int] = None) -> nn.Module:
    """A U-Net (logits out) from explicit hyper-parameters, as recorded in a model file.

    ``slice_axis``: build a 2D network run slice by slice along that axis (:class:`SliceWiseUNet`); the
    kernels and strides must then be 1 along it (``plan_network(..., slice_wise=True)``). ``None``: 3D.
    """
    kernels = [list(map(int, k)) for k in kernels]
    strides = [list(map(int, s)) for s in strides]
    filters = [int(f) for f in filters]
    if len(filters) < len(strides):
        raise InputError(f"the network needs {len(strides)} filter counts (one per level), got {len(filters)}")
    if not 0.0 <= dropout < 1.0:
        raise InputError(f"dropout must be in [0, 1), got {dropout}")
    dims = 3
    if slice_axis is not None:
        if slice_axis not in (0, 1, 2) or any(k[slice_axis] != 1 for k in kernels) or \
                any(s[slice_axis] != 1 for s in strides):
            raise InputError(f"a slice-wise network needs kernels and strides of 1 along its slice axis "
                             f"({slice_axis}); plan it with slice_wise=True")
        dims = 2
        kernels = [[n for a, n in enumerate(k) if a != slice_axis] for k in kernels]
        strides = [[n for a, n in enumerate(s) if a != slice_axis] for s in strides]
    network = DropoutUNet(
        spatial_dims=dims, in_channels=int(in_channels), out_channels=int(out_channels), kernel_size=kernels,
        strides=strides, upsample_kernel_size=strides[1:], filters=filters[: len(strides)], norm_name=norm,
        dropout=dropout, dropout_levels=dropout_levels, res_block=False,
    )
    return network if slice_axis is None else SliceWiseUNet(network, slice_axis)


def enable_mc_dropout(network: nn.Module) -> None:
    """Evaluation mode with the dropout layers kept active (Monte Carlo dropout sampling)."""
    network.eval()
    for module in network.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.Dropout3d)):
            module.train()
