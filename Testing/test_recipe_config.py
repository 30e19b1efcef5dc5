"""Job configs: JSON round trip, relative paths, and clear errors for every kind of mistake."""

import json

import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.recipes import JobConfig, get_recipe, train


def minimal(tmp_path, **extra):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "a.mrk.json").write_text("{}")
    return {"recipe": "extreme_points", "output": "run", "cases": [{"image": "a.nii.gz", "points": "a.mrk.json"}],
            **extra}


def write(tmp_path, data):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data))
    return path


def test_round_trip_and_paths_relative_to_the_config_file(tmp_path):
    path = write(tmp_path, minimal(tmp_path, training={"epochs": 3, "patch_size": [32, 32, 16]},
                                   inputs={"cues": ["heatmap", "confidence"],
                                           "normalisation": {"mode": "window", "lower": -100, "upper": 200}}))
    config = JobConfig.from_json(path)
    assert config.cases[0].image == str(tmp_path / "a.nii.gz")
    assert config.output == str(tmp_path / "run")
    assert config.training.epochs == 3 and config.training.patch_size == (32, 32, 16)
    assert config.inputs.normalisation.mode == "window" and config.inputs.normalisation.lower == -100.0
    assert config.rounds.max_rounds == 4 and config.device == "auto"  # defaults
    again = JobConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    config.require_files(get_recipe(config.recipe).needs(config))


@pytest.mark.parametrize("change, message", [
    ({"epochs": 3}, "unknown key 'epochs' in the config; known keys: recipe, cases"),
    ({"training": {"epoch": 3}}, "unknown key 'epoch' in training"),
    ({"training": {"epochs": "ten"}}, 'training.epochs must be an integer, got "ten"'),
    ({"training": {"augment": 1}}, "training.augment must be true or false, got 1"),
    ({"training": {"epochs": 0}}, "training.epochs must be at least 1"),
    ({"training": {"augmentation": {"scale_probability": 2}}},
     "training.augmentation.scale_probability must lie in [0, 1]"),
    ({"training": {"patch_size": [32, 32]}}, "training.patch_size must be a list of 3 values"),
    ({"rounds": {"agreement": 1.5}}, "rounds.agreement must lie in"),
    ({"cases": []}, "the job has no cases"),
    ({"cases": "a.nii.gz"}, "cases must be a list"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"modality": "pet"}, "unknown modality 'pet'"),
    ({"inputs": {"cues": ["edges"]}}, "unknown cue channel 'edges'"),
    ({"inputs": {"normalisation": {"mode": "minmax"}}}, "unknown normalisation 'minmax'"),
    ({"classes": [{"name": "a", "label_values": [1]}, {"name": "b", "label_values": [1]}]}, "belongs to two classes"),
    ({"network": {"filters": [8, 16, 32], "max_levels": 5}}, "network.max_levels must lie in 3..3"),
])
def test_mistakes_are_named(tmp_path, change, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        JobConfig.from_json(write(tmp_path, {**minimal(tmp_path), **change}))


def test_missing_required_key_and_bad_json(tmp_path):
    data = minimal(tmp_path)
    del data["output"]
    with pytest.raises(InputError, match="lacks 'output'"):
        JobConfig.from_json(write(tmp_path, data))
    (tmp_path / "broken.json").write_text('{"recipe": ')
    with pytest.raises(InputError, match="not valid JSON"):
        JobConfig.from_json(tmp_path / "broken.json")
    with pytest.raises(InputError, match="does not exist"):
        JobConfig.from_json(tmp_path / "nowhere.json")


def test_files_and_recipe_requirements(tmp_path):
    cases = [{"image": "a.nii.gz", "points": "b.mrk.json"}]
    config = JobConfig.from_json(write(tmp_path, minimal(tmp_path, cases=cases)))
    with pytest.raises(InputError, match="case 1: the points file .*b.mrk.json does not exist"):
        train(config)
    config = JobConfig.from_json(write(tmp_path, minimal(tmp_path, cases=[{"image": "a.nii.gz"}])))
    with pytest.raises(InputError, match="case 1 .* has no points file"):
        train(config)
    config = JobConfig.from_json(write(tmp_path, minimal(tmp_path, recipe="fully_supervised")))
    with pytest.raises(InputError, match="has no label file"):
        train(config)
    config = JobConfig.from_json(write(tmp_path, minimal(tmp_path, pseudolabel={"radius": 3})))
    with pytest.raises(InputError, match="unknown pseudolabel parameter 'radius'"):
        train(config)
    config = JobConfig.from_json(write(tmp_path, minimal(tmp_path, classes=[{"name": "a"}, {"name": "b",
                                                                                       "label_values": [2]}])))
    with pytest.raises(InputError, match="one object per case"):
        train(config)
    config = JobConfig.from_json(write(tmp_path, minimal(tmp_path, recipe="magic")))
    with pytest.raises(InputError, match="unknown recipe 'magic'"):
        train(config)
    assert not (tmp_path / "run").exists()  # nothing was written for a job that could not start
