"""Guided point placement: what the user has clicked so far, what is still missing, what is wrong.

The module panel shows :attr:`PlacementGuide.message` under the point list after every click.
Pure Python on the core's types (RAS points + :class:`~ExtremeSegLib.volume.Volume`); no slicer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ExtremeSegLib.annotations import AXIS_NAMES, ExtremePoints, SurfacePoints, require_distinct, require_points_inside
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.volume import Volume

EXTREME_POINTS_REQUIRED = 6

#: RAS axis -> (name of its low end, name of its high end): +x is Right, +y Anterior, +z Superior.
_RAS_ENDS = (("left", "right"), ("posterior", "anterior"), ("inferior", "superior"))


@dataclass(frozen=True)
class PlacementGuide:
    """State of a point list being placed.

    ``pairs``: for extreme points, per image axis I, J, K the 1-based numbers of the clicks that
    bound the object along it (0, 1 or 2 of them, low index first when known).
    ``complete``: the points are valid and enough; ``error``: ``message`` says what is wrong.
    """

    count: int
    required: int
    pairs: tuple = ((), (), ())
    message: str = ""
    complete: bool = False
    error: bool = False


def axis_label(image: Volume, axis: int) -> str:
    """``"K (inferior-superior)"``: the image axis and the anatomical direction it mostly runs along."""
    d = image.direction[:, axis]
    ras = int(np.argmax(np.abs(d)))
    low, high = _RAS_ENDS[ras]
    if d[ras] < 0:
        low, high = high, low
    return f"{AXIS_NAMES[axis]} ({low}-{high})"


def _validate(points: np.ndarray, image: Volume, what: str) -> str:
    """The first problem with the clicks so far, or ''."""
    try:
        require_points_inside(points, image, what)
        require_distinct(points, 0.5 * float(image.spacing.min()), what)
    except InputError as err:
        return str(err)
    return ""


def _partial_pairs(index_mm: np.ndarray):
    """Best split of fewer than 6 clicks into pairs on distinct axes (+ one lone click if odd).

    Returns ``(pairs, lone)``: ``pairs`` maps axis -> (p, q) clicks (0-based), ``lone`` a click or None.
    The score is the summed separation (mm) of each pair along its axis, as for a full set.
    """
    n = len(index_mm)
    best, best_score = ({}, None), -np.inf
    lone_choices = [None] if n % 2 == 0 else list(range(n))
    for lone in lone_choices:
        rest = [p for p in range(n) if p != lone]
        for order in itertools.permutations(rest):
            pairs = [tuple(sorted(order[i:i + 2])) for i in range(0, len(order), 2)]
            for axes in itertools.permutations(range(3), len(pairs)):
                score = sum(abs(index_mm[p, a] - index_mm[q, a]) for (p, q), a in zip(pairs, axes))
                if score > best_score + 1e-9:
                    best, best_score = (dict(zip(axes, pairs)), lone), score
    return best


def extreme_points_guide(points_ras, image: Volume) -> PlacementGuide:
    """Where a user stands with the 6 extreme-point clicks on ``image`` (any click order)."""
    points = np.asarray(points_ras, dtype=float).reshape(-1, 3)
    n = len(points)
    axes_text = ", ".join(axis_label(image, a) for a in range(3))
    if n == 0:
        return PlacementGuide(0, EXTREME_POINTS_REQUIRED, message=(
            f"Place 6 extreme points: the two ends of the object along each image axis ({axes_text}), "
            "in any order."))
    problem = _validate(points, image, "extreme points")
    if problem:
        return PlacementGuide(n, EXTREME_POINTS_REQUIRED, message=problem, error=True)
    if n > EXTREME_POINTS_REQUIRED:
        extra = n - EXTREME_POINTS_REQUIRED
        return PlacementGuide(n, EXTREME_POINTS_REQUIRED, error=True, message=(
            f"{n} points placed: remove {extra} (only the 6 extreme points, two per axis, are used)."))
    if n == EXTREME_POINTS_REQUIRED:
        try:
            extreme = ExtremePoints.from_points(points, image)
        except InputError as err:
            return PlacementGuide(n, EXTREME_POINTS_REQUIRED, message=str(err), error=True)
        number = {tuple(np.round(p, 6)): i + 1 for i, p in enumerate(points)}
        pairs = tuple(tuple(number[tuple(np.round(p, 6))] for p in extreme.ras[a]) for a in range(3))
        return PlacementGuide(n, EXTREME_POINTS_REQUIRED, pairs=pairs, complete=True, message=(
            "6 of 6 extreme points placed: " + "; ".join(
                f"{axis_label(image, a)} points {pairs[a][0]}, {pairs[a][1]}" for a in range(3)) + "."))

    index_mm = image.ras_to_index(points) * image.spacing
    axis_pairs, lone = _partial_pairs(index_mm)
    pairs = [(), (), ()]
    for a, (p, q) in axis_pairs.items():
        if index_mm[p, a] > index_mm[q, a]:
            p, q = q, p
        pairs[a] = (p + 1, q + 1)
    free_axes = [a for a in range(3) if not pairs[a]]
    parts = [f"{n} of 6 extreme points placed."]
    done = [f"{axis_label(image, a)} points {pairs[a][0]}, {pairs[a][1]}" for a in range(3) if pairs[a]]
    if done:
        parts.append("Paired: " + "; ".join(done) + ".")
    if lone is not None:
        if len(free_axes) == 1:  # the lone click can only belong to the one axis left
            pairs[free_axes[0]] = (lone + 1,)
            parts.append(f"Point {lone + 1} has no partner: click the object's opposite end along "
                         f"{axis_label(image, free_axes[0])}.")
            free_axes = []
        else:
            parts.append(f"Point {lone + 1} has no partner: click the object's opposite end along the same axis.")
            free_axes = free_axes[:-1]  # one of the free axes is the lone click's
    if free_axes:
        if lone is None:
            parts.append("Missing: both ends along " + " and ".join(axis_label(image, a) for a in free_axes) + ".")
        else:
            parts.append(f"Then both ends along the {'other axis' if len(free_axes) == 1 else 'other axes'}.")
    return PlacementGuide(n, EXTREME_POINTS_REQUIRED, pairs=tuple(pairs), message=" ".join(parts))


def surface_points_guide(points_ras, image: Volume) -> PlacementGuide:
    """Where a user stands with the sparse surface points on ``image``."""
    points = np.asarray(points_ras, dtype=float).reshape(-1, 3)
    n, need = len(points), SurfacePoints.MIN_POINTS
    if n == 0:
        return PlacementGuide(0, need, message=(
            f"Place at least {need} points on the object's boundary, spread over its whole surface "
            "(several slices, all sides)."))
    problem = _validate(points, image, "surface points")
    if problem:
        return PlacementGuide(n, need, message=problem, error=True)
    if n < need:
        return PlacementGuide(n, need, message=f"{n} of at least {need} surface points placed: add {need - n} more.")
    SurfacePoints.from_points(points, image)  # the same checks, as the training will run them
    return PlacementGuide(n, need, complete=True, message=(
        f"{n} surface points placed; more points on poorly covered sides improve the template."))
