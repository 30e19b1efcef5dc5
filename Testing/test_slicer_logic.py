"""The module's logic against real slicer-core MRML, with real child processes running `extremeseg`.

A volume and 6 fiducials in, a segmentation node out (right geometry, the user's segments untouched);
annotation bookkeeping and guidance; job files; cancel and resume of a real training run; errors from a
failing child. The training runs are tiny (one synthetic volume, a few epochs).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ExtremeSeg"))

from slicer_scene import make_scene, require_slicer, vtk_matrix  # noqa: E402

require_slicer()

from ExtremeSegSlicerLib import scenarios  # noqa: E402
from ExtremeSegSlicerLib.logic import ExtremeSegNodeLogic  # noqa: E402

from ExtremeSegLib import mrml  # noqa: E402
from ExtremeSegLib.errors import InputError  # noqa: E402
from ExtremeSegLib.io.markups import read_points  # noqa: E402
from ExtremeSegLib.io.volumes import read_image  # noqa: E402
from ExtremeSegLib.simulate import simulate_extreme_points  # noqa: E402


@pytest.fixture
def logic(mrml_scene):
    return ExtremeSegNodeLogic(mrml_scene.scene)


@pytest.fixture
def case(logic):
    image, truth = scenarios.synthetic_case()
    volume = mrml.add_volume_node(image, "Case 1", scene=logic.scene)
    points = logic.annotation_node(volume, "extreme points")
    for xyz in simulate_extreme_points(truth):
        points.AddControlPoint(*xyz)
    return volume, points, image, truth


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The shared end-to-end scenario, run once: train + predict through real child processes."""
    holder = make_scene()
    import slicer
    slicer.mrmlScene = holder.scene
    try:
        work = tmp_path_factory.mktemp("work")
        report = scenarios.extreme_points_to_segmentation(ExtremeSegNodeLogic(holder.scene), work)
        yield report, work
    finally:
        del slicer.mrmlScene
        holder.close()


def test_extreme_points_to_a_new_segmentation(trained):
    report, _ = trained
    assert report.guide_complete, report.guide_message
    assert report.same_geometry
    assert report.user_segments_untouched
    assert report.dice > scenarios.MIN_DICE_AFTER_TRAINING
    assert Path(report.model_path).is_file()


def test_the_model_file_is_described_and_click_models_need_clicks(trained, logic, case):
    report, work = trained
    assert logic.model_summary(report.model_path) == (
        "Extreme points (random walker, refinement rounds) model; classes: Structure; "
        "needs the object's 6 extreme points.")
    volume, points, _, _ = case
    with pytest.raises(InputError, match="needs the object's 6 extreme points on 'Case 1'"):
        logic.prepare_prediction(report.model_path, volume, None, work)
    cleaned = logic.prepare_prediction(report.model_path, volume, points, work)
    raw = logic.prepare_prediction(report.model_path, volume, points, work, postprocess=False)
    assert "--no-postprocess" not in cleaned.command and raw.command[-3:] == ["--no-postprocess", "--points",
                                                                                str(raw.run_dir / "points.mrk.json")]
    # the scribble effect's model step (probabilities as its prior) refuses a click model the same way
    with pytest.raises(InputError, match="needs the object's 6 extreme points on 'Case 1'"):
        logic.prepare_prediction(report.model_path, volume, None, work, probabilities=True)
    garbage = work / "garbage.pt"
    garbage.write_bytes(b"not a model")
    assert logic.model_summary(garbage).startswith("Not a usable ExtremeSeg model")


def test_annotation_nodes_are_found_again_per_volume(logic, case):
    volume, points, image, _ = case
    assert logic.annotation_node(volume, "extreme points") is points
    other = mrml.add_volume_node(image, "Case 2", scene=logic.scene)
    assert logic.annotation_node(other, "extreme points", create=False) is None
    surface = logic.annotation_node(other, "surface points")
    assert surface.GetName() == "Case 2 surface points" and surface is not points
    scribbles = logic.annotation_node(other, "scribbles")
    names = [scribbles.GetSegmentation().GetNthSegment(n).GetName() for n in range(2)]
    assert names == ["Background", "Structure"]
    loaded = mrml.add_markups_node(simulate_extreme_points(case[3]), name="from file", scene=logic.scene)
    logic.set_annotation_node(volume, "extreme points", loaded)
    assert logic.annotation_node(volume, "extreme points") is loaded
    with pytest.raises(InputError, match="unknown annotation"):
        logic.annotation_node(volume, "boxes")


def test_the_guide_uses_world_coordinates_of_transformed_points(logic, case):
    volume, points, _, _ = case
    assert logic.placement_guide(volume, "extreme points").complete
    shift = logic.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, 3] = [200.0, 0.0, 0.0]  # moves the clicks far outside the volume
    shift.SetMatrixTransformToParent(vtk_matrix(matrix))
    points.SetAndObserveTransformNodeID(shift.GetID())
    guide = logic.placement_guide(volume, "extreme points")
    assert guide.error and "outside the image" in guide.message
    points.SetAndObserveTransformNodeID(None)
    points.RemoveNthControlPoint(5)
    guide = logic.placement_guide(volume, "extreme points")
    assert not guide.complete and "Point" in guide.message and "no partner" in guide.message


def test_scribble_guidance(logic, case):
    from ExtremeSegLib.io.segmentations import Segment

    volume, _, image, truth = case
    node = logic.annotation_node(volume, "scribbles")
    assert "Paint some background strokes" in logic.placement_guide(volume, "scribbles").message
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    core = np.zeros(image.shape, bool)
    core[tuple(slice(c - 1, c + 2) for c in np.argwhere(truth.array).mean(axis=0).astype(int))] = True
    mrml.add_segments([Segment("Liver", core)], volume, node, suffix="")
    guide = logic.placement_guide(volume, "scribbles")
    assert guide.error and 'Name the segment that marks the background "Background"' in guide.message
    edge = np.zeros(image.shape, bool)
    edge[:2] = True
    mrml.add_segments([Segment("background strokes", edge)], volume, node, suffix="")
    segmentation.AddEmptySegment("", "Spleen")
    guide = logic.placement_guide(volume, "scribbles")
    assert guide.complete and guide.message == (
        "Background and 1 structure(s) painted: Liver. Empty segments are ignored: Spleen.")


def test_training_job_files_match_the_nodes(logic, case, tmp_path):
    volume, points, image, _ = case
    job = logic.prepare_training([volume], "extreme points", "extreme_points", tmp_path, structure="Tumour",
                                 epochs=3, rounds=2)
    config = json.loads(job.config_path.read_text())
    assert config["classes"] == [{"name": "Tumour", "label_values": [1]}]
    assert config["training"]["epochs"] == 3 and config["rounds"]["max_rounds"] == 2
    (exported,) = config["cases"]
    assert exported["name"] == "Case_1" and job.cases == {"Case_1": volume.GetID()}
    written = read_image(exported["image"])
    assert written.same_geometry(image) and np.allclose(written.array, image.array)
    assert np.allclose(read_points(exported["points"])[0], mrml.points_from_markups_node(points)[0])
    again = logic.prepare_training([volume], "extreme points", "extreme_points", tmp_path)
    assert again.folder != job.folder and job.config_path.exists()  # a new folder, nothing overwritten


def test_scribble_jobs_export_segments_the_recipe_accepts(logic, case, tmp_path):
    from ExtremeSegLib.io.segmentations import Segment
    from ExtremeSegLib.pseudolabel.scribbles import read_scribbles
    from ExtremeSegLib.recipes import JobConfig, get_recipe

    volume, _, image, truth = case
    node = logic.annotation_node(volume, "scribbles")
    node.GetSegmentation().RemoveAllSegments()
    edge, core = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    edge[:2] = True
    core[tuple(slice(c - 1, c + 2) for c in np.argwhere(truth.array).mean(axis=0).astype(int))] = True
    mrml.add_segments([Segment("Background", edge), Segment("Liver", core)], volume, node, suffix="")
    node.GetSegmentation().AddEmptySegment("", "Spleen")  # empty: not a class, not exported
    job = logic.prepare_training([volume], "scribbles", "scribbles", tmp_path)
    config = JobConfig.from_json(job.config_path)
    assert [c.name for c in config.classes] == ["Liver"]
    get_recipe("scribbles").check(config)  # what the child would refuse, refused here already
    scribbles = read_scribbles(config.cases[0].scribble, read_image(config.cases[0].image), ["Liver"], [[1]])
    assert np.array_equal(scribbles.labels.array == 0, edge) and np.array_equal(scribbles.labels.array == 1, core)


def test_an_incomplete_annotation_is_refused_with_the_volume_named(logic, case, tmp_path):
    volume, points, image, _ = case
    other = mrml.add_volume_node(image, "Case 2", scene=logic.scene)
    with pytest.raises(InputError, match="volume 'Case 2': Place 6 extreme points"):
        logic.prepare_training([volume, other], "extreme points", "extreme_points", tmp_path)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_failing_child_reports_the_cli_error(logic, case, tmp_path):
    volume, _, _, _ = case
    with pytest.raises(InputError, match="unknown recipe 'no_such_recipe'"):
        logic.segment_volumes([volume], recipe="no_such_recipe", work_folder=tmp_path)


def test_cancel_keeps_the_checkpoint_and_resume_finishes(logic, case, tmp_path):
    volume, _, _, _ = case
    tiny = {**scenarios.TINY_JOB, "training": {**scenarios.TINY_JOB["training"], "steps_per_epoch": 2}}
    job = logic.prepare_training([volume], "extreme points", "extreme_points", tmp_path, epochs=4, rounds=1,
                                 settings=tiny)
    run = logic.start_training(job)
    end = time.monotonic() + 60
    while run.state.epoch < 1 and not run.state.finished and time.monotonic() < end:
        run.poll()
        time.sleep(0.05)
    run.cancel()
    state = run.wait(timeout=60)
    assert state.status == "cancelled", (state.status, state.error)
    checkpoint = job.run_dir / "state" / "checkpoint.pt"
    assert checkpoint.is_file() and not (job.run_dir / "model.pt").exists()
    assert 1 <= state.epoch < 4

    resumed = logic.start_training(job, resume=True)
    messages = []
    final = resumed.wait(timeout=120, callback=lambda e: messages.append(e.get("text", "")))
    assert final.status == "done", final.error
    assert any("resuming round 0 after epoch" in m for m in messages)
    results = logic.import_training_results(job, final)
    assert results.model_path.is_file() and volume.GetID() in results.segmentation_nodes


def test_recipes_are_listed_per_annotation_and_devices_match_the_engine():
    from ExtremeSegSlicerLib.logic import ANNOTATIONS, DEVICES

    from ExtremeSegLib.recipes import RECIPES
    from ExtremeSegLib.training.engine import ALL_GPUS
    from ExtremeSegLib.training.engine import DEVICES as ENGINE_DEVICES

    assert DEVICES == ENGINE_DEVICES + (ALL_GPUS,)  # "all GPUs" trains with one process per GPU
    assert "extreme_points" in [r.name for r in ExtremeSegNodeLogic.recipes("extreme points")]
    assert [r.name for r in ExtremeSegNodeLogic.recipes("scribbles")] == ["scribbles"]
    for cls in RECIPES.values():  # every recipe is reachable from the panel (dense labels are not drawn there)
        assert cls.annotation in ANNOTATIONS + ("labels",), cls.name


def test_an_inextremis_model_segments_a_volume_nobody_clicked(logic, case, tmp_path):
    volume, points, image, truth = case
    results = logic.segment_volumes([volume], annotation="extreme points", recipe="inextremis", work_folder=tmp_path,
                                    epochs=6, settings=scenarios.TINY_JOB)
    assert logic.model_summary(results.model_path).endswith("; fully automatic (no clicks needed).")
    unclicked = mrml.add_volume_node(image, "Case 2", scene=logic.scene)
    assert logic.annotation_node(unclicked, "extreme points", create=False) is None
    [(node, new_ids)] = logic.segment_with_model(results.model_path, [unclicked], work_folder=tmp_path)
    assert len(new_ids) == 1
    mask = mrml.segments_from_node(node, unclicked)[0].mask
    assert mask.shape == image.shape and mask.any()
