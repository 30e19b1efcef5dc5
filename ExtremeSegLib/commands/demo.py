"""``extremeseg demo``: the whole job on the bundled sample data, in a few minutes on a laptop CPU.

Extreme points (simulated clicks shipped with the sample hippocampus cases) -> random-walker pseudo-labels ->
3D network -> random-walker rounds -> segmentations, a model file and a report with Dice against the sample
ground truth per round and per case, with overlay pictures. Four cases train, two are held out.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# before torch loads: idle OpenMP threads must not spin on shared CPUs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..errors import InputError  # noqa: E402
from ..io.volumes import write_text_atomically  # noqa: E402

HELP = "run the whole job (points -> pseudo-labels -> training -> rounds -> segmentations + report) on sample data"

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "hippocampus"
TRAIN = ("hippocampus_006", "hippocampus_014", "hippocampus_015", "hippocampus_017")
HELD_OUT = ("hippocampus_019", "hippocampus_023")
MARKER = ".extremeseg-demo"


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for the results (created)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder the demo did not create (its files of the same names are "
                             "replaced)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per round (default 12)")
    parser.add_argument("--rounds", type=int, default=3, help="training rounds at most (default 3)")
    parser.add_argument("--steps-per-epoch", type=int, default=8, help="batches per epoch (default 8)")
    parser.add_argument("--progress-jsonl", action="store_true", help="report progress as JSON lines on stdout")


def demo_config(out: Path, sample: Path = SAMPLE, epochs: int = 12, rounds: int = 3, steps: int = 8) -> dict:
    """The demo's job config (plain JSON data; paths absolute)."""
    def case(name):
        return {"image": str(sample / "images" / f"{name}.nii.gz"),
                "points": str(sample / "extreme_points" / f"{name}.mrk.json"),
                "label": str(sample / "labels" / f"{name}.nii.gz")}

    return {
        "recipe": "extreme_points",
        "output": str(out / "run"),
        "classes": [{"name": "hippocampus", "label_values": [1, 2]}],
        "cases": [case(n) for n in TRAIN],
        "validation": [case(n) for n in HELD_OUT],
        "modality": "mri",
        "inputs": {"pad_mm": 10.0, "cues": ["heatmap"]},
        "network": {"filters": [16, 32, 64, 128]},
        "training": {"epochs": epochs, "steps_per_epoch": steps, "batch_size": 2, "seed": 0},
        # the hippocampus is thin: background seeds from 8 mm off the clicks' paths, 2 mm erosion between rounds
        "rounds": {"max_rounds": rounds, "erosion_mm": 2.0},
        "pseudolabel": {"background_distance_mm": 8.0, "path_radius_mm": 1.0},
        "device": "auto",
    }


def _prepare_folder(out: Path, overwrite: bool) -> None:
    """Create ``out``; reuse it only if the demo made it (marker file) or ``overwrite`` is given."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).exists() and not overwrite:
            raise InputError(f"{out} is not empty and was not made by `extremeseg demo`; choose a new folder or add "
                             "--overwrite")
        for name in ("run", "report", "job.json", "report.md", "segmentations"):  # only what the demo itself writes
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / MARKER, "made by extremeseg demo\n", True)


def run(args) -> int:
    from ..progress import Progress

    out = args.out.resolve()
    _prepare_folder(out, args.overwrite)
    progress = Progress(jsonl=args.progress_jsonl)
    progress.cancel_file = out / "run" / "CANCEL"
    progress.install_signal_handlers()
    summary = run_demo(out, progress, epochs=args.epochs, rounds=args.rounds, steps=args.steps_per_epoch)
    if not args.progress_jsonl:
        print(f"\nreport: {summary['report']}\nmodel: {summary['model']}\nsegmentations: {out / 'segmentations'}")
    return 0


def run_demo(out: Path, progress=None, sample: Path = SAMPLE, epochs: int = 12, rounds: int = 3,
             steps: int = 8) -> dict:
    """Train on the sample cases, segment the held-out ones with their clicks, write the report; returns paths."""
    from ..evaluation.overlay import write_overlay_png
    from ..evaluation.report import make_results, write_report
    from ..io.segmentations import read_segmentation
    from ..io.volumes import read_image, read_labelmap
    from ..metrics import evaluate
    from ..recipes import JobConfig, predict, train

    config_path = out / "job.json"
    write_text_atomically(config_path, json.dumps(demo_config(out, sample, epochs, rounds, steps), indent=1) + "\n",
                          True)  # the demo's own folder (_prepare_folder): its files are replaced
    config = JobConfig.from_json(config_path)
    outputs = train(config, progress)

    structures = {"hippocampus": [1]}
    rows, pictures = [], []
    (out / "segmentations").mkdir(exist_ok=True)
    for name, case in zip(HELD_OUT, config.validation):
        segmentation = out / "segmentations" / f"{name}.seg.nrrd"
        predict(outputs["model"], case.image, segmentation, points=case.points, progress=progress)
        prediction = read_segmentation(segmentation)[1][0].mask.astype("uint8")  # scored as read back from the file
        reference = read_labelmap(case.label)
        reference = reference.with_array((reference.array > 0).astype("uint8"))
        metrics = evaluate(prediction, reference.array, reference.spacing, structures)
        rows.append({"name": name, "metrics": metrics, "seconds": None})
        picture = write_overlay_png(out / "report" / "overlays" / f"{name}.png", read_image(case.image),
                                    reference.array, prediction)
        pictures.append({"case": name, "path": picture.relative_to(out / "report").as_posix(),
                         "note": f"Dice {metrics['hippocampus']['dice']:.3f}"})
    results = make_results(rows, structures, "ExtremeSeg demo: held-out sample cases",
                           {"command": f"extremeseg demo --out {out}", "job": str(config_path)})
    results["overlays"] = pictures
    written = write_report(results, out / "report")
    return {"report": _write_summary(out, outputs, results), "model": outputs["model"], "results": written}


def _write_summary(out: Path, outputs: dict, results: dict) -> Path:
    lines = ["# ExtremeSeg demo", "",
             "Weakly supervised training from 6 extreme-point clicks per case (random-walker pseudo-labels and "
             "refinement rounds, after Roth et al.'s extreme-point method) on the bundled sample "
             f"hippocampus MRI: {len(TRAIN)} training cases, {len(HELD_OUT)} held-out cases. Dice against the "
             "expert ground truth (used for scoring only).", "",
             "## Rounds", "", Path(outputs["rounds_table"]).read_text().split("\n", 2)[2].strip(), ""]
    if "rounds_plot" in outputs:
        lines += [f"![Dice per round]({Path(outputs['rounds_plot']).relative_to(out).as_posix()})", ""]
    lines += ["## Held-out cases (final model, with their clicks)", "",
              "| Case | Dice | HD95 (mm) |", "|---|---|---|"]
    for row in results["cases"]:
        m = row["metrics"]["hippocampus"]
        lines.append(f"| {row['name']} | {m['dice']:.3f} | {m['hd95']:.2f} |")
    lines += ["", "Details and overlays: [report/results.md](report/results.md).", "",
              "## Files", "",
              "- `job.json`: the job config (to train again, point its `output` to a new folder and run "
              "`extremeseg train --config job.json`)",
              "- `run/model.pt`: the trained model (`extremeseg predict --model run/model.pt --image IMG --points "
              "P.mrk.json --out OUT.seg.nrrd`)",
              "- `run/segmentations/`, `segmentations/`: training and held-out cases as Slicer `.seg.nrrd`",
              "- `run/rounds.json`, `run/rounds.md`: per-round figures"]
    return write_text_atomically(out / "report.md", "\n".join(lines) + "\n", True)
