"""The compute step of the "ExtremeSeg Scribbles" Segment Editor effect, on MRML nodes, without a GUI.

The user paints scribbles as segments (one per class, one of them the background). The preview is the
random walker from those scribbles (Grady 2006, as in the scribble recipe's pseudo-labels); with a
trained model, the model's class probabilities are the random walker's prior, so the scribbles act as
corrections of the prediction; the model runs in a child process (``extremeseg predict --probability``,
:meth:`ExtremeSegNodeLogic.prepare_prediction`) and :func:`prior_from_files` reads its output. Applying adds
the result as NEW segments, inside the Segment Editor's editable area and intensity range
(:func:`editable_mask`) like the built-in effects; the scribbles stay as they are (they are the training
annotation) and the effect saves the segmentation's state for undo first.

Imports only slicer MRML classes and the core: testable headless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ExtremeSegLib import mrml
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io.segmentations import Segment
from ExtremeSegLib.volume import Volume

# ExtremeSegLib.pseudolabel (scikit-image) and the training code (torch) are imported where they are used:
# Slicer loads this file at startup, before the module has installed them.


@dataclass(eq=False)
class ScribblePreview:
    """A previewed result: hard labels on the image grid and the segment each class came from.

    ``labels``: uint8 Volume, 0 = background class, n = ``classes[n]``; ``classes[0]`` is the
    background segment (never written back as a result).
    """

    labels: Volume
    classes: list  # Segment objects (name, colour, segment_id) of the scribble segments, background first

    def result_segments(self) -> list:
        """One mask per painted foreground class, named and coloured like its scribble segment."""
        return [Segment(c.name, self.labels.array == n, c.color, None) for n, c in enumerate(self.classes) if n > 0]


def scribble_class_ids(segmentation_node, background_segment, segments=None) -> list:
    """Segment IDs in class order: the background segment first, then the others in their order.

    ``segments``: IDs or names to use (default: all; the effect passes the visible ones).
    ``background_segment``: ID or name; :class:`InputError` if it is not among them.
    """
    segmentation = segmentation_node.GetSegmentation()
    if segments is None:
        segments = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    ids = [s if segmentation.GetSegment(s) else segmentation.GetSegmentIdBySegmentName(s) for s in segments]
    ids = [s for s in ids if s]
    background = (background_segment if segmentation.GetSegment(background_segment or "")
                  else segmentation.GetSegmentIdBySegmentName(background_segment or ""))
    if not background or background not in ids:
        names = ", ".join(segmentation.GetSegment(s).GetName() for s in ids) or "none"
        raise InputError(
            f"choose which segment is the background (one of the painted segments: {names}); "
            "paint the background as a segment of its own")
    if len(ids) < 2:
        raise InputError("paint at least two segments: the background and one structure")
    return [background] + [s for s in ids if s != background]


def scribble_seeds(segmentation_node, image: Volume, class_ids) -> tuple:
    """``(seeds, classes)``: int16 seeds on the image grid (-1 unpainted, n = class n) and the segments.

    Segments map to classes as in the scribbles recipe's training (``scribbles_from_segments``), so the
    preview shows what training will learn from. :class:`InputError` naming a segment with nothing painted
    in the image, two segments of the same name, or strokes painted in two segments.
    """
    from ExtremeSegLib.pseudolabel.scribbles import BACKGROUND_WORD, scribbles_from_segments

    painted = mrml.segments_from_node(segmentation_node, image, class_ids)
    for segment in painted:
        if not segment.mask.any():
            raise InputError(
                f"segment {segment.name!r} has no painted voxels in this volume; "
                "paint it, or hide it so that the effect ignores it")
    names = [s.name.strip().lower() for s in painted]
    duplicate = next((s.name for s, n in zip(painted, names) if names.count(n) > 1), None)
    if duplicate is not None:
        raise InputError(f"two segments are named {duplicate!r}; give each class segment its own name")
    scribbles = scribbles_from_segments(image, painted, [s.name for s in painted[1:]],
                                        {painted[0].name: BACKGROUND_WORD}, "the scribbles")
    return scribbles.labels.array.astype(np.int16), painted


def _crop_box(seeds: np.ndarray, image: Volume, margin_mm: float):
    index = np.argwhere(seeds >= 0)
    pad = np.ceil(margin_mm / image.spacing).astype(int)
    lo = np.maximum(index.min(axis=0) - pad, 0)
    hi = np.minimum(index.max(axis=0) + 1 + pad, image.shape)
    return lo, hi


def compute_scribble_preview(segmentation_node, volume_node, background_segment, segments=None,
                             beta: float = 130.0, margin_mm: float = 15.0, prior=None,
                             prior_weight: float = 0.0) -> ScribblePreview:
    """Random-walker labels from the scribble segments of ``segmentation_node`` on ``volume_node``.

    ``background_segment``: ID or name of the background scribble; ``segments``: the segments to use
    (default all). The walk runs in the box around all scribbles padded by ``margin_mm`` (mm); voxels
    outside it are background. ``beta``: edge sensitivity on intensities normalised to 0..1.
    ``prior``: optional (C, I, J, K) class probabilities on the volume's grid (a model's prediction,
    classes in the same order as the segments) pulling each voxel with ``prior_weight``.
    """
    from ExtremeSegLib.masks import normalise_intensities
    from ExtremeSegLib.pseudolabel.random_walker import random_walker

    image = mrml.volume_from_node(volume_node)
    image.require_finite("the source volume")
    class_ids = scribble_class_ids(segmentation_node, background_segment, segments)
    seeds, classes = scribble_seeds(segmentation_node, image, class_ids)
    lo, hi = _crop_box(seeds, image, margin_mm)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop_prior = None
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float32)
        if prior.shape != (len(classes),) + image.shape:
            raise InputError(
                f"the model predicts {prior.shape[0]} classes but {len(classes)} segments are painted "
                f"(background first); paint one segment per class of the model")
        crop_prior = prior[(slice(None),) + box]
    probabilities = random_walker(normalise_intensities(image.array[box]), seeds[box], spacing=image.spacing, beta=beta,
                                  prior=crop_prior, prior_weight=prior_weight if crop_prior is not None else 0.0)
    labels = np.zeros(image.shape, np.uint8)
    labels[box] = np.argmax(probabilities, axis=0)
    return ScribblePreview(image.with_array(labels), classes)


def prior_from_files(probability_paths, image: Volume) -> np.ndarray:
    """The class probabilities ``(C, I, J, K)`` (background first) from ``extremeseg predict --probability`` files.

    ``probability_paths``: one foreground-probability volume per model class, on ``image``'s grid (the child
    was given this very image); the background is what the foreground classes leave.
    """
    from ExtremeSegLib.io.volumes import read_volume

    foreground = []
    for path in probability_paths:
        volume = read_volume(path)
        if not volume.same_geometry(image):
            raise InputError(f"{path} is not on the grid of the volume being segmented; run the preview again")
        foreground.append(np.clip(volume.array.astype(np.float32), 0.0, 1.0))
    foreground = np.stack(foreground)
    background = np.clip(1.0 - foreground.sum(axis=0), 0.0, 1.0)
    return np.concatenate([background[None], foreground])


def _oriented_geometry(geometry: Volume):
    import slicer
    import vtk

    image = slicer.vtkOrientedImageData()
    image.SetExtent(0, geometry.shape[0] - 1, 0, geometry.shape[1] - 1, 0, geometry.shape[2] - 1)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(geometry.ijk_to_ras[r, c]))
    image.SetImageToWorldMatrix(matrix)
    return image


def editable_mask(segmentation_node, editor_node, volume_node, geometry: Volume) -> np.ndarray:
    """Bool ``[i, j, k]`` on ``geometry``'s grid: where the Segment Editor's masking settings allow editing.

    ``editor_node``: the Segment Editor's ``vtkMRMLSegmentEditorNode`` (editable area, mask segment, source
    intensity range); ``None`` allows editing everywhere. The same rule as the built-in effects
    (``vtkMRMLSegmentationNode.GenerateEditMask``).
    """
    from vtk.util import numpy_support

    if editor_node is None:
        return np.ones(geometry.shape, bool)
    import slicer

    reference = _oriented_geometry(geometry)
    source, intensity_range = None, None
    # "Source" since Slicer 5.2; the "Master" names remain as aliases
    intensity_mask = (getattr(editor_node, "GetSourceVolumeIntensityMask", None)
                      or editor_node.GetMasterVolumeIntensityMask)
    if intensity_mask() and volume_node is not None:
        get_range = (getattr(editor_node, "GetSourceVolumeIntensityMaskRange", None)
                     or editor_node.GetMasterVolumeIntensityMaskRange)
        intensity_range = list(get_range())
        source = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(volume_node)
    mask = slicer.vtkOrientedImageData()
    if not segmentation_node.GenerateEditMask(mask, editor_node.GetMaskMode(), reference, "",
                                              editor_node.GetMaskSegmentID() or "", source, intensity_range):
        raise InputError("the Segment Editor's masking settings cannot be applied; check the editable area")
    scalars = mask.GetPointData().GetScalars()
    if scalars is None:
        return np.ones(geometry.shape, bool)
    locked = numpy_support.vtk_to_numpy(scalars).reshape(geometry.shape[::-1]).transpose(2, 1, 0)
    return locked == 0  # GenerateEditMask marks the voxels that must not change


def show_preview(preview: ScribblePreview, preview_node) -> list:
    """Replace the segments of ``preview_node`` (a segmentation node the effect owns) by the preview's."""
    preview_node.GetSegmentation().RemoveAllSegments()
    _, ids = mrml.add_segments(preview.result_segments(), preview.labels, preview_node, suffix="")
    return ids


def apply_preview(preview: ScribblePreview, segmentation_node, editable=None) -> list:
    """Add the preview's classes to ``segmentation_node`` as new segments (named "<scribble> (ExtremeSeg)").

    ``editable``: bool ``[i, j, k]`` on the preview's grid (:func:`editable_mask`); outside it the new segments
    stay empty. Existing segments, the scribbles included, are left untouched. Returns the new segment IDs.
    """
    segments = preview.result_segments()
    if editable is not None:
        if editable.shape != preview.labels.shape:
            raise InputError("the editable area is not on the preview's grid; preview again")
        segments = [Segment(s.name, s.mask & editable, s.color, s.segment_id) for s in segments]
    _, ids = mrml.add_segments(segments, preview.labels, segmentation_node)
    return ids
