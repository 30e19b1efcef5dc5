"""Will a training patch fit? A lower bound of the memory one training step needs, checked against the machine
before training starts, so that a ``training.patch_size`` of 1000^3 is refused with the sizes in the message
instead of dying in the allocator after the run folder was made.

The bound counts the U-Net's feature maps: per level, filters x the patch's voxels at that level's stride, times
the batch, times :data:`BYTES_PER_FEATURE_VOXEL`. One float32 forward and backward step of the planned DynUNet grew
the process by 56-116 bytes per such feature voxel on the CPU (patches 48^3-96^3, the small ones with more fixed
overhead: ``benchmarks/results/training_memory.md``); the bound takes 32, so it never refuses a patch that fits,
only ones that surely do not.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..machine import available_memory_bytes, gib, gpu_memory_bytes

#: bytes one training step needs per feature-map voxel, at least (measured 56-116 on the CPU, float32)
BYTES_PER_FEATURE_VOXEL = 32


def feature_voxels(patch_size, filters, strides) -> float:
    """Sum over the U-Net's levels of filters x voxels of the patch at that level (one patch, encoder side)."""
    size = np.asarray(patch_size, dtype=float)
    total = 0.0
    for count, stride in zip(filters, strides):
        size = np.maximum(size / np.asarray(stride, dtype=float), 1.0)
        total += float(count) * float(np.prod(size))
    return total


def training_step_bytes(patch_size, batch_size: int, filters, strides) -> float:
    """A lower bound of the memory (bytes) one training step needs (see the module docstring)."""
    return BYTES_PER_FEATURE_VOXEL * batch_size * feature_voxels(patch_size, filters, strides)


def require_patch_fits(patch_size, batch_size: int, filters, strides, device) -> None:
    """:class:`InputError` when one training step surely cannot fit in the device's memory (the GPU's free memory on
    CUDA, at batch size 1, as the engine shrinks the batch when the GPU runs out; the available main memory on
    the CPU, at the batch asked for)."""
    on_gpu = getattr(device, "type", str(device)) == "cuda"
    batch = 1 if on_gpu else int(batch_size)
    available = gpu_memory_bytes(device) if on_gpu else available_memory_bytes()
    needed = training_step_bytes(patch_size, batch, filters, strides)
    if available is not None and needed > available:
        where = "free GPU memory" if on_gpu else "memory available here"
        raise InputError(f"training patch {list(patch_size)} (batch {batch}) needs at least {gib(needed)}, more than "
                         f"the {gib(available)} of {where}; set a smaller training.patch_size (or leave it unset: "
                         "the patch then follows the cases, capped at training.max_patch_voxels)")
