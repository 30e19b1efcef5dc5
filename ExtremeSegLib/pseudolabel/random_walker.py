"""Random walker segmentation (Grady 2006) with spacing-aware edge weights and several solvers.

The graph is the 6-neighbour voxel grid. The weight of the edge between neighbours ``u`` and ``v``
along axis ``a`` is::

    w = (h_min / h_a)**p * exp(-beta / (10 * std(image)) * (image[u] - image[v])**2) + eps

The exponential is scikit-image's convention (``beta=130`` is its default and the value used by
paper 000) except that the intensity step is not divided by the spacing: scikit-image's form makes
``beta`` depend on the unit (1.5 mm voxels weaken every edge 2.3-fold) and, on thick slices, hides the
intensity jump between slices (a 10 mm step counts 100-fold less), so that regions leak across slices
whatever their intensities. Both agree for 1 mm voxels. Intensities are used as given, so pass them
normalised (e.g. to 0..1). The factor
``(h_min / h_a)**p`` (``p = conductance_power``) is the conductance of a finite-difference Laplacian on an
anisotropic grid when ``p = 2``: coupling along a coarse axis (ACDC: 10 mm between slices) is weaker per
voxel step, so diffusion reaches as far in millimetres along every axis. ``p = 0`` couples every voxel step
alike, as scikit-image does. The factor is 1 for isotropic spacing, where the weights (and so the
probabilities) equal scikit-image's.

Optional class priors (Grady 2005, "multilabel random walker with priors") add ``prior_weight *
(x - prior)**2`` per voxel to the Dirichlet energy: a diagonal term that also keeps the system
well-posed in regions that no seed can reach.

Solvers (measured in ``benchmarks/results/pseudolabel_extreme.md``):

- ``"cg_torch"``: conjugate gradients with a Jacobi preconditioner, applying the 6-neighbour stencil
  directly on the grid with PyTorch (no sparse matrix is built); runs on ``device`` (CPU or CUDA) in
  float32, all classes at once.
- ``"cg_j"``: the same system as a SciPy sparse matrix over the unlabelled voxels, Jacobi-preconditioned CG
  (float64, CPU).
- ``"cg_mg"``: SciPy CG preconditioned by a PyAMG Ruge-Stuben multigrid (only if ``pyamg`` is installed).
- ``"direct"``: sparse LU (SciPy), exact, for small problems, references and (with ``slice_axis``, one LU per
  slice, the slices on :func:`solver_threads` threads) stacks of slices.
- ``"auto"``: ``cg_torch``, coarse-to-fine for large problems (see ``multiscale``).

``multiscale`` (``cg_torch`` only) solves a 2x downsampled problem first (recursively, down to about 50 000
voxels; thick-slice axes are not downsampled), upsamples it, keeps its values where they are sure (some class
above 1 - :data:`BAND_TOLERANCE`, farther than :data:`BAND_GROWTH` voxels from an unsure voxel) and solves the
remaining band again at full resolution with those values as boundary conditions. This is an approximation
(sure voxels keep the coarse probabilities): labels agree with the single-level solve on all but a few voxels,
probabilities to a few hundredths (measured in ``benchmarks/results/pseudolabel_extreme.md``). With the SciPy
solvers (``"direct"``, ``"cg_j"``, ``"cg_mg"``) ``multiscale`` solves the same band, at every level, and then
checks it: where the band's values at its edge differ from the coarse values behind it by more than
``band_tolerance``, the coarse grid was confidently wrong in that whole sure region (a thin wall blurred, a stroke
thickened), which joins the band and is solved again (:data:`BAND_CHECKS` times at most); their coarse grids
take their edge weights from the fine ones (series along an edge, parallel across: :func:`_coarse_weights`), so
that the coarse grid is seldom sure where the fine one is not. With
``band_tolerance=1e-3`` seed areas at tau 0.99 agree with the single-level walk on all but about 1e-5 of the voxels
(``benchmarks/results/scribbles_seeds_speed.md``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse import linalg as splinalg

from ..errors import InputError

SOLVERS = ("auto", "cg_torch", "cg_j", "cg_mg", "direct")

#: below this many voxels a coarse-to-fine start is not worth its overhead
MULTISCALE_MIN_VOXELS = 400_000
#: stop coarsening when a level has fewer voxels than this
_COARSEST_VOXELS = 50_000
#: coarse-to-fine: unlabelled voxels whose upsampled coarse probability is within this of 0/1 are kept ...
BAND_TOLERANCE = 0.3
#: ... unless they lie within this many voxels of an unsure one (those are solved again at full resolution)
BAND_GROWTH = 2
#: coarse-to-fine with the SciPy solvers: how many times a band may grow into sure regions it contradicts
BAND_CHECKS = 2
#: coarse-to-fine per slice: a band check that adds at most this many voxels to a slice reuses its factor
BORDER_MAX = 32
#: added to every edge weight so that no voxel is cut off from all seeds (scikit-image's value)
EPS_WEIGHT = 1e-10

#: bytes per voxel the solvers need, per class (the image, weights, CG vectors); used to refuse huge regions
BYTES_PER_VOXEL = {"cg_torch": 4 * 12, "cg_j": 8 * 20, "cg_mg": 8 * 60, "direct": 8 * 400}


def edge_weights(image: np.ndarray, spacing=(1.0, 1.0, 1.0), beta: float = 130.0, dtype=np.float64,
                 std=None, conductance_power: float = 2.0, slice_axis: int | None = None) -> list:
    """Random-walker edge weights along each axis (see the module docstring).

    Parameters
    ----------
    image : ndarray, shape (I, J, K)
        Intensities whose differences weaken the edges.
    spacing : sequence of 3 floats, optional
        Voxel size in mm along I, J, K (sets the coupling across thick slices).
    beta : float, optional
        Edge sensitivity (scikit-image convention).
    dtype : numpy dtype, optional
        Type of the weights.
    std : float or ndarray, optional
        The intensity standard deviation that scales ``beta`` (default: this image's); an array broadcasting
        against the image gives one per slice.
    conductance_power : float, optional
        Anisotropic coupling ``(h_min / h_a) ** p``; 2 = diffusion in mm, 0 = per voxel.
    slice_axis : int, optional
        Edges along this axis are 0 (slices apart).

    Returns
    -------
    list of 3 ndarrays
        ``[w0 (I-1, J, K), w1 (I, J-1, K), w2 (I, J, K-1)]``.
    """
    data = np.asarray(image, dtype=np.float64)
    spacing = np.asarray(spacing, dtype=float)
    std = np.asarray(data.std() if std is None else std, dtype=np.float64)
    scale = np.where(std > 0, beta / (10.0 * np.where(std > 0, std, 1.0)), 0.0)
    weights = []
    for axis in range(3):
        diff = np.diff(data, axis=axis)
        if axis == slice_axis:
            weights.append(np.zeros(diff.shape, dtype=dtype))
            continue
        conductance = (spacing.min() / spacing[axis]) ** conductance_power
        w = conductance * np.exp(-scale * diff * diff) + EPS_WEIGHT
        weights.append(w.astype(dtype))
    return weights


def memory_estimate(shape, num_classes: int = 2, solver: str = "cg_torch") -> int:
    """Approximate peak memory of the random walker on a region.

    Parameters
    ----------
    shape : sequence of 3 ints
        Region size in voxels.
    num_classes : int, optional
        Number of classes walked.
    solver : str, optional
        One of :data:`SOLVERS`.

    Returns
    -------
    int
        Bytes.
    """
    solver = "cg_torch" if solver == "auto" else solver
    n = int(np.prod(shape))
    per_class = BYTES_PER_VOXEL.get(solver, BYTES_PER_VOXEL["cg_j"])
    return n * (per_class * max(num_classes - 1, 1) + 40)


@dataclass(frozen=True)
class _Settings:
    """What every level of one solve shares."""

    beta: float
    std: np.ndarray  # scalar, or one value per slice along slice_axis (broadcasting against the solved box)
    conductance_power: float
    num_classes: int
    solver: str
    tol: float
    max_iter: int | None
    device: str
    prior_weight: float
    slice_axis: int | None
    band_tolerance: float


def random_walker(image: np.ndarray, seeds: np.ndarray, spacing=(1.0, 1.0, 1.0), beta: float = 130.0,
                  solver: str = "auto", tol: float = 1e-3, max_iter: int | None = None, device="cpu",
                  multiscale: bool | None = None, prior: np.ndarray | None = None,
                  prior_weight: float = 0.0, initial: np.ndarray | None = None,
                  conductance_power: float = 2.0, slice_axis: int | None = None,
                  band_tolerance: float = BAND_TOLERANCE) -> np.ndarray:
    """Random-walker class probabilities.

    Parameters
    ----------
    image : ndarray, shape (I, J, K)
        Intensities (finite; normalise them, e.g. to 0..1, for ``beta`` to mean what it says).
    seeds : ndarray of int, shape (I, J, K)
        -1 = unlabelled, 0..C-1 = seeds of class c (at least 2 classes present).
    spacing : sequence of 3 floats, optional
        Voxel size in mm along I, J, K.
    beta : float, optional
        Edge sensitivity (scikit-image convention).
    solver : str, optional
        One of :data:`SOLVERS`.
    tol : float, optional
        Relative residual of the conjugate gradients.
    max_iter : int, optional
        CG iteration cap per level (default ``10 * max(shape) + 100``).
    device : str or torch.device, optional
        Torch device for ``cg_torch`` ("cpu", "cuda", ...).
    multiscale : bool, optional
        Coarse-to-fine start (None: on for ``auto`` above :data:`MULTISCALE_MIN_VOXELS` unlabelled voxels).
    prior : ndarray, shape (C, I, J, K), optional
        Class probabilities pulling each voxel with strength ``prior_weight``.
    prior_weight : float, optional
        In units of an edge weight, i.e. about 1 per neighbour in a flat region.
    initial : ndarray, shape (C, I, J, K), optional
        Starting guess for the iterative solvers.
    conductance_power : float, optional
        Anisotropic coupling ``(h_min / h_a) ** p`` (module docstring); 2 = diffusion in mm, 0 = per voxel.
    slice_axis : int, optional
        Walk each slice across this axis on its own (module docstring); every slice then needs a seed.
    band_tolerance : float, optional
        Coarse-to-fine keeps an unlabelled voxel's coarse values only where some class is above
        ``1 - band_tolerance`` (and farther than :data:`BAND_GROWTH` voxels from an unsure one); smaller is
        closer to the single-level solve, and slower.

    Returns
    -------
    ndarray of float32, shape (C, I, J, K)
        Probabilities summing to 1 over C; seed voxels are exactly 1 for their class.
    """
    image = np.asarray(image)
    seeds = np.asarray(seeds)
    if image.ndim != 3 or seeds.shape != image.shape:
        raise InputError(f"random walker: image {image.shape} and seeds {seeds.shape} must be the same 3D shape")
    if not np.all(np.isfinite(image)):
        raise InputError("random walker: the image has NaN or infinite voxels; fix or mask them first")
    if not np.issubdtype(seeds.dtype, np.integer):
        raise InputError("random walker: seeds must be an integer array (-1 unlabelled, 0..C-1 classes)")
    if not 0.0 < band_tolerance < 1.0:
        raise InputError(f"random walker: band_tolerance must lie in (0, 1), got {band_tolerance}")
    if solver not in SOLVERS:
        raise InputError(f"random walker: unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise InputError(f"random walker: spacing must be 3 positive numbers (mm), got {spacing.tolist()}")
    if slice_axis is not None and slice_axis not in (0, 1, 2):
        raise InputError(f"random walker: slice_axis must be 0, 1, 2 or None, got {slice_axis!r}")
    num_classes = int(seeds.max()) + 1
    if num_classes < 2 or seeds.min() < -1:
        raise InputError("random walker: seeds need at least two classes (values 0 and 1; -1 = unlabelled)")
    present = np.bincount(seeds[seeds >= 0].ravel(), minlength=num_classes)
    if prior is None and np.any(present == 0):
        missing = np.flatnonzero(present == 0).tolist()
        raise InputError(f"random walker: class(es) {missing} have no seed voxel; give every class a seed")
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (num_classes,) + image.shape:
            raise InputError(f"random walker: prior must have shape {(num_classes,) + image.shape}, got {prior.shape}")
    if slice_axis is not None:
        other = tuple(a for a in range(3) if a != slice_axis)
        unseeded = np.flatnonzero(~np.any(seeds >= 0, axis=other))
        if unseeded.size:
            raise InputError(f"random walker: slice {int(unseeded[0])} along axis {slice_axis} has no seed; "
                             "walk only slices with seeds")
    if solver == "cg_mg":
        try:
            import pyamg  # noqa: F401
        except ImportError:
            raise InputError("random walker: solver 'cg_mg' needs the optional package pyamg; "
                             "install it or use solver='auto'") from None

    out = np.zeros((num_classes,) + image.shape, dtype=np.float32)
    for c in range(num_classes):
        out[c][seeds == c] = 1.0
    unknown = seeds < 0
    if not unknown.any():
        return out
    # Seeds not adjacent to an unknown voxel do not enter the system: solve in the box around the unknowns.
    spans = [np.flatnonzero(np.any(unknown, axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    lo = np.maximum([s[0] - 1 for s in spans], 0)
    hi = np.minimum([s[-1] + 2 for s in spans], image.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub_prior = None if prior is None else prior[(slice(None),) + box]
    sub_initial = None if initial is None else np.asarray(initial, dtype=np.float64)[(slice(None),) + box]
    if multiscale is None:
        multiscale = solver == "auto" and int(unknown[box].sum()) >= MULTISCALE_MIN_VOXELS
    # beta is scaled by the whole image's (or slice's) standard deviation, as scikit-image does, not the box's
    if slice_axis is None:
        std = np.std(image, dtype=np.float64)
    else:
        std = np.std(image, axis=other, dtype=np.float64, keepdims=True)
        std = std[tuple(box[a] if a == slice_axis else slice(None) for a in range(3))]
    settings = _Settings(float(beta), std, float(conductance_power), num_classes,
                         "cg_torch" if solver == "auto" else solver, float(tol), max_iter, str(device),
                         float(prior_weight) if prior is not None else 0.0, slice_axis, float(band_tolerance))
    probs = _solve(image[box].astype(np.float64), seeds[box].astype(np.int16), spacing, settings, multiscale,
                   sub_prior, sub_initial)
    np.clip(probs, 0.0, None, out=probs)
    total = probs.sum(axis=0, keepdims=True)
    probs = np.where(total > 0, probs / np.maximum(total, 1e-30), 1.0 / num_classes)
    out[(slice(None),) + box] = probs
    return out


# -- one level ------------------------------------------------------------------------------------
def _solve(image, seeds, spacing, settings: _Settings, multiscale, prior, initial, weights=None):
    """Probabilities (C, ...) on the grid of ``seeds``; seeds exact (``weights``: this grid's, if known)."""
    dtype = np.float32 if settings.solver == "cg_torch" else np.float64
    if weights is None:
        weights = edge_weights(image, spacing, settings.beta, dtype, settings.std, settings.conductance_power,
                               settings.slice_axis)
    coarse = None
    if multiscale and initial is None and image.size > 2 * _COARSEST_VOXELS:
        coarse = initial = _coarse_start(image, seeds, spacing, settings, prior, weights)
    if settings.solver == "cg_torch" and coarse is not None:
        return _solve_torch_band(weights, seeds, settings, prior, coarse)
    if settings.solver == "cg_torch":
        return _solve_torch(weights, seeds, settings, prior, initial)
    return _solve_scipy(weights, seeds, settings, prior, initial, coarse)


def _solved_classes(num_classes: int) -> list:
    """The classes whose probabilities are solved for: with two, only class 1 (class 0 is 1 minus it)."""
    return [1] if num_classes == 2 else list(range(num_classes))


def _coarse_start(image, seeds, spacing, settings: _Settings, prior, weights):
    """Solve on a 2x coarser grid (only axes whose spacing is within 2x of the finest) and upsample.

    The coarse image is the block mean, a block holding seeds of one class only is a seed of that class. With
    ``cg_torch`` the coarse edge weights come from that image; with the SciPy solvers from the fine weights
    (:func:`_coarse_weights`: series along the edge, parallel across it), which keeps the fine grid's conductance
    where the image varies within a block: block means of a textured region make edges 4x more selective (the
    step between blocks is twice a voxel's), so the coarse grid was sure where the fine one is not, and the band
    check had to solve those regions again (1.8 CPU s of 6.7 on the LGE-sized stack). (Summing the fine edge
    weights across block faces alone, as algebraic multigrid would, measured far worse: blocks straddling an
    edge then join both sides strongly; in series, the edge inside a block weakens both of its links.)
    """
    factors = np.where((spacing <= 2.0 * spacing.min()) & (np.asarray(image.shape) >= 8), 2, 1)
    if settings.slice_axis is not None:
        factors[settings.slice_axis] = 1
    if np.all(factors == 1):
        return None
    coarse_seeds = _block_seeds(seeds, factors, settings.num_classes)
    if not np.any(coarse_seeds < 0):
        return None
    present = np.bincount(coarse_seeds[coarse_seeds >= 0].ravel(), minlength=settings.num_classes)
    if prior is None and np.any(present == 0):
        return None
    coarse_image = _block_mean(image, factors)
    coarse_prior = None if prior is None else np.stack([_block_mean(p, factors) for p in prior])
    # the SciPy solvers check the band and solve again where the coarse grid was wrong: their coarse grid gets
    # the fine edges' conductance (the LGE-sized seed areas: the fine level's check then adds 5 000 voxels less)
    coarse_weights = None if settings.solver == "cg_torch" else _coarse_weights(weights, factors, spacing, settings)
    coarse = _solve(coarse_image, coarse_seeds, spacing * factors, settings,
                    coarse_image.size > 2 * _COARSEST_VOXELS, coarse_prior, None, coarse_weights)
    if settings.num_classes == 2:  # linear interpolation keeps the sum: upsample one class, the other is 1 - it
        fine = _upsample_linear(coarse[1], factors, image.shape)
        return np.stack([1.0 - fine, fine])
    return np.stack([_upsample_linear(p, factors, image.shape) for p in coarse])


def _coarse_weights(weights, factors, spacing, settings: _Settings):
    """Edge weights between blocks of ``factors`` (1 or 2 per axis) from the fine ``weights`` (as
    :func:`edge_weights` returns them): along the edge's axis the fine edges between the two block centres in
    series (weighted harmonic mean: half of each block's inner edge, the whole edge across their face), the face's
    rows in parallel (their mean), scaled from the fine grid's conductance ``(h_min / h_a) ** p`` to the coarse
    grid's. Equal to the coarse grid's own weights where the image is constant."""
    spacing = np.asarray(spacing, dtype=float)
    coarse_spacing = spacing * factors
    out = []
    for axis, w in enumerate(weights):
        n_coarse = -(-(w.shape[axis] + 1) // factors[axis])
        if axis == settings.slice_axis or n_coarse < 2:
            shape = [-(-n // f) for n, f in zip(w.shape, factors)]
            shape[axis] = max(n_coarse - 1, 0)
            out.append(np.zeros(shape, dtype=w.dtype))
            continue
        if factors[axis] == 2:
            pad = [(0, 0)] * 3
            pad[axis] = (0, 2 * n_coarse - 1 - w.shape[axis])
            we = np.pad(w, pad, mode="edge") if pad[axis][1] > 0 else w
            edge = [tuple(slice(k, k + 2 * (n_coarse - 1), 2) if a == axis else slice(None) for a in range(3))
                    for k in range(3)]  # block J's inner edge, the edge across the face, block J + 1's inner edge
            series = 0.5 / we[edge[0]] + 1.0 / we[edge[1]] + 0.5 / we[edge[2]]
            along = 2.0 / series
        else:
            along = w
        rows = [1 if a == axis else f for a, f in enumerate(factors)]
        scale = ((coarse_spacing.min() / coarse_spacing[axis]) / (spacing.min() / spacing[axis])) \
            ** settings.conductance_power
        out.append((_block_mean(along, rows) * scale).astype(w.dtype))
    return out


def _upsample_linear(coarse, factors, shape):
    """Linear interpolation of block values back to the fine grid, one axis at a time (edges held).

    Fine voxel ``i`` of an axis with blocks of ``f`` lies at block coordinate ``(i + 0.5) / f - 0.5``, between
    two block centres (``ndi.zoom(order=1, grid_mode=True)`` of an exact ``f``-fold zoom, 10x faster).
    """
    out = np.asarray(coarse, dtype=np.float32)
    for axis, (f, n) in enumerate(zip(factors, shape)):
        if f == 1:
            continue
        where = (np.arange(n) + 0.5) / f - 0.5
        below = np.floor(where).astype(int)
        t = (where - below).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        last = out.shape[axis] - 1
        out = ((1.0 - t) * np.take(out, np.clip(below, 0, last), axis=axis)
               + t * np.take(out, np.clip(below + 1, 0, last), axis=axis))
    return out


def _block_view(array, factors, fill):
    pad = [(0, (-n) % f) for n, f in zip(array.shape, factors)]
    a = np.pad(array, pad, mode="edge") if fill is None else np.pad(array, pad, constant_values=fill)
    s = a.shape
    return a.reshape(s[0] // factors[0], factors[0], s[1] // factors[1], factors[1], s[2] // factors[2], factors[2])


def _block_mean(array, factors):
    return _block_view(array, factors, None).mean(axis=(1, 3, 5))


def _block_seeds(seeds, factors, num_classes):
    """A coarse voxel is a seed of class c if its block holds seeds of c and of no other class."""
    blocks = _block_view(seeds, factors, -1)
    out = np.full(blocks.shape[0::2], -1, dtype=np.int16)
    count = np.zeros(out.shape, dtype=np.int16)
    for c in range(num_classes):
        has = np.any(blocks == c, axis=(1, 3, 5))
        out[has] = c
        count += has
    out[count > 1] = -1
    return out


# -- PyTorch matrix-free conjugate gradients -------------------------------------------------------
def _solve_torch(weights, seeds, settings: _Settings, prior, initial):
    import torch

    num_classes, prior_weight = settings.num_classes, settings.prior_weight
    dev = torch.device(settings.device)
    dtype = torch.float32
    w = [torch.from_numpy(a).to(dev) for a in weights]
    seeds_t = torch.from_numpy(seeds.astype(np.int64)).to(dev)
    unknown = (seeds_t < 0).to(dtype)
    degree = torch.zeros(seeds.shape, dtype=dtype, device=dev)
    degree[:-1] += w[0]
    degree[1:] += w[0]
    degree[:, :-1] += w[1]
    degree[:, 1:] += w[1]
    degree[:, :, :-1] += w[2]
    degree[:, :, 1:] += w[2]
    if prior_weight > 0:
        degree += prior_weight

    def neighbour_sum(v):  # v: (B, I, J, K) -> sum_j w_ij v_j
        out = torch.zeros_like(v)
        out[:, :-1] += w[0] * v[:, 1:]
        out[:, 1:] += w[0] * v[:, :-1]
        out[:, :, :-1] += w[1] * v[:, :, 1:]
        out[:, :, 1:] += w[1] * v[:, :, :-1]
        out[:, :, :, :-1] += w[2] * v[:, :, :, 1:]
        out[:, :, :, 1:] += w[2] * v[:, :, :, :-1]
        return out

    # Two classes: one system (the other is its complement). More: one per class, normalised after.
    solved = _solved_classes(num_classes)
    indicators = torch.stack([(seeds_t == c).to(dtype) for c in solved])
    rhs = unknown * neighbour_sum(indicators)
    if prior_weight > 0:
        rhs += unknown * prior_weight * torch.from_numpy(prior[solved].astype(np.float32)).to(dev)

    def apply(v):
        return unknown * (degree * v - neighbour_sum(v))

    x = torch.zeros_like(rhs) if initial is None else unknown * torch.from_numpy(
        initial[solved].astype(np.float32)).to(dev)
    inv_diag = unknown / degree
    x = _pcg(apply, rhs, x, inv_diag, settings.tol, settings.max_iter or 10 * max(seeds.shape) + 100)
    x = (x + indicators).clamp_(0.0, 1.0).cpu().numpy()
    if num_classes == 2:
        return np.stack([1.0 - x[0], x[0]])
    return x


def _band(unknown, coarse, band_tolerance):
    """Unlabelled voxels to solve again: unsure in the upsampled coarse solution, or within BAND_GROWTH of one."""
    sure = coarse.max(axis=0) >= 1.0 - band_tolerance
    return ndi.binary_dilation(unknown & ~sure, iterations=BAND_GROWTH) & unknown


def _solve_torch_band(weights, seeds, settings: _Settings, prior, initial):
    """Fine level of a coarse-to-fine solve: only the uncertain band is solved again.

    Unlabelled voxels where the upsampled coarse solution is sure (some class above ``1 - BAND_TOLERANCE``) and
    that are more than :data:`BAND_GROWTH` voxels from an unsure one keep the coarse values, as fixed boundary
    values; the band's unknowns are gathered into a compact vector, with their 6 neighbours as index arrays.
    """
    import torch

    num_classes, prior_weight = settings.num_classes, settings.prior_weight
    unknown = seeds < 0
    band = _band(unknown, initial, settings.band_tolerance)
    solved = _solved_classes(num_classes)
    known = np.stack([np.where(unknown, initial[c], seeds == c) for c in solved]).astype(np.float32)
    free = np.flatnonzero(band)
    if free.size:
        shape = seeds.shape
        strides = np.array([shape[1] * shape[2], shape[2], 1])
        coords = np.unravel_index(free, shape)
        neighbours = np.zeros((6, free.size), dtype=np.int64)
        edge = np.zeros((6, free.size), dtype=np.float32)
        for axis in range(3):
            for side, step in enumerate((1, -1)):
                row = 2 * axis + side
                ok = coords[axis] < shape[axis] - 1 if step > 0 else coords[axis] > 0
                at = tuple(c[ok] - (0 if step > 0 or a != axis else 1) for a, c in enumerate(coords))
                edge[row, ok] = weights[axis][at]
                neighbours[row] = np.where(ok, free + step * strides[axis], free)
        position = np.full(band.size, free.size, dtype=np.int64)  # index into the compact vector; free.size = pad
        position[free] = np.arange(free.size)
        inner = position[neighbours]  # (6, N): compact index of a free neighbour, or the pad slot
        dev = torch.device(settings.device)
        edge_t = torch.from_numpy(edge).to(dev)
        inner_t = torch.from_numpy(inner).to(dev)
        degree = edge_t.sum(dim=0) + prior_weight
        fixed = known.reshape(len(solved), -1)
        outside = torch.from_numpy(np.where(inner == free.size, 1.0, 0.0).astype(np.float32)).to(dev)
        rhs = (edge_t * outside * torch.from_numpy(fixed[:, neighbours]).to(dev)).sum(dim=1)
        if prior_weight > 0:
            pulled = prior[solved].reshape(len(solved), -1)[:, free].astype(np.float32)
            rhs += prior_weight * torch.from_numpy(pulled).to(dev)
        pad = torch.zeros((len(solved), 1), dtype=torch.float32, device=dev)

        def apply(v):
            return degree * v - (edge_t * torch.cat([v, pad], dim=1)[:, inner_t]).sum(dim=1)

        x0 = torch.from_numpy(fixed[:, free]).to(dev)
        x = _pcg(apply, rhs, x0, 1.0 / degree, settings.tol, settings.max_iter or 10 * max(shape) + 100)
        fixed[:, free] = x.clamp_(0.0, 1.0).cpu().numpy()
    if num_classes == 2:
        return np.stack([1.0 - known[0], known[0]])
    return known


def _pcg(apply, b, x, inv_diag, tol, max_iter):
    """Batched Jacobi-preconditioned CG: solves apply(x) = b for each leading-axis system."""
    import torch

    dims = tuple(range(1, b.dim()))

    def dot(a, c):  # float32 sums (pairwise: ~1e-6 relative error, far below tol); float64 sums were 5x slower
        return (a * c).sum(dim=dims).to(torch.float64)

    def bcast(s):
        return s.to(b.dtype).reshape((-1,) + (1,) * (b.dim() - 1))

    r = b - apply(x)
    z = inv_diag * r
    p = z.clone()
    rz = dot(r, z)
    b_norm = torch.sqrt(dot(b, b)).clamp_min(1e-30)
    for _ in range(max_iter):
        if bool(torch.all(torch.sqrt(dot(r, r)) <= tol * b_norm)):
            break
        q = apply(p)
        alpha = rz / dot(p, q).clamp_min(1e-30)
        x += bcast(alpha) * p
        r -= bcast(alpha) * q
        z = inv_diag * r
        rz_new = dot(r, z)
        beta = rz_new / rz.clamp_min(1e-30)
        rz = rz_new
        p = z + bcast(beta) * p
    return x


# -- SciPy sparse solvers -------------------------------------------------------------------------
def _solve_scipy(weights, seeds, settings: _Settings, prior, initial, coarse=None):
    """SciPy solvers on the unlabelled voxels, or (``coarse`` given) only on the uncertain band (as
    :func:`_solve_torch_band`, with the coarse values fixed elsewhere), checked for consistency (below)."""
    solved = _solved_classes(settings.num_classes)
    indicators = np.stack([seeds == c for c in solved]).astype(np.float64)
    unknown = seeds < 0
    if coarse is None:
        free, fixed = unknown, indicators
    else:
        free = _band(unknown, coarse, settings.band_tolerance)
        fixed = np.where(unknown, coarse[solved], indicators)
    out = fixed.copy()
    solve = free
    factors = {}  # per slice, the last LU and the free voxels it was made for (reused when the band grows a little)
    for _ in range(BAND_CHECKS + 1):
        if not solve.any():
            break
        out[:, solve] = _solve_sparse(weights, solve, fixed, settings, prior, initial, factors)
        if coarse is None:
            break
        grown = _inconsistent_regions(out, fixed, free, unknown, settings)
        if not grown.any():
            break
        free = free | grown
        solve = free
        if settings.slice_axis is not None:  # slices are apart: solve again only those whose band grew
            other = tuple(a for a in range(3) if a != settings.slice_axis)
            solve = free & np.any(grown, axis=other, keepdims=True)
    if settings.num_classes == 2:
        return np.stack([1.0 - out[0], out[0]])
    return out


def _inconsistent_regions(out, fixed, free, unknown, settings: _Settings):
    """Sure regions whose coarse values the band solve contradicts, to be solved again.

    The coarse grid can be confidently wrong in a whole region (a thin wall blurred, a stroke thickened), where
    no band opens. Where the fine values at the band's edge differ from the coarse ones by more than the band
    tolerance, the sure region behind that edge (a connected region of voxels sure of one class) joins the band.
    """
    sure = unknown & ~free
    edge = free & ndi.binary_dilation(sure)
    off = np.abs(out[:, edge] - fixed[:, edge]).max(axis=0) > settings.band_tolerance
    if not off.any():
        return np.zeros_like(free)
    flagged = np.zeros_like(free)
    flagged[edge] = off
    structure = ndi.generate_binary_structure(3, 1)
    if settings.slice_axis is not None:  # slices are apart: so are their regions
        structure[tuple(0 if a == settings.slice_axis else 1 for a in range(3))] = False
        structure[tuple(2 if a == settings.slice_axis else 1 for a in range(3))] = False
    regions, _ = ndi.label(sure, structure)
    touched = np.unique(regions[ndi.binary_dilation(flagged, structure) & sure])
    return np.isin(regions, touched[touched > 0])


def _assemble(weights, free, fixed, settings: _Settings, prior):
    """The graph Laplacian on the free voxels ``(M, M)`` (CSR), the right-hand sides ``(M, S)`` from the fixed
    neighbours (and the prior), the diagonal ``(M,)`` and the free voxels' flat indices ``(M,)``."""
    prior_weight = settings.prior_weight
    solved = _solved_classes(settings.num_classes)
    shape = free.shape
    flat_free = free.ravel()
    flat_fixed = fixed.reshape(len(solved), -1)
    voxels = np.flatnonzero(flat_free)
    m = voxels.size
    index = np.full(flat_free.size, -1, dtype=np.int64)
    index[voxels] = np.arange(m)
    coords = np.unravel_index(voxels, shape)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    rows, cols, vals = [], [], []
    diag = np.full(m, prior_weight)
    rhs = np.zeros((m, len(solved)))
    # each free voxel's 6 neighbours: a free one is a matrix entry, a fixed one moves to the right-hand side
    for axis in range(3):
        if axis == settings.slice_axis or shape[axis] == 1:  # no edges between slices (zero weights: fill-in)
            continue
        for step in (1, -1):
            ok = np.flatnonzero(coords[axis] < shape[axis] - 1 if step > 0 else coords[axis] > 0)
            at = tuple(c[ok] - (1 if step < 0 and a == axis else 0) for a, c in enumerate(coords))
            w = weights[axis][at].astype(np.float64)
            neighbour = voxels[ok] + step * strides[axis]
            diag[ok] += w
            inner = flat_free[neighbour]
            rows.append(ok[inner])
            cols.append(index[neighbour[inner]])
            vals.append(-w[inner])
            outer = ~inner
            rhs[ok[outer]] += w[outer, None] * flat_fixed[:, neighbour[outer]].T
    if prior_weight > 0:
        rhs += prior_weight * prior[solved].reshape(len(solved), -1)[:, flat_free].T
    rows.append(np.arange(m))
    cols.append(np.arange(m))
    vals.append(diag)
    lap = sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    return lap, rhs, diag, voxels


def _lu(lap):
    """Sparse LU of a graph Laplacian (symmetric positive definite): a symmetric ordering and no pivoting, as
    for a Cholesky factor."""
    return splinalg.splu(lap.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                         options={"SymmetricMode": True})


def solver_threads() -> int:
    """Threads for independent per-slice solves: ``OMP_NUM_THREADS`` where set (the torch/BLAS thread budget),
    else the CPUs this process may run on."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _one_blas_thread():
    """BLAS on one thread while the slices are solved on several (SuperLU calls BLAS inside each: 2 workers with 2
    BLAS threads each oversubscribe 2 cores), with ``threadpoolctl`` where it is installed (the ``speed`` extra)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _solve_slices(weights, free, fixed, settings: _Settings, prior, factors: dict):
    """The direct solve with ``slice_axis``: no edges between slices, so each slice is its own problem, assembled
    and factored on its own, the slices spread over :func:`solver_threads` threads (SuperLU releases the GIL).

    ``factors`` (slice -> (free voxels, LU)) keeps each slice's factor between the band checks: a slice whose free
    voxels only gained at most :data:`BORDER_MAX` since is solved with that factor and a small dense Schur
    complement for the new voxels (exact, without factoring again).
    """
    axis = settings.slice_axis
    other = tuple(a for a in range(3) if a != axis)
    slices = np.flatnonzero(np.any(free, axis=other))

    def one(k):
        pick = (slice(None),) * axis + (slice(k, k + 1),)
        sub_weights = [w if a == axis else w[pick] for a, w in enumerate(weights)]
        sub_prior = None if prior is None else prior[(slice(None),) + pick]
        lap, rhs, _, voxels = _assemble(sub_weights, free[pick], fixed[(slice(None),) + pick], settings, sub_prior)
        known = factors.get(k)
        if known is not None and not np.any(known[0] & ~free[pick]):
            old = known[0].ravel()[voxels]  # the new free voxels that the factor's system holds, in its order
            if voxels.size - np.count_nonzero(old) <= BORDER_MAX:
                return _bordered_solve(known[1], lap, rhs, old)
        lu = _lu(lap)
        factors[k] = (free[pick].copy(), lu)
        return lu.solve(rhs).T

    workers = min(solver_threads(), len(slices))
    if workers > 1:
        with _one_blas_thread(), ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(one, slices))
    else:
        parts = [one(k) for k in slices]
    # a slice's free voxels keep their order among all free voxels (C order): place each slice's values directly
    along = np.unravel_index(np.flatnonzero(free), free.shape)[axis]
    values = np.empty((fixed.shape[0], along.size))
    for k, x in zip(slices, parts):
        values[:, along == k] = x
    return values


def _bordered_solve(lu, lap, rhs, old):
    """Solve ``lap x = rhs`` (``(S, M)`` returned) given ``lu``, the factor of ``lap``'s block on the ``old``
    unknowns, through the Schur complement of the few others."""
    f, g = np.flatnonzero(old), np.flatnonzero(~old)
    x = np.empty((rhs.shape[1], old.size))
    if g.size == 0:
        x[:, f] = lu.solve(rhs[f]).T
        return x
    rows = lap[f]
    coupling = rows[:, g].toarray()  # (F, G)
    inv_coupling, inv_rhs = lu.solve(coupling), lu.solve(rhs[f])
    schur = lap[g][:, g].toarray() - coupling.T @ inv_coupling
    x_g = np.linalg.solve(schur, rhs[g] - coupling.T @ inv_rhs)
    x[:, g] = x_g.T
    x[:, f] = (inv_rhs - inv_coupling @ x_g).T
    return x


def _solve_sparse(weights, free, fixed, settings: _Settings, prior, initial, factors=None):
    """Values ``(S, M)`` on the ``M`` free voxels of the Dirichlet problem with ``fixed`` ``(S, ...)`` elsewhere
    (``factors``: see :func:`_solve_slices`)."""
    if settings.solver == "direct" and settings.slice_axis is not None:
        return _solve_slices(weights, free, fixed, settings, prior, {} if factors is None else factors)
    lap, rhs, diag, voxels = _assemble(weights, free, fixed, settings, prior)
    solved = _solved_classes(settings.num_classes)
    m = voxels.size
    solver = settings.solver
    if solver == "direct":
        return _lu(lap).solve(rhs).T
    if solver == "cg_mg":
        import pyamg

        lap.indices = lap.indices.astype(np.int32)
        lap.indptr = lap.indptr.astype(np.int32)
        precond = pyamg.ruge_stuben_solver(lap, coarse_solver="pinv").aspreconditioner(cycle="V")
        cap = settings.max_iter or 30
    else:
        precond = sparse.dia_array((1.0 / diag, 0), shape=(m, m))
        cap = settings.max_iter or 10 * max(free.shape) + 100
    x = np.zeros((len(solved), m))
    for j, c in enumerate(solved):
        x0 = None if initial is None else initial[c].ravel()[voxels]
        x[j], _ = splinalg.cg(lap, rhs[:, j], x0=x0, rtol=settings.tol, atol=0.0, maxiter=cap, M=precond)
    return x
