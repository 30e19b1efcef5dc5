"""End-to-end scenarios on a synthetic volume, shared by the pytest suite (headless slicer-core) and the
module's self-test inside Slicer (``ExtremeSegTest``), so both check the same behaviour.

Each scenario builds its own nodes in the given scene, runs the logic the way the panel or the effect does,
and returns a small report of facts to assert on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ExtremeSegLib import mrml
from ExtremeSegLib.io.segmentations import Segment
from ExtremeSegLib.metrics import dice
from ExtremeSegLib.simulate import simulate_extreme_points
from ExtremeSegLib.volume import Volume

from .scribble_preview import apply_preview, compute_scribble_preview

#: thresholds the scenarios' results must pass (a tiny training run: a few epochs on one synthetic volume)
MIN_DICE_AFTER_TRAINING = 0.6
MIN_DICE_SCRIBBLE_PREVIEW = 0.9
#: a job small enough for a test: few epochs, a small network and patch, one round
TINY_JOB = {"network": {"filters": [8, 16, 32]},
            "training": {"batch_size": 1, "steps_per_epoch": 4, "max_patch_voxels": 32 * 32 * 32}}


def synthetic_case(shape=(48, 44, 28), spacing=(1.0, 1.0, 1.5), radii_mm=(12.0, 10.0, 9.0), seed=0):
    """A bright ellipsoid on a darker, noisy background, tilted grid: ``(image, truth)`` Volumes."""
    rng = np.random.default_rng(seed)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    centre = (np.asarray(shape) - 1) / 2.0 + [2.0, -1.0, 0.0]
    mm = (idx - centre) * np.asarray(spacing)
    inside = np.sum((mm / np.asarray(radii_mm)) ** 2, axis=-1) <= 1.0
    array = 100.0 + 80.0 * inside + 8.0 * rng.standard_normal(shape)
    angle = np.deg2rad(10.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1.0]])
    image = Volume.from_spacing(array.astype(np.float32), spacing, origin=(-30.0, 12.0, -5.0), direction=direction)
    return image, image.with_array(inside.astype(np.uint8))


@dataclass
class TrainingReport:
    guide_complete: bool
    guide_message: str
    same_geometry: bool
    user_segments_untouched: bool
    dice: float
    model_path: str


def extreme_points_to_segmentation(logic, work_folder, epochs: int = 6) -> TrainingReport:
    """A volume and 6 extreme-point fiducials in, a new segmentation node out (via a real child process).

    Also adds the result of a second step, prediction with the trained model, into a segmentation the
    user already has, and checks that the user's segment there is unchanged.
    """
    scene = logic.scene
    image, truth = synthetic_case()
    volume_node = mrml.add_volume_node(image, "Synthetic", scene=scene)
    points = logic.annotation_node(volume_node, "extreme points")
    for xyz in simulate_extreme_points(truth):
        points.AddControlPoint(*xyz)
    guide = logic.placement_guide(volume_node, "extreme points")

    results = logic.segment_volumes([volume_node], annotation="extreme points", recipe="extreme_points",
                                    work_folder=work_folder, epochs=epochs, rounds=1, settings=TINY_JOB)
    node = results.segmentation_nodes[volume_node.GetID()]
    segments = mrml.segments_from_node(node, volume_node)
    same_geometry = segments[0].mask.shape == image.shape

    user_mask = np.zeros(image.shape, bool)
    user_mask[2:6, 2:6, 2:6] = True
    user_node, _ = mrml.add_segments([Segment("Mine", user_mask, (0.2, 0.3, 0.4))], volume_node, name="User",
                                     suffix="", scene=scene)
    [(target, new_ids)] = logic.segment_with_model(results.model_path, [volume_node], [points], [user_node],
                                                   work_folder=work_folder)
    mine = mrml.segments_from_node(user_node, volume_node, ["Mine"])[0]
    untouched = (target is user_node and np.array_equal(mine.mask, user_mask)
                 and user_node.GetSegmentation().GetNumberOfSegments() == 1 + len(new_ids))
    return TrainingReport(guide.complete, guide.message, same_geometry, untouched,
                          dice(segments[0].mask, truth.array), str(results.model_path))


@dataclass
class ScribbleReport:
    dice: float
    scribbles_untouched: bool
    undo_restored: bool


def scribble_preview_apply_undo(scene) -> ScribbleReport:
    """Scribble segments -> effect preview -> apply (after saving the state for undo) -> undo."""
    import slicer

    image, truth = synthetic_case()
    volume_node = mrml.add_volume_node(image, "Scribbled", scene=scene)
    background = np.zeros(image.shape, bool)
    background[:3] = background[-3:] = True
    inside = np.zeros(image.shape, bool)
    centre = np.round(np.argwhere(truth.array).mean(axis=0)).astype(int)
    inside[tuple(slice(c - 2, c + 3) for c in centre)] = True
    node, ids = mrml.add_segments([Segment("Background", background), Segment("Object", inside)], volume_node,
                                  name="Scribbles", suffix="", scene=scene)
    before = {s.segment_id: s.mask for s in mrml.segments_from_node(node, volume_node)}

    preview = compute_scribble_preview(node, volume_node, "Background")
    history = slicer.vtkSegmentationHistory()  # the Segment Editor's undo stack
    history.SetSegmentation(node.GetSegmentation())
    history.SaveState()
    new_ids = apply_preview(preview, node)
    after = {s.segment_id: s.mask for s in mrml.segments_from_node(node, volume_node)}
    result = after[new_ids[0]]
    untouched = all(np.array_equal(after[i], m) for i, m in before.items())
    history.RestorePreviousState()
    restored = {s.segment_id: s.mask for s in mrml.segments_from_node(node, volume_node)}
    undone = sorted(restored) == sorted(before) and all(np.array_equal(restored[i], m) for i, m in before.items())
    return ScribbleReport(dice(result, truth.array), untouched, undone)
