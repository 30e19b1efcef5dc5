"""Sample efficiency of the training engine: full supervision on ACDC, one lever at a time, on a short budget.

Every run trains the same 2D U-Net as ``scribbles_acdc.py full`` (whole slices, batch 4, AdamW 2e-3 with
polynomial decay, cross-entropy, no flips) on 40 patients (80 volumes) of the ACDC *training* split and is scored
on the other 10 training patients (20 volumes: every 5th patient of the training split, both frames), never on
the test split. Validation Dice (3D per volume, on the image grid, after the job's post-processing) is measured
about 10 times per run, so each run gives a Dice-against-training-minutes curve. Variants (``VARIANTS``):

- ``default``: the settings above;
- ``dice_ce``: soft Dice + cross-entropy (nnU-Net's loss) instead of cross-entropy alone;
- ``coarse``: a model grid of 2.5 mm in-plane (the images: about 1.4-1.6 mm), predictions resampled back to the
  image grid; 3x the steps, since a step costs about a third;
- ``planned``: no spacing given: the planner's rule (``docs/training.md``) picks the model grid; 3x the steps.
- ``planned_dice_ce``: ``planned`` with soft Dice + cross-entropy;
- ``planned_dice``: ``planned`` with soft Dice alone (the engine's default loss, which ``fully_supervised`` uses);
- ``planned_augment``: ``planned`` with random in-plane scaling (``training.augmentation.scale_probability`` 0.2,
  magnification 0.71-1.4, nnU-Net's probability and range) on top of the rotation and intensity augmentation;
- ``planned_sgd``: ``planned`` with SGD (Nesterov momentum 0.99, nnU-Net's optimizer) at its default learning rate
  (1e-2, polynomial decay) instead of AdamW 2e-3.

``plan`` prints the grid the planner picks (no training) for ACDC (slice-wise, the runs here) and the
hippocampus (3D, the settings of ``train_extreme_points.py``; its two labels as one class, and as two), with the
thickness and round-trip Dice behind it. ``test`` trains the ``planned`` settings on the whole training split and
scores the test split (about 10 times during training: the Dice-against-minutes curve); it is the one test-split
run, resumable like the others::

    /tmp/cpu1 .venv/bin/python benchmarks/engine_levers_acdc.py plan
    /tmp/cpu1 .venv/bin/python benchmarks/engine_levers_acdc.py test

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
import resource  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scribbles_acdc import SETTINGS, Log  # noqa: E402

from ExtremeSegLib.errors import CancelledError  # noqa: E402
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
    "planned": ("model grid from the planner's rule, 3x the steps", 3 * EPOCHS, {}),
    "planned_dice_ce": ("planned grid, Dice + CE loss", 3 * EPOCHS, {"training": {"loss": "dice_ce"}}),
    "planned_dice": ("planned grid, soft Dice loss (the engine's default)", 3 * EPOCHS,
                     {"training": {"loss": "dice"}}),
    "planned_augment": ("planned grid, random in-plane scaling p 0.2 (0.71-1.4x)", 3 * EPOCHS,
                        {"training": {"augmentation": {**SETTINGS["training"]["augmentation"],
                                                       "scale_probability": 0.2}}}),
    "planned_sgd": ("planned grid, SGD Nesterov 0.99 at 1e-2", 3 * EPOCHS,
                    {"training": {"optimizer": "sgd", "learning_rate": None}}),  # None: the optimizer's default
}
#: the test-split run: the planned grid, 64 x 40 steps (about 50-55 min at 1.2-1.3 s / step, 1 thread)
TEST_EPOCHS = 64


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
    if variant == "test":
        found = discover_cases(data)
        train_cases, val_cases = (select_cases(found, load_split("acdc")[part]) for part in ("train", "test"))
        epochs, changes = TEST_EPOCHS, {}
    else:
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
    log = Log(args.variant)
    if args.stop_after_minutes:  # a stage of a long run: cancel (at the next check, checkpoint kept) at the slot budget
        timer = threading.Timer(60 * args.stop_after_minutes, log.cancel)
        timer.daemon = True
        timer.start()
    status = "done"
    try:
        train(config, log, resume=(Path(config.output) / "state" / "state.json").is_file())
    except CancelledError:
        status = "stopped"
        print(f"stopped after {args.stop_after_minutes} min; run the same command again to continue")
    # peak resident memory of this stage (Linux: KiB), one record per stage beside the run
    record = Path(config.output) / "stages.json"
    stages = json.loads(record.read_text()) if record.is_file() else []
    stages.append({"status": status, "threads": os.environ.get("OMP_NUM_THREADS"),
                   "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    record.write_text(json.dumps(stages, indent=1) + "\n")


def plan(args) -> None:
    """The planner's grid for ACDC (slice-wise) and the hippocampus (3D), from the training split's labels."""
    from train_extreme_points import DATASETS

    from ExtremeSegLib.annotations import ExtremePoints
    from ExtremeSegLib.io.volumes import read_image, read_labelmap
    from ExtremeSegLib.pseudolabel.label import PseudoLabel
    from ExtremeSegLib.recipes.config import ClassConfig, NetworkConfig
    from ExtremeSegLib.recipes.loop import plan_spacing
    from ExtremeSegLib.recipes.recipe import class_indices, prepare_case
    from ExtremeSegLib.simulate import simulate_extreme_points
    from ExtremeSegLib.training.data import InputSpec, median_spacing

    hippocampus = DATASETS["hippocampus"]
    workloads = {
        "ACDC, 3 classes, slice-wise (these runs)": ("acdc", [c["label_values"] for c in SETTINGS["classes"]],
                                                     {"cues": [], "crop_to_points": False},
                                                     {**SETTINGS["network"], "slice_wise": True}),
        "hippocampus, one class (train_extreme_points.py)": ("hippocampus", [hippocampus["label_values"]],
                                                             {"cues": [], "pad_mm": hippocampus["inputs"]["pad_mm"]},
                                                             hippocampus["network"]),
        "hippocampus, two classes, 5 levels": ("hippocampus", [[1], [2]], {"cues": [], "crop_to_points": False},
                                               {"filters": [16, 32, 64, 128, 256]}),
    }
    lines = ["# The planner's model grid on the training splits (no training)", "",
             "`.venv/bin/python benchmarks/engine_levers_acdc.py plan`; rule: docs/training.md", ""]
    for title, (name, values, inputs, network) in workloads.items():
        cases = select_cases(discover_cases(args.data.parent / name), load_split(name)["train"])
        classes = [ClassConfig(f"c{n}", tuple(v)) for n, v in enumerate(values)]
        read = []
        for case in cases:
            image = read_image(str(case.image))
            reference = class_indices(read_labelmap(str(case.label)).array, classes)
            points = (ExtremePoints.from_points(simulate_extreme_points(image.with_array(reference > 0)), image)
                      if inputs.get("crop_to_points", True) else None)  # the exact clicks: the crop it plans
            read.append((image, points, reference))
        spec = InputSpec(**inputs).resolved("mri", median_spacing([r[0] for r in read]))
        labels = []
        for case, r in zip(cases, read):
            prepared = prepare_case(case, case.name, r, spec)
            p = prepared.reference_on_grid(len(classes) + 1)
            labels.append(PseudoLabel(p, np.ones(p.shape[1:], np.float32), prepared.frame.grid))
        tried = []
        spacing, thinnest = plan_spacing(spec.spacing_mm, labels, NetworkConfig(**network), torch.device("cpu"), tried)
        lines.append(f"- {title}: {len(cases)} training cases, median spacing "
                     f"{[round(x, 3) for x in spec.spacing_mm]} mm, thinnest class {thinnest:.2f} mm across -> "
                     f"model grid **{[round(x, 3) for x in spacing]} mm**; candidates (voxels across: in-plane mm, "
                     "round-trip Dice per class): " + "; ".join(
                         f"{a:g}: {s[0]:.2f} mm, {', '.join(f'{d:.3f}' for d in kept)}" for a, s, kept in tried))
        print(lines[-1], flush=True)
    (RESULTS.parent / "engine_levers_plan.md").write_text("\n".join(lines) + "\n")


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
    recorded = RESULTS.with_suffix(".json")
    earlier = json.loads(recorded.read_text())["runs"] if recorded.is_file() else {}
    runs = {**VARIANTS, "test": ("TEST SPLIT (40 volumes): planned grid, all 100 training volumes", TEST_EPOCHS, {})}
    for name, (title, epochs, changes) in runs.items():
        log, finished = epoch_log(RUNS / name)
        if not log:  # a run measured elsewhere (its folder is not committed): keep its recorded figures
            if name in earlier:
                results["runs"][name] = earlier[name]
            continue
        history = [{"round": 0, "epoch_log": log}]
        points = dice_curve(history)
        results["runs"][name] = {"title": title, "changes": changes, "planned_steps": epochs * STEPS_PER_EPOCH,
                                 "steps": len(log) * STEPS_PER_EPOCH, "finished": finished,
                                 "train_minutes": points[-1]["minutes"],
                                 "curve": [[p["minutes"], p["validation_dice"]] for p in points
                                           if p["validation_dice"] is not None]}
        stages = RUNS / name / "stages.json"
        if stages.is_file():
            results["runs"][name]["peak_rss_mib"] = max(st["peak_rss_mib"] for st in json.loads(stages.read_text()))
        if finished:
            row = json.loads((RUNS / name / "rounds.json").read_text())[-1]
            results["runs"][name]["final_dice_per_class"] = row["validation_dice_per_class"]
        curves[f"{name}: {title}"] = history
    for name, r in results["runs"].items():  # runs kept from the record are in the plot too
        if f"{name}: {r['title']}" not in curves and r["curve"]:
            minutes = [0.0] + [m for m, _ in r["curve"]]
            curves[f"{name}: {r['title']}"] = [{"round": 0, "epoch_log": [
                {"epoch": n + 1, "seconds": 60 * (minutes[n + 1] - minutes[n]), "loss": None, "validation_dice": d}
                for n, (_, d) in enumerate(r["curve"])]}]
    lines = ["# Engine levers: full supervision on ACDC, validation carved from the training split", "",
             f"{results['cpu']}; 80 training volumes, 20 validation volumes (10 training-split patients). "
             "Commands: see benchmarks/engine_levers_acdc.py.", "",
             "| Variant | steps done / planned | training min | last validation Dice (mean) | best | peak RSS MiB |",
             "|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        last = r["curve"][-1][1] if r["curve"] else float("nan")
        best = max((d for _, d in r["curve"]), default=float("nan"))
        lines.append(f"| {name}: {r['title']} | {r['steps']} / {r['planned_steps']}"
                     f"{'' if r['finished'] else ' (stopped)'} | {r['train_minutes']:.1f} | {last:.3f} | {best:.3f} | "
                     f"{r.get('peak_rss_mib', float('nan')):.0f} |")
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
    parser.add_argument("stage", choices=["run", "report", "plan", "test"])
    parser.add_argument("variant", nargs="?", choices=sorted(VARIANTS))
    parser.add_argument("--stop-after-minutes", type=float, default=None,
                        help="cancel after this many minutes (wall), after an epoch's checkpoint; rerun to continue")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "acdc")
    args = parser.parse_args(argv)
    if args.stage == "run" and args.variant is None:
        parser.error("run needs a variant")
    if args.stage == "test":
        args.variant = "test"
    {"run": run, "report": report, "plan": plan, "test": run}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
