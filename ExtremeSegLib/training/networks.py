"""3D U-Nets (MONAI DynUNet) planned from voxel spacing and patch size, the nnU-Net way.

Anisotropic data (ACDC: 1.5 x 1.5 x 10 mm) gets in-plane-only kernels (3x3x1) and in-plane-only pooling
until the in-plane spacing has caught up with the slice spacing; isotropic data gets 3x3x3 everywhere.
The input is the image plus optional cue channels (point heatmaps, confidence map); dropout can be
limited to the innermost levels (MC dropout as in the scribble method). No pretrained weights: the paper's
ImageNet-initialised 2D encoder is not used, because nothing may be downloaded.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch.nn as nn
from monai.networks.blocks.dynunet_block import UnetUpBlock
from monai.networks.nets import DynUNet

from ..errors import InputError

#: DynUNet needs at least this many resolution levels (input block, one down block, bottleneck).
MIN_LEVELS = 3


def plan_network(spacing_mm, patch_size, min_feature_size: int = 4, max_levels: int = 5,
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
    in_plane = [a for a in range(3) if a != across]

    def usable(sp):  # axes fine enough (relative to the finest in-plane axis) to convolve and pool along
        return [a != across and s < anisotropy_ratio * sp[in_plane].min() for a, s in enumerate(sp)]

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


class DropoutUNet(DynUNet):
    """DynUNet whose dropout sits only in the ``dropout_levels`` innermost resolution levels.

    A block belongs to the level of its output (0 = full resolution, ``L - 1`` = bottleneck); the
    output block never drops. ``dropout_levels=None`` means every level.
    """

    def __init__(self, *args, dropout: float = 0.0, dropout_levels=None, **kwargs):
        self._drop_p = float(dropout)
        self._drop_levels = dropout_levels
        super().__init__(*args, dropout=None, **kwargs)

    def _drops(self, level: int) -> bool:
        levels = len(self.strides)
        inner = levels if self._drop_levels is None else self._drop_levels
        return self._drop_p > 0 and level >= levels - inner

    @contextmanager
    def _dropout_for(self, level: int):
        self.dropout = self._drop_p if self._drops(level) else None
        try:
            yield
        finally:
            self.dropout = None

    def get_input_block(self):
        with self._dropout_for(0):
            return super().get_input_block()

    def get_bottleneck(self):
        with self._dropout_for(len(self.strides) - 1):
            return super().get_bottleneck()

    def get_downsamples(self):
        layers = []
        for level in range(1, len(self.strides) - 1):
            with self._dropout_for(level):
                layers += self.get_module_list([self.filters[level - 1]], [self.filters[level]],
                                               [self.kernel_size[level]], [self.strides[level]], self.conv_block)
        return nn.ModuleList(layers)

    def get_upsamples(self):
        levels = len(self.strides)
        layers = []
        for n in range(levels - 1):  # deepest first, as DynUNet orders them
            source, target = levels - 1 - n, levels - 2 - n
            with self._dropout_for(target):
                layers += self.get_module_list([self.filters[source]], [self.filters[target]],
                                               [self.kernel_size[source]], [self.strides[source]], UnetUpBlock,
                                               [self.upsample_kernel_size[source - 1]], trans_bias=self.trans_bias)
        return nn.ModuleList(layers)


def build_network(in_channels: int, out_channels: int, kernels, strides, filters, dropout: float = 0.0,
                  dropout_levels=None, norm: str = "instance") -> nn.Module:
    """A 3D U-Net (logits out) from explicit hyper-parameters, as recorded in a model file."""
    kernels = [list(map(int, k)) for k in kernels]
    strides = [list(map(int, s)) for s in strides]
    filters = [int(f) for f in filters]
    if len(filters) < len(strides):
        raise InputError(f"the network needs {len(strides)} filter counts (one per level), got {len(filters)}")
    if not 0.0 <= dropout < 1.0:
        raise InputError(f"dropout must be in [0, 1), got {dropout}")
    return DropoutUNet(
        spatial_dims=3, in_channels=int(in_channels), out_channels=int(out_channels), kernel_size=kernels,
        strides=strides, upsample_kernel_size=strides[1:], filters=filters[: len(strides)], norm_name=norm,
        dropout=dropout, dropout_levels=dropout_levels, res_block=False,
    )


def enable_mc_dropout(network: nn.Module) -> None:
    """Evaluation mode with the dropout layers kept active (Monte Carlo dropout sampling)."""
    network.eval()
    for module in network.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.Dropout3d)):
            module.train()
