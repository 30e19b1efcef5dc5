"""Maker settings chosen from the data in front of the maker, not per data set.

A Slicer user never sees the random walker's ``beta``, the seed paths' radius or the background-seed distance;
they get what these rules choose from the image and the clicks (explicit settings stay overrides). The rules
were chosen on the training splits of ``benchmarks/splits/`` (hippocampus, ACDC) and checked on the test splits
(``benchmarks/results/pseudolabel_defaults.md``).

The one measure the rules read is the object's **contrast along its paths**: how far (in standard deviations of
the region's intensities) the median intensity on the middle of the geodesic paths, which run inside the object,
lies from the median on the region's outer shell, which is background by construction. It is a ratio, so it
does not depend on the scanner's units.

- A *clear* object (contrast >= ``CLEAR_CONTRAST``, e.g. a ventricle's bright blood pool) has edges the walker
  finds by itself: a sharper walker (``beta`` 600) follows them, thicker seed paths (a tenth of the object's
  smallest extent) give it more of the object, and background seeds near the paths would only cut into it.
- A *faint* object (e.g. the hippocampus among grey matter) leaks: a softer walker (``beta`` 300) with thin
  seed paths (4 % of the smallest extent, at least 1 mm: its edge cannot be seen, so the seeds keep away from
  it), and background seeds just beyond where a first walk puts the object (:func:`background_reach_mm`), which
  stop the leak without cutting into it. "Where" is a robust maximum, the distance from the paths within which
  99 % of the first walk's object lies (:data:`REACH_QUANTILE`): the farthest voxels of a faint object's first
  walk are the tips of its leaks, not the object (on the hippocampus the maximum lay about 2 mm beyond it).

Stacks of thick slices (coarsest voxel at least twice the finest) always get the clear settings
(:func:`regime`), and those whose first label nearly fills its slices' convex hulls the convex-slices prior
(:func:`wants_convex`).

On the training split every hippocampus case measured faint (contrast 0.49-1.43, every 4th case); ACDC's
structures spread over 0.02-2.7 (the myocardium's paths cross the blood pool), which is one reason the thick-slice
rule, not the contrast, decides there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: contrast along the paths (region standard deviations) from which an object counts as clear
CLEAR_CONTRAST = 1.5
#: per regime: random-walker beta and seed-path radius as a fraction of the smallest click distance
CLEAR = {"beta": 600.0, "path_radius_fraction": 0.1}
FAINT = {"beta": 300.0, "path_radius_fraction": 0.04}
#: a faint object's background seeds lie beyond the distance from the paths within which this share of a first
#: walk's object lies (a robust maximum: the farthest 1 % are the tips of its leaks)
REACH_QUANTILE = 0.99
#: the convex-slices prior is taken where the first label fills at least this share of its slices' convex hulls
CONVEX_MIN_SOLIDITY = 0.9


def path_contrast(intensities: np.ndarray, paths, end_fraction: float = 0.15) -> float:
    """Contrast of the object along its paths against the region's outer shell.

    Parameters
    ----------
    intensities : ndarray, shape (I, J, K)
        The maker's region (normalised intensities); its outer one-voxel shell is background.
    paths : sequence of ndarrays of int, shape (N_a, 3)
        The geodesic paths' voxel indices in the region.
    end_fraction : float, optional
        Fraction of each path left out at both ends (the ends are clicks on the object's surface).

    Returns
    -------
    float
        ``|median on the paths' middles - median on the shell| / std of the region`` (0 for a flat region).
    """
    middles = np.concatenate([p[int(end_fraction * len(p)):max(int(np.ceil((1 - end_fraction) * len(p))), 1)]
                              for p in paths])
    shell = np.ones(intensities.shape, dtype=bool)
    shell[tuple(slice(1, -1) for _ in range(3))] = False
    spread = float(np.std(intensities))
    if spread == 0 or not shell.any():
        return 0.0
    inside = float(np.median(intensities[tuple(middles.T)]))
    return abs(inside - float(np.median(intensities[shell]))) / spread


def regime(contrast: float, spacing=(1.0, 1.0, 1.0), clear_contrast: float = CLEAR_CONTRAST) -> dict:
    """The walker's and seeds' settings for an object of this contrast (see the module's text).

    On a stack of thick slices (:func:`has_thick_slices`) every object gets the clear settings: each thick
    slice is segmented almost on its own from the seeds that cross it, mostly the dilated path along the
    slices, so the faint treatment's thin seed paths leave slices with almost no seed (on ACDC it cost two left
    ventricles 0.23 and 0.28 Dice).

    Parameters
    ----------
    contrast : float
        :func:`path_contrast`.
    spacing : sequence of 3 floats, optional
        Voxel size in mm per axis.
    clear_contrast : float, optional
        Threshold between faint and clear objects.

    Returns
    -------
    dict
        ``{"clear": bool, "beta": float, "path_radius_fraction": float}``.
    """
    clear = bool(contrast >= clear_contrast or has_thick_slices(spacing))
    return {"clear": clear, **(CLEAR if clear else FAINT)}


def background_reach_mm(first_foreground: np.ndarray, paths, spacing, quantile: float = REACH_QUANTILE) -> float:
    """How far (mm) from its paths a first walk puts the object: background seeds belong beyond this.

    Parameters
    ----------
    first_foreground : ndarray of bool, shape (I, J, K)
        The first walk's foreground (P > 0.5) connected to the seeds.
    paths : sequence of ndarrays of int, shape (N_a, 3)
        The paths' voxel indices.
    spacing : sequence of 3 floats
        Voxel size in mm per axis.
    quantile : float, optional
        Share (0..1] of ``first_foreground``'s voxels within the returned distance (1: the farthest voxel; the
        default leaves out the tips of leaks, :data:`REACH_QUANTILE`).

    Returns
    -------
    float
        The distance (mm) from the paths within which ``quantile`` of ``first_foreground``'s voxels lie (linear
        interpolation between voxels); ``inf`` when it is empty (no background seeds then).
    """
    if not first_foreground.any():
        return float("inf")
    away = np.ones(first_foreground.shape, dtype=bool)
    away[tuple(np.concatenate(paths).T)] = False
    distances = ndi.distance_transform_edt(away, sampling=spacing)[first_foreground]
    return float(np.quantile(distances, quantile))


def has_thick_slices(spacing, ratio: float = 2.0) -> bool:
    """Whether the image is a stack of slices: its coarsest voxel size is at least ``ratio`` times its finest."""
    spacing = np.asarray(spacing, dtype=float)
    return bool(spacing.max() >= ratio * spacing.min())


def wants_convex(solidity: float, spacing, min_solidity: float = CONVEX_MIN_SOLIDITY) -> bool:
    """Whether the convex-slices prior (:func:`ExtremeSegLib.masks.convex_slices`) suits the object.

    The prior belongs to stacks of thick slices (:func:`has_thick_slices`; a short-axis cine), where each slice is
    a 2D picture of the object; on a near-isotropic volume the slicing axis would be arbitrary (and the
    hippocampus's curve loses a tenth of its Dice to the hulls). An object whose first label already fills at
    least ``min_solidity`` of its slices' hulls is convex in them up to what the walker cut out (a ventricle's
    trabeculae and papillary muscles, darker than its blood); a crescent or a ring leaves more of its hulls empty
    and keeps its shape.

    Parameters
    ----------
    solidity : float
        The first pseudo-label's voxels / its slices' convex hulls' voxels (0..1].
    spacing : sequence of 3 floats
        Voxel size in mm per axis.
    min_solidity : float, optional

    Returns
    -------
    bool
    """
    return bool(has_thick_slices(spacing) and solidity >= min_solidity)
