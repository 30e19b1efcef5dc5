"""PseudoLabel: what every pseudo-label maker returns and every training recipe consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..volume import Volume


@dataclass(frozen=True, eq=False)
class PseudoLabel:
    """Soft class probabilities on an image grid, and how much each voxel is trusted.

    ``probabilities``: float32 (C, I, J, K), class 0 = background, summing to 1 over C.
    ``weight``: float32 (I, J, K) in [0, 1]; 0 = unknown (no loss there), 1 = fully trusted.
    ``geometry``: the grid the arrays live on (its array is not used).
    """

    probabilities: np.ndarray
    weight: np.ndarray
    geometry: Volume

    def __post_init__(self):
        p = np.asarray(self.probabilities, dtype=np.float32)
        w = np.asarray(self.weight, dtype=np.float32)
        if p.ndim != 4 or p.shape[0] < 2 or p.shape[1:] != self.geometry.shape:
            raise InputError(f"probabilities must be (C>=2,) + {self.geometry.shape}, got {p.shape}")
        if w.shape != self.geometry.shape:
            raise InputError(f"weight must have shape {self.geometry.shape}, got {w.shape}")
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(w))):
            raise InputError("pseudo-label holds NaN values")
        object.__setattr__(self, "probabilities", p)
        object.__setattr__(self, "weight", w)

    @classmethod
    def from_foreground(cls, foreground_probability, geometry: Volume, weight=None) -> "PseudoLabel":
        """Binary case: P(foreground) per voxel -> two-class PseudoLabel (weight 1 unless given)."""
        fg = np.clip(np.asarray(foreground_probability, dtype=np.float32), 0.0, 1.0)
        w = np.ones_like(fg) if weight is None else weight
        return cls(np.stack([1.0 - fg, fg]), w, geometry)

    @property
    def num_classes(self) -> int:
        return self.probabilities.shape[0]

    def hard(self) -> np.ndarray:
        """Most probable class per voxel (uint8)."""
        return np.argmax(self.probabilities, axis=0).astype(np.uint8)

    def crop(self, lo, hi) -> "PseudoLabel":
        geometry = self.geometry.crop(lo, hi)
        sl = tuple(slice(a, a + n) for a, n in zip(np.maximum(lo, 0), geometry.shape))
        return PseudoLabel(self.probabilities[(slice(None),) + sl], self.weight[sl], geometry)
