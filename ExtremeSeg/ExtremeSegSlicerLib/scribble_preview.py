"""The compute step of the "ExtremeSeg Scribbles" Segment Editor effect, on MRML nodes, without a GUI.

The user paints scribbles as segments (one per class, one of them the background). The preview is the
random walker from those scribbles (Grady 2006, as in the scribble recipe's pseudo-labels); with a
trained model, the model's class probabilities are the random walker's prior, so the scribbles act as
corrections of the prediction. Applying adds the result as NEW segments; the scribbles stay as they are
(they are the training annotation) and the effect saves the segmentation's state for undo first.

Imports only slicer MRML classes (through :mod:`ExtremeSegLib.mrml`) and the core: testable headless.
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


def model_prior(model_path, volume_node, device: str = "auto"):
    """A trained model's class probabilities ``(C, I, J, K)`` on ``volume_node``'s grid (the preview's prior).

    Only fully automatic models qualify (e.g. from the scribbles recipe): a model that needs extreme points
    is refused with :class:`InputError`. Imports torch (installed on first use by the module).
    """
    from ExtremeSegLib.training.engine import select_device
    from ExtremeSegLib.training.inference import segment_image
    from ExtremeSegLib.training.model_file import load_model

    torch_device = select_device(device)
    model = load_model(model_path, torch_device)
    if model.inputs.needs_points:
        raise InputError(f"{model_path} needs extreme points as input; the scribble effect uses fully automatic "
                         "models (e.g. one trained with the scribbles recipe)")
    return segment_image(model, mrml.volume_from_node(volume_node), None, torch_device).probabilities


def show_preview(preview: ScribblePreview, preview_node) -> list:
    """Replace the segments of ``preview_node`` (a segmentation node the effect owns) by the preview's."""
    preview_node.GetSegmentation().RemoveAllSegments()
    _, ids = mrml.add_segments(preview.result_segments(), preview.labels, preview_node, suffix="")
    return ids


def apply_preview(preview: ScribblePreview, segmentation_node) -> list:
    """Add the preview's classes to ``segmentation_node`` as new segments (named "<scribble> (ExtremeSeg)").

    Existing segments, the scribbles included, are left untouched. Returns the new segment IDs.
    """
    _, ids = mrml.add_segments(preview.result_segments(), preview.labels, segmentation_node)
    return ids
