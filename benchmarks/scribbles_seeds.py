"""Seed areas from the ACDC hand-drawn scribbles (paper 004, Sec. 2.1): 2D per slice vs 3D, beta, tau.

For every scribbled volume, the multi-class random walker from the scribbles gives class probabilities; the
seed areas keep a voxel's class where its probability exceeds tau. Measured against the expert labels:

- coverage: fraction of all voxels in seed areas, and per structure the fraction of its voxels that are seeds
  of it (recall);
- accuracy: fraction of seed voxels whose class is right, and per structure the precision of its seeds;
- seed-area Dice per structure: 2 |seeds of it that are it| / (|seeds of it| + |its voxels|) (mean over
  volumes), one figure trading the two above;
- the random walker's own segmentation (argmax, no threshold, no learning): Dice per structure, to compare
  with Slicer's "Grow from seeds" on the same scribbles (mean 0.776, from the data README).

``--split train`` / ``test`` takes the volumes of that side of the fixed patient split
(``benchmarks/splits/acdc.json``); settings are chosen on ``train``.

Run under the shared CPU lock; per-volume rows are kept in ``benchmarks/runs/scribbles_seeds/rows.jsonl`` so
an interrupted run continues where it stopped::

    B="flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/scribbles_seeds.py"
    $B --modes 2d                                  # all scribbled volumes, per slice
    $B --every 4 --betas 130 1000 --name scribbles_seeds_3d   # 2D vs 3D on every 4th volume
    # sensitivity to beta and tau on the training split, one beta per run (rows accumulate under --name)
    C="/tmp/cpurun 1 .venv/bin/python benchmarks/scribbles_seeds.py --split train --every 4 --modes 2d"
    $C --betas 130 --taus 0.5 0.7 0.9 0.99 0.999 --name scribbles_seeds_sensitivity

Writes ``benchmarks/results/<name>.md`` and ``.json`` (``--name``, default ``scribbles_seeds``).
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

from ExtremeSegLib.evaluation import discover_cases, load_split, select_cases  # noqa: E402
from ExtremeSegLib.evaluation.report import benchmark_command, versions  # noqa: E402
from ExtremeSegLib.io import read_image, read_labelmap  # noqa: E402
from ExtremeSegLib.metrics import dice  # noqa: E402
from ExtremeSegLib.pseudolabel.scribbles import (  # noqa: E402
    random_walker_probabilities,
    scribbles_from_labelmap,
    seed_areas,
)

STRUCTURES = ("RV", "Myo", "LV")
CLASS_VALUES = [[1], [2], [3]]
GROW_FROM_SEEDS = {"RV": 0.744, "Myo": 0.712, "LV": 0.870, "mean": 0.776}


def measure(case, mode: str, beta: float, taus) -> dict:
    image = read_image(case.image)
    reference = read_labelmap(case.label).array.astype(np.int16)
    scribbles = scribbles_from_labelmap(read_labelmap(case.scribble), CLASS_VALUES, background=0, unannotated=4)
    started = time.perf_counter()
    # 3D: SciPy's float64 CG converges reliably to the tolerance the tau threshold needs (per slice: exact LU)
    probabilities = random_walker_probabilities(image, scribbles, len(STRUCTURES) + 1, beta=beta, mode=mode,
                                                solver="cg_j" if mode == "3d" else None)
    seconds = time.perf_counter() - started
    painted = scribbles.labels.array >= 0
    row = {"case": case.name, "mode": mode, "beta": beta, "seconds": seconds,
           "rw_dice": [dice(probabilities.argmax(0) == c, reference == c) for c in range(1, 4)], "tau": {}}
    for tau in taus:
        seeds = seed_areas(probabilities, tau)
        seeds[painted] = scribbles.labels.array[painted]
        known = seeds >= 0
        row["tau"][str(tau)] = {
            "voxels": int(known.size), "seeds": int(known.sum()),
            "right": int((seeds[known] == reference[known]).sum()),
            "class_seeds": [int((seeds == c).sum()) for c in range(4)],
            "class_right": [int(((seeds == c) & (reference == c)).sum()) for c in range(4)],
            "class_voxels": [int((reference == c).sum()) for c in range(4)],
        }
    return row


def summarise(rows, taus) -> list:
    table = []
    for (mode, beta) in sorted({(r["mode"], r["beta"]) for r in rows}):
        group = [r for r in rows if r["mode"] == mode and r["beta"] == beta]
        for tau in taus:
            t = [r["tau"][str(tau)] for r in group]
            per_volume_cov = [x["seeds"] / x["voxels"] for x in t]
            per_volume_acc = [x["right"] / max(x["seeds"], 1) for x in t]
            recall = [float(np.mean([x["class_right"][c] / max(x["class_voxels"][c], 1) for x in t]))
                      for c in range(1, 4)]
            precision = [float(sum(x["class_right"][c] for x in t) / max(sum(x["class_seeds"][c] for x in t), 1))
                         for c in range(1, 4)]
            seed_dice = [float(np.mean([2.0 * x["class_right"][c] / max(x["class_seeds"][c] + x["class_voxels"][c], 1)
                                        for x in t])) for c in range(1, 4)]
            rw = np.mean([r["rw_dice"] for r in group], axis=0)
            table.append({"mode": mode, "beta": beta, "tau": tau, "volumes": len(group),
                          "coverage": float(np.mean(per_volume_cov)), "accuracy": float(np.mean(per_volume_acc)),
                          "min_accuracy": float(np.min(per_volume_acc)),
                          "wrong_voxels": float(np.mean([x["seeds"] - x["right"] for x in t])),
                          "recall": recall, "precision": precision,
                          "seed_dice": seed_dice, "seed_dice_mean": float(np.mean(seed_dice)),
                          "rw_dice": rw.tolist(), "rw_dice_mean": float(rw.mean()),
                          "seconds": float(np.mean([r["seconds"] for r in group]))})
    return table


def write(table, out: Path, command: str, count: int, split: str) -> None:
    where = "all" if split == "all" else f"{split} split:"
    lines = [
        "# Scribble seed areas on ACDC (paper 004, Sec. 2.1)", "",
        f"{where} {count} scribbled volumes (hand-drawn ACDC scribbles), expert labels as reference. Command "
        "(holding a CPU slot; seconds are wall time of the random walker per volume):",
        "", f"    {command}", "",
        "Coverage: seed voxels / all voxels. Recall per structure: fraction of its voxels that are seeds of it "
        "(mean over volumes). Accuracy: seed voxels of the right class (mean over volumes; min = worst volume). "
        "Precision per structure: pooled over volumes. Wrong: wrongly seeded voxels per volume. Seed Dice per "
        "structure: 2 x its right seeds / (its seeds + its voxels), mean over volumes. RW Dice: the "
        "random walker's argmax segmentation (no threshold, no learning); Slicer's Grow from seeds on the same "
        f"scribbles: RV {GROW_FROM_SEEDS['RV']}, Myo {GROW_FROM_SEEDS['Myo']}, LV {GROW_FROM_SEEDS['LV']}, "
        f"mean {GROW_FROM_SEEDS['mean']}.", "",
        "| Mode | beta | tau | Coverage | Recall RV / Myo / LV | Accuracy (min) | Precision RV / Myo / LV | Wrong | "
        "Seed Dice RV / Myo / LV (mean) | RW Dice RV / Myo / LV (mean) | s / volume |", "|---" * 11 + "|",
    ]
    for r in table:
        trio = lambda v: " / ".join(f"{x:.3f}" for x in v)  # noqa: E731
        lines.append(f"| {r['mode']} | {r['beta']:g} | {r['tau']} | {r['coverage']:.3f} | {trio(r['recall'])} | "
                     f"{r['accuracy']:.4f} ({r['min_accuracy']:.4f}) | {trio(r['precision'])} | "
                     f"{r['wrong_voxels']:.0f} | {trio(r['seed_dice'])} ({r['seed_dice_mean']:.3f}) | "
                     f"{trio(r['rw_dice'])} ({r['rw_dice_mean']:.3f}) | {r['seconds']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": command, "versions": versions(), "table": table},
                                                   indent=1) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "acdc"))
    parser.add_argument("--modes", nargs="+", default=["2d", "3d"])
    parser.add_argument("--betas", nargs="+", type=float, default=[130.0, 1000.0, 5000.0])
    parser.add_argument("--taus", nargs="+", type=float, default=[0.9, 0.99, 0.999])
    parser.add_argument("--every", type=int, default=1, help="use every n-th volume (sorted by name)")
    parser.add_argument("--split", choices=["all", "train", "test"], default="all",
                        help="volumes of this side of benchmarks/splits/acdc.json (default: all scribbled volumes)")
    parser.add_argument("--name", default="scribbles_seeds")
    args = parser.parse_args(argv)
    cases = [c for c in discover_cases(args.data) if c.scribble is not None]
    if args.split != "all":
        cases = select_cases(cases, load_split("acdc")[args.split])
    cases = cases[:: args.every]
    run_dir = REPO / "benchmarks" / "runs" / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    rows_path = run_dir / "rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["case"], r["mode"], r["beta"]) for r in rows}
    with rows_path.open("a") as log:
        for mode in args.modes:
            for beta in args.betas:
                for case in cases:
                    if (case.name, mode, beta) in done:
                        continue
                    row = measure(case, mode, beta, args.taus)
                    rows.append(row)
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    print(f"{mode} beta={beta:g} {case.name}: {row['seconds']:.1f} s, RW Dice "
                          f"{np.round(row['rw_dice'], 3).tolist()}", flush=True)
    names = {c.name for c in cases}
    rows = [r for r in rows if r["case"] in names and r["mode"] in args.modes and r["beta"] in args.betas]
    command = benchmark_command("benchmarks/scribbles_seeds.py", argv)
    write(summarise(rows, args.taus), REPO / "benchmarks" / "results" / args.name, command, len(cases), args.split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
