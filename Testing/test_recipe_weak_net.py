"""The Weak-Net recipe end to end on small synthetic cases: surface points files in, a fully automatic model out
(only the segmentation network in it, gamma in its description), predicted without points; bad configs refused."""

import json

import numpy as np
import pytest
from conftest import make_ellipsoid

from ExtremeSegLib.cli import main
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import read_segmentation, write_points, write_volume
from ExtremeSegLib.metrics import dice
from ExtremeSegLib.recipes import JobConfig, train
from ExtremeSegLib.recipes.weak_net import WeakNetRecipe
from ExtremeSegLib.simulate import simulate_surface_points
from ExtremeSegLib.training.model_file import load_model, read_description
from ExtremeSegLib.training.networks import build_network


def write_case(folder, n, rng, points=30):
    image, label = make_ellipsoid(shape=(28, 26, 16), radii_mm=tuple(rng.uniform(6.0, 8.0, 3)),
                                  spacing=(1.0, 1.0, 1.5), noise=0.3, seed=n)
    write_volume(image, folder / f"case{n}_image.nii.gz")
    write_volume(label, folder / f"case{n}_label.nii.gz")
    write_points(folder / f"case{n}.mrk.json", simulate_surface_points(label, points, seed=n), name="SurfacePoints")
    return {"image": f"case{n}_image.nii.gz", "points": f"case{n}.mrk.json", "label": f"case{n}_label.nii.gz",
            "name": f"case{n}"}


@pytest.fixture
def cases(tmp_path):
    rng = np.random.default_rng(0)
    return [write_case(tmp_path, n, rng) for n in range(4)]


def job_data(cases, **pseudolabel):
    validation = [{k: v for k, v in cases[3].items() if k != "points"}]  # validation needs no points
    return {"recipe": "weak_net", "output": "run", "cases": cases[:3], "validation": validation,
            "classes": [{"name": "object", "label_values": [1]}], "network": {"filters": [8, 16, 32]},
            "training": {"epochs": 4, "steps_per_epoch": 3, "learning_rate": 0.005}, "device": "cpu",
            "pseudolabel": pseudolabel}


def test_weak_net_trains_and_predicts_without_points(tmp_path, cases, capsys):
    config = JobConfig.from_dict(job_data(cases, reconstruction_weight=1.0, boundary_mm=2.0), base_dir=tmp_path)
    outputs = train(config)
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert len(rounds) == 1 and rounds[0]["pseudolabel_dice"] > 0.8  # the templates against the labels
    description = read_description(outputs["model"])
    assert description["recipe"] == "weak_net"
    assert description["postprocess"]["foreground_threshold"] == WeakNetRecipe.defaults["postprocess"][
        "foreground_threshold"]  # gamma, the recipe's default
    assert description["inputs"]["cues"] == [] and description["inputs"]["crop_to_points"] is False
    # the model file holds the segmentation network alone: exactly the keys of the network it describes
    saved = set(load_model(outputs["model"]).network.state_dict())
    assert saved == set(build_network(**description["network"]).state_dict())
    assert description["network"]["in_channels"] == 1 and description["network"]["out_channels"] == 2

    out = tmp_path / "pred.seg.nrrd"
    assert main(["predict", "--model", outputs["model"], "--image", str(tmp_path / cases[3]["image"]),
                 "--out", str(out)]) == 0
    _, segments = read_segmentation(out)
    _, reference = read_segmentation(tmp_path / "run" / "validation" / "case3.seg.nrrd")
    assert np.array_equal(segments[0].mask, reference[0].mask)  # the job's validation = a plain prediction
    truth = make_ellipsoid(shape=(28, 26, 16), radii_mm=tuple(np.random.default_rng(0).uniform(6.0, 8.0, (4, 3))[3]),
                           spacing=(1.0, 1.0, 1.5), seed=3)[1]
    assert dice(segments[0].mask, truth.array) > 0.5


def test_template_only_baseline_is_one_setting(tmp_path, cases):
    config = JobConfig.from_dict(job_data(cases, reconstruction_weight=0.0), base_dir=tmp_path)
    train(config)
    rounds = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert rounds[0]["validation_dice"] is not None and rounds[0]["loss"] > 0


@pytest.mark.parametrize("change, message", [
    (lambda d: d["cases"][0].pop("points"), "has no points file"),
    (lambda d: d["classes"].append({"name": "other", "label_values": [2]}), "one.object"),
    (lambda d: d.update(inputs={"cues": ["heatmap"]}), "fully automatic"),
    (lambda d: d["pseudolabel"].update(gamma=0.4), "unknown key 'gamma'"),
    (lambda d: d["pseudolabel"].update(reconstruction_weight=-1.0), "lambda"),
    (lambda d: d["pseudolabel"].update(smoothness=0.0), "smoothness"),
    (lambda d: d.update(postprocess={"foreground_threshold": 1.5}), "foreground_threshold"),
])
def test_bad_configs_are_refused(tmp_path, cases, change, message):
    data = job_data(cases)
    change(data)
    with pytest.raises(InputError, match=message):
        train(JobConfig.from_dict(data, base_dir=tmp_path))
    assert not (tmp_path / "run" / "model.pt").exists()


def test_too_few_points_name_the_case(tmp_path, cases):
    image, label = make_ellipsoid(shape=(28, 26, 16), spacing=(1.0, 1.0, 1.5), seed=1)
    write_points(tmp_path / "few.mrk.json", simulate_surface_points(label, 3, seed=1))
    data = job_data(cases)
    data["cases"][1]["points"] = "few.mrk.json"
    with pytest.raises(InputError, match="case1 .*few.mrk.json.*at least 4"):
        train(JobConfig.from_dict(data, base_dir=tmp_path))
