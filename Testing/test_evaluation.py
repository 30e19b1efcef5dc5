import json
import math
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import REPO, SAMPLE_DATA, make_ellipsoid

from ExtremeSegLib.cli import main
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.evaluation import (
    Case,
    MethodOptions,
    discover_cases,
    load_split,
    make_method,
    make_split,
    run_benchmark,
    select_cases,
    write_report,
)
from ExtremeSegLib.evaluation.overlay import overlay_slices
from ExtremeSegLib.io.volumes import read_labelmap, write_volume
from ExtremeSegLib.metrics import evaluate
from ExtremeSegLib.volume import Volume


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# -- case discovery --------------------------------------------------------------------------------
@pytest.mark.parametrize("images, labels", [("images", "labels"), ("imagesTr", "labelsTr")])
def test_discovers_the_msd_layout(tmp_path, images, labels):
    for n in ("case_002", "case_001"):
        touch(tmp_path / images / f"{n}.nii.gz")
        touch(tmp_path / labels / f"{n}.nii.gz")
    touch(tmp_path / images / "._case_001.nii.gz")  # macOS junk shipped in the MSD archives
    touch(tmp_path / images / "dataset.json")
    cases = discover_cases(tmp_path)
    assert [c.name for c in cases] == ["case_001", "case_002"]
    assert cases[0].label == tmp_path / labels / "case_001.nii.gz" and cases[0].subject == "case_001"
    touch(tmp_path / images / "case_003.nii.gz")
    with pytest.raises(InputError, match="no label file.*case_003"):
        discover_cases(tmp_path)


def test_discovers_acdc_and_generic_names(tmp_path):
    for frame in ("01", "12"):
        for role in ("image", "label", "scribble"):
            touch(tmp_path / f"patient007_frame{frame}_{role}.nii.gz")
    touch(tmp_path / "knee_image.nrrd")
    touch(tmp_path / "knee_label.nrrd")
    cases = {c.name: c for c in discover_cases(tmp_path)}
    assert set(cases) == {"patient007_frame01", "patient007_frame12", "knee"}
    assert cases["patient007_frame12"].subject == "patient007"
    assert cases["patient007_frame01"].scribble.name == "patient007_frame01_scribble.nii.gz"
    assert cases["knee"].subject == "knee" and cases["knee"].scribble is None
    touch(tmp_path / "lonely_image.nii.gz")
    with pytest.raises(InputError, match="lonely_label"):
        discover_cases(tmp_path)


def test_discovery_explains_empty_and_unknown_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover_cases(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no cases found"):
        discover_cases(tmp_path)
    touch(tmp_path / "scan.nii.gz")
    with pytest.raises(InputError, match="<name>_image.nii.gz"):
        discover_cases(tmp_path)


def test_discovers_the_real_folders(shared_data):
    hippo = discover_cases(shared_data / "hippocampus")
    acdc = discover_cases(shared_data / "acdc")
    assert len(hippo) == 200 and len(acdc) == 140
    assert len({c.subject for c in acdc}) == 70 and all(c.scribble is not None for c in acdc)


# -- splits ----------------------------------------------------------------------------------------
def test_committed_splits_hold_the_documented_sizes_and_keep_patients_together():
    hippo, acdc = load_split("hippocampus"), load_split("acdc")
    assert (len(hippo["train"]), len(hippo["test"])) == (150, 50)
    assert not set(hippo["train"]) & set(hippo["test"])
    patients = {side: {n.split("_")[0] for n in names} for side, names in acdc.items()}
    assert (len(patients["train"]), len(patients["test"])) == (50, 20)
    assert not patients["train"] & patients["test"]
    assert len(acdc["train"]) + len(acdc["test"]) == 140
    assert load_split(REPO / "benchmarks" / "splits" / "acdc.json") == acdc


def test_committed_splits_are_what_the_generator_makes(shared_data):
    cases = discover_cases(shared_data / "acdc")
    split = make_split(cases, 20, seed=0)
    assert split == {k: load_split("acdc")[k] for k in ("train", "test")}
    assert make_split(cases, 20, seed=1) != split


def test_bad_splits_are_explained(tmp_path):
    with pytest.raises(InputError, match="neither a file nor one of the project's splits"):
        load_split("kidney")
    bad = tmp_path / "bad.json"
    bad.write_text('{"seed": 3}')
    with pytest.raises(InputError, match="no subsets"):
        load_split(bad)
    cases = [Case("a", tmp_path / "a", tmp_path / "a")]
    with pytest.raises(InputError, match="1 case.*not in the data folder"):
        select_cases(cases, ["a", "b"])


# -- overlays and reports --------------------------------------------------------------------------
def test_overlay_keeps_the_physical_aspect_ratio():
    # 40 x 40 x 8 voxels of 1.5 x 1.5 x 8 mm: 60 x 60 x 64 mm, drawn at 64 mm / 256 px = 0.25 mm per pixel
    image, label = make_ellipsoid(shape=(40, 40, 8), radii_mm=(15, 15, 25), spacing=(1.5, 1.5, 8.0))
    everywhere = np.ones(label.shape, dtype=np.uint8)
    rgb = overlay_slices(image, everywhere, label.array, margin_mm=0.0)
    # panels K (I across, J up: 240 x 240 px), J and I (240 across, K up: 256 px), 4 px apart
    assert rgb.dtype == np.uint8 and rgb.shape == (256, 3 * 240 + 2 * 4, 3)
    assert np.all(rgb[:8, :240] == 0)  # the shorter panel K is centred vertically
    assert np.all(rgb[8, :240] == (0, 230, 0)) and np.all(rgb[0, 244:484] == (0, 230, 0))  # grid edge = reference edge
    assert np.all(rgb[:, 240:244] == 0)  # the gap between panels
    red = np.all(rgb == (255, 40, 40), axis=2)
    rows = np.flatnonzero(red[:, 244:484].any(axis=1))  # the ellipsoid in panel J, 50 mm tall
    assert (rows[-1] - rows[0] + 1) * 0.25 == pytest.approx(6 * 8.0, abs=2.0)


def test_report_writer_is_reusable_on_its_own(tmp_path):
    rows = [{"name": "a", "seconds": 1.0,
             "metrics": {"obj": {"dice": 0.5, "hd95": 2.0, "precision": 1, "recall": 0.5}}},
            {"name": "b", "seconds": 3.0, "metrics": {"obj": {"dice": 0.0, "hd95": math.inf, "precision": 0,
                                                              "recall": 0}}}]
    from ExtremeSegLib.evaluation import make_results

    results = make_results(rows, {"obj": [1]}, "Trained model", {"recipe": "x"})
    paths = write_report(results, tmp_path, title="Training benchmark")
    data = json.loads(paths["json"].read_text())
    assert data["title"] == "Training benchmark" and data["config"] == {"recipe": "x"}
    assert data["summary"]["obj"]["dice"]["mean"] == pytest.approx(0.25)
    assert data["summary"]["obj"]["hd95"] == {"mean": 2.0, "std": 0.0, "median": 2.0, "n": 1, "n_infinite": 1}
    assert data["cases"][1]["metrics"]["obj"]["hd95"] is None
    assert data["timing"]["seconds_per_case_mean"] == pytest.approx(2.0)
    md = paths["markdown"].read_text()
    assert "# Training benchmark" in md and "0.250 ± 0.250" in md and "(1 inf)" in md


# -- the benchmark runner and command --------------------------------------------------------------
@pytest.fixture
def sample_hippocampus(tmp_path):
    """Three sample cases in an MSD layout of their own."""
    src = SAMPLE_DATA / "hippocampus"
    for name in sorted(p.name for p in (src / "images").iterdir())[:3]:
        for sub in ("images", "labels"):
            (tmp_path / "data" / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(src / sub / name, tmp_path / "data" / sub / name)
    return tmp_path / "data"


def test_benchmark_command_end_to_end(sample_hippocampus, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["benchmark", "--data", str(sample_hippocampus), "--method", "extreme-box",
            "--structures", "hippocampus=1,2 anterior=1", "--out", str(out), "--overlays", "2",
            "--seed", "4", "--noise-mm", "1"]
    assert main(args) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["n_cases"] == 3 and data["config"]["method"] == "extreme-box"
    assert "extremeseg benchmark" in data["config"]["command"] and data["versions"]["numpy"] == np.__version__
    assert data["versions"]["cpu"].endswith("CPUs")  # which machine the figures come from
    # the numbers are those of the saved predictions against the ground truth
    for case in data["cases"]:
        reference = read_labelmap(sample_hippocampus / "labels" / f"{case['name']}.nii.gz")
        prediction = read_labelmap(out / "predictions" / f"{case['name']}.nii.gz")
        again = evaluate(prediction.array, reference.array, reference.spacing,
                         {"hippocampus": [1, 2], "anterior": [1]})
        for name in again:
            assert case["metrics"][name] == pytest.approx(again[name])
        assert case["metrics"]["hippocampus"]["recall"] > 0.9  # a box around the object holds (nearly) all of it
        assert 0.1 < case["metrics"]["hippocampus"]["dice"] < 0.6
    dices = [c["metrics"]["hippocampus"]["dice"] for c in data["cases"]]
    assert data["summary"]["hippocampus"]["dice"]["mean"] == pytest.approx(np.mean(dices))
    md = (out / "results.md").read_text()
    assert f"{np.mean(dices):.3f} ± {np.std(dices):.3f}" in md
    assert len(data["overlays"]) == 2
    for overlay in data["overlays"]:
        png = iio.imread(out / overlay["path"])
        assert png.ndim == 3 and png.shape[2] == 3 and png.shape[1] > 256
        assert f"]({overlay['path']})" in md
    # same seed, same simulated clicks, same numbers; the folder is not overwritten without --overwrite
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    again = json.loads((out / "results.json").read_text())["cases"]
    assert [c["metrics"] for c in again] == [c["metrics"] for c in data["cases"]]


def test_ground_truth_method_scores_perfectly_on_acdc_sample(tmp_path):
    out = tmp_path / "run"
    assert main(["benchmark", "--data", str(SAMPLE_DATA / "acdc"), "--method", "ground-truth",
                 "--structures", "RV=1;Myo=2;LV=3", "--out", str(out), "--overlays", "1"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["n_cases"] == 2
    for name in ("RV", "Myo", "LV"):
        assert data["summary"][name]["dice"]["mean"] == 1.0 and data["summary"][name]["hd95"]["mean"] == 0.0
    assert (out / data["overlays"][0]["path"]).is_file()


def test_a_failing_case_is_reported_not_fatal(sample_hippocampus, tmp_path):
    cases = discover_cases(sample_hippocampus)
    truth = make_method("ground-truth", MethodOptions(structures={"h": [1, 2]}))

    def method(case):
        if case.name == cases[1].name:
            raise InputError("the clicks are outside the image")
        return truth(case)

    results = run_benchmark(cases, method, tmp_path / "run", {"h": [1, 2]}, overlays=0)
    assert results["n_failed"] == 1
    failed = [c for c in results["cases"] if c.get("error")]
    assert failed[0]["metrics"]["h"]["dice"] == 0.0 and failed[0]["seconds"] is None
    assert results["summary"]["h"]["dice"]["mean"] == pytest.approx(2 / 3)
    assert "1 case(s) failed" in (tmp_path / "run" / "results.md").read_text()


def test_benchmark_refuses_bad_requests(sample_hippocampus, tmp_path, capsys):
    base = ["benchmark", "--data", str(sample_hippocampus), "--out", str(tmp_path / "o")]
    assert main(base + ["--method", "magic", "--structures", "h=1"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert main(base + ["--method", "extreme-box", "--structures", "h"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(base + ["--method", "extreme-box", "--structures", "h=1", "--split", "hippocampus"]) == 2
    assert "not in the data folder" in capsys.readouterr().err
    assert main(["benchmark", "--list-methods"]) == 0
    assert "ground-truth" in capsys.readouterr().out


def test_prediction_on_another_grid_fails_the_case(tmp_path):
    image, label = make_ellipsoid(shape=(20, 20, 10))
    (tmp_path / "data").mkdir()
    write_volume(image, tmp_path / "data" / "x_image.nii.gz")
    write_volume(label, tmp_path / "data" / "x_label.nii.gz")
    cases = discover_cases(tmp_path / "data")
    moved = label.ijk_to_ras.copy()
    moved[0, 3] += 5.0
    shifted = Volume(label.array, moved)
    results = run_benchmark(cases, lambda case: shifted, tmp_path / "run", {"obj": [1]}, overlays=0)
    assert "does not share the image's geometry" in results["cases"][0]["error"]


def one_argument_method(case):
    return read_labelmap(case.label)


def test_registry_resolves_lazily_with_or_without_options(sample_hippocampus, monkeypatch):
    from ExtremeSegLib.evaluation import METHODS

    case = discover_cases(sample_hippocampus)[0]
    monkeypatch.setitem(METHODS, "plain", f"{__name__}:one_argument_method")
    monkeypatch.setitem(METHODS, "missing", "ExtremeSegLib.no_such_module:benchmark_method")
    prediction = make_method("plain", MethodOptions(structures={"h": [1, 2]}))(case)
    assert np.array_equal(prediction.array, read_labelmap(case.label).array)
    with pytest.raises(InputError, match="'missing' is not available"):
        make_method("missing", MethodOptions(structures={"h": [1]}))
