"""benchmarks/surface_points.py: every stage's and every training's results reach the results file."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("surface_points_benchmark",
                                                  REPO / "benchmarks" / "surface_points.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(value: float) -> dict:
    stats = {"mean": value, "std": 0.0}
    return {"iou": stats, "dice": stats, "pseudolabel_dice_train": None, "epochs": 1, "seconds": 60.0,
            "train_seconds": 60.0, "by_gamma": {"0.5": {"iou": stats, "dice": stats}}}


def _results(commands: dict) -> dict:
    return {"dataset": "hippocampus", "commands": commands, "n_train": 2, "n_test": 2, "job": _benchmark().JOB}


def test_every_training_of_one_command_is_written(tmp_path):
    bench = _benchmark()
    results = _results({"train": ["train A"]})
    training = results.setdefault("training", {})  # as stage_train holds it
    trained = []
    for key, value in (("full", 0.8), ("25:lambda=0", 0.6), ("25:lambda=0.1", 0.61)):
        training[key] = _row(value)
        trained.append(key)
        bench.write_results(results, tmp_path, "sp", "train", trained)
    saved = json.loads((tmp_path / "sp.json").read_text())
    assert list(saved["training"]) == ["full", "25:lambda=0", "25:lambda=0.1"]
    assert saved["training"]["25:lambda=0.1"]["iou"]["mean"] == 0.61
    assert "25:lambda=0.1" in (tmp_path / "sp.md").read_text()


def test_other_commands_results_are_kept(tmp_path):
    """A command keeps what others wrote after it read the file: their trainings, stages and commands; its own
    trainings replace the saved ones, and a stale copy of another stage does not overwrite the file's."""
    bench = _benchmark()
    stale = {"summary": {}, "cases": [], "seconds": 1.0}
    other = _results({"train": ["train B"], "templates": "templates new"})
    other.update(templates={"summary": {}, "cases": ["fresh"], "seconds": 2.0},
                 training={"125:lambda=0": _row(0.65), "full": _row(0.1)})
    bench.write_results(other, tmp_path, "sp", "train", ["125:lambda=0", "full"])
    mine = _results({"train": ["train A"], "templates": "templates old"})  # read before the other command wrote
    mine.update(templates=stale, training={"full": _row(0.8)})
    bench.write_results(mine, tmp_path, "sp", "train", ["full"])
    saved = json.loads((tmp_path / "sp.json").read_text())
    assert saved["training"]["full"]["iou"]["mean"] == 0.8
    assert saved["training"]["125:lambda=0"]["iou"]["mean"] == 0.65
    assert saved["templates"]["cases"] == ["fresh"]
    assert saved["commands"]["templates"] == "templates new"
    assert saved["commands"]["train"] == ["train B", "train A"]
    assert mine["training"] is not None and set(mine["training"]) == {"full", "125:lambda=0"}


def test_a_pinned_grid_is_its_own_row(tmp_path):
    """A training with a pinned model grid is kept beside the planned-grid one of the same N and lambda, and the
    table shows each row's grid."""
    bench = _benchmark()
    results = _results({"train": ["train A"]})
    results["training"] = {"125:lambda=0.1": dict(_row(0.70), grid_mm=[1.1, 1.5, 1.1]),
                           "125:lambda=0.1:grid=1.054x1.054x1.054": dict(_row(0.74), grid_mm=[1.054] * 3),
                           "full": dict(_row(0.78), grid_mm=[1.054] * 3)}
    bench.write_results(results, tmp_path, "sp", "train", list(results["training"]))
    table = (tmp_path / "sp.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 125 |")]
    assert len(rows) == 2
    assert "1.100 x 1.500 x 1.100 |" in rows[0] and "(pinned)" not in rows[0]
    assert "1.054 x 1.054 x 1.054 (pinned)" in rows[1] and "| 0.949 |" in rows[1]  # 0.74 / 0.78
