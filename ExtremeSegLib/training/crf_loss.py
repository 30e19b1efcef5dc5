"""CRF regularised loss (paper 001, Eq. after Sec. 3.3): a relaxed dense-CRF pairwise term as a training loss.

For class probabilities ``p`` of a patch ``Omega`` and a Gaussian affinity over position (mm) and intensity

    W_kl = exp(-|x_k - x_l|^2 / (2 sigma_mm^2) - (I_k - I_l)^2 / (2 sigma_intensity^2))

the loss is ``weight / |Omega| * 1/2 * sum_c sum_kl p_ck W_kl (1 - p_cl)``; for two classes this is exactly the
paper's ``sum_kl f_k W_kl (1 - f_l)`` on the foreground probability ``f``. It is small when voxels that are close
and look alike share a class, so labels propagate from the supervised voxels to similar unlabelled ones.

``W v`` (a bilateral filter without normalisation) is computed two ways:

- :func:`bilateral_filter_exact`: the dense sum, ``O(N^2)`` time, memory bounded by chunking (tests, small patches);
- :func:`bilateral_filter_grid`: a bilateral grid. Values are splatted (multilinear weights) onto a regular grid
  over (i, j, k, intensity) with cells of ``cell`` sigmas, blurred there by separable Gaussians whose width is
  corrected for the blur that splatting and slicing add, and read back (sliced) with the same weights. Splatting
  and slicing are each other's transpose and the blur is symmetric, so the approximate ``W`` stays symmetric, and
  everything is plain differentiable PyTorch. Memory is the grid: ``(extent_mm / (cell * sigma_mm))^3 *
  (intensity range / (cell * sigma_intensity))`` cells per channel, a few MB for the recipes' patches.

The default sigmas and weight are the paper's (15, 0.05, 1e-4); position is in mm (anisotropic spacing honoured),
intensity in the network's normalised input units.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError

SIGMA_MM = 15.0
SIGMA_INTENSITY = 0.05
WEIGHT = 1e-4
#: grid cell sizes in sigmas along position and intensity (smaller is more exact and slower)
CELL = 0.5
INTENSITY_CELL = 0.5


def _positions_mm(shape, spacing_mm, device) -> torch.Tensor:
    axes = [torch.arange(n, dtype=torch.float32, device=device) * float(s) for n, s in zip(shape, spacing_mm)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def bilateral_filter_exact(values: torch.Tensor, image: torch.Tensor, spacing_mm, sigma_mm: float = SIGMA_MM,
                           sigma_intensity: float = SIGMA_INTENSITY, chunk: int = 2048) -> torch.Tensor:
    """``(W v)_k = sum_l W_kl v_l`` by the dense sum (the reference for :func:`bilateral_filter_grid`).

    Parameters
    ----------
    values : (B, C, I, J, K) tensor
    image : (B, I, J, K) tensor, intensities in the units of ``sigma_intensity``
    spacing_mm : 3 floats, voxel size in mm
    sigma_mm, sigma_intensity : Gaussian widths over position (mm) and intensity
    chunk : rows of ``W`` built at a time (memory ``chunk * N`` floats)

    Returns
    -------
    (B, C, I, J, K) tensor
    """
    b, c = values.shape[:2]
    shape = values.shape[2:]
    pos = _positions_mm(shape, spacing_mm, values.device) / sigma_mm
    out = []
    for n in range(b):
        v = values[n].reshape(c, -1)
        inten = image[n].reshape(-1, 1).float() / sigma_intensity
        rows = []
        for start in range(0, pos.shape[0], chunk):
            p, q = pos[start:start + chunk], inten[start:start + chunk]
            logits = -0.5 * (torch.cdist(p, pos) ** 2 + torch.cdist(q, inten) ** 2)
            rows.append(v @ torch.exp(logits).T)
        out.append(torch.cat(rows, dim=1).reshape((c,) + tuple(shape)))
    return torch.stack(out)


def _blur_axis(grid: torch.Tensor, axis: int, sigma_cells: float) -> torch.Tensor:
    """Unnormalised (peak 1) Gaussian blur of ``grid`` along ``axis``, zero outside the grid.

    A banded matrix product along the axis: the axes are short (tens to a few hundred cells), and a matrix
    product is far faster on the CPU than a one-channel convolution.
    """
    n = grid.shape[axis]
    taps = torch.arange(n, dtype=grid.dtype, device=grid.device)
    kernel = torch.exp(-0.5 * ((taps[:, None] - taps[None, :]) / sigma_cells) ** 2)
    kernel = torch.where(kernel < math.exp(-4.5), torch.zeros_like(kernel), kernel)  # 3 sigmas, as a truncated filter
    return torch.matmul(grid.movedim(axis, -1), kernel).movedim(-1, axis)


def _hat_corners(coords: torch.Tensor):
    """Lower cell and the (2, N) multilinear weights of coordinates ``(N,)`` (in cells) for their 2 corners."""
    base = torch.floor(coords)
    frac = coords - base
    return base.long(), torch.stack([1.0 - frac, frac])


def bilateral_filter_grid(values: torch.Tensor, image: torch.Tensor, spacing_mm, sigma_mm: float = SIGMA_MM,
                          sigma_intensity: float = SIGMA_INTENSITY, cell: float = CELL,
                          intensity_cell: float = INTENSITY_CELL) -> torch.Tensor:
    """``W v`` approximated on a bilateral grid (see the module docstring); differentiable in ``values``.

    Parameters
    ----------
    values : (B, C, I, J, K) tensor
    image : (B, I, J, K) tensor, intensities in the units of ``sigma_intensity``
    spacing_mm : 3 floats, voxel size in mm
    sigma_mm, sigma_intensity : Gaussian widths over position (mm) and intensity
    cell, intensity_cell : grid cell size in sigmas along position and intensity, in (0, 1]

    Returns
    -------
    (B, C, I, J, K) tensor
    """
    if not (0 < cell <= 1 and 0 < intensity_cell <= 1):
        raise InputError(f"the CRF grid cells must lie in (0, 1] sigmas, got {cell} and {intensity_cell}")
    b, c = values.shape[:2]
    shape = tuple(values.shape[2:])
    device = values.device
    # the 8 spatial corners of every voxel are the same for the whole batch: (8, N) cell index and weight
    spatial_index, spatial_weight, dims = 0, 1.0, []
    for axis, (n, s) in enumerate(zip(shape, spacing_mm)):
        coords = torch.arange(n, dtype=torch.float32, device=device) * (float(s) / (cell * sigma_mm))
        base, weight = _hat_corners(coords)
        dims.append(int(base.max()) + 2)  # room for the upper corner
        view = [1] * 6
        view[axis], view[3 + axis] = 2, n  # (corner_i, corner_j, corner_k, i, j, k)
        corner_index = (base[None] + torch.arange(2, device=device)[:, None]).reshape(view)
        spatial_index = spatial_index * dims[-1] + corner_index
        spatial_weight = spatial_weight * weight.reshape(view)
    spatial_index = spatial_index.reshape(8, -1)
    spatial_weight = spatial_weight.reshape(8, -1)
    # intensity: 2 corners per voxel and sample, on a common number of cells for the batch
    inten = image.reshape(b, -1).float()
    inten = (inten - inten.min(dim=1, keepdim=True).values) / (intensity_cell * sigma_intensity)
    inten_base, inten_weight = _hat_corners(inten)  # (B, N), (2, B, N)
    bins = int(inten_base.max()) + 2
    cells = int(np.prod(dims)) * bins
    offsets = torch.arange(b, device=device)[:, None] * cells + inten_base  # (B, N)
    index = (spatial_index[:, None, None] * bins + torch.arange(2, device=device)[None, :, None, None]
             + offsets[None, None])  # (8, 2, B, N)
    weight = spatial_weight[:, None, None] * inten_weight[None]  # (8, 2, B, N)
    index = index.permute(2, 0, 1, 3).reshape(-1)  # sample-major (B, 16, N)
    weight = weight.permute(2, 0, 1, 3).reshape(b, 16, -1)
    # splat (all samples in one grid), blur, slice
    v = values.reshape(b, c, 1, -1).transpose(0, 1)  # (C, B, 1, N)
    grid = torch.zeros((c, b * cells), dtype=values.dtype, device=device)
    grid = grid.index_add(1, index, (v * weight[None]).reshape(c, -1))
    grid = grid.reshape([c, b] + dims + [bins])
    # splatting and slicing with hat functions each add a variance of 1/6 cell^2: take it off the blur
    sigma_cells = 1.0 / np.array([cell, cell, cell, intensity_cell])
    sigma_blur = np.sqrt(sigma_cells ** 2 - 1.0 / 3.0)
    for axis in range(4):
        grid = _blur_axis(grid, axis + 2, float(sigma_blur[axis]))
    gain = float(np.prod(sigma_cells / sigma_blur))  # keeps the effective kernel's peak at 1 (W_kk = 1)
    sliced = (torch.index_select(grid.reshape(c, -1), 1, index).reshape(c, b, 16, -1) * weight[None]).sum(dim=2)
    return (gain * sliced).transpose(0, 1).reshape((b, c) + shape)


def crf_energy(probabilities: torch.Tensor, image: torch.Tensor, spacing_mm, sigma_mm: float = SIGMA_MM,
               sigma_intensity: float = SIGMA_INTENSITY, method: str = "grid") -> torch.Tensor:
    """Per-patch ``1/|Omega| * 1/2 * sum_c p_c . W (1 - p_c)`` (``(B,)`` tensor).

    Parameters
    ----------
    probabilities : (B, C, I, J, K) tensor of class probabilities (summing to 1 over C)
    image : (B, I, J, K) tensor, intensities in the units of ``sigma_intensity``
    method : ``grid`` (:func:`bilateral_filter_grid`) or ``exact`` (:func:`bilateral_filter_exact`)
    """
    filters = {"grid": bilateral_filter_grid, "exact": bilateral_filter_exact}
    if method not in filters:
        raise InputError(f"unknown CRF filter {method!r}; choose one of {sorted(filters)}")
    voxels = float(np.prod(probabilities.shape[2:]))
    # with two classes both halves are equal (W symmetric): filter the foreground only
    p = probabilities[:, 1:] if probabilities.shape[1] == 2 else probabilities
    half = 1.0 if probabilities.shape[1] == 2 else 0.5
    filtered = filters[method](1.0 - p, image, spacing_mm, sigma_mm, sigma_intensity)
    return half * torch.sum(p * filtered, dim=tuple(range(1, p.dim()))) / voxels


class CRFLoss(nn.Module):
    """``weight *`` mean over the batch of :func:`crf_energy` of the softmax of the logits.

    Args:
        spacing_mm: the patch's voxel size (mm), 3 floats.
        sigma_mm: spatial width (mm); paper 15.
        sigma_intensity: intensity width in normalised input units; paper 0.05.
        weight: the loss factor lambda; paper 1e-4.
        method: ``grid`` (fast, approximate) or ``exact`` (dense, small patches only).

    Shapes: ``logits`` ``(B, C, I, J, K)``, ``image`` ``(B, I, J, K)`` -> scalar.
    """

    def __init__(self, spacing_mm, sigma_mm: float = SIGMA_MM, sigma_intensity: float = SIGMA_INTENSITY,
                 weight: float = WEIGHT, method: str = "grid"):
        super().__init__()
        if sigma_mm <= 0 or sigma_intensity <= 0 or weight < 0:
            raise InputError("the CRF loss needs sigma_mm > 0, sigma_intensity > 0 and weight >= 0")
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.sigma_mm, self.sigma_intensity, self.weight, self.method = sigma_mm, sigma_intensity, weight, method

    def forward(self, logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        # float32 throughout, also under CUDA autocast: the grid's sums of many small terms need it
        with torch.autocast(device_type=logits.device.type, enabled=False):
            probabilities = torch.softmax(logits.float(), dim=1)
            energy = crf_energy(probabilities, image.float(), self.spacing_mm, self.sigma_mm, self.sigma_intensity,
                                self.method)
        return self.weight * energy.mean()
