"""Extreme-point pseudo-labels: the maker's defaults (settings chosen from the data) against the tuned per-data-set
settings of ``benchmarks/pseudolabel_extreme.py``, per structure, on the fixed train and test splits.

For every case of a split (every ``--every``-th), each structure gets the same simulated clicks as in
``pseudolabel_extreme.py`` (``evaluation.methods.simulated_extreme_points``, seeded per case) and two
pseudo-labels: ``tuned`` (that script's ``DATASET_OPTIONS`` + ``STRUCTURE_OPTIONS``, e.g. hippocampus background
seeds at 8 mm, ACDC beta 600, the LV's convex prior) and ``defaults`` (no option at all: what a Slicer user
gets). The regime the defaults chose (clear or faint object, :mod:`ExtremeSegLib.pseudolabel.adaptive`) is kept
per case. Rules were chosen on the train split; the test split checks them.

Run under the shared CPU lock; per-case rows go to ``benchmarks/runs/pseudolabel_defaults/rows.jsonl`` so an
interrupted run continues where it stopped::

    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/pseudolabel_defaults.py --every 3

Writes ``benchmarks/results/pseudolabel_defaults.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from pseudolabel_extreme import DATASET_OPTIONS, DATASETS, STRUCTURE_OPTIONS  # noqa: E402

from ExtremeSegLib.annotations import ExtremePoints  # noqa: E402
from ExtremeSegLib.evaluation import MethodOptions, discover_cases  # noqa: E402
from ExtremeSegLib.evaluation.methods import simulated_extreme_points  # noqa: E402
from ExtremeSegLib.evaluation.report import benchmark_command, versions  # noqa: E402
from ExtremeSegLib.evaluation.splits import load_split  # noqa: E402
from ExtremeSegLib.io.volumes import read_image, read_labelmap  # noqa: E402
from ExtremeSegLib.metrics import dice  # noqa: E402
from ExtremeSegLib.pseudolabel.extreme_points import extreme_points_pseudolabel  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
ROWS = REPO / "benchmarks" / "runs" / "pseudolabel_defaults" / "rows.jsonl"
#: the issue's target: defaults within this much Dice of the tuned settings, per structure
TOLERANCE = 0.01


def measure(case, dataset: str, subset: str, noise: float) -> list:
    """One row per structure of ``case``: Dice of the tuned settings and of the defaults, and what they chose."""
    image = read_image(case.image)
    reference = read_labelmap(case.label)
    rows = []
    for name, values in DATASETS[dataset].items():
        options = MethodOptions(structures={name: values}, seed=0, noise_mm=noise)
        found = list(simulated_extreme_points(case, reference, options))
        if not found:
            continue
        _, clicks = found[0]
        points = ExtremePoints.from_points(clicks, image)
        truth = np.isin(reference.array, values)
        tuned = {**DATASET_OPTIONS[dataset], **STRUCTURE_OPTIONS.get((dataset, name), {})}
        row = {"case": case.name, "dataset": dataset, "subset": subset, "structure": name, "noise_mm": noise,
               "tuned_options": tuned, "dice": {}, "seconds": {}}
        for key, params in (("tuned", tuned), ("defaults", {})):
            chosen = {}
            start = time.perf_counter()
            label = extreme_points_pseudolabel(image, points, chosen=chosen, **params)
            row["seconds"][key] = time.perf_counter() - start
            row["dice"][key] = dice(label.probabilities[1] > 0.5, truth)
            if key == "defaults":
                row["chosen"] = chosen
        rows.append(row)
    return rows


def summarise(rows) -> list:
    table = []
    keys = sorted({(r["dataset"], r["structure"], r["subset"], r["noise_mm"]) for r in rows},
                  key=lambda k: (k[0], list(DATASETS[k[0]]).index(k[1]), k[2] != "train", k[3]))
    for dataset, structure, subset, noise in keys:
        group = [r for r in rows if (r["dataset"], r["structure"], r["subset"], r["noise_mm"])
                 == (dataset, structure, subset, noise)]
        tuned = np.array([r["dice"]["tuned"] for r in group])
        defaults = np.array([r["dice"]["defaults"] for r in group])
        contrast = np.array([r["chosen"]["contrast"] for r in group])
        table.append({"dataset": dataset, "structure": structure, "subset": subset, "noise_mm": noise,
                      "cases": len(group), "tuned": float(tuned.mean()), "defaults": float(defaults.mean()),
                      "difference": float(defaults.mean() - tuned.mean()),
                      "within_tolerance": bool(defaults.mean() >= tuned.mean() - TOLERANCE),
                      "clear_fraction": float(np.mean([r["chosen"]["clear"] for r in group])),
                      "contrast_range": [float(contrast.min()), float(contrast.max())],
                      "seconds_tuned": float(np.mean([r["seconds"]["tuned"] for r in group])),
                      "seconds_defaults": float(np.mean([r["seconds"]["defaults"] for r in group])),
                      "tuned_options": group[0]["tuned_options"]})
    return table


def write(table, command: str, every: int, note: str = "") -> None:
    lines = ["# Extreme-point pseudo-labels: defaults vs tuned settings", "",
             f"Command (every {every}th case of each split; the shared CPU lock, 2 cores shared with other jobs):",
             "", f"    {command}", "", *([f"Note on this run: {note}.", ""] if note else []),
             "`tuned`: the per-data-set settings of `benchmarks/pseudolabel_extreme.py` (shown per row). `defaults`: "
             "no option, the settings the maker chooses from the data (`ExtremeSegLib/pseudolabel/adaptive.py`): "
             "on near-isotropic volumes a clear object (contrast along its paths >= 1.5 region standard "
             "deviations) gets beta 600 and seed paths of 10 % of its smallest click distance, a faint one beta "
             "300, 4 % (at least 1 mm) and background seeds just beyond where a first walk puts it (the distance "
             "from the paths within which 99 % of its voxels lie); stacks of "
             "thick slices always get the clear settings, and the convex-slices prior where the first label fills "
             "90 % of its slices' hulls. Clear: share of cases that got the clear settings; contrast: the measure. "
             f"Mean Dice over cases (click noise per row); the target is defaults >= tuned - {TOLERANCE}.", "",
             "| data set | structure | split | click noise mm | cases | tuned | defaults | defaults - tuned | "
             "within 0.01 | clear | contrast min-max | s/case tuned / defaults | tuned settings |",
             "|---" * 13 + "|"]
    for r in table:
        lines.append(f"| {r['dataset']} | {r['structure']} | {r['subset']} | {r['noise_mm']:g} | {r['cases']} | "
                     f"{r['tuned']:.3f} | {r['defaults']:.3f} | {r['difference']:+.3f} | "
                     f"{'yes' if r['within_tolerance'] else 'no'} | {r['clear_fraction']:.2f} | "
                     f"{r['contrast_range'][0]:.2f}-{r['contrast_range'][1]:.2f} | "
                     f"{r['seconds_tuned']:.2f} / {r['seconds_defaults']:.2f} | `{json.dumps(r['tuned_options'])}` |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pseudolabel_defaults.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "pseudolabel_defaults.json").write_text(json.dumps(
        {"command": command, "every": every, "tolerance": TOLERANCE, "versions": versions(), "table": table},
        indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS), help="default: all")
    parser.add_argument("--subset", action="append", choices=["train", "test"], help="default: train and test")
    parser.add_argument("--every", type=int, default=1, help="every N-th case of each split (default 1: all)")
    parser.add_argument("--noise", type=float, action="append", help="click noise levels in mm (default 0)")
    parser.add_argument("--fresh", action="store_true", help="forget the rows of earlier runs")
    parser.add_argument("--note", default="", help="how this run deviated from the usual conditions (printed)")
    args = parser.parse_args(argv)
    command = benchmark_command("benchmarks/pseudolabel_defaults.py", argv)
    ROWS.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and ROWS.exists():
        ROWS.unlink()
    rows = [json.loads(line) for line in ROWS.read_text().splitlines()] if ROWS.exists() else []
    done = {(r["case"], r["dataset"], r["subset"], r["noise_mm"]) for r in rows}
    for dataset in args.dataset or sorted(DATASETS):
        split = load_split(dataset)
        cases = {case.name: case for case in discover_cases(args.data / dataset)}
        for subset in args.subset or ["train", "test"]:
            for name in split[subset][::args.every]:
                for noise in args.noise or [0.0]:
                    if (name, dataset, subset, noise) in done:
                        continue
                    new = measure(cases[name], dataset, subset, noise)
                    with ROWS.open("a") as f:
                        f.writelines(json.dumps(r) + "\n" for r in new)
                    rows += new
                    print(name, subset, " ".join(f"{r['structure']} {r['dice']['tuned']:.3f}/"
                                                 f"{r['dice']['defaults']:.3f}" for r in new), flush=True)
    write(summarise(rows), command, args.every, args.note)
    print(f"wrote {RESULTS / 'pseudolabel_defaults.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
