"""Recipes end to end on small synthetic cases (files in, model + segmentations + rounds out): extreme points
with random-walker rounds, full supervision; cancel and resume at the job level; the regularisation step alone."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_ellipsoid

from ExtremeSegLib.cli import main
from ExtremeSegLib.errors import CancelledError, InputError
from ExtremeSegLib.io import read_labelmap, read_segmentation, write_points, write_volume
from ExtremeSegLib.masks import erode_mm
from ExtremeSegLib.metrics import dice
from ExtremeSegLib.progress import Progress
from ExtremeSegLib.pseudolabel.label import PseudoLabel
from ExtremeSegLib.recipes import JobConfig, RoundsConfig, predict, train
from ExtremeSegLib.recipes.config import NetworkConfig
from ExtremeSegLib.recipes.history import dice_curve, plot_dice_curves
from ExtremeSegLib.recipes.loop import plan_spacing
from ExtremeSegLib.refine.random_walker import random_walker_regularisation
from ExtremeSegLib.simulate import simulate_extreme_points
from ExtremeSegLib.training.model_file import read_description
from ExtremeSegLib.volume import Volume


def write_case(folder, n, rng):
    image, label = make_ellipsoid(shape=(30, 28, 12), radii_mm=tuple(rng.uniform(6.0, 9.0, 3)), spacing=(1.0, 1.0, 2.0),
                                  noise=0.6, seed=n)
    label = label.with_array(label.array * 3)  # the object is label 3 (as ACDC's LV)
    write_volume(image, folder / f"case{n}_image.nii.gz")
    write_volume(label, folder / f"case{n}_label.nii.gz")
    write_points(folder / f"case{n}.mrk.json", simulate_extreme_points(label, noise_mm=0.5, seed=n))
    return {"image": f"case{n}_image.nii.gz", "points": f"case{n}.mrk.json", "label": f"case{n}_label.nii.gz",
            "name": f"case{n}"}


@pytest.fixture
def job(tmp_path):
    rng = np.random.default_rng(0)
    cases = [write_case(tmp_path, n, rng) for n in range(4)]
    data = {"recipe": "extreme_points", "output": "run", "cases": cases[:3], "validation": cases[3:],
            "classes": [{"name": "object", "label_values": [3]}], "inputs": {"pad_mm": 4.0},
            "network": {"filters": [8, 16, 32]},
            "training": {"epochs": 3, "steps_per_epoch": 3, "learning_rate": 0.005},
            "rounds": {"max_rounds": 2, "agreement": 1.0}, "device": "cpu"}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data))
    return path


def test_points_to_model_and_segmentations(job):
    stream = io.StringIO()
    outputs = train(JobConfig.from_json(job), Progress(jsonl=True, stream=stream))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events[0] == {"event": "start", "total_epochs": 6, "rounds": 2, "device": "cpu"}
    assert [e["round"] for e in events if e["event"] == "round"] == [0, 1] and events[-1]["event"] == "done"

    history = json.loads(open(outputs["rounds"]).read())
    assert len(history) == 2
    assert history[0]["pseudolabel_dice"] > 0.8  # the random walker from clicks on a clean object
    assert history[0]["agreement"] is not None and history[1]["agreement"] is None
    assert history[1]["train_dice"] > 0.5 and history[1]["validation_dice"] > 0.5
    assert history[1]["validation_dice_raw"] > 0.5  # before the label map's cleaning
    assert "rounds_plot" in outputs and len(outputs["segmentations"]) == 3 and len(outputs["validation"]) == 1
    # Dice against training minutes: every epoch logged and (3 epochs per round) validated; the round's last
    # epoch scores what the round table scores, the minutes add up over the rounds
    for row in history:
        assert [r["epoch"] for r in row["epoch_log"]] == [1, 2, 3]
        assert row["epoch_log"][-1]["validation_dice"] == pytest.approx(row["validation_dice"])
    curve = dice_curve(history)
    assert len(curve) == 6 and all(b["minutes"] > a["minutes"] for a, b in zip(curve, curve[1:]))
    table = Path(outputs["rounds_table"]).read_text()
    assert "## Dice against training minutes" in table and table.count("\n| 1 | ") == 1 + 3  # round row + 3 epochs
    epochs = [e for e in events if e["event"] == "epoch"]
    assert all(e["seconds"] > 0 and 0.0 <= e["validation_dice"] <= 1.0 for e in epochs)

    description = read_description(outputs["model"])
    spacing = description["inputs"]["spacing_mm"]  # the planner may coarsen the in-plane axes, never the slices
    assert description["recipe"] == "extreme_points" and spacing[2] == 2.0 and spacing[0] == spacing[1] >= 1.0
    assert description["classes"] == [{"name": "object", "label_values": [3]}]
    assert description["postprocess"] == {"clip_to_points": True, "box_margin_mm": 3.0, "largest_component": True,
                                          "convex": False, "foreground_threshold": None}
    folder = job.parent
    written = predict(outputs["model"], folder / "case3_image.nii.gz", folder / "case3.seg.nrrd",
                      points=folder / "case3.mrk.json", device="cpu")
    geometry, segments = read_segmentation(written["segmentation"])
    _, validation_segments = read_segmentation(outputs["validation"][0])
    assert np.array_equal(segments[0].mask, validation_segments[0].mask)  # the API and the run agree


def test_rounds_stop_when_consecutive_pseudo_labels_agree(job):
    data = json.loads(job.read_text())
    data["rounds"] = {"max_rounds": 3, "agreement": 0.5}
    job.write_text(json.dumps(data))
    stream = io.StringIO()
    outputs = train(JobConfig.from_json(job), Progress(jsonl=True, stream=stream))
    history = json.loads(open(outputs["rounds"]).read())
    assert len(history) == 1 and history[0]["agreement"] >= 0.5
    assert any("agree" in e.get("text", "") for e in map(json.loads, stream.getvalue().splitlines()))


def test_fully_supervised_trains_one_round_on_the_dense_labels(job):
    data = json.loads(job.read_text())
    data.update(recipe="fully_supervised", pseudolabel={})
    job.write_text(json.dumps(data))
    outputs = train(JobConfig.from_json(job))
    history = json.loads(open(outputs["rounds"]).read())
    assert len(history) == 1 and history[0]["agreement"] is None
    assert history[0]["pseudolabel_dice"] > 0.97  # the dense labels, through the model grid and back
    assert history[0]["validation_dice"] > 0.5
    assert read_description(outputs["model"])["recipe"] == "fully_supervised"


def test_a_minimal_fully_supervised_job_plans_itself_and_needs_no_points(tmp_path):
    """Only recipe, classes, cases (image + label) and the output: the whole image in, no click channel, a fully
    automatic model, every other setting planned from the data."""
    rng = np.random.default_rng(0)
    cases = [{k: v for k, v in write_case(tmp_path, n, rng).items() if k in ("image", "label")} for n in range(3)]
    for n in range(3):
        (tmp_path / f"case{n}.mrk.json").unlink()  # no points file anywhere
    data = {"recipe": "fully_supervised", "output": "run", "cases": cases,
            "classes": [{"name": "object", "label_values": [3]}]}
    (tmp_path / "job.json").write_text(json.dumps(data))
    config = JobConfig.from_json(tmp_path / "job.json")
    assert config.inputs.cues == () and not config.inputs.crop_to_points and not config.postprocess.clip_to_points
    outputs = train(config)
    history = json.loads(open(outputs["rounds"]).read())
    assert len(history) == 1 and history[0]["pseudolabel_dice"] > 0.97
    assert history[0]["train_dice"] > 0.8  # it learned the object from the whole image
    description = read_description(outputs["model"])
    assert description["clicks_at_inference"] is False and description["inputs"]["cues"] == []
    written = predict(outputs["model"], tmp_path / "case0_image.nii.gz", tmp_path / "case0.seg.nrrd", device="cpu")
    _, segments = read_segmentation(written["segmentation"])
    truth = read_labelmap(tmp_path / "case0_label.nii.gz").array == 3
    assert dice(segments[0].mask, truth) > 0.8


def test_without_validation_cases_the_curve_shows_the_training_batches_dice(job, tmp_path):
    data = json.loads(job.read_text())
    data.update(recipe="fully_supervised", pseudolabel={}, validation=[])
    data["training"]["epochs"] = 12
    job.write_text(json.dumps(data))
    outputs = train(JobConfig.from_json(job))
    history = json.loads(open(outputs["rounds"]).read())
    curve = dice_curve(history)
    assert len(curve) == 12 and all(p["validation_dice"] is None for p in curve)
    assert curve[-1]["train_dice"] > curve[0]["train_dice"]
    table = Path(outputs["rounds_table"]).read_text()
    assert "training Dice of the engine's meter" in table
    assert table.count("\n| 0 | ") == 1 + 6  # the round row, then every 2nd epoch (about 10 points)
    both = plot_dice_curves(tmp_path / "curves.png", {"a": history, "b": history}, "two runs")
    assert both is not None and both.stat().st_size > 1000


class CancelInRoundZero(Progress):
    def __init__(self, cancel_file):
        super().__init__(jsonl=True, stream=io.StringIO(), cancel_file=cancel_file)

    def emit(self, event, **fields):
        super().emit(event, **fields)
        if event == "epoch" and fields["round"] == 0 and fields["epoch"] == 2:
            self.cancel_file.write_text("stop")


def test_cancel_then_resume_finishes_the_same_job(job):
    config = JobConfig.from_json(job)
    run = job.parent / "run"
    with pytest.raises(CancelledError):
        train(config, CancelInRoundZero(run / "CANCEL"))
    state = json.loads((run / "state" / "state.json").read_text())
    assert state["round"] == 0 and state["phase"] == "train" and not state["history"]
    assert not (run / "model.pt").exists()

    with pytest.raises(InputError, match="already holds a training run"):
        train(config)
    changed = json.loads(job.read_text())
    changed["training"]["epochs"] = 4
    job.with_name("changed.json").write_text(json.dumps(changed))
    with pytest.raises(InputError, match="different configuration .*training"):
        train(JobConfig.from_json(job.with_name("changed.json")), resume=True)

    saved = json.loads((run / "state" / "job.json").read_text())
    del saved["postprocess"]  # a run started before that section existed resumes with its defaults
    (run / "state" / "job.json").write_text(json.dumps(saved))
    stream = io.StringIO()
    outputs = train(config, Progress(jsonl=True, stream=stream), resume=True)  # the stale CANCEL file is cleared
    events = map(json.loads, stream.getvalue().splitlines())
    epochs = [(e["round"], e["epoch"]) for e in events if e["event"] == "epoch"]
    assert epochs == [(0, 3), (1, 1), (1, 2), (1, 3)]
    assert len(json.loads(open(outputs["rounds"]).read())) == 2 and (run / "model.pt").exists()
    assert not list((run / "state").glob("labels_round*.npz"))


def test_train_command_speaks_json_lines(job, capsys):
    data = json.loads(job.read_text())
    data["training"]["epochs"], data["rounds"]["max_rounds"] = 1, 1
    job.write_text(json.dumps(data))
    assert main(["train", "--config", str(job), "--progress-jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # every line is JSON
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "done"
    assert {"epoch", "round"} <= {e["event"] for e in events}
    assert Path(events[-1]["outputs"]["model"]).is_file()
    assert main(["train", "--config", str(job), "--progress-jsonl"]) == 2  # the run is there: refused, said in JSON
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1])["event"] == "error" and "--resume" in captured.err


def test_output_folder_with_foreign_content_is_refused(job):
    (job.parent / "run").mkdir()
    (job.parent / "run" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        train(JobConfig.from_json(job))
    with pytest.raises(InputError, match="no run to resume"):
        train(JobConfig.from_json(job), resume=True)


def test_random_walker_regularisation_pulls_a_too_large_prediction_to_the_edge():
    image, truth = make_ellipsoid(shape=(32, 32, 32), radii_mm=(8.0, 8.0, 8.0), spacing=(1.0, 1.0, 1.0), noise=0.05)
    _, swollen = make_ellipsoid(shape=(32, 32, 32), radii_mm=(11.0, 11.0, 11.0), spacing=(1.0, 1.0, 1.0))
    prediction = np.stack([1.0 - swollen.array, swollen.array]).astype(np.float32)
    walked = random_walker_regularisation(image, prediction, erosion_mm=4.0)
    assert walked.shape == prediction.shape and np.allclose(walked.sum(axis=0), 1.0, atol=1e-5)
    assert dice(walked[1] >= 0.5, truth.array) > 0.95 > dice(swollen.array, truth.array)
    everything = np.stack([np.zeros((32, 32, 32)), np.ones((32, 32, 32))]).astype(np.float32)
    assert np.all(random_walker_regularisation(image, everything, 4.0)[1] == 1.0)


def test_regularisation_prior_keeps_a_right_prediction_that_the_plain_walker_shrinks():
    # a bright core inside a faint rim (a ventricle's trabeculae): the strongest edge is inside the object
    image, truth = make_ellipsoid(shape=(32, 32, 32), radii_mm=(9.0, 9.0, 9.0), spacing=(1.0, 1.0, 1.0), noise=0.02)
    _, core = make_ellipsoid(shape=(32, 32, 32), radii_mm=(6.0, 6.0, 6.0), spacing=(1.0, 1.0, 1.0))
    image = image.with_array(image.array - 0.75 * (truth.array - core.array))
    prediction = np.stack([1.0 - truth.array, truth.array]).astype(np.float32)
    plain = random_walker_regularisation(image, prediction, erosion_mm=4.0)[1] >= 0.5
    kept = random_walker_regularisation(image, prediction, erosion_mm=4.0, prior_weight=2.0)[1] >= 0.5
    assert dice(plain, truth.array) < 0.8 and dice(kept, truth.array) > 0.95
    with pytest.raises(InputError, match="prior_weight"):
        RoundsConfig(prior_weight=-1.0)


def test_erosion_is_in_mm_and_keeps_a_core():
    mask = np.zeros((20, 20, 10), bool)
    mask[5:15, 5:15, 2:8] = True
    eroded = erode_mm(mask, 2.0, (1.0, 1.0, 2.0))
    assert eroded[9, 9, 4] and not eroded[6, 9, 4] and eroded[8, 9, 4]  # 2 mm = 2 voxels in-plane
    assert not eroded[9, 9, 2] and eroded[9, 9, 3]  # 2 mm = 1 voxel through the 2 mm slices
    thin = np.zeros((20, 20, 10), bool)
    thin[5:15, 9:11, 2:8] = True
    assert erode_mm(thin, 4.0, (1.0, 1.0, 2.0)).any()


def disc_labels(radius: float, ring: float = None, trusted_ring: float = None, n: int = 2):
    """Pseudo-labels on a 128 x 128 x 4 grid of 1 x 1 x 5 mm: a disc (or a ring ``ring`` voxels wide), all
    voxels trusted unless ``trusted_ring`` (then only a ring that wide inside the object is)."""
    i, j = np.mgrid[:128, :128] - 63.5
    r = np.hypot(i, j)[..., None].repeat(4, axis=2)
    inside = (r < radius) & (r >= radius - ring if ring else True)
    weight = np.ones(r.shape, np.float32) if trusted_ring is None else \
        ((r >= radius - trusted_ring) & (r < radius)).astype(np.float32)
    grid = Volume.from_spacing(np.zeros(r.shape, np.float32), (1.0, 1.0, 5.0))
    return [PseudoLabel.from_foreground(inside.astype(np.float32), grid, weight) for _ in range(n)]


def test_the_planned_model_grid_follows_the_labels_the_network_and_the_device():
    network, cpu = NetworkConfig(slice_wise=True), torch.device("cpu")  # 5 levels: the grid keeps >= 64 voxels
    median = (1.0, 1.0, 5.0)
    # a disc 60 mm across allows 20 mm voxels; the floor (128 mm / 64 voxels) stops at 2 mm; slices keep 5 mm
    spacing, thickness = plan_spacing(median, disc_labels(30.0), network, cpu)
    assert spacing == (2.0, 2.0, 5.0) and 40 < thickness < 60
    # a ring 2 mm wide: no coarser grid keeps it; nor when only a thin ring of a big disc is trusted (weak labels)
    assert plan_spacing(median, disc_labels(30.0, ring=2.0), network, cpu)[0] == median
    assert plan_spacing(median, disc_labels(30.0, trusted_ring=2.0), network, cpu)[0] == median
    # on CUDA the fine grid stays
    assert plan_spacing(median, disc_labels(30.0), network, torch.device("cuda"))[0] == median
    # a 3-level network's floor (16 voxels) allows 8 mm, but no candidate's round trip keeps 0.99 (8 mm: 0.96)
    assert plan_spacing(median, disc_labels(30.0), NetworkConfig(filters=(8, 16, 32), slice_wise=True), cpu)[0] == \
        median


def test_a_job_spacing_wins_over_the_planned_grid(job):
    data = json.loads(job.read_text())
    data.update(recipe="fully_supervised", pseudolabel={}, inputs={**data["inputs"], "spacing_mm": [1.0, 1.0, 2.0]})
    data["training"].update(epochs=1, steps_per_epoch=1)
    job.write_text(json.dumps(data))
    outputs = train(JobConfig.from_json(job))
    assert read_description(outputs["model"])["inputs"]["spacing_mm"] == [1.0, 1.0, 2.0]
