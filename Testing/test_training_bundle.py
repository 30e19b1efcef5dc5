"""MONAI Bundle export: a tiny trained model's bundle, run by MONAI's own bundle runner in a fresh process where
ExtremeSeg cannot be imported, gives the labels `extremeseg predict` gives; click-based models are refused."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_ellipsoid

from ExtremeSegLib.cli import main
from ExtremeSegLib.io import read_segmentation, read_volume, write_points, write_volume
from ExtremeSegLib.recipes import JobConfig, predict, train
from ExtremeSegLib.simulate import simulate_extreme_points
from ExtremeSegLib.training.bundle import bundle_summary
from ExtremeSegLib.training.model_file import read_description


def train_tiny(folder, network=None, modality="mri", inputs=None):
    cases = []
    for n in range(3):
        image, label = make_ellipsoid(shape=(30, 28, 12), radii_mm=(8.0, 7.0, 6.0), spacing=(1.0, 1.0, 2.0),
                                      noise=0.6, seed=n)
        if modality == "ct":
            image = image.with_array(image.array * 200.0 - 50.0)
        write_volume(image, folder / f"case{n}_image.nii.gz")
        write_volume(label, folder / f"case{n}_label.nii.gz")
        write_points(folder / f"case{n}.mrk.json", simulate_extreme_points(label, noise_mm=0.5, seed=n))
        cases.append({"image": f"case{n}_image.nii.gz", "label": f"case{n}_label.nii.gz", "name": f"case{n}",
                      "points": f"case{n}.mrk.json"})
    data = {"recipe": "fully_supervised", "output": "run", "cases": cases[:2], "modality": modality,
            "classes": [{"name": "object", "label_values": [1]}],
            # a model grid unlike the images' so that resampling both ways is exercised
            "inputs": inputs or {"cues": [], "crop_to_points": False, "spacing_mm": [1.3, 1.1, 1.7]},
            "network": {"filters": [8, 16, 32], **(network or {})},
            "training": {"epochs": 2, "steps_per_epoch": 3, "learning_rate": 0.005}, "device": "cpu"}
    (folder / "job.json").write_text(json.dumps(data))
    return train(JobConfig.from_json(folder / "job.json"))["model"]


def run_bundle(bundle, image, out):
    """MONAI's bundle runner in a child process in which importing ExtremeSegLib fails."""
    code = ("import sys; sys.modules['ExtremeSegLib'] = None; from monai.bundle import run; "
            f"run(config_file={str(bundle / 'configs' / 'inference.json')!r}, bundle_root={str(bundle)!r}, "
            f"image={str(image)!r}, output_dir={str(out)!r})")
    done = subprocess.run([sys.executable, "-c", code], cwd=out.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return read_volume(out / (image.name.split(".")[0] + "_seg.nii.gz"))


@pytest.mark.parametrize("network,modality,image_format", [
    ({}, "mri", ".nii.gz"),
    ({"slice_wise": True, "dropout": 0.5, "dropout_levels": 2}, "ct", ".nrrd"),  # dropout as the scribbles recipe's
], ids=["3d-zscore-nifti", "slicewise-dropout-window-oblique-nrrd"])
def test_bundle_run_by_monai_gives_the_labels_of_extremeseg_predict(tmp_path, network, modality, image_format):
    model = train_tiny(tmp_path, network, modality)
    bundle = tmp_path / "bundle"
    assert main(["export", "--model", str(model), "--out", str(bundle), "--license", "CC-BY-4.0"]) == 0
    for part in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "README.md",
                 "scripts/extremeseg_transforms.py"):
        assert (bundle / part).is_file(), part
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["license"] == "CC-BY-4.0" and meta["pred_classes"] == {"0": "background", "1": "object"}
    assert meta["extremeseg"]["spacing_mm"] == [1.3, 1.1, 1.7]
    assert "1.3, 1.1, 1.7" in (bundle / "README.md").read_text()

    image = tmp_path / f"new_image{image_format}"
    new, _ = make_ellipsoid(shape=(30, 28, 12), radii_mm=(8.0, 7.0, 6.0), spacing=(1.0, 1.0, 2.0), noise=0.6, seed=5,
                            direction=None if image_format == ".nii.gz" else [[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    write_volume(new.with_array(new.array * (200.0 if modality == "ct" else 1.0)), image)
    predict(model, image, tmp_path / "predicted.seg.nrrd", device="cpu")
    _, segments = read_segmentation(tmp_path / "predicted.seg.nrrd")
    labels = run_bundle(bundle, image, tmp_path / "eval")
    reference = read_volume(image)
    assert np.allclose(labels.ijk_to_ras, reference.ijk_to_ras)
    assert segments[0].mask.sum() > 500  # a real object, not two empty maps
    assert np.array_equal(labels.array == 1, segments[0].mask)  # identical labels
    assert set(np.unique(labels.array)) <= {0, 1}


def test_click_based_model_is_refused_and_the_summary_says_so(tmp_path, capsys):
    model = train_tiny(tmp_path, inputs={"cues": ["heatmap"], "pad_mm": 4.0})
    assert "not possible" in bundle_summary(read_description(model))
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "bundle")]) == 2
    assert "extreme points" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_export_summary_and_no_overwrite(tmp_path, capsys):
    model = train_tiny(tmp_path)
    assert main(["export", "--model", str(model), "--summary"]) == 0
    assert "MONAI Bundle export: 3D DynUNet on 1.3 x 1.1 x 1.7 mm voxels" in capsys.readouterr().out
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "taken")]) == 2
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"
    assert "not an empty folder" in capsys.readouterr().err


def test_the_slicer_logic_says_what_a_bundle_holds_and_exports_it(tmp_path):
    """The panel's model information says what a bundle would hold (the export button's tooltip); the button's
    logic writes the bundle, and a click-based model gets the refusal that disables the button."""
    pytest.importorskip("slicer", reason="the Slicer node logic needs slicer-core")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ExtremeSeg"))
    from ExtremeSegSlicerLib.logic import ExtremeSegNodeLogic

    from ExtremeSegLib.errors import InputError

    logic = ExtremeSegNodeLogic()
    for name in ("auto", "clicks"):
        (tmp_path / name).mkdir()
    automatic = train_tiny(tmp_path / "auto")
    info = logic.model_info(automatic)
    assert info.usable and not info.bundle_refusal and "MONAI Bundle" in info.bundle
    out = logic.export_bundle(automatic, tmp_path / "bundle")
    assert (out / "configs" / "inference.json").is_file() and (out / "models" / "model.pt").is_file()
    assert "not stated" in json.loads((out / "configs" / "metadata.json").read_text())["license"]

    clicks = train_tiny(tmp_path / "clicks", inputs={"cues": ["heatmap"], "crop_to_points": True})
    refused = logic.model_info(clicks)
    assert refused.usable and refused.needs_clicks and refused.bundle_refusal
    with pytest.raises(InputError, match="click"):
        logic.export_bundle(clicks, tmp_path / "bundle2")


def test_a_foreground_threshold_the_bundle_cannot_reproduce_is_refused():
    from ExtremeSegLib.training.bundle import export_refusal

    automatic = {"recipe": "weak_net", "inputs": {"cues": [], "crop_to_points": False}}
    assert export_refusal({**automatic, "postprocess": {"foreground_threshold": 0.5}}) is None  # the argmax
    assert "0.7" in export_refusal({**automatic, "postprocess": {"foreground_threshold": 0.7}})
