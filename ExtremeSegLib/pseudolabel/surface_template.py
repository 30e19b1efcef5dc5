"""Surface points -> a deformed closed template (paper 003): mesh in RAS mm and its mask on the image grid.

The template is an icosphere (genus 0). Its vertices are ``V = U @ M.T + t + D``: an affine image of the unit
sphere ``U`` (an ellipsoid; ``M``, ``t`` free) plus a displacement ``D`` (mm) kept smooth by a bending energy.
Fitting is an active surface iterated as in ICP: each point is attached to its nearest location on the current
mesh (a face and barycentric weights), then one sparse least-squares solve gives the new ``M, t, D``::

    min  sum_p |B_p V - x_p|^2  +  smoothness * |L D|^2  +  EPS * |D|^2

(``L`` the uniform graph Laplacian; ``B_p`` the point's barycentric row). Because the ellipsoid part is free,
a solve does not depend on where the sphere started, only on the attachments, so a warm start from the previous
fit (:meth:`SurfaceTemplate.update`) reaches a fit close to a cold one (masks within a Dice of about 0.98-0.99)
in one or two solves.
Everything is in millimetres, so anisotropic spacing and any IJK-to-RAS matrix are honoured; the mask is the
set of voxel centres inside the closed mesh (ray parity along the image's third axis).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from scipy.linalg import cho_factor, cho_solve
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..annotations import _as_points, require_points_inside
from ..errors import InputError
from ..volume import Volume
from .label import PseudoLabel

#: Weight of |D|^2: only pins the displacement's constant part (a translation, which ``t`` carries).
EPS = 1e-4
#: Candidate vertices per point when looking for its nearest mesh location.
NEAREST_VERTICES = 6


# -- the sphere -----------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: vertices (V, 3) on the unit sphere and outward-oriented triangles (F, 3) int.

    ``subdivisions`` 1..4 splits each triangle in 4 that many times: V = 10 * 4**s + 2 (s = 3: 642, s = 4: 2562).
    """
    if not 1 <= int(subdivisions) <= 4:
        raise InputError(f"template subdivisions must be 1..4, got {subdivisions}")
    phi = (1.0 + 5.0**0.5) / 2.0
    verts = [(-1, phi, 0), (1, phi, 0), (-1, -phi, 0), (1, -phi, 0), (0, -1, phi), (0, 1, phi),
             (0, -1, -phi), (0, 1, -phi), (phi, 0, -1), (phi, 0, 1), (-phi, 0, -1), (-phi, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    vertices = [np.asarray(v, dtype=float) / np.linalg.norm(v) for v in verts]
    for _ in range(int(subdivisions)):
        faces = _split_faces(faces, vertices)
    v = np.asarray(vertices)
    f = np.asarray(faces, dtype=np.int64)
    v.setflags(write=False)
    f.setflags(write=False)
    return v, f


@lru_cache(maxsize=4)
def _regulariser_inverse(subdivisions: int, smoothness: float) -> np.ndarray:
    """Dense inverse of ``smoothness * L'L + EPS * I`` on the icosphere (V x V; 3.3 MB at 3 subdivisions)."""
    _, faces = icosphere(subdivisions)
    n = int(faces.max()) + 1
    lap = uniform_laplacian(faces, n).toarray()
    inverse = np.linalg.inv(smoothness * lap.T @ lap + EPS * np.identity(n))
    inverse.setflags(write=False)
    return inverse


def _split_faces(faces: list, vertices: list) -> list:
    """Each triangle into 4 through its edge midpoints (appended to ``vertices``, pushed onto the sphere)."""
    midpoint = {}

    def middle(a, b):
        key = (min(a, b), max(a, b))
        if key not in midpoint:
            m = vertices[a] + vertices[b]
            vertices.append(m / np.linalg.norm(m))
            midpoint[key] = len(vertices) - 1
        return midpoint[key]

    new = []
    for a, b, c in faces:
        ab, bc, ca = middle(a, b), middle(b, c), middle(c, a)
        new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
    return new


def uniform_laplacian(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """(V, V) graph Laplacian ``I - W`` with ``W`` the row-normalised edge adjacency of the triangles."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_vertices, n_vertices)).tocsr()
    adj.data[:] = 1.0  # each undirected edge once per direction
    degree = np.asarray(adj.sum(axis=1)).ravel()
    return (sp.identity(n_vertices, format="csr") - sp.diags(1.0 / degree) @ adj).tocsr()


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume (mm^3) of a closed triangle mesh; negative when its triangles face inwards."""
    a, b, c = (vertices[faces[:, n]] for n in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


# -- nearest mesh locations -----------------------------------------------------------------------
def _closest_on_triangles(p, a, b, c):
    """Closest points on triangles (a, b, c) to points p, all (..., 3): (barycentric (..., 3), squared distance).

    The plane projection when it falls inside the triangle, else the nearest point of the three edges.
    """
    ab, ac = b - a, c - a
    n = np.cross(ab, ac)
    nn = np.maximum(np.einsum("...i,...i", n, n), 1e-30)
    ap = p - a
    # barycentric coordinates of the plane projection
    v = np.einsum("...i,...i", np.cross(ap, ac), n) / nn
    w = np.einsum("...i,...i", np.cross(ab, ap), n) / nn
    u = 1.0 - v - w
    bary = np.stack([u, v, w], axis=-1)
    inside = (u >= 0) & (v >= 0) & (w >= 0)
    best_bary = bary
    best_d2 = np.where(inside, np.einsum("...i,...i", ap, n) ** 2 / nn, np.inf)
    corners = (a, b, c)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        e = corners[j] - corners[i]
        s = np.clip(np.einsum("...i,...i", p - corners[i], e) / np.maximum(np.einsum("...i,...i", e, e), 1e-30),
                    0.0, 1.0)
        q = corners[i] + s[..., None] * e
        d2 = np.einsum("...i,...i", p - q, p - q)
        edge_bary = np.zeros_like(bary)
        edge_bary[..., i] = 1.0 - s
        edge_bary[..., j] = s
        better = ~inside & (d2 < best_d2)
        best_d2 = np.where(better, d2, best_d2)
        best_bary = np.where(better[..., None], edge_bary, best_bary)
    return best_bary, best_d2


def nearest_mesh_locations(points, vertices, faces, vertex_faces):
    """Each point's nearest location on the mesh, searched among the faces around its nearest vertices.

    Returns (face index (N,), barycentric weights (N, 3), distance mm (N,)).
    """
    k = min(NEAREST_VERTICES, len(vertices))
    _, near = cKDTree(vertices).query(points, k=k)
    candidates = vertex_faces[near].reshape(len(points), -1)  # (N, k * max_valence), -1 padded
    valid = candidates >= 0
    cand = np.where(valid, candidates, 0)
    tri = vertices[faces[cand]]  # (N, C, 3 corners, 3)
    bary, d2 = _closest_on_triangles(points[:, None, :], tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])
    d2 = np.where(valid, d2, np.inf)
    best = np.argmin(d2, axis=1)
    rows = np.arange(len(points))
    return cand[rows, best], bary[rows, best], np.sqrt(d2[rows, best])


def _vertex_faces(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """(V, max valence) faces around each vertex, padded with -1."""
    order = np.argsort(faces.ravel(), kind="stable")
    owner = faces.ravel()[order]
    face_of = order // 3
    counts = np.bincount(owner, minlength=n_vertices)
    out = -np.ones((n_vertices, counts.max()), dtype=np.int64)
    slot = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[owner, slot] = face_of
    return out


# -- input checks ---------------------------------------------------------------------------------
def prepare_surface_points(points_ras, image: Volume, merge_distance_mm: float | None = None) -> np.ndarray:
    """Validated surface points (M, 3) RAS mm: finite, inside ``image``, duplicates merged, spanning 3D.

    Points closer than ``merge_distance_mm`` (default: half the finest voxel size) are one click placed
    twice: each such group (chains included) is merged into its mean. :class:`InputError` if fewer than 4
    distinct points remain or if they all lie on one line or one plane (a template needs a volume to enclose).
    """
    pts = _as_points(points_ras, "surface points")
    require_points_inside(pts, image, "surface points")
    tol = 0.5 * float(image.spacing.min()) if merge_distance_mm is None else float(merge_distance_mm)
    pairs = np.array(sorted(cKDTree(pts).query_pairs(tol)), dtype=int).reshape(-1, 2)
    graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(pts), len(pts)))
    _, group = connected_components(graph, directed=False)
    merged = np.zeros((group.max() + 1 if len(pts) else 0, 3))
    np.add.at(merged, group, pts)
    merged /= np.maximum(np.bincount(group, minlength=len(merged)), 1)[:, None]
    if len(merged) < 4:
        extra = f" ({len(pts) - len(merged)} duplicates merged)" if len(merged) < len(pts) else ""
        raise InputError(f"surface points: need at least 4 distinct points on the object's boundary, got "
                         f"{len(merged)}{extra}; add points around the object")
    centred = merged - merged.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    extent = np.ptp(centred @ axes.T, axis=0)  # along the principal axes, largest first
    flat = 0.5 * float(image.spacing.min())
    if extent[1] < flat:
        raise InputError(f"surface points: all {len(merged)} points lie on one line; "
                         "add points around the object, on all its sides")
    if extent[2] < flat:
        raise InputError(f"surface points: all {len(merged)} points lie on one plane ({extent[2]:.2g} mm thick); "
                         "add points on the object's boundary above and below that plane")
    return merged


# -- the fitted mesh ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TemplateMesh:
    """A closed triangle mesh: ``vertices`` (V, 3) RAS mm, outward ``faces`` (F, 3) int; ``fit_error_mm``: the
    mean distance (mm) of the points to it; ``iterations``: attachment + solve rounds the fit took."""

    vertices: np.ndarray
    faces: np.ndarray
    fit_error_mm: float = 0.0
    iterations: int = 0

    @property
    def volume_mm3(self) -> float:
        return abs(signed_volume(self.vertices, self.faces))

    def mask(self, image: Volume) -> np.ndarray:
        """Bool ``[i, j, k]`` on ``image``'s grid: voxel centres inside the mesh."""
        return rasterize_mesh(self.vertices, self.faces, image)


def rasterize_mesh(vertices_ras, faces, image: Volume) -> np.ndarray:
    """Voxels of ``image`` whose centre lies inside a closed triangle mesh (RAS mm), bool ``[i, j, k]``.

    Rays along the third voxel axis through every voxel centre column; a centre is inside when an odd number
    of the mesh's triangles cross its ray below it. The mesh is mapped to continuous voxel indices first, so
    spacing, direction and origin are all honoured. The rays are shifted by a tiny irrational offset so that
    none passes exactly through a mesh edge or vertex (which would count a crossing twice).
    """
    vertices_ras = np.asarray(vertices_ras, dtype=float)
    faces = np.asarray(faces)
    idx = image.ras_to_index(vertices_ras)
    shape = np.asarray(image.shape)
    jitter = np.array([np.sqrt(2.0), np.sqrt(3.0)]) * 1e-5
    tri = idx[faces]  # (F, 3 corners, 3)
    lo = np.ceil(tri[:, :, :2].min(axis=1) - jitter).astype(int)
    hi = np.floor(tri[:, :, :2].max(axis=1) - jitter).astype(int)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, shape[:2] - 1)
    count = np.maximum(hi - lo + 1, 0)
    n_rays = count[:, 0] * count[:, 1]
    owner = np.repeat(np.arange(len(faces)), n_rays)
    if owner.size == 0:
        return np.zeros(image.shape, dtype=bool)
    local = np.arange(owner.size) - np.repeat(np.cumsum(n_rays) - n_rays, n_rays)
    ci = lo[owner, 0] + local // count[owner, 1]
    cj = lo[owner, 1] + local % count[owner, 1]
    ray = np.stack([ci, cj], axis=1) + jitter
    a, b, c = tri[owner, 0], tri[owner, 1], tri[owner, 2]
    # 2D barycentric coordinates of the ray in the triangle's (i, j) projection
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-12
    det = np.where(ok, det, 1.0)
    v = ((ray[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (ray[:, 1] - a[:, 1])) / det
    w = ((b[:, 0] - a[:, 0]) * (ray[:, 1] - a[:, 1]) - (ray[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / det
    u = 1.0 - v - w
    hit = ok & (u >= 0) & (v >= 0) & (w >= 0)
    z = (u * a[:, 2] + v * b[:, 2] + w * c[:, 2])[hit]
    # a crossing at z toggles every voxel centre above it: count crossings at the first centre above z
    first = np.clip(np.ceil(z), 0, shape[2]).astype(int)
    toggles = np.zeros((shape[0], shape[1], shape[2] + 1), dtype=np.int32)
    np.add.at(toggles, (ci[hit], cj[hit], first), 1)
    return (np.cumsum(toggles[:, :, :-1], axis=2) % 2).astype(bool)


class SurfaceTemplate:
    """A deformable closed template that follows surface points; :meth:`update` warm-starts from the last fit.

    Args:
        image: the volume the points belong to (its grid checks the points and receives the mask).
        subdivisions: icosphere level: 3 = 642 vertices (default), 4 = 2562 for large or detailed objects.
        smoothness: weight of the bending energy |L D|^2 against the points' squared distances (mm^2):
            larger = smoother and closer to an ellipsoid, smaller = tighter to the points.
        max_iterations: attachment + solve rounds at most per update.
        tolerance_mm: stop when the last round brought the points closer to the mesh by less than this on
            average (mm).
        merge_distance_mm: points closer than this are merged (default half the finest voxel size).
    """

    def __init__(self, image: Volume, subdivisions: int = 3, smoothness: float = 0.25, max_iterations: int = 30,
                 tolerance_mm: float = 0.01, merge_distance_mm: float | None = None):
        self.check_settings(smoothness, subdivisions, max_iterations, tolerance_mm)
        self.image = image
        self.smoothness = float(smoothness)
        self.max_iterations = int(max_iterations)
        self.tolerance_mm = float(tolerance_mm)
        self.merge_distance_mm = merge_distance_mm
        self._unit, self.faces = icosphere(subdivisions)
        n = len(self._unit)
        self._vertex_faces = _vertex_faces(self.faces, n)
        # the regulariser of the unknowns [D (V), M row (3), t (1)]: only D is penalised
        self._rinv = _regulariser_inverse(int(subdivisions), self.smoothness)
        self._basis = np.hstack([self._unit, np.ones((n, 1))])  # the affine part's columns per vertex
        self.mesh: TemplateMesh | None = None
        self.points: np.ndarray | None = None

    @staticmethod
    def check_settings(smoothness: float = 0.25, subdivisions: int = 3, max_iterations: int = 30,
                       tolerance_mm: float = 0.01) -> None:
        """:class:`InputError` for settings no template can be fitted with."""
        if not (np.isfinite(smoothness) and smoothness > 0):
            raise InputError(f"template smoothness must be a positive number, got {smoothness}")
        if not 1 <= int(subdivisions) <= 4:
            raise InputError(f"template subdivisions must be 1..4, got {subdivisions}")
        if int(max_iterations) < 1:
            raise InputError(f"template max_iterations must be at least 1, got {max_iterations}")
        if not tolerance_mm > 0:
            raise InputError(f"template tolerance_mm must be positive, got {tolerance_mm}")

    def reset(self) -> None:
        """Forget the last fit: the next :meth:`update` starts from the points' ellipsoid."""
        self.mesh, self.points = None, None

    def _initial_vertices(self, points: np.ndarray) -> np.ndarray:
        """The ellipsoid of the points: centroid, principal axes, semi-axes sqrt(3) x the spread (exact for
        points spread evenly over an ellipsoid's surface), at least a voxel."""
        centre = points.mean(axis=0)
        _, s, axes = np.linalg.svd(points - centre, full_matrices=False)
        radii = np.maximum(np.sqrt(3.0) * s / np.sqrt(len(points)), float(self.image.spacing.max()))
        return centre + (self._unit * radii) @ axes

    def _solve(self, points: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """New vertices for fixed attachments (point p at weights ``bary[p]`` on the corners of ``face[p]``).

        With ``R`` the regulariser and ``A`` the (P, V) attachment rows, the optimal displacement for a given
        affine part ``a`` leaves the residual cost ``r' S^-1 r``, ``S = I + A R^-1 A'``, ``r = x - A U a``: so
        ``a`` is a (P x 4) generalised least-squares fit and ``D = R^-1 A' S^-1 r``. Only P x P systems are
        solved per round; ``R^-1`` is computed once per template.
        """
        corners = self.faces[face]  # (P, 3)
        attach_rinv = np.einsum("pi,piv->pv", bary, self._rinv[corners])  # A R^-1, (P, V)
        gram = np.einsum("pqj,qj->pq", attach_rinv[:, corners], bary)  # A R^-1 A'
        factor = cho_factor(np.identity(len(points)) + gram)
        design = np.einsum("pi,pic->pc", bary, self._basis[corners])  # (P, 4): attachment of the affine part
        s_design, s_points = cho_solve(factor, design), cho_solve(factor, points)
        affine = np.linalg.lstsq(design.T @ s_design, design.T @ s_points, rcond=None)[0]  # (4, 3)
        weights = cho_solve(factor, points - design @ affine)  # (P, 3)
        return self._basis @ affine + attach_rinv.T @ weights

    def update(self, points_ras) -> TemplateMesh:
        """Fit the template to ``points_ras`` (N, 3) RAS mm, starting from the previous fit if there is one.

        :class:`InputError` for bad points (see :func:`prepare_surface_points`); the previous fit is kept then.
        """
        points = prepare_surface_points(points_ras, self.image, self.merge_distance_mm)
        vertices = self.mesh.vertices if self.mesh is not None else self._initial_vertices(points)
        face, bary, distance = nearest_mesh_locations(points, vertices, self.faces, self._vertex_faces)
        iterations, gain = 0, np.inf
        # stop when a round brings the points no closer (on average) than tolerance_mm: later rounds only let
        # the attachments slide along the surface
        while iterations < self.max_iterations and gain >= self.tolerance_mm:
            vertices = self._solve(points, face, bary)
            before = distance.mean()
            face, bary, distance = nearest_mesh_locations(points, vertices, self.faces, self._vertex_faces)
            gain, iterations = before - distance.mean(), iterations + 1
        faces = self.faces
        volume = signed_volume(vertices, faces)
        if not np.all(np.isfinite(vertices)) or abs(volume) < float(np.prod(self.image.spacing)):
            raise InputError("surface points: the template collapsed (its volume is under one voxel); "
                             "add points on all sides of the object")
        if volume < 0:  # the affine part mirrored the sphere: keep the triangles facing outwards
            faces = faces[:, ::-1]
        self.mesh = TemplateMesh(vertices, np.ascontiguousarray(faces), float(distance.mean()), iterations)
        self.points = points
        return self.mesh

    def mask(self) -> np.ndarray:
        """The last fit rasterised on the image grid, bool ``[i, j, k]``."""
        if self.mesh is None:
            raise InputError("no template yet: place at least 4 surface points first")
        return self.mesh.mask(self.image)


def fit_surface_template(image: Volume, points_ras, **params) -> TemplateMesh:
    """Cold fit of the template to surface points (see :class:`SurfaceTemplate` for ``params``)."""
    return SurfaceTemplate(image, **params).update(points_ras)


def surface_points_pseudolabel(image: Volume, points_ras, **params) -> PseudoLabel:
    """The rasterised template as a hard two-class pseudo-label, trusted everywhere (weight 1)."""
    mask = fit_surface_template(image, points_ras, **params).mask(image)
    return PseudoLabel.from_foreground(mask.astype(np.float32), image)
