"""Scribble supervision on ACDC (paper 004): seed areas, recursions with/without CRF and MC-dropout uncertainty,
against full supervision with the same network and budget, on the fixed patient split.

Stages (each one a separate run under the shared CPU lock, so that no run holds it for hours; a stage that was
interrupted continues from its checkpoint when started again)::

    B="flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/scribbles_acdc.py"
    $B round0 --arch 2d          # train on the seed areas (round 0), stop before the first relabelling
    $B variant none --arch 2d    # no recursion: round 0 scored on the test split
    $B variant base --arch 2d    # recursions relabelling with the network's argmax (seeds clamped)
    $B variant crf --arch 2d     # ... with the dense CRF
    $B variant unc --arch 2d     # ... with MC dropout + Welch's t-test (unsure voxels unknown)
    $B variant crf_unc --arch 2d # ... both (the paper's best "separate CRF & uncertainty")
    $B full --arch 2d            # dense labels, same network, as many training steps as round 0 + recursions
    $B report                    # benchmarks/results/scribbles_acdc.md and .json

``--tau`` keeps seed voxels at another random-walker probability than 0.99: round0 and the variants then run in
their own folders (``<arch>_tau<tau>``, rows titled with the tau); ``full`` does not depend on it.

Every variant continues from the same round-0 network (a copy of the round0 run with its job description changed
to the variant's; the engine then resumes at the first relabelling). ``--arch 3d`` trains an anisotropic 3D
network (3x3x1 kernels while slices are thick, 3x3x3 deeper; 128 x 128 x 8 patches, batch 1) instead of the 2D one
(``network.slice_wise``: a 2D U-Net run slice by slice on whole slices, batch 4). Whole slices, because a
network trained on 128 x 128 patches (earlier runs) found hearts in every window of the image that had none:
with dense labels it reached only 0.337 mean Dice, against 0.84 on its own training patches. The 3D network's
patch is the planner's (the median volume shrunk to ``max_patch_voxels``).
Runs go to ``benchmarks/runs/scribbles_acdc/<arch>[_tau<tau>]/<stage>`` (not committed).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ExtremeSegLib.errors import CancelledError  # noqa: E402
from ExtremeSegLib.evaluation import discover_cases, load_split, select_cases  # noqa: E402
from ExtremeSegLib.evaluation.report import versions  # noqa: E402
from ExtremeSegLib.progress import Progress  # noqa: E402
from ExtremeSegLib.recipes import JobConfig, train  # noqa: E402
from ExtremeSegLib.recipes.history import plot_dice_curves  # noqa: E402

STRUCTURES = ("RV", "Myo", "LV")
RUNS = REPO / "benchmarks" / "runs" / "scribbles_acdc"
RESULTS = REPO / "benchmarks" / "results" / "scribbles_acdc"
GROW_FROM_SEEDS = {"RV": 0.744, "Myo": 0.712, "LV": 0.870, "mean": 0.776}  # data README, all 140 volumes
PAPER = {"Base (no recursion)": [0.875, 0.825, 0.895], "Base": [0.880, 0.835, 0.905],
         "Base + separate CRF": [0.880, 0.840, 0.890], "Base + uncertainty": [0.890, 0.840, 0.910],
         "Base + sep. CRF & unc.": [0.890, 0.840, 0.910], "Fully supervised": [0.905, 0.895, 0.935]}

#: network / training settings per architecture: the same voxels per training step
ARCHS = {
    "2d": ({"slice_wise": True}, {"batch_size": 4}),
    "3d": ({"slice_wise": False}, {"batch_size": 1}),
}
ROUND0_EPOCHS = 40  # x 40 steps: round 0 from scratch on the seed areas (CPU budget: about 25 min)
RECURSION_EPOCHS = 10  # x 40 steps: each recursion, from the previous weights
RECURSIONS = 2
SETTINGS = {
    "modality": "mri",
    "classes": [{"name": name, "label_values": [n]} for n, name in enumerate(STRUCTURES, start=1)],
    "inputs": {"cues": [], "crop_to_points": False},
    # the paper: dropout 0.5 in the 5 innermost blocks of its U-Net (the 3 innermost levels here)
    "network": {"filters": [16, 32, 64, 128, 256], "dropout": 0.5, "dropout_levels": 3},
    # no flips: every ACDC volume has the same orientation, and a flip puts the RV on the LV's other side
    "training": {"steps_per_epoch": 40, "loss": "ce", "learning_rate": 0.002, "seed": 0,
                 "augmentation": {"flip_probability": 0.0}},
    "rounds": {"agreement": 0.99},
    "device": "cpu",
}
#: variant -> (training rounds, pseudolabel settings); all share round 0 (seed areas, 2D random walker, the tau of
#: --tau: 0.99 unless a run's folder and rows name another)
SEEDS = {"tau": 0.99, "beta": 130.0, "walk": "2d"}
LOCKED = "flock /tmp/extremeseg-cpu.lock .venv/bin/python"  # how stages are started unless a stage records otherwise
VARIANTS = {
    "none": ("Base (no recursion)", 1, {"crf": False, "uncertainty": False}),
    "base": ("Base", 1 + RECURSIONS, {"crf": False, "uncertainty": False}),
    "crf": ("Base + separate CRF", 1 + RECURSIONS, {"crf": True, "uncertainty": False}),
    # MC dropout: 10 passes (the paper: 50) for the CPU budget: 10 passes add about 6 s per training volume on 2 cores
    "unc": ("Base + uncertainty", 1 + RECURSIONS, {"crf": False, "uncertainty": True, "mc_passes": 10}),
    "crf_unc": ("Base + sep. CRF & unc.", 1 + RECURSIONS, {"crf": True, "uncertainty": True, "mc_passes": 10}),
}


class Log(Progress):
    """One line per epoch/round/message; ``stop_after_round0`` cancels once round 0's last epoch is done."""

    def __init__(self, label: str, stop_after_round0: int | None = None):
        super().__init__(bar=False)
        self.label, self.start, self.stop_after = label, time.perf_counter(), stop_after_round0

    def emit(self, event, **fields):
        if event in ("epoch", "round", "message"):
            text = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            print(f"[{self.label} {time.perf_counter() - self.start:7.0f}s] {event} {text}", flush=True)
        if event == "epoch" and self.stop_after and fields["round"] == 0 and fields["epoch"] == self.stop_after:
            self.cancel()


QUICK = {}  # --quick: a smoke test of every stage (a few cases, a few steps), in a separate runs folder


def cases(data: Path):
    found = discover_cases(data)
    split = load_split("acdc")
    limit = QUICK.get("cases")
    return select_cases(found, split["train"])[:limit], select_cases(found, split["test"])[:limit]


def job(arch: str, recipe: str, output: Path, data: Path, epochs: int, max_rounds: int, pseudolabel: dict) -> JobConfig:
    train_cases, test_cases = cases(data)

    def entry(case, scribble):
        out = {"name": case.name, "image": str(case.image), "label": str(case.label)}
        return {**out, "scribble": str(case.scribble)} if scribble else out

    network, patches = ARCHS[arch]
    training = {**SETTINGS["training"], **patches, "epochs": epochs}
    if QUICK:
        training.update(epochs=QUICK["epochs"], steps_per_epoch=2)
        pseudolabel = {**pseudolabel, "mc_passes": 2} if pseudolabel.get("uncertainty") else pseudolabel
    return JobConfig.from_dict({
        **SETTINGS, "recipe": recipe, "output": str(output), "training": training,
        "network": {**SETTINGS["network"], **network},
        "cases": [entry(c, recipe == "scribbles") for c in train_cases],
        "validation": [entry(c, False) for c in test_cases],
        "rounds": {**SETTINGS["rounds"], "max_rounds": max_rounds}, "pseudolabel": pseudolabel,
    })


def launcher() -> str:
    """How this stage was started, for the report's commands: under the shared CPU lock (flock is the parent
    process) or not, and with a thread limit if one was set."""
    parent = Path(f"/proc/{os.getppid()}/cmdline")
    locked = parent.exists() and parent.read_bytes().split(b"\0")[0].endswith(b"flock")
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + (LOCKED if locked else ".venv/bin/python")


def timed(folder: Path, stage: str, run) -> None:
    """Run a stage and add its wall time to ``folder/stages.json`` (interrupted parts count too)."""
    started, launched = time.perf_counter(), launcher()  # at the start: a stage outliving its shell is adopted by init
    try:
        run()
        status = "done"
    except CancelledError:
        status = "stopped"
    record = folder / "stages.json"
    stages = json.loads(record.read_text()) if record.exists() else []
    stages.append({"stage": stage, "status": status, "seconds": time.perf_counter() - started,
                   "command": " ".join(sys.argv), "launcher": launched,
                   "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    record.write_text(json.dumps(stages, indent=1) + "\n")


def resumable(config: JobConfig) -> bool:
    return (Path(config.output) / "state" / "state.json").is_file()


def run_folder(args, stage: str) -> Path:
    """A stage's run folder: seed areas at another tau are another set of runs, round 0 included."""
    return RUNS / (args.arch if args.tau == SEEDS["tau"] else f"{args.arch}_tau{args.tau:g}") / stage


def run_round0(args) -> None:
    folder = run_folder(args, "round0")
    config = job(args.arch, "scribbles", folder, args.data, ROUND0_EPOCHS, 1 + RECURSIONS,
                 {**SEEDS, "tau": args.tau, **VARIANTS["base"][2]})
    state = folder / "state" / "state.json"
    if state.is_file() and json.loads(state.read_text())["phase"] != "train":
        print(f"{folder}: round 0 is trained already")
        return
    timed(folder, "round0", lambda: train(config, Log(f"{args.arch} round0", ROUND0_EPOCHS), resume=resumable(config)))


def run_variant(args) -> None:
    source, folder = run_folder(args, "round0"), run_folder(args, args.variant)
    _, rounds, pseudolabel = VARIANTS[args.variant]
    rounds = rounds if args.recursions is None else 1 + args.recursions
    config = job(args.arch, "scribbles", folder, args.data, RECURSION_EPOCHS, rounds,
                 {**SEEDS, "tau": args.tau, **pseudolabel})
    if not folder.exists():
        state = json.loads((source / "state" / "state.json").read_text())
        if state["phase"] != "refine" or state["round"] != 0:
            raise SystemExit(f"{source} is not a finished round 0 (run the round0 stage first)")
        shutil.copytree(source / "state", folder / "state")
        # the same run from here on, described by the variant's settings (they differ only after round 0)
        (folder / "state" / "job.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
    timed(folder, args.variant, lambda: train(config, Log(f"{args.arch} {args.variant}"), resume=True))


def run_full(args) -> None:
    folder = RUNS / args.arch / "full"
    epochs = ROUND0_EPOCHS + RECURSIONS * RECURSION_EPOCHS
    config = job(args.arch, "fully_supervised", folder, args.data, epochs, 1, {})
    timed(folder, "full", lambda: train(config, Log(f"{args.arch} full"), resume=resumable(config)))


# -- report -----------------------------------------------------------------------------------------------

def seed_rows(test_names) -> dict:
    """Random-walker seed figures (from benchmarks/scribbles_seeds.py) on all volumes and on the test split."""
    path = REPO / "benchmarks" / "runs" / "scribbles_seeds" / "rows.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = [r for r in rows if r["mode"] == SEEDS["walk"] and r["beta"] == SEEDS["beta"]]
    out = {}
    for name, group in (("all", rows), ("test", [r for r in rows if r["case"] in test_names])):
        if group:
            out[name] = {"volumes": len(group), "rw_dice": np.mean([r["rw_dice"] for r in group], axis=0).tolist()}
    return out


def load_run(folder: Path):
    rounds, stages = folder / "rounds.json", folder / "stages.json"
    if not rounds.exists():
        return None
    return {"rounds": json.loads(rounds.read_text()),
            "stages": json.loads(stages.read_text()) if stages.exists() else []}


def report(args) -> None:
    _, test_cases = cases(args.data)
    results = {"versions": versions(), "settings": SETTINGS, "archs": ARCHS, "seeds": SEEDS,
               "round0_epochs": ROUND0_EPOCHS, "recursion_epochs": RECURSION_EPOCHS,
               "steps_per_epoch": SETTINGS["training"]["steps_per_epoch"], "runs": {},
               "seed_areas": seed_rows({c.name for c in test_cases})}
    # runs are not committed: a run missing here (another checkout made it) keeps its row from the last report
    previous = json.loads(RESULTS.with_suffix(".json").read_text()) if RESULTS.with_suffix(".json").exists() else {}
    results["runs"].update(previous.get("runs", {}))
    results["seed_areas"] = results["seed_areas"] or previous.get("seed_areas", {})
    for tag in sorted(p.name for p in RUNS.glob("*") if p.is_dir()):  # <arch> or <arch>_tau<tau>
        round0 = RUNS / tag / "round0" / "stages.json"
        round0_stages = json.loads(round0.read_text()) if round0.exists() else []
        round0_seconds = sum(s["seconds"] for s in round0_stages) if round0_stages else None
        # which round-0 training a variant continued (two trainings with the same settings differ by ~0.02 Dice)
        round0_trained = round0_stages[-1]["finished"] if round0_stages else None
        for name in list(VARIANTS) + ["full"]:
            run = load_run(RUNS / tag / name)
            if run is not None:
                run["round0_seconds"] = round0_seconds if name != "full" else None
                run["round0_trained"] = round0_trained if name != "full" else None
                if name != "full" and round0_stages:  # round 0's command belongs with the run that continues it
                    run["round0_stages"] = round0_stages
                results["runs"][f"{tag}/{name}"] = run
    RESULTS.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results, len(test_cases)) + "\n"
    curves = RESULTS.parent / f"{RESULTS.name}_minutes.png"
    if plot_dice_curves(curves, {key: run["rounds"] for key, run in results["runs"].items()},
                        "ACDC scribbles: Dice against training minutes") is not None:
        text += f"\n![Dice against training minutes]({curves.name})\n"
    RESULTS.with_suffix(".md").write_text(text)
    print(RESULTS.with_suffix(".md").read_text())


def _fmt(values):
    return " | ".join("–" if v is None else f"{v:.3f}" for v in values)


def _variant_title(name: str, tau: str) -> str:
    """A variant's row title; ``tau``: the run folder's seed-area tau ("" for the default)."""
    return VARIANTS[name][0] + (f", seed areas tau {tau}" if tau else "")


def markdown(results: dict, n_test: int) -> str:
    steps = results["steps_per_epoch"]
    lines = [
        "# Scribble supervision on ACDC (paper 004)", "",
        f"Fixed patient split (`benchmarks/splits/acdc.json`): 100 training volumes with their hand-drawn scribbles "
        f"(no dense labels), {n_test} test volumes (scored against the expert labels, never annotated). Test Dice per "
        "structure, 3D per volume, mean over the test volumes, on the original image grid. CPU only (2 cores shared "
        "with other jobs, each stage under `flock /tmp/extremeseg-cpu.lock` unless its command below says otherwise); "
        "wall times are of the whole stage (training, predicting every training and test volume each round, "
        "relabelling).", "",
        f"Network: 2D U-Net run slice by slice (MONAI DynUNet, filters 16-256, dropout 0.5 after each block of the 3 "
        f"innermost levels), whole slices at the median spacing (patch 224 x 256), batch 4, no flips, partial "
        f"cross-entropy, AdamW 2e-3 with polynomial decay. Round 0: "
        f"{results['round0_epochs'] * steps} steps on the seed areas (random walker per slice, beta "
        f"{results['seeds']['beta']:g}, tau {results['seeds']['tau']} unless the row names another); each recursion: "
        f"{results['recursion_epochs'] * steps} steps from the previous weights. Full supervision: the same network, "
        f"{(results['round0_epochs'] + RECURSIONS * results['recursion_epochs']) * steps} steps on the dense labels. "
        "Runs since 2026-12-03 clean their label maps (the job's default `postprocess`: each class keeps its largest "
        "connected component) and also report the mean before that; earlier runs had no post-processing.",
        "", "## Test Dice", "",
        "| Method | Recursion | RV | Myo | LV | Mean | Mean before post-processing | Agreement with next labels "
        "| Stage wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    seeds = results.get("seed_areas", {})
    for where, label in (("test", "test split"), ("all", "all scribbled volumes")):
        if where in seeds:
            d = seeds[where]["rw_dice"]
            lines.append(f"| Random walker from the scribbles ({label}, no learning, needs scribbles) | – | "
                         f"{_fmt(d)} | {np.mean(d):.3f} | – | – | – |")
    g = GROW_FROM_SEEDS
    lines.append(f"| Slicer Grow from seeds (all scribbled volumes, data README) | – | "
                 f"{_fmt([g['RV'], g['Myo'], g['LV'], g['mean']])} | – | – | – |")
    full_mean, full_cleaned, latest_round0 = {}, {}, {}
    for key, run in results["runs"].items():  # per run folder: each tau has its own round 0
        tag = key.split("/")[0]
        latest_round0[tag] = max(latest_round0.get(tag, ""), run.get("round0_trained") or "")
    for key, run in results["runs"].items():
        tag, name = key.split("/")
        arch, _, tau = tag.partition("_tau")
        title = "Fully supervised" if name == "full" else _variant_title(name, tau)
        if name != "full" and (run.get("round0_trained") or "") != latest_round0[tag]:
            title += ", from an earlier round-0 training"
        wall = f"{sum(s['seconds'] for s in run['stages']) / 60:.0f} min"
        if run.get("round0_seconds"):
            wall += f" (+ round 0 training: {run['round0_seconds'] / 60:.0f} min)"
        for n, row in enumerate(run["rounds"]):
            per_class = row.get("validation_dice_per_class") or [None] * 3
            means = [row.get("validation_dice"), row.get("validation_dice_raw"), row.get("agreement")]
            lines.append(f"| {title} ({arch}) | {row['round']} | {_fmt(per_class)} | {_fmt(means)} | "
                         f"{wall if n == len(run['rounds']) - 1 else ''} |")
        if name == "full":
            full_mean[arch] = run["rounds"][-1]["validation_dice"]
            full_cleaned[arch] = run["rounds"][-1].get("validation_dice_raw") is not None
    lines += ["", "Ratio to our own full supervision (final recursion; like with like: before post-processing "
                  "while the full-supervision run had none):", ""]
    for key, run in results["runs"].items():
        tag, name = key.split("/")
        arch, _, tau = tag.partition("_tau")
        final = run["rounds"][-1]
        if name != "full" and arch in full_mean and final["validation_dice"] is not None:
            raw = final.get("validation_dice_raw")
            mean = final["validation_dice"] if full_cleaned[arch] or raw is None else raw
            text = f"- {_variant_title(name, tau)} ({arch}): {mean / full_mean[arch]:.3f}"
            if mean != final["validation_dice"]:
                text += f" (after its post-processing: {final['validation_dice'] / full_mean[arch]:.3f})"
            lines.append(text)
    lines += ["", "Paper 004, Table 1 (ACDC challenge test set, 2D U-Net, GPU): "
              + "; ".join(f"{k} {np.mean(v):.3f} (RV {v[0]}, Myo {v[1]}, LV {v[2]})" for k, v in PAPER.items()), "",
              "## Commands", "", "```",
              'B="flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/scribbles_acdc.py"']
    stages = [s for run in results["runs"].values() for s in run.get("round0_stages", []) + run["stages"]]
    # stages recorded before the launcher was, ran under the lock
    for command, launch in sorted({(s["command"], s.get("launcher", LOCKED)) for s in stages}):
        args = command.split("scribbles_acdc.py", 1)[-1].strip()
        lines.append(f"$B {args}" if launch == LOCKED else f"{launch} benchmarks/scribbles_acdc.py {args}")
    lines += ["$B report", "```"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["round0", "variant", "full", "report"])
    parser.add_argument("variant", nargs="?", choices=sorted(VARIANTS))
    parser.add_argument("--arch", choices=sorted(ARCHS), default="2d")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "acdc")
    parser.add_argument("--recursions", type=int, help=f"variant: recursions to run (default {RECURSIONS})")
    parser.add_argument("--tau", type=float, default=SEEDS["tau"],
                        help=f"seed areas: random-walker probability a seed voxel needs (default {SEEDS['tau']})")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 cases per side, 2 steps per epoch")
    args = parser.parse_args(argv)
    if args.quick:
        global RUNS, RESULTS, ROUND0_EPOCHS
        QUICK.update(cases=3, epochs=1)
        ROUND0_EPOCHS = 1
        RUNS, RESULTS = RUNS.with_name("scribbles_acdc_quick"), RESULTS.with_name("scribbles_acdc_quick")
    if (args.stage == "variant") != (args.variant is not None):
        parser.error("name a variant after 'variant' (and only there)")
    {"round0": run_round0, "variant": run_variant, "full": run_full, "report": report}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
