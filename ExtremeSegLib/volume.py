"""A volume: a 3D array with its voxel-to-world geometry.

Convention used everywhere in the core: ``array[i, j, k]`` (array axis n is IJK axis n)
and ``ijk_to_ras`` a 4x4 matrix mapping continuous voxel indices to RAS millimetres.
Readers and the MRML adapter convert to this once; nothing inside the core transposes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: Multiply an LPS point (or matrix, on the left) by this to get RAS, and vice versa.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def geometry_matrix(spacing, origin=(0.0, 0.0, 0.0), direction=None) -> np.ndarray:
    """4x4 IJK-to-RAS matrix from spacing (mm), origin (RAS mm) and 3x3 direction (unit columns)."""
    spacing = np.asarray(spacing, dtype=float)
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    m = np.eye(4)
    m[:3, :3] = direction * spacing[None, :]
    m[:3, 3] = np.asarray(origin, dtype=float)
    return m


@dataclass(frozen=True, eq=False)
class Volume:
    """3D array ``[i, j, k]`` plus its 4x4 IJK-to-RAS matrix (mm)."""

    array: np.ndarray
    ijk_to_ras: np.ndarray

    def __post_init__(self):
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise InputError(f"a volume must be 3D, got an array of shape {array.shape}")
        if min(array.shape) < 1:
            raise InputError(f"a volume must not be empty, got shape {array.shape}")
        m = np.asarray(self.ijk_to_ras, dtype=float)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise InputError("the IJK-to-RAS matrix must be a finite 4x4 matrix")
        if abs(np.linalg.det(m[:3, :3])) < 1e-12:
            raise InputError("the IJK-to-RAS matrix is singular (zero spacing or collapsed direction)")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "ijk_to_ras", m)

    @classmethod
    def from_spacing(cls, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> "Volume":
        return cls(np.asarray(array), geometry_matrix(spacing, origin, direction))

    # -- geometry -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.array.shape

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in mm."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the i, j, k axes."""
        return self.ijk_to_ras[:3, :3] / self.spacing[None, :]

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    def index_to_ras(self, index) -> np.ndarray:
        """Continuous voxel indices (..., 3) -> RAS mm (..., 3)."""
        index = np.asarray(index, dtype=float)
        return index @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def ras_to_index(self, ras) -> np.ndarray:
        """RAS mm (..., 3) -> continuous voxel indices (..., 3)."""
        ras = np.asarray(ras, dtype=float)
        inv = self.ras_to_ijk
        return ras @ inv[:3, :3].T + inv[:3, 3]

    def contains_index(self, index, margin: float = 0.5) -> np.ndarray:
        """True where continuous indices fall inside the voxel grid (voxel centres +- ``margin``)."""
        index = np.asarray(index, dtype=float)
        upper = np.asarray(self.shape, dtype=float) - 1 + margin
        return np.all((index >= -margin) & (index <= upper), axis=-1)

    def same_geometry(self, other: "Volume", atol_mm: float = 1e-3) -> bool:
        """Same grid shape and the same voxel-to-RAS mapping within ``atol_mm`` over the whole grid."""
        if self.shape != other.shape:
            return False
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.shape], indexing="ij")).reshape(3, -1).T
        return bool(np.max(np.abs(self.index_to_ras(corners) - other.index_to_ras(corners))) <= atol_mm)

    def require_same_geometry(self, other: "Volume", what: str = "the annotation", atol_mm: float = 1e-3) -> None:
        """Raise :class:`InputError` unless ``other`` lies on the same voxel grid."""
        if not self.same_geometry(other, atol_mm):
            raise InputError(
                f"{what} does not share the image's geometry: shape {other.shape} vs {self.shape}, "
                f"spacing {np.round(other.spacing, 4).tolist()} vs {np.round(self.spacing, 4).tolist()} mm, "
                f"origin {np.round(other.origin, 3).tolist()} vs {np.round(self.origin, 3).tolist()} mm; "
                "resample it onto the image first"
            )

    def require_finite(self, what: str = "the image") -> None:
        """Raise :class:`InputError` if the array holds NaN or infinite values."""
        if np.issubdtype(self.array.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(self.array)))
            if bad:
                raise InputError(f"{what} has {bad} NaN or infinite voxels; fix or mask them before use")

    # -- derived volumes ------------------------------------------------------------------------
    def with_array(self, array) -> "Volume":
        """Same geometry, other voxel values (shape must match)."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise InputError(f"array shape {array.shape} does not match the volume's {self.shape}")
        return Volume(array, self.ijk_to_ras)

    def crop(self, lo, hi) -> "Volume":
        """Sub-volume ``array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]`` with its origin moved accordingly."""
        lo = np.maximum(np.asarray(lo, dtype=int), 0)
        hi = np.minimum(np.asarray(hi, dtype=int), self.shape)
        if np.any(hi <= lo):
            raise InputError(f"empty crop {lo.tolist()}..{hi.tolist()} of a volume of shape {self.shape}")
        m = self.ijk_to_ras.copy()
        m[:3, 3] = self.index_to_ras(lo)
        return Volume(self.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], m)
