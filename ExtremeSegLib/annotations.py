"""Weak annotations and their validation: extreme points, scribbles, surface points.

Points are RAS millimetres (the frame Slicer shows); they become voxel indices only through
the image they belong to. Every check raises :class:`InputError` with a sentence a user can act on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .volume import Volume

AXIS_NAMES = ("I", "J", "K")


def _as_points(points, what: str) -> np.ndarray:
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"{what} must be a list of 3D points, got an array of shape {pts.shape}")
    bad = np.flatnonzero(~np.all(np.isfinite(pts), axis=1))
    if bad.size:
        raise InputError(f"{what}: point {bad[0] + 1} has a NaN or infinite coordinate")
    return pts


def require_points_inside(points_ras: np.ndarray, image: Volume, what: str) -> np.ndarray:
    """Continuous indices of the points; :class:`InputError` naming the first one outside the image."""
    index = image.ras_to_index(points_ras)
    inside = image.contains_index(index)
    if not np.all(inside):
        n = int(np.flatnonzero(~inside)[0])
        lo = image.index_to_ras(np.zeros(3))
        hi = image.index_to_ras(np.asarray(image.shape) - 1)
        raise InputError(
            f"{what}: point {n + 1} at RAS {np.round(points_ras[n], 2).tolist()} mm lies outside the image "
            f"(voxel {np.round(index[n], 1).tolist()} of a {list(image.shape)} grid spanning RAS "
            f"{np.round(lo, 1).tolist()} to {np.round(hi, 1).tolist()} mm)"
        )
    return index


def require_distinct(points_ras: np.ndarray, min_distance_mm: float, what: str) -> None:
    """:class:`InputError` if two points are closer than ``min_distance_mm`` (a double click)."""
    for a, b in itertools.combinations(range(len(points_ras)), 2):
        if np.linalg.norm(points_ras[a] - points_ras[b]) < min_distance_mm:
            raise InputError(
                f"{what}: points {a + 1} and {b + 1} are the same spot "
                f"(less than {min_distance_mm:.2g} mm apart); remove the duplicate click"
            )


def _pairings(n: int):
    """All ways to split range(n) (n even) into unordered pairs."""
    if n == 0:
        yield []
        return
    for partner in range(1, n):
        rest = [x for x in range(1, n) if x != partner]
        for tail in _pairings(len(rest)):
            yield [(0, partner)] + [(rest[a], rest[b]) for a, b in tail]


@dataclass(frozen=True, eq=False)
class ExtremePoints:
    """Six clicks on an object's surface, paired per image axis.

    ``ras[a]`` holds the two points that bound the object along voxel axis ``a`` (I, J, K),
    the one with the lower index first.
    """

    ras: np.ndarray  # (3, 2, 3)

    @classmethod
    def from_points(cls, points_ras, image: Volume) -> "ExtremePoints":
        """Pair 6 clicks (any order) into 3 axes of ``image`` and validate them.

        The pairing maximises, over all 90 ways to split the clicks into 3 axis-assigned pairs,
        the sum of each pair's separation along its axis relative to the clicks' spread on that axis.
        """
        pts = _as_points(points_ras, "extreme points")
        if len(pts) != 6:
            raise InputError(
                f"extreme points: expected exactly 6 clicks (the two ends of the object along each of the "
                f"3 image axes), got {len(pts)}"
            )
        index = require_points_inside(pts, image, "extreme points")
        require_distinct(pts, 0.5 * float(image.spacing.min()), "extreme points")

        spread = index.max(axis=0) - index.min(axis=0)
        best, best_score = None, -np.inf
        for pairs in _pairings(6):
            for axes in itertools.permutations(range(3)):
                score = sum(
                    abs(index[p, a] - index[q, a]) / max(spread[a], 1e-9) for (p, q), a in zip(pairs, axes)
                )
                if score > best_score + 1e-9:
                    best, best_score = (pairs, axes), score
        pairs, axes = best
        ras = np.zeros((3, 2, 3))
        for (p, q), a in zip(pairs, axes):
            if index[p, a] > index[q, a]:
                p, q = q, p
            if abs(index[q, a] - index[p, a]) < 0.5:
                raise InputError(
                    f"extreme points: the object has no extent along image axis {AXIS_NAMES[a]} "
                    f"(points {p + 1} and {q + 1} lie in the same voxel plane); "
                    "place the two clicks on that axis at the object's opposite ends"
                )
            ras[a] = pts[[p, q]]
        return cls(ras)

    @property
    def points_ras(self) -> np.ndarray:
        """(6, 3) points in axis order: I-low, I-high, J-low, J-high, K-low, K-high."""
        return self.ras.reshape(6, 3)

    def index(self, image: Volume) -> np.ndarray:
        """(3, 2, 3) continuous voxel indices in ``image``."""
        return image.ras_to_index(self.ras)

    def box_index(self, image: Volume, pad_mm: float = 0.0):
        """Integer box ``(lo, hi)`` (hi exclusive) around the points, padded by ``pad_mm`` per side, clipped."""
        idx = self.index(image).reshape(-1, 3)
        pad = np.ceil(pad_mm / image.spacing).astype(int)
        lo = np.floor(idx.min(axis=0) + 0.5).astype(int) - pad
        hi = np.floor(idx.max(axis=0) + 0.5).astype(int) + 1 + pad
        return np.maximum(lo, 0), np.minimum(hi, image.shape)


@dataclass(frozen=True, eq=False)
class Scribbles:
    """A label map of scribbles: ``unannotated`` where nothing was drawn, ``background`` for the
    background scribble, any other value for a foreground class."""

    labels: Volume
    unannotated: int = 4
    background: int = 0

    def __post_init__(self):
        arr = self.labels.array
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise InputError("scribbles must be an integer label map")
            object.__setattr__(self, "labels", self.labels.with_array(arr.astype(np.int32)))
        if self.unannotated == self.background:
            raise InputError("scribbles: the unannotated value must differ from the background value")
        present = set(np.unique(self.labels.array).tolist())
        if self.background not in present:
            raise InputError(
                f"scribbles have no background scribble (value {self.background}); draw some background too"
            )
        if not present - {self.background, self.unannotated}:
            raise InputError("scribbles have no foreground scribble; draw at least one structure")

    @property
    def classes(self) -> list:
        """Label values present: background first, then the foreground classes in increasing order."""
        values = set(np.unique(self.labels.array).tolist()) - {self.unannotated, self.background}
        return [self.background] + sorted(values)

    def seeds(self) -> np.ndarray:
        """int array: -1 unannotated, 0 background, 1..K the foreground classes in :attr:`classes` order."""
        out = np.full(self.labels.shape, -1, dtype=np.int16)
        for n, value in enumerate(self.classes):
            out[self.labels.array == value] = n
        return out

    def require_matches(self, image: Volume) -> None:
        self.labels.require_same_geometry(image, "the scribbles")


@dataclass(frozen=True, eq=False)
class SurfacePoints:
    """A sparse set of points on an object's boundary, RAS mm (N, 3)."""

    ras: np.ndarray

    MIN_POINTS = 6

    @classmethod
    def from_points(cls, points_ras, image: Volume) -> "SurfacePoints":
        pts = _as_points(points_ras, "surface points")
        if len(pts) < cls.MIN_POINTS:
            raise InputError(f"surface points: need at least {cls.MIN_POINTS} points on the boundary, got {len(pts)}")
        require_points_inside(pts, image, "surface points")
        require_distinct(pts, 0.5 * float(image.spacing.min()), "surface points")
        return cls(pts)
