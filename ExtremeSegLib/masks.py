"""Small array-in/array-out helpers on intensities and boolean masks that every maker, refiner and the
label-map cleaning share.

Every distance is in millimetres and honours the voxel ``spacing`` (mm per array axis), so that a radius
means the same on isotropic hippocampus volumes and on ACDC's 1.5 x 1.5 x 10 mm grids. Masks are boolean
arrays ``(I, J, K)``; connectivity is 26 (full) in 3D. Nothing here knows about volumes, points or recipes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: 26-connectivity in 3D: voxels that share a face, an edge or a corner are neighbours
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def normalise_intensities(array: np.ndarray, low_percentile: float = 1.0, high_percentile: float = 99.0) -> np.ndarray:
    """Map the intensity percentiles of an image to [0, 1].

    Parameters
    ----------
    array : ndarray
        Intensities of any shape (e.g. ``(I, J, K)``).
    low_percentile, high_percentile : float, optional
        Percentiles (0..100) of ``array`` mapped to 0 and 1; values beyond them are clipped.

    Returns
    -------
    ndarray of float64, same shape as ``array``
        Normalised intensities in [0, 1]; all zeros when the two percentiles coincide (a flat image).
    """
    data = np.asarray(array, dtype=np.float64)
    lo, hi = np.percentile(data, [low_percentile, high_percentile])
    if hi <= lo:
        return np.zeros_like(data)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0)


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Dilate a mask by a Euclidean ball.

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
    radius_mm : float
        Ball radius in mm; ``<= 0`` returns a copy of ``mask``.
    spacing : sequence of 3 floats
        Voxel size in mm per array axis.

    Returns
    -------
    ndarray of bool, shape (I, J, K)
        The voxels within ``radius_mm`` of ``mask``.
    """
    if radius_mm <= 0:
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def erode_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Erode a mask by a Euclidean ball, keeping the core of regions thinner than the ball.

    The radius is capped at half the mask's largest inner distance, so a non-empty mask never erodes to
    nothing (each region still gives seeds).

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
    radius_mm : float
        Ball radius in mm.
    spacing : sequence of 3 floats
        Voxel size in mm per array axis.

    Returns
    -------
    ndarray of bool, shape (I, J, K)
        The voxels of ``mask`` farther than the (capped) radius from anything outside it.
    """
    if not mask.any():
        return mask.copy()
    inner = ndi.distance_transform_edt(mask, sampling=spacing)
    return inner > min(radius_mm, 0.5 * float(inner.max()))


def block_mean(array: np.ndarray, factors) -> np.ndarray:
    """Mean over blocks of whole voxels (the last, partial block of an axis too).

    Parameters
    ----------
    array : ndarray, shape (I, J, K)
    factors : sequence of 3 ints
        Block size per axis (>= 1).

    Returns
    -------
    ndarray of float64, shape (ceil(I / f_0), ceil(J / f_1), ceil(K / f_2))
    """
    out = np.asarray(array)
    for axis, f in enumerate(int(f) for f in factors):
        if f > 1:
            # the block's j-th voxels are the strided slice j::f: f strided sums (a reshaped sum is 4x slower)
            n = out.shape[axis]
            total = np.array(out[_along(axis, slice(0, None, f))], dtype=np.float64)
            for j in range(1, f):
                part = out[_along(axis, slice(j, None, f))]
                total[_along(axis, slice(0, part.shape[axis]))] += part
            counts = np.minimum(f, n - f * np.arange(total.shape[axis]))
            out = total / counts.reshape([-1 if a == axis else 1 for a in range(out.ndim)])
    return np.asarray(out, dtype=np.float64)


def _along(axis: int, index: slice) -> tuple:
    """An index tuple taking ``index`` along ``axis`` and everything along the axes before it."""
    return (slice(None),) * axis + (index,)


def _close_exact(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Closing by two distance transforms, the mask padded by the radius (the border erodes nothing)."""
    pad = np.ceil(radius_mm / np.asarray(spacing, dtype=float)).astype(int) + 1
    padded = np.pad(mask, [(p, p) for p in pad])
    dilated = ndi.distance_transform_edt(~padded, sampling=spacing) <= radius_mm
    closed = ndi.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    return (closed | padded)[tuple(slice(p, -p) for p in pad)]


def close_mm(mask: np.ndarray, radius_mm: float, spacing, voxels_per_radius: float = 8.0) -> np.ndarray:
    """Morphological closing by a Euclidean ball.

    Done with two distance transforms instead of a structuring element: time and memory do not grow with
    the radius (SciPy's binary morphology with a 55 x 55 x 7 ball, a ventricle's closing, ran out of memory).
    The closing lies inside the mask's convex hull, so only the mask's bounding box is computed, padded by the
    radius so that the border does not erode what touches it. Where the radius spans more than
    ``voxels_per_radius`` voxels along an axis, the closing is computed on blocks of whole voxels (block
    majority) that it spans about that many times, and only what it adds (the notches) comes back to full
    resolution: the mask's own boundary stays exact, the filled notches' edges are as coarse as a block
    (a 200 x 150 x 90 ellipsoid with a slit, radius 21.5 voxels: 13 times faster, Dice 0.997 to the exact one).

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
    radius_mm : float
        Ball radius in mm: notches narrower than about twice this close.
    spacing : sequence of 3 floats
        Voxel size in mm per array axis.
    voxels_per_radius : float, optional
        Voxels per radius above which the closing runs on blocks (``inf``: always exact).

    Returns
    -------
    ndarray of bool, shape (I, J, K)
        The closed mask (a superset of ``mask``).
    """
    if not mask.any():
        return mask.copy()
    spacing = np.asarray(spacing, dtype=float)
    where = np.argwhere(mask)
    box = tuple(slice(a, b + 1) for a, b in zip(where.min(0), where.max(0)))
    part = mask[box]
    factors = np.maximum(np.floor(radius_mm / (voxels_per_radius * spacing)), 1).astype(int)
    if np.all(factors == 1):
        added = _close_exact(part, radius_mm, spacing) & ~part
    else:
        coarse = block_mean(part, factors) >= 0.5
        notches = _close_exact(coarse, radius_mm, spacing * factors) & ~coarse
        for axis, f in enumerate(factors):
            notches = np.repeat(notches, f, axis=axis)
        added = notches[tuple(slice(0, n) for n in part.shape)]
    out = mask.copy()
    out[box] |= added
    return out


def slices_across_coarsest_axis(shape, spacing):
    """The 2D slices across the axis with the largest voxel size.

    Parameters
    ----------
    shape : sequence of 3 ints
        Array shape ``(I, J, K)``.
    spacing : sequence of 3 floats
        Voxel size in mm per array axis; on a tie the first coarsest axis is taken.

    Yields
    ------
    tuple of slice and int
        An index tuple selecting one slice, in increasing order along that axis.
    """
    axis = int(np.argmax(spacing))
    for index in range(shape[axis]):
        plane = [slice(None)] * 3
        plane[axis] = index
        yield tuple(plane)


def fill_enclosed_holes(mask: np.ndarray, spacing) -> np.ndarray:
    """Fill the holes of a mask in 3D and in every slice across the coarsest axis.

    The per-slice fill catches holes that open only through a neighbouring slice, common with thick slices
    (ACDC: papillary muscles inside the left ventricle).

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
        The object, possibly with holes.
    spacing : sequence of 3 floats
        Voxel size in mm per array axis: the 2D fill runs across the axis with the largest one.

    Returns
    -------
    ndarray of bool, shape (I, J, K)
        ``mask`` with its enclosed holes set.
    """
    filled = _fill_holes(mask, None)
    return _fill_holes(filled, int(np.argmax(spacing)))


def _fill_holes(mask: np.ndarray, slice_axis: int | None) -> np.ndarray:
    """``ndi.binary_fill_holes`` (face-connected background not reaching the border is a hole), in 3D or in
    every slice across ``slice_axis`` at once: one labelling of the background instead of iterated dilations
    (10x faster, the same voxels)."""
    structure = ndi.generate_binary_structure(3, 1)
    if slice_axis is not None:  # no connections across the slices
        for end in (0, 2):
            structure[tuple(end if a == slice_axis else 1 for a in range(3))] = False
    labels, n = ndi.label(~mask, structure)
    if n == 0:
        return mask.copy()
    outside = np.zeros(n + 1, dtype=bool)
    for axis in range(3):
        if axis != slice_axis:
            outside[labels[_along(axis, 0)]] = True
            outside[labels[_along(axis, -1)]] = True
    outside[0] = True  # label 0 is the mask itself
    return mask | ~outside[labels]


def convex_slices(mask: np.ndarray, spacing) -> np.ndarray:
    """Replace each slice of a mask across the coarsest axis by the convex hull of its part.

    A shape prior for objects that are convex in those slices (a ventricle's cavity in short-axis slices, with
    the trabeculae and papillary muscles the random walker leaves out); not for rings or curved objects.

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
        The object to make convex slice by slice.
    spacing : sequence of 3 floats
        Voxel size in mm per array axis: the hulls are taken in slices across the coarsest axis.

    Returns
    -------
    ndarray of bool, shape (I, J, K)
        The slice-wise convex hulls (empty slices stay empty).
    """
    from skimage.morphology import convex_hull_image

    hull = mask.copy()
    for plane in slices_across_coarsest_axis(mask.shape, spacing):
        if hull[plane].any():
            hull[plane] = convex_hull_image(mask[plane])
    return hull


def keep_connected_to(foreground: np.ndarray, seeds_mask: np.ndarray) -> np.ndarray:
    """Keep the connected components of a mask that touch the seeds.

    Parameters
    ----------
    foreground : ndarray of bool, shape (I, J, K)
    seeds_mask : ndarray of bool, shape (I, J, K)

    Returns
    -------
    ndarray of bool, shape (I, J, K)
        The 26-connected components of ``foreground`` that share a voxel with ``seeds_mask``
        (``foreground`` itself when it is empty).
    """
    labels, n = ndi.label(foreground, structure=FULL_CONNECTIVITY)
    if n == 0:
        return foreground
    touched = np.unique(labels[seeds_mask & foreground])
    return np.isin(labels, touched[touched > 0])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component of a mask.

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)

    Returns
    -------
    ndarray of bool, shape (I, J, K)
        The largest 26-connected component (a copy of ``mask`` when it has at most one).
    """
    labels, n = ndi.label(mask, structure=FULL_CONNECTIVITY)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))
