"""The scribble recipe end to end on small phantoms: seed areas -> partial CE -> CRF + MC-dropout recursion."""

import json

import numpy as np
import pytest
from test_scribbles import heart_phantom

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import Segment, read_segmentation, write_segmentation, write_volume
from ExtremeSegLib.metrics import dice
from ExtremeSegLib.recipes import JobConfig, get_recipe, train


def write_cases(folder, count, seg_nrrd_case=None):
    cases = []
    for n in range(count):
        image, labels, scribble = heart_phantom(shape=(32, 32, 3), seed=n)
        paths = {"image": write_volume(image, folder / f"c{n}_image.nii.gz"),
                 "label": write_volume(labels, folder / f"c{n}_label.nii.gz")}
        if n == seg_nrrd_case:  # painted in Slicer: segments named after the classes
            segments = [Segment("Background", scribble.array == 0), Segment("Ring", scribble.array == 1),
                        Segment("Disk", scribble.array == 2)]
            paths["scribble"] = write_segmentation(folder / f"c{n}_scribble.seg.nrrd", image, segments)
        else:
            paths["scribble"] = write_volume(scribble, folder / f"c{n}_scribble.nii.gz")
        cases.append({"name": f"c{n}", **{k: str(v) for k, v in paths.items()}})
    return cases


def job(tmp_path, **pseudolabel):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    cases = write_cases(data, 3, seg_nrrd_case=1)
    return {
        "recipe": "scribbles", "output": str(tmp_path / "run"), "cases": cases[:2],
        "validation": [{"image": cases[2]["image"], "label": cases[2]["label"], "name": "c2"}],
        "classes": [{"name": "ring", "label_values": [1]}, {"name": "disk", "label_values": [2]}],
        "inputs": {"cues": [], "crop_to_points": False},
        "network": {"filters": [8, 16, 32], "dropout": 0.3, "dropout_levels": 2, "slice_wise": True},
        "training": {"epochs": 3, "steps_per_epoch": 6, "batch_size": 4, "patch_size": [32, 32, 1],
                     "loss": "ce", "learning_rate": 0.01, "augment": False},
        "rounds": {"max_rounds": 2, "agreement": 1.0},
        "pseudolabel": {"beta": 1000.0, "mc_passes": 6, **pseudolabel},
        "device": "cpu",
    }


def test_scribble_recursion_trains_and_relabels(tmp_path):
    config = JobConfig.from_dict(job(tmp_path))
    recipe = get_recipe("scribbles")
    outputs = train(config)
    history = json.loads(open(outputs["rounds"]).read())
    assert [row["round"] for row in history] == [0, 1]
    # round 0 scores the random walker's guess behind the seed areas; the network learns the phantom
    assert history[0]["pseudolabel_dice"] > 0.8
    assert history[0]["agreement"] is not None
    assert history[-1]["validation_dice"] > 0.6
    geometry, segments = read_segmentation(outputs["validation"][0])
    assert [s.name for s in segments] == ["ring", "disk"]
    assert max(dice(s.mask, heart_phantom(shape=(32, 32, 3), seed=2)[1].array == n)
               for n, s in enumerate(segments, start=1)) > 0.6
    assert recipe.annotation == "scribbles"


def test_refine_clamps_seeds_and_marks_unsure_voxels(tmp_path):
    """One recursion step by hand on a trained run's network: seeds kept, CRF + t-test labels elsewhere."""
    import torch

    from ExtremeSegLib.progress import Progress
    from ExtremeSegLib.recipes.loop import plan
    from ExtremeSegLib.recipes.recipe import RunningJob, prepare_case, read_case
    from ExtremeSegLib.training.data import median_spacing
    from ExtremeSegLib.training.networks import build_network

    config = JobConfig.from_dict(job(tmp_path, mc_passes=8))
    recipe = get_recipe("scribbles")
    recipe.check(config)
    read = [read_case(c, config.classes) for c in config.cases]
    inputs = config.inputs.resolved(config.modality, median_spacing([r[0] for r in read]))
    cases = [prepare_case(c, c.name, r, inputs) for c, r in zip(config.cases, read)]
    state = RunningJob(config, recipe, Progress(bar=False), torch.device("cpu"), tmp_path, inputs=inputs)
    state.network_params, state.patch_size, state.multiple = plan(config, inputs.spacing_mm,
                                                                  [c.frame.grid.shape for c in cases], 1, 3)
    torch.manual_seed(0)
    state.network = build_network(**state.network_params)
    case = cases[0]
    first = recipe.initial_label(state, case)
    seeds = recipe.seed_map(state, case)
    np.testing.assert_array_equal(first.weight > 0, seeds >= 0)
    probabilities = state.predict(case)  # an untrained network: mostly unsure
    refined = recipe.refine(state, case, probabilities, first)
    known = refined.weight > 0
    assert np.all(known[seeds >= 0])
    np.testing.assert_array_equal(refined.hard()[seeds >= 0], seeds[seeds >= 0])
    assert (~known).any()  # MC dropout found unsure voxels among the free ones


@pytest.mark.parametrize("change, message", [
    ({"inputs": {"cues": ["heatmap"], "crop_to_points": False}}, "uses no clicks"),
    ({"network": {"filters": [8, 16, 32], "dropout": 0.0}}, "needs a network with dropout"),
    ({"pseudolabel": {"tau": 1.5}}, "tau must lie"),
    ({"pseudolabel": {"taus": 0.9}}, "unknown key 'taus' in pseudolabel"),
    ({"pseudolabel": {"walk": "4d"}}, "walk must be one of"),
    ({"pseudolabel": {"segment_classes": {"LV blood": "left ventricle"}}}, "not a class"),
])
def test_config_errors(tmp_path, change, message):
    data = job(tmp_path)
    data.update(change)
    config = JobConfig.from_dict(data)
    with pytest.raises(InputError, match=message):
        get_recipe("scribbles").check(config)


def test_recipe_defaults_fill_what_the_job_leaves_out(tmp_path):
    data = job(tmp_path)
    for section in ("inputs",):
        del data[section]
    data["network"] = {"filters": [8, 16, 32]}
    data["training"] = {"epochs": 3}
    config = JobConfig.from_dict(data)
    assert config.training.loss == "ce" and config.training.epochs == 3  # the paper's loss, the job's epochs
    assert config.network.dropout == 0.5 and config.network.filters == (8, 16, 32)
    assert not config.inputs.cues and not config.inputs.crop_to_points
    get_recipe("scribbles").check(config)  # runnable as written
    data["training"] = {"loss": "dice"}
    assert JobConfig.from_dict(data).training.loss == "dice"  # the job's own choice wins
    # the extreme-point recipe keeps the generic defaults (clicks as inputs)
    assert JobConfig.from_dict({**data, "recipe": "extreme_points"}).inputs.cues


def test_slice_wise_plan_takes_whole_slices_of_a_2d_network(tmp_path):
    from ExtremeSegLib.recipes.loop import plan

    data = job(tmp_path)
    data["training"].pop("patch_size")
    config = JobConfig.from_dict(data)
    params, patch, multiple = plan(config, (1.5, 1.5, 10.0), [(70, 90, 8), (74, 84, 10), (60, 96, 9)], 1, 3)
    assert params["slice_axis"] == 2 and patch[2] == 1  # one slice deep, whole median slice in-plane
    assert patch[0] >= 70 and patch[1] >= 90 and patch[0] % multiple[0] == 0 and patch[1] % multiple[1] == 0
    data["network"]["slice_wise"] = False
    params, patch, _ = plan(JobConfig.from_dict(data), (1.5, 1.5, 10.0), [(70, 90, 8)], 1, 3)
    assert params["slice_axis"] is None and patch[2] == 8
