"""Sample efficiency of the training engine: full supervision on ACDC, one lever at a time, on a short budget.

Every run trains the same 2D U-Net as ``scribbles_acdc.py full`` (whole slices, batch 4, AdamW 2e-3 with
polynomial decay, cross-entropy, no flips) on 40 patients (80 volumes) of the ACDC *training* split and is scored
on the other 10 training patients (20 volumes: every 5th patient of the training split, both frames), never on
the test split. Validation Dice (3D per volume, on the image grid, after the job's post-processing) is measured
about 10 times per run, so each run gives a Dice-against-training-minutes curve. Variants (``VARIANTS``):

- ``default``: the settings above;
- ``dice_ce``: soft Dice + cross-entropy (nnU-Net's loss) instead of cross-entropy alone;
- ``coarse``: a model grid of 2.5 mm in-plane (the images: about 1.4-1.6 mm), predictions resampled back to the
  image grid; 3x the steps, since a step costs about a third.

One run per call, resumable (a stopped run continues from its checkpoint)::

    /tmp/cpu1 .venv/bin/python benchmarks/engine_levers_acdc.py run default
    /tmp/cpu1 .venv/bin/python benchmarks/engine_levers_acdc.py run coarse
    .venv/bin/python benchmarks/engine_levers_acdc.py report

Runs go to ``benchmarks/runs/engine_levers_acdc/<variant>`` (not committed); ``report`` writes
``benchmarks/results/engine_levers_acdc.md``, ``.json`` and ``_minutes.png``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scribbles_acdc import SETTINGS, Log  # noqa: E402

from ExtremeSegLib.evaluation import discover_cases, load_split, select_cases  # noqa: E402
from ExtremeSegLib.evaluation.report import cpu_model, versions  # noqa: E402
from ExtremeSegLib.recipes import JobConfig, train  # noqa: E402
from ExtremeSegLib.recipes.history import dice_curve, plot_dice_curves  # noqa: E402
from ExtremeSegLib.training.engine import load_checkpoint  # noqa: E402

RUNS = REPO / "benchmarks" / "runs" / "engine_levers_acdc"
RESULTS = REPO / "benchmarks" / "results" / "engine_levers_acdc"
STEPS_PER_EPOCH = 40
EPOCHS = 16  # x 40 steps x about 1.3 s (1 thread, compiled): about 15 min of training
#: variant -> (description, epochs, changes to the job: {section: {key: value}})
VARIANTS = {
    "default": ("whole slices, CE, AdamW 2e-3 poly", EPOCHS, {}),
    "dice_ce": ("Dice + CE loss", EPOCHS, {"training": {"loss": "dice_ce"}}),
    "coarse": ("model grid 2.5 mm in-plane, 3x the steps", 3 * EPOCHS, {"inputs": {"spacing_mm": [2.5, 2.5, 10.0]}}),
}


def split(data: Path):
    """(training cases, validation cases): every 5th patient of the training split (both frames) validates."""
    found = discover_cases(data)
    names = load_split("acdc")["train"]
    patients = sorted({n.split("_")[0] for n in names})
    held = set(patients[::5])
    train_names = [n for n in names if n.split("_")[0] not in held]
    val_names = [n for n in names if n.split("_")[0] in held]
    return select_cases(found, train_names), select_cases(found, val_names)


def job(variant: str, data: Path) -> JobConfig:
    _, epochs, changes = VARIANTS[variant]
    train_cases, val_cases = split(data)

    def entry(case):
        return {"name": case.name, "image": str(case.image), "label": str(case.label)}

    config = {**SETTINGS, "recipe": "fully_supervised", "output": str(RUNS / variant),
              "network": {**SETTINGS["network"], "slice_wise": True},
              "training": {**SETTINGS["training"], "batch_size": 4, "epochs": epochs,
                           "steps_per_epoch": STEPS_PER_EPOCH},
              "cases": [entry(c) for c in train_cases], "validation": [entry(c) for c in val_cases],
              "rounds": {**SETTINGS["rounds"], "max_rounds": 1}, "pseudolabel": {}}
    for section, values in changes.items():
        config[section] = {**config.get(section, {}), **values}
    return JobConfig.from_dict(config)


def run(args) -> None:
    config = job(args.variant, args.data)
    train(config, Log(args.variant), resume=(Path(config.output) / "state" / "state.json").is_file())


def epoch_log(folder: Path) -> tuple:
    """(epoch log, finished): from ``rounds.json`` once the run is done, else from its checkpoint."""
    rounds = folder / "rounds.json"
    if rounds.is_file():
        return json.loads(rounds.read_text())[-1]["epoch_log"], True
    checkpoint = folder / "state" / "checkpoint.pt"
    return (load_checkpoint(checkpoint)["epoch_log"] if checkpoint.is_file() else []), False


def report(args) -> None:
    results = {"cpu": cpu_model(), "versions": versions(), "runs": {}}
    curves = {}
    for name, (title, epochs, changes) in VARIANTS.items():
        log, finished = epoch_log(RUNS / name)
        if not log:
            continue
        history = [{"round": 0, "epoch_log": log}]
        points = dice_curve(history)
        results["runs"][name] = {"title": title, "changes": changes, "planned_steps": epochs * STEPS_PER_EPOCH,
                                 "steps": len(log) * STEPS_PER_EPOCH, "finished": finished,
                                 "train_minutes": points[-1]["minutes"],
                                 "curve": [[p["minutes"], p["validation_dice"]] for p in points
                                           if p["validation_dice"] is not None]}
        curves[f"{name}: {title}"] = history
    lines = ["# Engine levers: full supervision on ACDC, validation carved from the training split", "",
             f"{results['cpu']}; 80 training volumes, 20 validation volumes (10 training-split patients). "
             "Commands: see benchmarks/engine_levers_acdc.py.", "",
             "| Variant | steps done / planned | training min | last validation Dice (mean) | best |",
             "|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        last = r["curve"][-1][1] if r["curve"] else float("nan")
        best = max((d for _, d in r["curve"]), default=float("nan"))
        lines.append(f"| {name}: {r['title']} | {r['steps']} / {r['planned_steps']}"
                     f"{'' if r['finished'] else ' (stopped)'} | {r['train_minutes']:.1f} | {last:.3f} | {best:.3f} |")
    lines += ["", "Validation Dice against training minutes:", ""]
    for name, r in results["runs"].items():
        lines.append(f"- {name}: " + ", ".join(f"{m:.1f} min {d:.3f}" for m, d in r["curve"]))
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")
    RESULTS.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    if curves:
        plot_dice_curves(RESULTS.parent / f"{RESULTS.name}_minutes.png", curves,
                         "ACDC full supervision, validation subset of the training split")
    print("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["run", "report"])
    parser.add_argument("variant", nargs="?", choices=sorted(VARIANTS))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "acdc")
    args = parser.parse_args(argv)
    if args.stage == "run" and args.variant is None:
        parser.error("run needs a variant")
    {"run": run, "report": report}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
