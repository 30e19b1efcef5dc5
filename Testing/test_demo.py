"""`extremeseg demo` end to end on the bundled sample data (reduced budget), and its folder rules."""

import json

from ExtremeSegLib.cli import main
from ExtremeSegLib.io import read_image, read_segmentation


def test_demo_runs_the_whole_job_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--rounds", "2", "--steps-per-epoch", "2"]) == 0
    report = (out / "report.md").read_text()
    assert "## Rounds" in report and "| 1 |" in report and "hippocampus_019" in report
    results = json.loads((out / "report" / "results.json").read_text())
    assert [c["name"] for c in results["cases"]] == ["hippocampus_019", "hippocampus_023"]
    assert all(0.0 <= c["metrics"]["hippocampus"]["dice"] <= 1.0 for c in results["cases"])
    assert len(results["overlays"]) == 2 and all((out / "report" / o["path"]).is_file() for o in results["overlays"])
    rounds = json.loads((out / "run" / "rounds.json").read_text())
    assert len(rounds) == 2 and rounds[0]["pseudolabel_dice"] > 0.6 and rounds[1]["validation_dice"] is not None
    geometry, segments = read_segmentation(out / "segmentations" / "hippocampus_019.seg.nrrd")
    image = read_image(json.loads((out / "job.json").read_text())["validation"][0]["image"])
    assert geometry.same_geometry(image) and segments[0].name == "hippocampus"
    assert (out / "run" / "model.pt").is_file() and len(list((out / "run" / "segmentations").glob("*.seg.nrrd"))) == 4

    # the demo may redo its own folder, but not write into someone else's
    assert main(["demo", "--out", str(out), "--epochs", "1", "--rounds", "1", "--steps-per-epoch", "1"]) == 0
    assert len(json.loads((out / "run" / "rounds.json").read_text())) == 1
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not touch")
    capsys.readouterr()
    assert main(["demo", "--out", str(foreign), "--epochs", "1"]) == 2
    assert "not empty" in capsys.readouterr().err and (foreign / "thesis.tex").read_text() == "do not touch"
