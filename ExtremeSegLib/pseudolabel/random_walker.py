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
- ``"direct"``: sparse LU (SciPy), exact, for small problems and references.
- ``"auto"``: ``cg_torch``, coarse-to-fine for large problems (see ``multiscale``).

``multiscale`` (``cg_torch`` only) solves a 2x downsampled problem first (recursively, down to about 50 000
voxels; thick-slice axes are not downsampled), upsamples it, keeps its values where they are sure (some class
above 1 - :data:`BAND_TOLERANCE`, farther than :data:`BAND_GROWTH` voxels from an unsure voxel) and solves the
remaining band again at full resolution with those values as boundary conditions. This is an approximation
(sure voxels keep the coarse probabilities): labels agree with the single-level solve on all but a few voxels,
probabilities to a few hundredths (measured in ``benchmarks/results/pseudolabel_extreme.md``). With the other
solvers ``multiscale`` only gives the fine solve a starting guess, which leaves its solution unchanged.
"""

from __future__ import annotations

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
#: added to every edge weight so that no voxel is cut off from all seeds (scikit-image's value)
EPS_WEIGHT = 1e-10

#: bytes per voxel the solvers need, per class (the image, weights, CG vectors); used to refuse huge regions
BYTES_PER_VOXEL = {"cg_torch": 4 * 12, "cg_j": 8 * 20, "cg_mg": 8 * 60, "direct": 8 * 400}


def edge_weights(image: np.ndarray, spacing=(1.0, 1.0, 1.0), beta: float = 130.0, dtype=np.float64,
                 std: float | None = None, conductance_power: float = 2.0) -> list:
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
    std : float, optional
        The intensity standard deviation that scales ``beta`` (default: this image's).
    conductance_power : float, optional
        Anisotropic coupling ``(h_min / h_a) ** p``; 2 = diffusion in mm, 0 = per voxel.

    Returns
    -------
    list of 3 ndarrays
        ``[w0 (I-1, J, K), w1 (I, J-1, K), w2 (I, J, K-1)]``.
    """
    data = np.asarray(image, dtype=np.float64)
    spacing = np.asarray(spacing, dtype=float)
    std = float(data.std()) if std is None else float(std)
    scale = beta / (10.0 * std) if std > 0 else 0.0
    weights = []
    for axis in range(3):
        diff = np.diff(data, axis=axis)
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
    std: float
    conductance_power: float
    num_classes: int
    solver: str
    tol: float
    max_iter: int | None
    device: str
    prior_weight: float


def random_walker(image: np.ndarray, seeds: np.ndarray, spacing=(1.0, 1.0, 1.0), beta: float = 130.0,
                  solver: str = "auto", tol: float = 1e-3, max_iter: int | None = None, device="cpu",
                  multiscale: bool | None = None, prior: np.ndarray | None = None,
                  prior_weight: float = 0.0, initial: np.ndarray | None = None,
                  conductance_power: float = 2.0) -> np.ndarray:
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
    if solver not in SOLVERS:
        raise InputError(f"random walker: unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise InputError(f"random walker: spacing must be 3 positive numbers (mm), got {spacing.tolist()}")
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
    where = np.argwhere(unknown)
    lo = np.maximum(where.min(axis=0) - 1, 0)
    hi = np.minimum(where.max(axis=0) + 2, image.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub_prior = None if prior is None else prior[(slice(None),) + box]
    sub_initial = None if initial is None else np.asarray(initial, dtype=np.float64)[(slice(None),) + box]
    if multiscale is None:
        multiscale = solver == "auto" and int(unknown[box].sum()) >= MULTISCALE_MIN_VOXELS
    # beta is scaled by the whole image's standard deviation (as scikit-image does), not the solved box's
    settings = _Settings(float(beta), float(np.std(image, dtype=np.float64)), float(conductance_power), num_classes,
                         "cg_torch" if solver == "auto" else solver, float(tol), max_iter, str(device),
                         float(prior_weight) if prior is not None else 0.0)
    probs = _solve(image[box].astype(np.float64), seeds[box].astype(np.int16), spacing, settings, multiscale,
                   sub_prior, sub_initial)
    np.clip(probs, 0.0, None, out=probs)
    total = probs.sum(axis=0, keepdims=True)
    probs = np.where(total > 0, probs / np.maximum(total, 1e-30), 1.0 / num_classes)
    out[(slice(None),) + box] = probs
    return out


# -- one level ------------------------------------------------------------------------------------
def _solve(image, seeds, spacing, settings: _Settings, multiscale, prior, initial):
    """Probabilities (C, ...) on the grid of ``seeds``; seeds exact."""
    coarse = None
    if multiscale and initial is None and image.size > 2 * _COARSEST_VOXELS:
        coarse = initial = _coarse_start(image, seeds, spacing, settings, prior)
    dtype = np.float32 if settings.solver == "cg_torch" else np.float64
    weights = edge_weights(image, spacing, settings.beta, dtype, settings.std, settings.conductance_power)
    if settings.solver == "cg_torch" and coarse is not None:
        return _solve_torch_band(weights, seeds, settings, prior, coarse)
    if settings.solver == "cg_torch":
        return _solve_torch(weights, seeds, settings, prior, initial)
    return _solve_scipy(weights, seeds, settings, prior, initial)


def _coarse_start(image, seeds, spacing, settings: _Settings, prior):
    """Solve on a 2x coarser grid (only axes whose spacing is within 2x of the finest) and upsample.

    The coarse image is the block mean, a block holding seeds of one class only is a seed of that class.
    (Summing the fine edge weights across block faces instead, as algebraic multigrid would, measured far
    worse: blocks straddling an edge then join both sides strongly.)
    """
    factors = np.where((spacing <= 2.0 * spacing.min()) & (np.asarray(image.shape) >= 8), 2, 1)
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
    coarse = _solve(coarse_image, coarse_seeds, spacing * factors, settings,
                    coarse_image.size > 2 * _COARSEST_VOXELS, coarse_prior, None)
    zoom = np.asarray(image.shape) / np.asarray(coarse_image.shape)
    return np.stack([ndi.zoom(p, zoom, order=1, mode="nearest", grid_mode=True)[
        : image.shape[0], : image.shape[1], : image.shape[2]] for p in coarse])


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
    solved = [1] if num_classes == 2 else list(range(num_classes))
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


def _solve_torch_band(weights, seeds, settings: _Settings, prior, initial):
    """Fine level of a coarse-to-fine solve: only the uncertain band is solved again.

    Unlabelled voxels where the upsampled coarse solution is sure (some class above ``1 - BAND_TOLERANCE``) and
    that are more than :data:`BAND_GROWTH` voxels from an unsure one keep the coarse values, as fixed boundary
    values; the band's unknowns are gathered into a compact vector, with their 6 neighbours as index arrays.
    """
    import torch

    num_classes, prior_weight = settings.num_classes, settings.prior_weight
    unknown = seeds < 0
    sure = initial.max(axis=0) >= 1.0 - BAND_TOLERANCE
    band = ndi.binary_dilation(unknown & ~sure, iterations=BAND_GROWTH) & unknown
    solved = [1] if num_classes == 2 else list(range(num_classes))
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

    def dot(a, c):
        return (a * c).sum(dim=dims, dtype=torch.float64)

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
def _solve_scipy(weights, seeds, settings: _Settings, prior, initial):
    num_classes, prior_weight, solver = settings.num_classes, settings.prior_weight, settings.solver
    flat_seeds = seeds.ravel()
    unknown = flat_seeds < 0
    n = unknown.size
    index = np.full(n, -1, dtype=np.int64)
    index[unknown] = np.arange(int(unknown.sum()))
    m = int(unknown.sum())
    ids = np.arange(n).reshape(seeds.shape)
    rows, cols, vals = [], [], []
    degree = np.zeros(n)
    solved = [1] if num_classes == 2 else list(range(num_classes))
    rhs = np.zeros((m, len(solved)))
    for axis, w in enumerate(weights):
        a = np.take(ids, np.arange(seeds.shape[axis] - 1), axis=axis).ravel()
        b = np.take(ids, np.arange(1, seeds.shape[axis]), axis=axis).ravel()
        wf = w.ravel()
        degree += np.bincount(a, wf, minlength=n) + np.bincount(b, wf, minlength=n)
        both = unknown[a] & unknown[b]
        rows += [index[a[both]], index[b[both]]]
        cols += [index[b[both]], index[a[both]]]
        vals += [-wf[both], -wf[both]]
        # edges from an unknown voxel to a seed move to the right-hand side
        for u, s in ((a, b), (b, a)):
            for j, c in enumerate(solved):
                hit = unknown[u] & (flat_seeds[s] == c)
                rhs[:, j] += np.bincount(index[u[hit]], wf[hit], minlength=m)
    diag = degree[unknown]
    if prior_weight > 0:
        diag = diag + prior_weight
        rhs += prior_weight * prior[solved].reshape(len(solved), -1)[:, unknown].T
    rows.append(np.arange(m))
    cols.append(np.arange(m))
    vals.append(diag)
    lap = sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))

    if solver == "direct":
        x = splinalg.splu(lap.tocsc()).solve(rhs)
    else:
        if solver == "cg_mg":
            import pyamg

            lap.indices = lap.indices.astype(np.int32)
            lap.indptr = lap.indptr.astype(np.int32)
            precond = pyamg.ruge_stuben_solver(lap, coarse_solver="pinv").aspreconditioner(cycle="V")
            cap = settings.max_iter or 30
        else:
            precond = sparse.dia_array((1.0 / diag, 0), shape=(m, m))
            cap = settings.max_iter or 10 * max(seeds.shape) + 100
        x = np.zeros_like(rhs)
        for j, c in enumerate(solved):
            x0 = None if initial is None else initial[c].ravel()[unknown]
            x[:, j], _ = splinalg.cg(lap, rhs[:, j], x0=x0, rtol=settings.tol, atol=0.0, maxiter=cap, M=precond)
    out = np.zeros((len(solved), n))
    for j, c in enumerate(solved):
        out[j, unknown] = x[:, j]
        out[j, flat_seeds == c] = 1.0
    out = out.reshape((len(solved),) + seeds.shape)
    if num_classes == 2:
        return np.stack([1.0 - out[0], out[0]])
    return out
