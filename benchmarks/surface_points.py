"""Surface points (paper 003): the deformed template, Weak-Net and full supervision on the hippocampus.

On the fixed split (``benchmarks/splits/hippocampus.json``), N surface points per case are simulated from the
ground truth (``ExtremeSegLib.simulate.simulate_surface_points``, farthest-point sampling seeded by the case
name, so the first 25 points of a case are the same for every N). Stages:

- ``templates``: IoU and Dice on the test cases of the template alone and of the convex hull of the same points
  (the naive reference), for every N (a few minutes of CPU: it may run outside the lock).
- ``timing``: the template's update time for 25..250 points (cold fit, a point added, a point moved;
  rasterisation apart) on the first test cases, under the lock.
- ``train``: per N, the Weak-Net recipe with lambda = 0 (the template-supervised U-Net) and with its default
  lambda, trained on the training cases' points and scored on the test cases (no points at inference); and
  once, full supervision with the same network and budget.

Run it under the shared CPU lock; each stage adds its part to the results file as it finishes::

    env OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/surface_points.py --stage templates
    flock /tmp/extremeseg-cpu.lock env OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python benchmarks/surface_points.py --stage timing
    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/surface_points.py --stage train --points 125

Writes ``benchmarks/results/surface_points.md``, ``.json`` and ``.png``; runs go to ``benchmarks/runs/surface_points/``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ExtremeSegLib.errors import CancelledError  # noqa: E402
from ExtremeSegLib.evaluation import discover_cases, load_split, select_cases  # noqa: E402
from ExtremeSegLib.evaluation.report import benchmark_command, versions  # noqa: E402
from ExtremeSegLib.io import read_image, read_labelmap, write_points  # noqa: E402
from ExtremeSegLib.metrics import dice, iou  # noqa: E402
from ExtremeSegLib.progress import Progress  # noqa: E402
from ExtremeSegLib.pseudolabel.surface_template import SurfaceTemplate, rasterize_mesh  # noqa: E402
from ExtremeSegLib.recipes import JobConfig, train  # noqa: E402
from ExtremeSegLib.simulate import simulate_surface_points  # noqa: E402
from ExtremeSegLib.training.inference import segment_image  # noqa: E402
from ExtremeSegLib.training.model_file import load_model  # noqa: E402
from ExtremeSegLib.training.postprocess import clean_label_map  # noqa: E402

DATASET = "hippocampus"
LABEL_VALUES = [1, 2]  # anterior + posterior: one object
TIMING_POINTS = (25, 50, 100, 150, 200, 250)
TIMING_CASES = 10
#: the job settings shared by every training (the reduced budget is stated in the results)
JOB = {
    "modality": "mri", "classes": [{"name": "hippocampus", "label_values": LABEL_VALUES}],
    "inputs": {"cues": [], "crop_to_points": False},
    "network": {"filters": [16, 32, 64, 128]},
    "training": {"epochs": 6, "batch_size": 2, "learning_rate": 0.002},
    "device": "auto",
}
#: thresholds (the paper's gamma) scored on every trained network's foreground probabilities
GAMMAS = (0.3, 0.4, 0.5, 0.6, 0.7)


def case_seed(case) -> int:
    return zlib.crc32(case.name.encode())


def load_case(case):
    image = read_image(case.image)
    label = read_labelmap(case.label)
    return image, label.with_array(np.isin(label.array, LABEL_VALUES).astype(np.uint8))


def hull_mask(points: np.ndarray, image) -> np.ndarray:
    """Voxel centres inside the convex hull of the points (the same rasteriser as the template's)."""
    from scipy.spatial import ConvexHull

    return rasterize_mesh(points, ConvexHull(points).simplices, image)


def stage_templates(test_cases, counts) -> dict:
    rows = []
    for case in test_cases:
        image, mask = load_case(case)
        points = simulate_surface_points(mask, max(counts), seed=case_seed(case))
        row = {"case": case.name}
        for n in counts:
            template = SurfaceTemplate(image).update(points[:n]).mask(image)
            hull = hull_mask(points[:n], image)
            row[str(n)] = {"template_iou": iou(template, mask.array), "template_dice": dice(template, mask.array),
                           "hull_iou": iou(hull, mask.array), "hull_dice": dice(hull, mask.array)}
        rows.append(row)
        print(case.name, {n: round(row[str(n)]["template_iou"], 3) for n in counts}, flush=True)
    summary = {}
    for n in counts:
        summary[str(n)] = {key: {"mean": float(np.mean([r[str(n)][key] for r in rows])),
                                 "std": float(np.std([r[str(n)][key] for r in rows]))}
                           for key in rows[0][str(n)]}
    return {"cases": rows, "summary": summary}


def stage_timing(test_cases) -> dict:
    """Milliseconds per cold fit, per update after a point is added / moved, and per rasterisation."""
    times = {str(n): {"cold_ms": [], "added_ms": [], "moved_ms": [], "rasterise_ms": [], "iterations_added": []}
             for n in TIMING_POINTS}
    for case in test_cases[:TIMING_CASES]:
        image, mask = load_case(case)
        points = simulate_surface_points(mask, max(TIMING_POINTS) + 1, seed=case_seed(case))
        SurfaceTemplate(image).update(points[:30])  # builds the cached regulariser inverse once
        for n in TIMING_POINTS:
            entry = times[str(n)]
            live = SurfaceTemplate(image)
            started = time.perf_counter()
            live.update(points[:n - 1])
            entry["cold_ms"].append(1e3 * (time.perf_counter() - started))
            started = time.perf_counter()
            mesh = live.update(points[:n])
            entry["added_ms"].append(1e3 * (time.perf_counter() - started))
            entry["iterations_added"].append(mesh.iterations)
            moved = points[:n].copy()
            moved[n // 2] += 1.0  # a point dragged by 1 mm along each axis
            started = time.perf_counter()
            live.update(moved)
            entry["moved_ms"].append(1e3 * (time.perf_counter() - started))
            started = time.perf_counter()
            live.mask()
            entry["rasterise_ms"].append(1e3 * (time.perf_counter() - started))
        print(case.name, {n: round(times[str(n)]["added_ms"][-1], 1) for n in TIMING_POINTS}, flush=True)
    return {n: {key: {"median": float(np.median(v)), "max": float(np.max(v))} for key, v in entry.items()}
            for n, entry in times.items()}


class Recorder(Progress):
    """One line per epoch and message (a log, not a bar); asks the run to stop after the first epoch that ends
    past ``stop_after_s`` (it resumes from that epoch's checkpoint when the command is run again)."""

    def __init__(self, label: str, stop_after_s: float = None):
        super().__init__(bar=False)
        self.label, self.start, self.stop_after_s = label, time.perf_counter(), stop_after_s

    def emit(self, event, **fields):
        if event in ("epoch", "round", "message"):
            text = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            print(f"[{self.label} {time.perf_counter() - self.start:7.0f}s] {event} {text}", flush=True)
        if event == "epoch" and self.stop_after_s and time.perf_counter() - self.start > self.stop_after_s \
                and fields.get("epoch") != fields.get("epochs"):
            self.cancel()


def write_surface_points(cases, n: int, folder: Path) -> dict:
    """N surface points per case (seeded by the case name), as .mrk.json; case name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        _, mask = load_case(case)
        points = simulate_surface_points(mask, n, seed=case_seed(case))
        paths[case.name] = str(write_points(folder / f"{case.name}.mrk.json", points, name="SurfacePoints",
                                            overwrite=True))
    return paths


def score_thresholds(model_path: Path, cases, gammas=GAMMAS) -> dict:
    """IoU and Dice of a model's fully automatic segmentations of ``cases`` at each foreground threshold.

    One prediction per case; each threshold's label map is cleaned as the model file says. Returns
    ``{"model_gamma", "by_gamma": {gamma: {"iou", "dice"}}, "cases": [{"case", "iou": {gamma: .}, ...}]}``.
    """
    model = load_model(model_path)
    settings = model.postprocess
    # no threshold: the most probable of two classes, i.e. foreground from 0.5 (a tie aside)
    model_gamma = 0.5 if settings.foreground_threshold is None else settings.foreground_threshold
    gammas = sorted(set(gammas) | {model_gamma})
    rows = []
    for case in cases:
        image, reference = load_case(case)
        foreground = segment_image(model, image, postprocess=False).probabilities[1]
        row = {"case": case.name, "iou": {}, "dice": {}}
        for gamma in gammas:
            labels = clean_label_map((foreground >= gamma).astype(np.uint8), image, settings, None,
                                     model.class_names)
            row["iou"][f"{gamma:g}"] = iou(labels == 1, reference.array)
            row["dice"][f"{gamma:g}"] = dice(labels == 1, reference.array)
        rows.append(row)
    by_gamma = {f"{g:g}": {key: {"mean": float(np.mean([r[key][f"{g:g}"] for r in rows])),
                                 "std": float(np.std([r[key][f"{g:g}"] for r in rows]))} for key in ("iou", "dice")}
                for g in gammas}
    return {"model_gamma": model_gamma, "by_gamma": by_gamma, "cases": rows}


def train_and_score(recipe: str, train_cases, test_cases, output: Path, points=None, pseudolabel=None,
                    epochs=None, progress: Progress = None, spacing_mm=None) -> dict:
    """Train one job (resumed from its checkpoint if its folder holds an unfinished run), then IoU and Dice of
    its fully automatic segmentations of ``test_cases`` at the model's threshold and at :data:`GAMMAS`.

    ``spacing_mm``: the model grid (mm, 3 floats), pinned so that variants compare on one grid; ``None`` lets
    the job plan it from its own labels (a template-supervised job then plans from the rasterised templates).
    """
    def entry(case):
        row = {"name": case.name, "image": str(case.image), "label": str(case.label)}
        return dict(row, points=points[case.name]) if points is not None else row

    data = json.loads(json.dumps(JOB))
    if epochs:
        data["training"]["epochs"] = epochs
    data.update(recipe=recipe, output=str(output), pseudolabel=pseudolabel or {},
                cases=[entry(c) for c in train_cases])
    if spacing_mm is not None:
        data["inputs"] = dict(data["inputs"], spacing_mm=[float(s) for s in spacing_mm])
    state = output / "state" / "state.json"
    started = time.perf_counter()
    train(JobConfig.from_dict(data), progress or Recorder(output.name), resume=state.exists())
    seconds = time.perf_counter() - started
    rounds = json.loads((output / "rounds.json").read_text())
    epoch_seconds = [e["seconds"] for r in rounds for e in r["epoch_log"]]  # kept across resumed stages
    model = load_model(output / "model.pt")
    grid_mm, patch = list(model.inputs.spacing_mm), list(model.patch_size)  # as planned or pinned
    scores = score_thresholds(output / "model.pt", test_cases)
    at_model = scores["by_gamma"][f"{scores['model_gamma']:g}"]
    return {"recipe": recipe, "pseudolabel": pseudolabel or {}, "seconds": seconds,
            "train_seconds": float(sum(epoch_seconds)), "epochs": data["training"]["epochs"],
            "grid_mm": grid_mm, "patch": patch, "pseudolabel_dice_train": rounds[-1]["pseudolabel_dice"],
            "train_dice": rounds[-1]["train_dice"],
            "gamma": scores["model_gamma"], "iou": at_model["iou"], "dice": at_model["dice"],
            "by_gamma": scores["by_gamma"], "cases": scores["cases"]}


def stage_train(results, train_cases, test_cases, counts, runs: Path, write, full: bool, weights, epochs,
                stop_after_s: float = None, spacing_mm=None) -> None:
    """Full supervision once, then per N the template-only U-Net (lambda 0) and Weak-Net; each written as it
    ends by ``write(key)``, ``key`` its entry in ``results["training"]``.

    ``stop_after_s``: no epoch starts after that many seconds of this command (a training stops at its last
    checkpoint, raising :class:`CancelledError`; the same command resumes it). ``spacing_mm``: the model grid
    pinned for every training of the command (see :func:`train_and_score`); their keys and run folders then
    name it (``125:lambda=0.1:grid=1.054``), so the planned-grid results stay beside them.
    """
    training = results.setdefault("training", {})
    started = time.perf_counter()

    def progress(label):
        left = None if stop_after_s is None else stop_after_s - (time.perf_counter() - started)
        if left is not None and left <= 0:
            raise CancelledError(f"the stage's {stop_after_s / 60:.0f} minutes are spent before {label}")
        return Recorder(label, left)

    grid = "" if spacing_mm is None else ":grid=" + "x".join(f"{s:.4g}" for s in spacing_mm)
    if full:
        key = "full" + grid
        training[key] = train_and_score("fully_supervised", train_cases, test_cases, runs / key.replace(":", "_"),
                                        epochs=epochs, progress=progress("full"), spacing_mm=spacing_mm)
        write(key)
    for n in counts:
        points = write_surface_points(train_cases, n, runs / f"points_{n}")
        for weight in weights:
            key = f"{n}:lambda={weight:g}" + grid
            name = f"weak_net_{n}_{weight:g}" + grid.replace(":", "_")
            training[key] = train_and_score("weak_net", train_cases, test_cases, runs / name, points,
                                            {"reconstruction_weight": weight}, epochs, progress(name), spacing_mm)
            write(key)


def write_results(results: dict, results_dir: Path, name: str, stage: str = None, trained=()) -> None:
    """Write the .json, .md and .png, merged with the file as it is now on disk.

    Several commands may write the same file (one per stage, or train commands side by side), each holding the
    copy it read when it started. So what the file holds now wins, except what this command produced: its
    ``stage`` (``"templates"`` or ``"timing"``) and its trainings (``trained``: keys of ``results["training"]``).
    ``results["training"]`` is merged in place: :func:`stage_train` keeps adding to that same dict.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        training = results.setdefault("training", {})
        merged = {**saved.get("training", {}), **{key: training[key] for key in trained}}
        training.clear()
        training.update(merged)
        for key in ("templates", "timing"):
            if key != stage and key in saved:
                results[key] = saved[key]
        for key, command in saved.get("commands", {}).items():
            if key == "train":
                results["commands"]["train"] = list(dict.fromkeys(command + results["commands"].get("train", [])))
            elif key != stage:
                results["commands"][key] = command
    path.write_text(json.dumps(results, indent=1) + "\n")
    (results_dir / f"{name}.md").write_text(markdown(results, name))
    plot(results, results_dir / f"{name}.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("templates", "timing", "train"), required=True)
    parser.add_argument("--points", type=int, nargs="+", default=[25, 50, 125], help="points per case (N)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", type=Path, default=REPO / "benchmarks" / "runs")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default="surface_points", help="results name (default surface_points)")
    parser.add_argument("--weights", type=float, nargs="*", default=[0.0, 0.1],
                        help="train stage: the reconstruction weights (lambda) per N (default 0 and the recipe's 0.1)")
    parser.add_argument("--epochs", type=int, help=f"train stage: epochs (default {JOB['training']['epochs']})")
    parser.add_argument("--stop-after-minutes", type=float, help="train stage: start no epoch after this many "
                        "minutes (exit 3; the same command resumes from the last epoch's checkpoint)")
    parser.add_argument("--skip-full", action="store_true", help="train stage: no full-supervision run")
    parser.add_argument("--spacing-mm", type=float, nargs=3, help="train stage: pin the model grid (mm) of every "
                        "training, e.g. to the one full supervision planned (default: each job plans its own)")
    parser.add_argument("--limit", type=int, help="a quick try: the first N training cases, scored on the next N "
                        "training cases; results go to the runs folder, not benchmarks/results")
    parser.add_argument("--train-cases", type=int, help="train stage: only the first K training cases train "
                        "(scored on the test split as always); results named <name>_train<K>")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md and .png from the saved .json")
    args = parser.parse_args(argv)
    if args.limit:  # a quick try is not a result
        args.name = f"{args.name}_limit{args.limit}"
        args.results = args.runs / args.name
    elif args.train_cases:
        args.name = f"{args.name}_train{args.train_cases}"
    path = args.results / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.exists() else {"dataset": DATASET, "commands": {}}
    if args.render:
        write_results(results, args.results, args.name)  # the file as saved: nothing of this command's
        return 0

    cases = discover_cases(args.data / DATASET)
    split = load_split(DATASET)
    train_cases, test_cases = select_cases(cases, split["train"]), select_cases(cases, split["test"])
    if args.limit:
        train_cases, test_cases = train_cases[:args.limit], train_cases[args.limit:2 * args.limit]
    elif args.train_cases:
        train_cases = train_cases[:args.train_cases]
    results.update({"n_train": len(train_cases), "n_test": len(test_cases), "versions": versions(),
                    "cpu_threads": os.cpu_count()})
    command = benchmark_command("benchmarks/surface_points.py", argv)
    if os.environ.get("OPENBLAS_NUM_THREADS"):  # the fits' small solves, as measured
        command = command.replace(".venv/bin/python", f"env OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} "
                                  ".venv/bin/python")
    if args.stage == "templates":  # light enough to run beside other jobs
        command = command.replace("flock /tmp/extremeseg-cpu.lock ", "")
    trained = []  # the trainings this command ran, by key
    if args.stage == "templates":
        started = time.perf_counter()
        results["templates"] = stage_templates(test_cases, sorted(args.points))
        results["templates"]["seconds"] = time.perf_counter() - started
    elif args.stage == "timing":
        results["timing"] = stage_timing(test_cases)
    else:
        results["commands"].setdefault("train", [])
        if command not in results["commands"]["train"]:
            results["commands"]["train"].append(command)
        results["job"] = dict(JOB, training=dict(JOB["training"], epochs=args.epochs or JOB["training"]["epochs"]))
        runs = args.runs / args.name

        def write(key):
            trained.append(key)
            write_results(results, args.results, args.name, "train", trained)

        try:
            stage_train(results, train_cases, test_cases, args.points, runs, write, not args.skip_full, args.weights,
                        args.epochs, args.stop_after_minutes and 60 * args.stop_after_minutes, args.spacing_mm)
        except CancelledError as err:
            print(f"stopped ({err}); run the same command again to resume", flush=True)
            return 3
    if args.stage != "train":
        results["commands"][args.stage] = command
    write_results(results, args.results, args.name, args.stage, trained)
    print((args.results / f"{args.name}.md").read_text())
    return 0


def _mean_std(stats: dict) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _parse_key(key: str) -> tuple:
    """``(points per case or None for full supervision, lambda or None, pinned grid text or "")`` of a key
    ``full``, ``125:lambda=0.1`` or either with ``:grid=AxBxC``."""
    key, _, grid = key.partition(":grid=")
    if key == "full":
        return None, None, grid
    n, weight = key.split(":lambda=")
    return int(n), float(weight), grid


def _training_order(item) -> tuple:
    """Full supervision first, then by points per case, lambda and grid (commands write in the order they end)."""
    n, weight, grid = _parse_key(item[0])
    return (-1, 0.0, grid) if n is None else (n, weight, grid)


def markdown(results: dict, name: str) -> str:
    lines = [f"# Surface points on the {results['dataset']}: template, Weak-Net, full supervision", ""]
    for stage, command in results.get("commands", {}).items():
        commands = command if isinstance(command, list) else [command]
        lines += [f"Stage `{stage}`:", "", "```"] + commands + ["```", ""]
    lines += [f"Fixed split: {results.get('n_train')} training / {results.get('n_test')} test volumes; surface points "
              "simulated from the ground truth (boundary voxel centres, farthest-point sampling seeded by the case "
              f"name). CPU: {results.get('versions', {}).get('cpu', '?')}, no GPU.", ""]
    templates = results.get("templates")
    if templates:
        lines += ["## The template alone vs the convex hull of the same points (test cases, no learning)", "",
                  "| Points per case | Template IoU | Template Dice | Convex hull IoU | Convex hull Dice |",
                  "|---|---|---|---|---|"]
        for n, s in templates["summary"].items():
            lines.append(f"| {n} | {_mean_std(s['template_iou'])} | {_mean_std(s['template_dice'])} | "
                         f"{_mean_std(s['hull_iou'])} | {_mean_std(s['hull_dice'])} |")
        lines += ["", f"({len(templates['cases'])} cases, {templates['seconds']:.0f} s for all fits and hulls.)", ""]
    training = results.get("training")
    if training:
        job = results["job"]
        lines += ["## Trained networks (test cases, fully automatic: no points at inference)", "",
                  "| Points per case | Method | Model grid mm | Test IoU | Test Dice | IoU / full | "
                  "Template Dice (train) | Epochs | Wall time |", "|---|---|---|---|---|---|---|---|---|"]
        full = training.get("full")
        for key, row in sorted(training.items(), key=_training_order):
            n, weight, pinned = _parse_key(key)
            if weight is None:
                n, method = "– (dense labels)", "Full supervision"
            else:
                method = ("Template-supervised U-Net (lambda = 0)" if weight == 0
                          else f"Weak-Net (lambda = {weight:g})")
            grid = "–" if not row.get("grid_mm") else " x ".join(f"{s:.3f}" for s in row["grid_mm"])
            grid += " (pinned)" if pinned else ""
            ratio = f"{row['iou']['mean'] / full['iou']['mean']:.3f}" if full else "–"
            template = "–" if row["pseudolabel_dice_train"] is None or weight is None else \
                f"{row['pseudolabel_dice_train']:.3f}"
            lines.append(f"| {n} | {method} | {grid} | {_mean_std(row['iou'])} | {_mean_std(row['dice'])} | {ratio} | "
                         f"{template} | {row['epochs']} | {row['seconds'] / 60:.1f} min |")
        scored = {key: row for key, row in training.items() if "by_gamma" in row}
        if scored:
            gammas = sorted({g for row in scored.values() for g in row["by_gamma"]}, key=float)
            lines += ["", "IoU at each foreground threshold (gamma) from the same predictions (the model's own "
                      "threshold is the table's above; full supervision: 0.5 = the more probable class):", "",
                      "| Run | " + " | ".join(f"gamma {g}" for g in gammas) + " | Training time |",
                      "|---|" + "---|" * (len(gammas) + 1)]
            for key, row in sorted(scored.items(), key=_training_order):
                cells = [f"{row['by_gamma'][g]['iou']['mean']:.3f}" if g in row["by_gamma"] else "–" for g in gammas]
                lines.append(f"| {key} | " + " | ".join(cells) + f" | {row['train_seconds'] / 60:.1f} min |")
        lines += ["", "Budget (every training the same, reduced for the shared 2-core CPU): "
                      f"{job['training']['epochs']} epochs of {results['n_train'] // job['training']['batch_size']} "
                      "steps (batch "
                      f"{job['training']['batch_size']}), learning rate {job['training']['learning_rate']}, "
                      f"filters {job['network']['filters']}; whole image in, no click channel. Job settings: `"
                      + json.dumps(job) + "`.", ""]
    timing = results.get("timing")
    if timing:
        lines += [f"## Template update time (ms; median / max over the first {TIMING_CASES} test cases; "
                  "OPENBLAS_NUM_THREADS as in the command)", "",
                  "| Points | Cold fit | A point added (warm) | Rounds when added | A point moved (warm) | "
                  "Rasterisation |", "|---|---|---|---|---|---|"]
        for n, t in timing.items():
            lines.append(f"| {n} | {t['cold_ms']['median']:.1f} / {t['cold_ms']['max']:.1f} | "
                         f"{t['added_ms']['median']:.1f} / {t['added_ms']['max']:.1f} | "
                         f"{t['iterations_added']['median']:.0f} | "
                         f"{t['moved_ms']['median']:.1f} / {t['moved_ms']['max']:.1f} | "
                         f"{t['rasterise_ms']['median']:.1f} / {t['rasterise_ms']['max']:.1f} |")
        lines.append("")
        if results.get("timing_note"):
            lines += [f"Timing {results['timing_note']}.", ""]
    if results.get("training_versions"):
        lines += [f"Trainings ran at commit {results['training_versions'].get('git_commit', '?')} on "
                  f"{results['training_versions'].get('cpu', '?')}.", ""]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    templates = results.get("templates")
    training = results.get("training", {})
    if not templates and not training:
        return
    figure = Figure(figsize=(6.5, 4.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if templates:
        counts = [int(n) for n in templates["summary"]]
        axes.plot(counts, [templates["summary"][str(n)]["template_iou"]["mean"] for n in counts], marker="o",
                  label="template alone")
        axes.plot(counts, [templates["summary"][str(n)]["hull_iou"]["mean"] for n in counts], marker="s", ls=":",
                  color="grey", label="convex hull of the points")
    # the planned-grid sweep over N; rows with a pinned grid are in the table
    sweep = {parsed[:2]: row for parsed, row in ((_parse_key(key), row) for key, row in training.items())
             if parsed[1] is not None and not parsed[2]}
    if not templates:
        counts = sorted({n for n, _ in sweep})
    for weight in sorted({w for _, w in sweep}):
        trained = sorted((n, row["iou"]["mean"]) for (n, w), row in sweep.items() if w == weight)
        label = "template-supervised U-Net (lambda 0)" if weight == 0 else f"Weak-Net (lambda {weight:g})"
        axes.plot(*zip(*trained), marker="^" if weight == 0 else "D", label=label)
    if "full" in training:
        axes.axhline(training["full"]["iou"]["mean"], color="black", ls="--", label="full supervision")
    axes.set_xticks(counts)
    axes.set_xlabel("surface points per case (N)")
    axes.set_ylabel("test IoU")
    budget = (f" ({results['n_train']} training cases, {results['job']['training']['epochs']} epochs)"
              if training else "")
    axes.set_title(f"{results['dataset']}: IoU against points per case{budget}", fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
