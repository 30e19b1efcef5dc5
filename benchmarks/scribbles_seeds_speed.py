"""Speed and agreement of the scribble seed areas' random walker: coarse-to-fine (the default) vs the exact
single-level walk (sparse LU per slice, the former default).

1. Timing on a synthetic LGE-sized volume: 409 x 378 x 15 voxels of 0.8 x 0.8 x 10 mm (a short-axis stack as
   LGE-MRI gives it), a ring-shaped myocardium around a bright blood pool, a crescent RV, a smooth textured
   background plus noise; strokes: an arc in each structure and two background strokes per slice (1.2 % of the
   voxels painted, about as many as the ACDC hand-drawn scribbles). Wall time (best of ``--repeats``) and CPU
   time of :func:`~ExtremeSegLib.pseudolabel.scribbles.random_walker_probabilities` (per slice, 4 classes).
2. Agreement on the ACDC training split (hand-drawn scribbles, beta 130): per volume, the share of voxels whose
   seed-area label (tau 0.9 / 0.99 / 0.999, strokes included) differs between the two walks, argmax
   disagreements, and the largest probability difference; time per volume.

Run under the shared CPU lock (2 torch threads; the LU solves are single-threaded)::

    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/scribbles_seeds_speed.py

Writes ``benchmarks/results/scribbles_seeds_speed.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ExtremeSegLib.annotations import Scribbles  # noqa: E402
from ExtremeSegLib.evaluation import discover_cases  # noqa: E402
from ExtremeSegLib.evaluation.report import benchmark_command, cpu_model, versions  # noqa: E402
from ExtremeSegLib.evaluation.splits import load_split  # noqa: E402
from ExtremeSegLib.io import read_image, read_labelmap  # noqa: E402
from ExtremeSegLib.pseudolabel.scribbles import (  # noqa: E402
    random_walker_probabilities,
    scribbles_from_labelmap,
    seed_areas,
)
from ExtremeSegLib.volume import Volume  # noqa: E402

TAUS = (0.9, 0.99, 0.999)
LGE_SHAPE = (409, 378, 15)
LGE_SPACING = (0.8, 0.8, 10.0)


def synthetic_lge(shape=LGE_SHAPE, spacing=LGE_SPACING, seed: int = 0):
    """(image Volume, class-indexed Scribbles, labels) of a synthetic short-axis stack (module doc)."""
    rng = np.random.default_rng(seed)
    x = (np.arange(shape[0]) - shape[0] / 2) * spacing[0]
    y = (np.arange(shape[1]) - shape[1] / 2) * spacing[1]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    labels = np.zeros(shape, np.int16)
    strokes = np.full(shape, -1, np.int16)
    for k in range(shape[2]):
        t = k / max(shape[2] - 1, 1)  # base to apex: the heart narrows
        radius, wall = 28.0 * (1 - 0.6 * t), 9.0
        cx, cy = 5.0 * np.sin(t), 3.0 * t
        d = np.hypot(xx - cx, yy - cy)
        d_rv = np.hypot((xx - cx + radius + wall + 8) / 1.2, (yy - cy) / 2.2)
        rv = (d_rv < 14 * (1 - 0.5 * t)) & (d >= radius + wall + 1.5)
        labels[..., k][rv] = 1
        labels[..., k][(d >= radius) & (d < radius + wall)] = 2
        labels[..., k][d < radius] = 3
        s = strokes[..., k]
        s[(np.abs(d - radius / 2) < 0.9) & (xx > cx)] = 3
        s[(np.abs(d - radius - wall / 2) < 0.9) & (yy > cy)] = 2
        s[(np.abs(d_rv - 5) < 0.6) & rv] = 1
        s[np.abs(d - radius - wall - 45) < 0.9] = 0
        s[(np.abs(xx - cx - radius - wall - 12) < 0.9) & (np.abs(yy - cy) < 30)] = 0
    image = np.choose(labels, [0.35, 0.75, 0.25, 0.85]).astype(np.float32)
    image += 0.6 * ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (6, 6, 0))
    image += 0.05 * rng.standard_normal(shape).astype(np.float32)
    image = ndi.gaussian_filter(image, (1, 1, 0)) * 800.0
    volume = Volume(image, np.diag(list(spacing) + [1.0]))
    return volume, Scribbles(volume.with_array(strokes), unannotated=-1, background=0), labels


def agreement(fast: np.ndarray, exact: np.ndarray, strokes: np.ndarray) -> dict:
    """Seed-area disagreement per tau (share of voxels), argmax disagreements, largest probability difference."""
    painted = strokes >= 0
    out = {"max_abs_diff": float(np.abs(fast - exact).max()),
           "argmax_differ": int((fast.argmax(0) != exact.argmax(0)).sum()), "voxels": int(strokes.size)}
    for tau in TAUS:
        a, b = seed_areas(fast, tau), seed_areas(exact, tau)
        a[painted] = b[painted] = strokes[painted]
        out[f"seeds_differ_{tau}"] = int((a != b).sum())
        out[f"coverage_{tau}"] = [float((a >= 0).mean()), float((b >= 0).mean())]
    return out


def timed(image: Volume, scribbles: Scribbles, multiscale, repeats: int):
    """(probabilities, best wall s, best CPU s) of the per-slice walk (4 classes, beta 130)."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = random_walker_probabilities(image, scribbles, 4, 130.0, "2d", multiscale=multiscale)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return result, min(walls), min(cpus)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "acdc"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=1, help="use every n-th ACDC training volume")
    parser.add_argument("--name", default="scribbles_seeds_speed")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    results = {"command": benchmark_command("benchmarks/scribbles_seeds_speed.py", argv), "cpu": cpu_model(),
               "versions": versions()}

    volume, scribbles, _ = synthetic_lge()
    fast, fast_wall, fast_cpu = timed(volume, scribbles, None, args.repeats)
    exact, exact_wall, exact_cpu = timed(volume, scribbles, False, 1)
    results["lge"] = {"shape": LGE_SHAPE, "spacing_mm": LGE_SPACING, "painted": float((scribbles.labels.array >= 0)
                                                                                       .mean()),
                      "fast_wall_s": fast_wall, "fast_cpu_s": fast_cpu, "exact_wall_s": exact_wall,
                      "exact_cpu_s": exact_cpu, **agreement(fast, exact, scribbles.labels.array)}
    print("LGE-sized:", json.dumps(results["lge"]), flush=True)

    split = set(load_split("acdc")["train"])
    cases = [c for c in discover_cases(args.data) if c.scribble is not None and c.name in split][:: args.every]
    rows = []
    for case in cases:
        image = read_image(case.image)
        strokes = scribbles_from_labelmap(read_labelmap(case.scribble), [[1], [2], [3]], background=0, unannotated=4)
        fast, fast_wall, fast_cpu = timed(image, strokes, None, 1)
        exact, exact_wall, exact_cpu = timed(image, strokes, False, 1)
        row = {"case": case.name, "shape": list(image.shape), "fast_wall_s": fast_wall, "exact_wall_s": exact_wall,
               "fast_cpu_s": fast_cpu, "exact_cpu_s": exact_cpu, **agreement(fast, exact, strokes.labels.array)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    results["acdc"] = rows
    write(results, REPO / "benchmarks" / "results" / args.name)
    return 0


def write(results: dict, out: Path) -> None:
    lge, rows = results["lge"], results["acdc"]
    lines = ["# Scribble seed areas: coarse-to-fine walk vs the exact per-slice walk", "",
             f"Command ({results['cpu']}; conditions: docs/benchmarks.md):", "",
             f"    {results['command']}", "",
             f"## Synthetic LGE-sized volume ({' x '.join(map(str, lge['shape']))} voxels, "
             f"{' x '.join(f'{v:g}' for v in lge['spacing_mm'])} mm, 4 classes, {100 * lge['painted']:.1f} % painted)",
             "", "| Walk | wall s (best) | CPU s |", "|---|---|---|",
             f"| coarse-to-fine (default) | {lge['fast_wall_s']:.2f} | {lge['fast_cpu_s']:.2f} |",
             f"| exact (sparse LU per slice, former default) | {lge['exact_wall_s']:.2f} | {lge['exact_cpu_s']:.2f} |",
             "", f"Agreement: largest probability difference {lge['max_abs_diff']:.4f}; argmax differs on "
             f"{lge['argmax_differ']} voxels; seed areas differ on " + ", ".join(
                 f"{lge[f'seeds_differ_{t}']} (tau {t})" for t in TAUS) + f" of {lge['voxels']} voxels.", ""]
    if rows:
        share = {t: np.array([r[f"seeds_differ_{t}"] / r["voxels"] for r in rows]) for t in TAUS}
        lines += [f"## ACDC training split ({len(rows)} scribbled volumes, hand-drawn scribbles, beta 130)", "",
                  "| | mean | worst volume |", "|---|---|---|"]
        for t in TAUS:
            lines.append(f"| seed areas differ, tau {t} (share of voxels) | {share[t].mean():.2e} | "
                         f"{share[t].max():.2e} |")
        diff = np.array([r["max_abs_diff"] for r in rows])
        argmax = np.array([r["argmax_differ"] / r["voxels"] for r in rows])
        lines += [f"| argmax differs (share of voxels) | {argmax.mean():.2e} | {argmax.max():.2e} |",
                  f"| largest probability difference | {diff.mean():.4f} | {diff.max():.4f} |",
                  f"| wall s, coarse-to-fine / exact | {np.mean([r['fast_wall_s'] for r in rows]):.2f} / "
                  f"{np.mean([r['exact_wall_s'] for r in rows]):.2f} | |",
                  f"| CPU s, coarse-to-fine / exact | {np.mean([r['fast_cpu_s'] for r in rows]):.2f} / "
                  f"{np.mean([r['exact_cpu_s'] for r in rows]):.2f} | |", ""]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
