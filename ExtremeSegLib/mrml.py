"""MRML adapter: Slicer nodes <-> the core's :class:`Volume`, points and :class:`Segment` lists.

The only module of the core that imports ``slicer``; it runs inside the Slicer application and with the
headless ``slicer-core`` package. It uses MRML, vtkSegmentationCore and module-logic classes directly
(never ``slicer.app`` or ``slicer.modules``), so it works in both.

Conventions converted here, once:

- ``slicer.util.arrayFromVolume`` is ``[k, j, i]``; a :class:`Volume` is ``[i, j, k]``.
- Everything returned is in *world* RAS: a node's parent transform is applied. Volumes and segmentations
  accept a linear parent transform; a non-linear one is refused (harden it first), as resampling it here
  would silently change voxels. Markups points are transformed exactly, whatever the transform.
- New results are added as new nodes or new segments; existing segments are never modified.

Functions that create nodes take ``scene``; inside Slicer it defaults to ``slicer.mrmlScene``.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .errors import InputError
from .io.segmentations import Segment, segment_color
from .io.volumes import as_label_array, storable_array
from .volume import Volume

if not hasattr(slicer, "vtkMRMLScene"):
    raise ImportError(
        "ExtremeSegLib.mrml needs 3D Slicer's MRML (run inside Slicer or install slicer-core); the 'slicer' "
        "module found is something else (the unrelated PyPI package 'slicer'?)"
    )

#: Appended to the names of the segments ExtremeSeg adds, so they are never confused with the user's.
RESULT_SUFFIX = " (ExtremeSeg)"
_BINARY_LABELMAP = "Binary labelmap"


# -- small helpers -----------------------------------------------------------------------------------
def _scene(scene):
    if scene is not None:
        return scene
    scene = getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise ValueError("no MRML scene given and slicer.mrmlScene is not set (pass scene=...)")
    return scene


def _array_from_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _matrix_from_array(array) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def _node_label(node) -> str:
    return f"{node.GetClassName().removeprefix('vtkMRML').removesuffix('Node')} {node.GetName()!r}"


def node_to_world(node) -> np.ndarray:
    """4x4 matrix from a node's own coordinates to world RAS (identity without a parent transform).

    :class:`InputError` if the parent transform is not linear.
    """
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(
            f"{_node_label(node)} is under the non-linear transform {transform.GetName()!r}; "
            "harden the transform on it first (Data module: right-click the node > Harden transform)"
        )
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return _array_from_matrix(matrix)


# -- volumes -----------------------------------------------------------------------------------------
def _require_scalar_volume_node(node) -> None:
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLVectorVolumeNode"):
        kind = node.GetClassName() if node is not None else "nothing"
        raise InputError(f"expected a scalar volume node, got {kind}; select a scalar (grey-level or label) volume")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"{_node_label(node)} has no voxels; load or compute its image first")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"{_node_label(node)} has {image.GetNumberOfScalarComponents()} values per voxel; "
            "ExtremeSeg needs a scalar volume (extract one component first)"
        )


def geometry_from_node(volume_node) -> Volume:
    """The world geometry of a volume node, without copying voxels (the array is a zero placeholder)."""
    _require_scalar_volume_node(volume_node)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    shape = tuple(volume_node.GetImageData().GetDimensions())
    return Volume(np.broadcast_to(np.uint8(0), shape), node_to_world(volume_node) @ _array_from_matrix(matrix))


def volume_from_node(volume_node) -> Volume:
    """A copy of a scalar or labelmap volume node as a :class:`Volume` in world RAS.

    :class:`InputError` for a vector or empty volume, or one under a non-linear transform.
    """
    geometry = geometry_from_node(volume_node)
    scalars = numpy_support.vtk_to_numpy(volume_node.GetImageData().GetPointData().GetScalars())
    array = scalars.reshape(geometry.shape[::-1]).transpose(2, 1, 0).copy()  # [k, j, i] -> [i, j, k]
    return geometry.with_array(array)


def add_volume_node(volume: Volume, name: str = "Volume", labelmap: bool = False, scene=None):
    """A new scalar (or, with ``labelmap``, labelmap) volume node holding a copy of ``volume``."""
    scene = _scene(scene)
    array = as_label_array(volume.array, f"volume {name!r}") if labelmap else volume.array
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(_matrix_from_array(volume.ijk_to_ras))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(storable_array(array).transpose(2, 1, 0)))
    node.CreateDefaultDisplayNodes()
    return node


# -- markups -----------------------------------------------------------------------------------------
def points_from_markups_node(markups_node) -> tuple[np.ndarray, list[str]]:
    """Placed points of a point-list node in world RAS mm ``(N, 3)``, and their labels.

    Points not placed yet (undefined position) are left out. :class:`InputError` if the node is not a
    point list or has no placed point.
    """
    if markups_node is None or not markups_node.IsA("vtkMRMLMarkupsFiducialNode"):
        kind = markups_node.GetClassName() if markups_node is not None else "nothing"
        raise InputError(f"expected a markups point list, got {kind}; place the points in a Point List")
    points, labels = [], []
    for n in range(markups_node.GetNumberOfControlPoints()):
        if markups_node.GetNthControlPointPositionStatus(n) != markups_node.PositionDefined:
            continue
        xyz = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(n, xyz)
        points.append(xyz)
        labels.append(markups_node.GetNthControlPointLabel(n))
    if not points:
        raise InputError(f"{_node_label(markups_node)} has no placed points; place the points first")
    return np.asarray(points, dtype=float), labels


def add_markups_node(points_ras, labels=None, name: str = "ExtremePoints", scene=None):
    """A new point-list node with the given points (RAS mm ``(N, 3)``) and labels."""
    scene = _scene(scene)
    points = np.asarray(points_ras, dtype=float).reshape(-1, 3)
    labels = [f"{name}-{n + 1}" for n in range(len(points))] if labels is None else [str(s) for s in labels]
    if len(labels) != len(points):
        raise InputError(f"{len(labels)} labels given for {len(points)} points")
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    for xyz, label in zip(points, labels):
        node.AddControlPoint(vtk.vtkVector3d(*(float(v) for v in xyz)), label)
    return node


# -- segmentations -----------------------------------------------------------------------------------
def _as_geometry(reference) -> Volume:
    return reference if isinstance(reference, Volume) else geometry_from_node(reference)


def _oriented_image(geometry: Volume, image_to_world: np.ndarray, mask=None) -> "slicer.vtkOrientedImageData":
    """A vtkOrientedImageData on ``geometry``'s grid: geometry only, or the mask's bounding box as uint8."""
    image = slicer.vtkOrientedImageData()
    image.SetImageToWorldMatrix(_matrix_from_array(image_to_world))
    if mask is None:
        image.SetExtent(0, geometry.shape[0] - 1, 0, geometry.shape[1] - 1, 0, geometry.shape[2] - 1)
        return image
    lo, hi = _bounding_box(mask)
    image.SetExtent(lo[0], hi[0] - 1, lo[1], hi[1] - 1, lo[2], hi[2] - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    voxels = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = voxels.transpose(2, 1, 0).ravel()
    return image


def _bounding_box(mask: np.ndarray) -> tuple[list, list]:
    """Lower (inclusive) and upper (exclusive) voxel indices of a non-empty mask."""
    lo, hi = [], []
    for axis in range(3):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        lo.append(int(hit[0]))
        hi.append(int(hit[-1]) + 1)
    return lo, hi


def _segment_ids(segmentation_node, wanted) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    if not ids:
        raise InputError(f"{_node_label(segmentation_node)} has no segments")
    if wanted is None:
        return ids
    chosen = []
    for key in [wanted] if isinstance(wanted, str) else wanted:
        segment_id = key if key in ids else segmentation.GetSegmentIdBySegmentName(key)
        if not segment_id:
            names = [segmentation.GetSegment(i).GetName() for i in ids]
            raise InputError(
                f"{_node_label(segmentation_node)} has no segment {key!r}; its segments: {', '.join(names)}"
            )
        chosen.append(segment_id)
    return chosen


def segments_from_node(segmentation_node, reference, segments=None) -> list[Segment]:
    """Segments of a segmentation node as masks on ``reference``'s voxel grid.

    ``reference`` is a :class:`Volume` or a volume node (its world geometry is used); ``segments`` lists
    segment IDs or names (default: all). Segments are resampled (nearest neighbour) onto the grid when
    their own grid differs. :class:`InputError` for unknown segments, an empty segmentation or a
    non-linear transform.
    """
    geometry = _as_geometry(reference)
    ids = _segment_ids(segmentation_node, segments)
    segmentation = segmentation_node.GetSegmentation()
    if not segmentation.ContainsRepresentation(_BINARY_LABELMAP):
        segmentation_node.CreateBinaryLabelmapRepresentation()  # e.g. a segmentation made of surfaces
    to_world = node_to_world(segmentation_node)
    target = _oriented_image(geometry, geometry.ijk_to_ras)
    result = []
    for segment_id in ids:
        segment = segmentation.GetSegment(segment_id)
        labelmap = slicer.vtkOrientedImageData()
        segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        mask = np.zeros(geometry.shape, bool)
        if _has_voxels(labelmap):
            image_to_node = vtk.vtkMatrix4x4()
            labelmap.GetImageToWorldMatrix(image_to_node)
            labelmap.SetImageToWorldMatrix(_matrix_from_array(to_world @ _array_from_matrix(image_to_node)))
            resampled = slicer.vtkOrientedImageData()
            resample = slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage
            resample(labelmap, target, resampled)  # nearest neighbour; a crop/pad when the grids match
            if _has_voxels(resampled):
                mask = _mask_in_grid(resampled, geometry.shape)
        color = tuple(segment.GetColor())
        valid = all(0.0 <= c <= 1.0 for c in color)  # out of range = "no colour chosen yet" in old scenes
        result.append(Segment(segment.GetName(), mask, color if valid else None, segment_id))
    return result


def _has_voxels(image) -> bool:
    extent = image.GetExtent()
    return image.GetPointData().GetScalars() is not None and all(extent[2 * a] <= extent[2 * a + 1] for a in range(3))


def _mask_in_grid(image, shape) -> np.ndarray:
    """Non-zero voxels of an image on the grid ``shape`` (its extent placed within the grid, clipped)."""
    extent = image.GetExtent()
    size = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(size[::-1]).transpose(2, 1, 0)
    lo = [max(extent[2 * a], 0) for a in range(3)]
    hi = [min(extent[2 * a + 1] + 1, shape[a]) for a in range(3)]
    mask = np.zeros(shape, bool)
    if all(h > low for low, h in zip(lo, hi)):
        source = tuple(slice(lo[a] - extent[2 * a], hi[a] - extent[2 * a]) for a in range(3))
        mask[tuple(slice(lo[a], hi[a]) for a in range(3))] = values[source] != 0
    return mask


def _unique_name(base: str, taken: set) -> str:
    name, n = base, 2
    while name in taken:
        name, n = f"{base} {n}", n + 1
    return name


def add_segments(segments, reference, segmentation_node=None, name: str = "ExtremeSeg",
                 suffix: str = RESULT_SUFFIX, scene=None):
    """Add masks as NEW segments; returns ``(segmentation_node, new_segment_ids)``.

    ``segments`` are :class:`Segment` masks on ``reference`` (a :class:`Volume` or a volume node).
    Without ``segmentation_node`` a new segmentation node called ``name`` is created, its reference
    geometry set from ``reference``. Each new segment is named ``<segment name><suffix>``, made unique
    with " 2", " 3"...; existing segments are left untouched (an overlapping result goes to its own layer).
    """
    geometry = _as_geometry(reference)
    segments = list(segments)
    for segment in segments:
        if segment.mask.shape != geometry.shape:
            raise InputError(
                f"segment {segment.name!r} has shape {list(segment.mask.shape)}, "
                f"not the reference volume's {list(geometry.shape)}"
            )
    if segmentation_node is None:
        segmentation_node = _scene(scene).AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation_node.CreateDefaultDisplayNodes()
    to_node = np.linalg.inv(node_to_world(segmentation_node))
    segmentation = segmentation_node.GetSegmentation()
    source = getattr(segmentation, "GetSourceRepresentationName", None) or segmentation.GetMasterRepresentationName
    if segmentation.GetNumberOfSegments() and source() != _BINARY_LABELMAP:
        raise InputError(
            f"{_node_label(segmentation_node)} is edited as {source()!r}, not as voxels; "
            "choose another segmentation for the results (or let ExtremeSeg create a new one)"
        )
    geometry_parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    if not segmentation.GetConversionParameter(geometry_parameter):
        grid = _oriented_image(geometry, to_node @ geometry.ijk_to_ras)
        grid_text = slicer.vtkSegmentationConverter.SerializeImageGeometry(grid)
        segmentation.SetConversionParameter(geometry_parameter, grid_text)
        if not isinstance(reference, Volume):
            segmentation_node.SetNodeReferenceID(
                slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole(), reference.GetID()
            )
    taken = {segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())}
    new_ids = []
    for n, segment in enumerate(segments):
        segment_name = _unique_name(f"{segment.name}{suffix}", taken)
        taken.add(segment_name)
        segment_id = segmentation.AddEmptySegment("", segment_name, list(segment_color(segment, n)))
        new_ids.append(segment_id)
        if not segment.mask.any():
            continue  # stays the empty segment just added
        labelmap = _oriented_image(geometry, to_node @ geometry.ijk_to_ras, segment.mask)
        if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            labelmap, segmentation_node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
        ):
            raise RuntimeError(f"Slicer could not set the voxels of new segment {segment_name!r}")
    return segmentation_node, new_ids
