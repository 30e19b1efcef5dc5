"""Fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun 2011), mean-field inference in 3D.

Energy of a labelling ``x`` (paper 004, Eq. 4-6)::

    E(x) = sum_i U_i(x_i) + sum_{i<j} [x_i != x_j] (w_a k_a(i, j) + w_s k_s(i, j))
    k_a(i, j) = exp(-|p_i - p_j|^2 / (2 sigma_alpha^2) - |I_i - I_j|^2 / (2 sigma_beta^2))   appearance
    k_s(i, j) = exp(-|p_i - p_j|^2 / (2 sigma_gamma^2))                                       smoothness

``U_i = -log P_i`` (the network's probabilities), Potts compatibility, positions ``p`` in millimetres (so
anisotropic voxels are handled), intensities ``I`` in whatever units ``sigma_beta`` is given in. As in the
reference implementation, each kernel is normalised symmetrically, ``k(i, j) / sqrt(n_i n_j)`` with
``n_i = sum_{j != i} k(i, j)``: a message is then about a weighted mean of neighbouring marginals, so the
weights ``w`` mean the same in 2D and 3D and on any grid. Clamped voxels (the seed areas) keep their class:
their unary is 0 for it and infinite for the others.

The sums over all voxel pairs are Gaussian filters. The smoothness kernel is separable and filtered exactly.
The appearance kernel lives in (position, intensity) space: it is computed on a bilateral grid (Paris &
Durand; Chen et al. 2007), i.e. values are splatted with linear weights into a grid of cells ``sigma / 2`` wide
(one voxel wide where the voxels are coarser than that: exact along such axes, no interpolation), blurred
separably with a Gaussian whose width makes up for the splat and slice interpolation, and sliced back at each
voxel. Everything is NumPy/SciPy; no compiled or GPL dependency.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError

#: kernels are cut at this many standard deviations
TRUNCATE = 3.0
#: grid cells per standard deviation on the bilateral grid's interpolated axes
CELLS_PER_SIGMA = 2.0
#: probabilities are clipped to at least this before taking -log (so no unary is infinite)
MIN_PROBABILITY = 1e-6
#: the paper's 2D pixel size (ACDC resampled to 1.36875 mm by its reference [1]); its sigmas are in pixels
PAPER_PIXEL_MM = 1.36875
#: refuse a bilateral grid that would need more memory than this (bytes); see :func:`bilateral_grid_bytes`
DEFAULT_MEMORY_LIMIT = 4 * 1024 ** 3


def _grid_cells(shape, spacing, sigma_mm: float, intensity_span: float, sigma_intensity: float,
                cells_per_sigma: float):
    """Per axis of the bilateral grid (3 spatial axes, then intensity): cell width (voxels or intensity units),
    whether it is exact (one voxel per cell, no interpolation) and the number of cells."""
    widths = [max(1.0, sigma_mm / float(h) / cells_per_sigma) for h in spacing]  # never finer than the voxels
    widths.append(sigma_intensity / cells_per_sigma)
    exact = [w == 1.0 for w in widths[:3]] + [False]
    spans = [n - 1 for n in shape] + [intensity_span]
    return widths, exact, [int(np.floor(span / w)) + 2 for span, w in zip(spans, widths)]


def bilateral_grid_bytes(shape, spacing, sigma_mm: float, intensity_span: float, sigma_intensity: float,
                         cells_per_sigma: float = CELLS_PER_SIGMA) -> int:
    """Approximate peak memory of a :class:`BilateralGrid` over an image.

    Counts the dense grid (float64 splat plus float32 blur copies, 24 bytes a cell) and the splat's corner
    indices and weights (16 bytes per voxel and corner while they are built).

    Parameters
    ----------
    shape : sequence of 3 ints
        Image size in voxels.
    spacing : sequence of 3 floats
        Voxel size in mm per axis.
    sigma_mm : float
        Spatial standard deviation of the kernel (mm).
    intensity_span : float
        Range of the image's intensities (max - min).
    sigma_intensity : float
        Intensity standard deviation of the kernel (intensity units).
    cells_per_sigma : float, optional
        Grid cells per standard deviation on interpolated axes.

    Returns
    -------
    int
        Bytes.
    """
    _, exact, sizes = _grid_cells(shape, spacing, sigma_mm, intensity_span, sigma_intensity, cells_per_sigma)
    corners = 2 ** sum(not e for e in exact)
    return int(24 * np.prod(sizes, dtype=float) + 16 * corners * np.prod(shape, dtype=float))


def require_crf_memory(shape, spacing, sigma_mm: float, intensity_span: float, sigma_intensity: float,
                       memory_limit_bytes: float = DEFAULT_MEMORY_LIMIT, cells_per_sigma: float = CELLS_PER_SIGMA):
    """Refuse a CRF whose bilateral grid would need too much memory.

    Parameters
    ----------
    shape, spacing, sigma_mm, intensity_span, sigma_intensity, cells_per_sigma
        As for :func:`bilateral_grid_bytes`.
    memory_limit_bytes : float, optional
        The most the grid may need (bytes).

    Raises
    ------
    InputError
        When :func:`bilateral_grid_bytes` exceeds ``memory_limit_bytes``.
    """
    needed = bilateral_grid_bytes(shape, spacing, sigma_mm, intensity_span, sigma_intensity, cells_per_sigma)
    if needed > memory_limit_bytes:
        raise InputError(
            f"the dense CRF over a {' x '.join(str(n) for n in shape)}-voxel volume would need about "
            f"{needed / 1024 ** 3:.1f} GiB, more than the {memory_limit_bytes / 1024 ** 3:.1f} GiB allowed; set "
            "pseudolabel.crf to false, or train on a coarser grid (inputs.spacing_mm)")


def _kernel_1d(sigma_cells: float, exact: bool) -> np.ndarray:
    """Taps of a 1D blur, ``sigma_cells`` the kernel's standard deviation in cells.

    ``exact`` (cells are voxels, no interpolation): the sampled kernel ``exp(-n^2 / 2 s^2)``, peak 1.
    Otherwise linear splat and slice each add a variance of 1/6 cell^2: the blur makes up the rest, and the
    taps are scaled so that the composite kernel integrates like ``exp(-d^2 / 2 s^2)`` (peak about 1).
    """
    if exact:
        radius = int(np.ceil(TRUNCATE * sigma_cells))
        n = np.arange(-radius, radius + 1, dtype=np.float64)
        return np.exp(-0.5 * (n / max(sigma_cells, 1e-12)) ** 2)
    blur = np.sqrt(max(sigma_cells ** 2 - 1.0 / 3.0, 1e-12))
    radius = int(np.ceil(TRUNCATE * blur))
    n = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (n / blur) ** 2)
    return taps / taps.sum() * np.sqrt(2.0 * np.pi) * sigma_cells


def _blur(array: np.ndarray, kernels, first_axis: int) -> np.ndarray:
    """Separable correlation of ``array``'s axes ``first_axis, first_axis + 1, ...`` with ``kernels``
    (zeros outside)."""
    out = array
    for n, taps in enumerate(kernels):
        if len(taps) > 1:
            out = ndi.correlate1d(out, taps.astype(out.dtype), axis=first_axis + n, mode="constant", cval=0.0)
        elif taps[0] != 1.0:
            out = out * taps[0]
    return out


def spatial_filter(values: np.ndarray, spacing, sigma_mm: float) -> np.ndarray:
    """The Gaussian sum over the grid, exactly (separable).

    ``sum_j exp(-|p_i - p_j|^2 / (2 sigma_mm^2)) values[..., j]`` with positions ``p`` in mm, self included;
    positions outside the grid count as 0.

    Parameters
    ----------
    values : ndarray, shape (C, I, J, K) or (I, J, K)
    spacing : sequence of 3 floats
        Voxel size in mm per spatial axis.
    sigma_mm : float
        Standard deviation (mm).

    Returns
    -------
    ndarray, same shape as ``values``
    """
    values = np.asarray(values, dtype=np.float32)
    spatial = values if values.ndim == 3 else None
    if spatial is not None:
        values = values[None]
    kernels = [_kernel_1d(sigma_mm / float(h), exact=True) for h in spacing]
    out = _blur(values, kernels, first_axis=1)
    return out[0] if spatial is not None else out


class BilateralGrid:
    """Approximate ``sum_j exp(-|p_i - p_j|^2 / (2 sigma_mm^2) - |I_i - I_j|^2 / (2 sigma_intensity^2)) v_j``.

    Built once per image (the splat positions and weights), then :meth:`filter` applies to any values.
    """

    def __init__(self, intensities: np.ndarray, spacing, sigma_mm: float, sigma_intensity: float,
                 cells_per_sigma: float = CELLS_PER_SIGMA, memory_limit_bytes: float = DEFAULT_MEMORY_LIMIT):
        intensities = np.asarray(intensities, dtype=np.float64)
        if intensities.ndim != 3:
            raise InputError(f"the CRF image must be 3D, got shape {intensities.shape}")
        if sigma_mm <= 0 or sigma_intensity <= 0:
            raise InputError("the CRF's appearance kernel needs sigma_alpha_mm > 0 and sigma_beta > 0")
        self.shape = intensities.shape
        low, span = intensities.min(), float(np.ptp(intensities))
        require_crf_memory(self.shape, spacing, sigma_mm, span, sigma_intensity, memory_limit_bytes, cells_per_sigma)
        widths, exact, sizes = _grid_cells(self.shape, spacing, sigma_mm, span, sigma_intensity, cells_per_sigma)
        grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in self.shape], indexing="ij", sparse=True)
        coords = [(np.broadcast_to(grids[axis] / widths[axis], self.shape).ravel(), exact[axis]) for axis in range(3)]
        coords.append(((intensities.ravel() - low) / widths[3], False))
        self.kernels = [_kernel_1d(sigma_mm / float(h) / w, e) for h, w, e in zip(spacing, widths, exact)]
        self.kernels.append(_kernel_1d(cells_per_sigma, exact=False))
        self.grid_shape = tuple(sizes)
        # linear splat: per interpolated axis, the two neighbouring cells and their weights
        strides = np.cumprod((1,) + tuple(sizes[::-1]))[::-1][1:]
        corners = [(np.zeros(intensities.size, dtype=np.int64), np.ones(intensities.size))]
        for (position, on_voxels), stride in zip(coords, strides):
            base = np.floor(position).astype(np.int64)
            if on_voxels:
                corners = [(idx + base * stride, w) for idx, w in corners]
                continue
            frac = position - base
            corners = [(idx + (base + step) * stride, w * (frac if step else 1.0 - frac))
                       for idx, w in corners for step in (0, 1)]
        self.corners = [(idx, w.astype(np.float32)) for idx, w in corners]

    @property
    def cells(self) -> int:
        return int(np.prod(self.grid_shape))

    def filter(self, values: np.ndarray) -> np.ndarray:
        """Filter ``values`` ``(C, I, J, K)``, self included; returns float32 of the same shape."""
        values = np.asarray(values, dtype=np.float32)
        channels = values.reshape(values.shape[0], -1)
        out = np.empty_like(channels)
        for c, v in enumerate(channels):  # one channel at a time keeps the grid's memory at one copy
            grid = np.zeros(self.cells, dtype=np.float64)
            for idx, w in self.corners:
                grid += np.bincount(idx, weights=w * v, minlength=self.cells)
            blurred = _blur(grid.astype(np.float32).reshape(self.grid_shape), self.kernels, first_axis=0).ravel()
            out[c] = sum(w * blurred[idx] for idx, w in self.corners)
        return out.reshape(values.shape)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def dense_crf(probabilities: np.ndarray, image: np.ndarray, spacing, clamp: np.ndarray | None = None, *,
              appearance_weight: float = 5.0, smoothness_weight: float = 10.0,
              sigma_alpha_mm: float = 2 * PAPER_PIXEL_MM, sigma_beta: float = 0.1,
              sigma_gamma_mm: float = 5 * PAPER_PIXEL_MM, iterations: int = 5,
              memory_limit_bytes: float = DEFAULT_MEMORY_LIMIT) -> np.ndarray:
    """Mean-field marginals of the fully connected CRF (see the module docstring).

    Defaults are the paper's cardiac values ``w1 = 5, w2 = 10, sigma_alpha = 2, sigma_beta = 0.1, sigma_gamma = 5``
    with its pixel sigmas converted to mm (x 1.36875 mm). Only the box around the free voxels (plus the kernels'
    reach) is computed: clamped voxels farther away cannot change anything.

    Parameters
    ----------
    probabilities : ndarray, shape (C, I, J, K)
        Unary class probabilities (e.g. the network's softmax), summing to 1 over C.
    image : ndarray, shape (I, J, K)
        Intensities, in the units of ``sigma_beta`` (the paper: the image normalised to zero mean and unit
        variance, as the network sees it).
    spacing : sequence of 3 floats
        Voxel size in mm.
    clamp : ndarray of int, shape (I, J, K), optional
        -1 = free, c >= 0 = voxel fixed to class c (seed areas).
    appearance_weight, smoothness_weight : float, optional
        ``w_a`` and ``w_s``.
    sigma_alpha_mm, sigma_gamma_mm : float, optional
        Spatial standard deviations (mm) of the appearance and smoothness kernels.
    sigma_beta : float, optional
        Intensity standard deviation of the appearance kernel (intensity units).
    iterations : int, optional
        Mean-field iterations.
    memory_limit_bytes : float, optional
        :class:`InputError` when the appearance kernel's grid would need more (:func:`bilateral_grid_bytes`).

    Returns
    -------
    ndarray of float32, shape (C, I, J, K)
        The marginals ``Q``, summing to 1 over C.
    """
    p = np.asarray(probabilities, dtype=np.float32)
    image = np.asarray(image)
    spacing = np.asarray(spacing, dtype=float)
    if p.ndim != 4 or p.shape[0] < 2 or p.shape[1:] != image.shape:
        raise InputError(f"CRF: probabilities must be (C>=2,) + the image shape {image.shape}, got {p.shape}")
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise InputError(f"CRF: spacing must be 3 positive numbers (mm), got {spacing.tolist()}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(image))):
        raise InputError("CRF: the probabilities or the image hold NaN or infinite values")
    if min(appearance_weight, smoothness_weight) < 0 or sigma_gamma_mm <= 0 or iterations < 0:
        raise InputError("CRF: weights must be >= 0, sigma_gamma_mm > 0 and iterations >= 0")
    num_classes = p.shape[0]
    if clamp is not None:
        clamp = np.asarray(clamp)
        if clamp.shape != image.shape or clamp.min() < -1 or clamp.max() >= num_classes:
            raise InputError(f"CRF: clamp must have the image's shape {image.shape} and values -1..{num_classes - 1}")
    out = p / np.maximum(p.sum(axis=0, keepdims=True), 1e-12)
    if clamp is not None:
        free = clamp < 0
        for c in range(num_classes):
            out[c][clamp == c] = 1.0
            out[c][(clamp >= 0) & (clamp != c)] = 0.0
        if not free.any():
            return out
        reach = np.ceil(TRUNCATE * max(sigma_alpha_mm, sigma_gamma_mm) / spacing).astype(int)
        where = np.argwhere(free)
        lo = np.maximum(where.min(axis=0) - reach, 0)
        hi = np.minimum(where.max(axis=0) + 1 + reach, image.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        out[(slice(None),) + box] = _mean_field(p[(slice(None),) + box], image[box], spacing, clamp[box],
                                                appearance_weight, smoothness_weight, sigma_alpha_mm, sigma_beta,
                                                sigma_gamma_mm, iterations, memory_limit_bytes)
        return out
    return _mean_field(p, image, spacing, None, appearance_weight, smoothness_weight, sigma_alpha_mm, sigma_beta,
                       sigma_gamma_mm, iterations, memory_limit_bytes)


def _mean_field(p, image, spacing, clamp, w_a, w_s, sigma_alpha_mm, sigma_beta, sigma_gamma_mm, iterations,
                memory_limit_bytes):
    unary = -np.log(np.clip(p, MIN_PROBABILITY, 1.0))
    filters = []
    if w_a > 0:
        grid = BilateralGrid(image, spacing, sigma_alpha_mm, sigma_beta, memory_limit_bytes=memory_limit_bytes)
        filters.append((w_a, grid.filter))
    if w_s > 0:
        filters.append((w_s, lambda v: spatial_filter(v, spacing, sigma_gamma_mm)))
    # symmetric normalisation: 1 / sqrt(n_i), n_i = sum over the other voxels of the kernel
    ones = np.ones((1,) + image.shape, dtype=np.float32)
    scales = [1.0 / np.sqrt(np.maximum(f(ones)[0] - 1.0, 1e-6)) for _, f in filters]

    fixed = None
    if clamp is not None:
        fixed = clamp >= 0
        one_hot = np.stack([clamp == c for c in range(p.shape[0])]).astype(np.float32)
    q = _softmax(-unary)
    for _ in range(iterations):
        if fixed is not None:
            q[:, fixed] = one_hot[:, fixed]
        logits = -unary
        for (weight, f), scale in zip(filters, scales):
            scaled = q * scale
            logits = logits + weight * scale * (f(scaled) - scaled)  # j != i: the self term is taken out
        q = _softmax(logits)
    if fixed is not None:
        q[:, fixed] = one_hot[:, fixed]
    return q.astype(np.float32)
