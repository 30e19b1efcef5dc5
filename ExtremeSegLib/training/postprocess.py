"""Cleaning a network's label map with what the annotations and the objects say (the job's ``postprocess``).

- ``clip_to_points``: with test-time clicks, everything outside the clicks' box, relaxed by ``box_margin_mm``,
  is background: 6 extreme points bound their object.
- ``largest_component``: each class keeps its largest 26-connected component (one object per class); the
  rest becomes background.
- ``convex``: each class (``true``) or the named classes (a list of class names), slice by slice across the
  coarsest axis, become their convex hull (a shape prior for objects convex in those slices, such as the left
  ventricle's cavity, never for the myocardium's ring; off by default).

Only the label map is cleaned; probability maps stay the network's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

import numpy as np

from ..errors import InputError
from ..masks import convex_slices, largest_component


@dataclass(frozen=True)
class PostprocessConfig:
    """The ``postprocess`` section of a job, stored in the model file and applied by every prediction."""

    clip_to_points: bool = True
    box_margin_mm: float = 3.0
    largest_component: bool = True
    convex: Union[bool, Tuple[str, ...]] = False  # every class, none, or the classes of these names

    def __post_init__(self):
        if not self.box_margin_mm >= 0:
            raise InputError(f"postprocess.box_margin_mm must be >= 0, got {self.box_margin_mm}")
        if isinstance(self.convex, list):
            object.__setattr__(self, "convex", tuple(self.convex))
        if not (isinstance(self.convex, bool) or
                (isinstance(self.convex, tuple) and all(isinstance(n, str) for n in self.convex))):
            raise InputError(f"postprocess.convex must be true, false or a list of class names, got {self.convex!r}")

    def check_classes(self, class_names) -> None:
        """:class:`InputError` when ``convex`` names a class not among ``class_names``."""
        unknown = [] if isinstance(self.convex, bool) else [n for n in self.convex if n not in class_names]
        if unknown:
            raise InputError(f"postprocess.convex names {unknown[0]!r}, which is not a class of the job "
                             f"({', '.join(class_names)})")

    def makes_convex(self, index: int, class_names=None) -> bool:
        """Whether class ``index`` (1-based; 0 is background) becomes its convex hull; ``class_names``: the
        foreground classes in order (needed when ``convex`` names classes)."""
        if isinstance(self.convex, bool):
            return self.convex
        if class_names is None:
            raise InputError("postprocess.convex names classes; the class names are needed to apply it")
        return 0 < index <= len(class_names) and class_names[index - 1] in self.convex

    @classmethod
    def from_description(cls, data) -> "PostprocessConfig":
        """From a model file's description; files written before post-processing existed get none."""
        if data is None:
            return cls(clip_to_points=False, largest_component=False, convex=False)
        return cls(**data)


def postprocess_labels(labels: np.ndarray, spacing, settings: PostprocessConfig, box=None,
                       class_names=None) -> np.ndarray:
    """A cleaned copy of the class-index map ``labels`` (0 = background) on a grid of ``spacing`` (mm).

    ``box``: ``(lo, hi)`` voxel indices of the clicks' relaxed box on this grid (``None``: no clicks, no
    clipping). ``class_names``: the foreground classes in order (needed when ``settings.convex`` names
    classes). Classes are cleaned in increasing order; a voxel a convex hull claims is given to it only
    where it was background.
    """
    out = np.array(labels, copy=True)
    if settings.clip_to_points and box is not None:
        inside = np.zeros(out.shape, dtype=bool)
        inside[tuple(slice(int(a), int(b)) for a, b in zip(*box))] = True
        out[~inside] = 0
    for c in [int(v) for v in np.unique(out) if v > 0]:
        mask = out == c
        kept = largest_component(mask) if settings.largest_component else mask
        out[mask & ~kept] = 0
        if settings.makes_convex(c, class_names):
            out[convex_slices(kept, spacing) & (out == 0)] = c
    return out


def clean_label_map(labels: np.ndarray, image, settings: PostprocessConfig, points=None,
                    class_names=None) -> np.ndarray:
    """:func:`postprocess_labels` of a label map on ``image``'s grid (a :class:`~ExtremeSegLib.volume.Volume`),
    the box taken from the object's extreme ``points`` (``None``: no clicks)."""
    box = None if points is None else points.box_index(image, settings.box_margin_mm)
    return postprocess_labels(labels, image.spacing, settings, box, class_names)
