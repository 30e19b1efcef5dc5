"""InExtremIS end to end on small synthetic ellipsoids: clicks at training only, a fully automatic model, the
objective's paths from the network, and bad input refused before any training."""

import json

import numpy as np
import pytest
import torch
from conftest import make_ellipsoid

from ExtremeSegLib.cli import main
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import read_labelmap, read_points, read_segmentation, write_points, write_volume
from ExtremeSegLib.metrics import dice
from ExtremeSegLib.recipe_catalog import recipe_entry
from ExtremeSegLib.recipes import JobConfig, get_recipe, train
from ExtremeSegLib.recipes.recipe import prepare_case, read_case
from ExtremeSegLib.simulate import simulate_extreme_points
from ExtremeSegLib.training.geodesic_objective import GeodesicObjective
from ExtremeSegLib.training.model_file import read_description


def write_case(folder, n, rng):
    image, label = make_ellipsoid(shape=(32, 30, 14), radii_mm=tuple(rng.uniform(7.0, 9.0, 3)), spacing=(1.0, 1.0, 2.0),
                                  noise=0.3, seed=n)
    write_volume(image, folder / f"case{n}_image.nii.gz")
    write_volume(label, folder / f"case{n}_label.nii.gz")
    write_points(folder / f"case{n}.mrk.json", simulate_extreme_points(label, noise_mm=0.5, seed=n))
    return {"image": f"case{n}_image.nii.gz", "points": f"case{n}.mrk.json", "label": f"case{n}_label.nii.gz",
            "name": f"case{n}"}


def job_data(tmp_path, n_cases=4, **pseudolabel):
    rng = np.random.default_rng(0)
    cases = [write_case(tmp_path, n, rng) for n in range(n_cases)]
    return {"recipe": "inextremis", "output": str(tmp_path / "run"), "cases": cases[:-1],
            "validation": [{k: v for k, v in cases[-1].items() if k != "points"}],
            "classes": [{"name": "object", "label_values": [1]}], "network": {"filters": [8, 16, 32]},
            "training": {"epochs": 8, "steps_per_epoch": 4, "learning_rate": 0.01}, "pseudolabel": pseudolabel,
            "device": "cpu"}


def config_from(tmp_path, data) -> JobConfig:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data))
    return JobConfig.from_json(path)


def test_trains_from_clicks_and_segments_without_them(tmp_path):
    data = job_data(tmp_path)
    data["training"]["epochs"] = 16  # the planned ~2 mm grid (a 16-voxel median case) learns the boundary slower
    config = config_from(tmp_path, data)
    assert config.inputs.cues == () and not config.inputs.crop_to_points  # the recipe's defaults
    assert main(["train", "--config", str(tmp_path / "job.json")]) == 0
    run = tmp_path / "run"
    outputs = {"rounds": run / "rounds.json", "model": str(run / "model.pt")}
    history = json.loads(open(outputs["rounds"]).read())
    assert len(history) == 1 and history[0]["validation_dice"] > 0.6  # a case nobody clicked
    description = read_description(outputs["model"])
    assert description["recipe"] == "inextremis" and description["clicks_at_inference"] is False
    assert description["inputs"]["cues"] == [] and description["inputs"]["crop_to_points"] is False
    out = tmp_path / "auto.seg.nrrd"
    assert main(["predict", "--model", outputs["model"], "--image", str(tmp_path / "case3_image.nii.gz"),
                 "--out", str(out), "--device", "cpu"]) == 0
    _, segments = read_segmentation(out)
    reference = read_labelmap(tmp_path / "case3_label.nii.gz")
    assert dice(segments[0].mask, reference.array > 0) > 0.6


def test_objective_labels_the_paths_and_adds_the_crf_loss(tmp_path):
    config = config_from(tmp_path, job_data(tmp_path, n_cases=2))
    recipe = get_recipe("inextremis")
    spec = config.inputs.resolved(config.modality, (1.0, 1.0, 2.0))
    case = prepare_case(config.cases[0], "case0", read_case(config.cases[0], config.classes), spec)

    class Job:
        pass

    job = Job()
    job.config, job.inputs = config, spec
    label = recipe.initial_label(job, case)
    target = recipe.training_target(job, case, label)
    assert target.shape == (4,) + case.frame.grid.shape
    assert (target[3] > 0).sum() == 6 and label.weight[target[3] > 0].min() == 1.0  # the clicks are trusted
    assert label.weight[target[2] > 0].max() == 1.0  # ... and nothing else inside the tight box
    objective = recipe.loss(job)
    assert isinstance(objective, GeodesicObjective) and objective.crf is not None
    network = torch.nn.Conv3d(1, 2, 3, padding=1)
    x = torch.from_numpy(case.inputs[None])
    loss, logits = objective(network, x, torch.from_numpy(target[None]), torch.from_numpy(label.weight[None]))
    assert logits.shape == (1, 2) + case.frame.grid.shape and torch.isfinite(loss)
    assert objective.steps == 1 and objective.seconds["geodesics"] > 0 and objective.seconds["crf"] > 0
    loss.backward()
    assert network.weight.grad is not None


def test_catalog_and_registry_agree():
    entry = recipe_entry("inextremis")
    recipe = get_recipe("inextremis")
    assert entry.annotation == "extreme points" and entry.clicks_at_inference is False
    assert recipe.title == entry.title


@pytest.mark.parametrize("change,message", [
    (lambda d: d["cases"][0].pop("points"), "has no points file"),
    (lambda d: d.update(inputs={"cues": ["heatmap"]}), "fully automatic"),
    (lambda d: d.update(postprocess={"clip_to_points": True}), "clip_to_points"),
    (lambda d: d["training"].update(augmentation={"rotate_probability": 0.2}), "rotate_probability"),
    (lambda d: d["training"].update(augmentation={"rotate_probability": 0.0, "scale_probability": 0.2}),
     "scale_probability"),
    (lambda d: d.update(pseudolabel={"geodesics": "straight"}), "pseudolabel.geodesics"),
    (lambda d: d.update(pseudolabel={"margin": 3}), "margin"),
])
def test_bad_configs_are_refused_before_training(tmp_path, change, message):
    data = job_data(tmp_path, n_cases=2)
    change(data)
    with pytest.raises(InputError, match=message):
        train(config_from(tmp_path, data))
    assert not (tmp_path / "run" / "state" / "checkpoint.pt").exists()


@pytest.mark.parametrize("points,message", [
    (lambda p: p + np.array([0.0, 0.0, 500.0]), "outside the image"),
    (lambda p: p * np.array([1.0, 1.0, 0.0]) + np.array([0.0, 0.0, p[0, 2]]), "no extent"),
])
def test_bad_clicks_are_refused_before_training(tmp_path, points, message):
    data = job_data(tmp_path, n_cases=2)
    path = tmp_path / data["cases"][0]["points"]
    clicks = read_points(path)[0]
    write_points(tmp_path / "bad.mrk.json", points(clicks))
    data["cases"][0]["points"] = str(tmp_path / "bad.mrk.json")
    with pytest.raises(InputError, match=message):
        train(config_from(tmp_path, data))
    assert not (tmp_path / "run" / "state" / "checkpoint.pt").exists()


def test_grid_is_planned_from_an_object_sized_label_of_the_clicks(tmp_path):
    # the round-0 labels trust only the 6 clicks as foreground; planned from them the grid would stay at the image's
    # 1 mm (a "structure" one voxel across). Planned from the extreme-point maker's label of the same clicks it is
    # as coarse as the extreme_points recipe's own on the same cases (its round 0 is that label).
    cases = []
    for n in range(3):
        image, label = make_ellipsoid(shape=(64, 60, 12), radii_mm=(24.0 - n, 20.0, 9.0), spacing=(1.0, 1.0, 2.0),
                                      noise=0.2, seed=n)
        write_volume(image, tmp_path / f"big{n}_image.nii.gz")
        write_volume(label, tmp_path / f"big{n}_label.nii.gz")
        write_points(tmp_path / f"big{n}.mrk.json", simulate_extreme_points(label, noise_mm=0.5, seed=n))
        cases.append({"image": f"big{n}_image.nii.gz", "points": f"big{n}.mrk.json", "label": f"big{n}_label.nii.gz"})
    planned = {}
    for recipe in ("inextremis", "extreme_points"):
        data = {"recipe": recipe, "output": str(tmp_path / recipe), "cases": cases,
                "classes": [{"name": "object", "label_values": [1]}], "network": {"filters": [8, 16, 32]},
                "training": {"epochs": 1, "steps_per_epoch": 1}, "rounds": {"max_rounds": 1}, "device": "cpu"}
        train(config_from(tmp_path, data))
        planned[recipe] = json.loads((tmp_path / recipe / "state" / "state.json").read_text())["spacing_mm"]
    inextremis, extreme_points = np.asarray(planned["inextremis"]), np.asarray(planned["extreme_points"])
    assert inextremis[0] > 1.0 and inextremis[2] == 2.0  # coarser in-plane than the image; slices kept
    assert np.all(inextremis >= extreme_points - 1e-9), planned
