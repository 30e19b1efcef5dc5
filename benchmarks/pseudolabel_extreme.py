"""Extreme points -> pseudo-labels: quality on real data (with and without click noise) and random-walker speed.

Quality: every hippocampus case (label > 0) and every ACDC volume (RV = 1, Myo = 2, LV = 3, each its own object
with its own 6 simulated clicks) through ``ExtremeSegLib.evaluation.run_benchmark`` with the maker's adapter
(``ExtremeSegLib.evaluation.methods:extreme_points_random_walker``), clicks exact and with 2 mm Gaussian noise.
Speed: the whole maker end to end (6 clicks in, pseudo-label out) on synthetic volumes whose maker region is
200 x 150 x 90 voxels (1 mm) and on a left-atrium-like crop of 183 x 140 x 88 voxels (0.625 mm), the median of
``--repeats`` calls after a first one, and with ``--profile`` the time of its parts (walker, paths,
post-processing) in a cProfile of one call on 1 torch thread; and the random walker's solvers alone on a
200 x 150 x 90 region (a noisy ellipsoid, seeds as the maker builds them: three dilated axis segments inside, the
region's border outside), against a converged reference (``--skip-solvers`` leaves them out).

Run it holding the CPU slots it times with (2 cores shared by several jobs; timings without them mean nothing):

    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/pseudolabel_extreme.py
    /tmp/cpurun 2 .venv/bin/python benchmarks/pseudolabel_extreme.py --skip-quality --skip-solvers --repeats 5 --profile

Writes benchmarks/results/pseudolabel_extreme.md and .json; the runner's per-case reports, predictions and
overlays go to --work (outside the repository).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ExtremeSegLib.annotations import ExtremePoints  # noqa: E402
from ExtremeSegLib.evaluation import MethodOptions, discover_cases, run_benchmark  # noqa: E402
from ExtremeSegLib.evaluation.methods import extreme_points_random_walker  # noqa: E402
from ExtremeSegLib.evaluation.report import benchmark_command, cpu_model  # noqa: E402
from ExtremeSegLib.pseudolabel.extreme_points import extreme_points_pseudolabel  # noqa: E402
from ExtremeSegLib.pseudolabel.random_walker import random_walker  # noqa: E402
from ExtremeSegLib.simulate import simulate_extreme_points  # noqa: E402
from ExtremeSegLib.volume import Volume  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DATASETS = {
    "hippocampus": {"hippocampus": [1, 2]},
    "acdc": {"RV": [1], "Myo": [2], "LV": [3]},
}
#: maker settings per dataset, under --option (chosen on these same volumes: the maker learns nothing, but say so):
#: the hippocampus (short axes about 20 mm) needs background seeds near its paths; on ACDC they cut into the
#: ventricles (LV 0.858 -> 0.784 at 25 mm, 35 volumes). ACDC: a sharper walker and thinner seed paths (defaults
#: LV 0.834; beta 600: 0.846; + path_radius_fraction 0.1: 0.853; beta 1000 + 0.1: 0.855; all 140, exact clicks)
#: the settings the maker's defaults were before it chose them from the data (pseudolabel/adaptive.py): the tuned
#: settings below are these plus each data set's changes, so that they stay the figures they were
FIXED_DEFAULTS = {"beta": 300.0, "path_radius_fraction": 0.06, "background_distance_mm": "off", "convex": False}
DATASET_OPTIONS = {
    "hippocampus": {**FIXED_DEFAULTS, "background_distance_mm": 8.0, "path_radius_mm": 1.0},
    "acdc": {**FIXED_DEFAULTS, "beta": 600.0, "path_radius_fraction": 0.1},
}
#: a shape prior for one structure: the LV cavity is convex in each short-axis slice (all 140, LV 0.864 -> 0.887
#: exact, 0.854 -> 0.876 with 2 mm noise); never for the RV's crescent or the myocardium's ring
STRUCTURE_OPTIONS = {("acdc", "LV"): {"convex": True}}
SPEED_SHAPE = (200, 150, 90)
#: whole-maker cases: name -> (image shape, spacing mm, object semi-axes as fractions of the shape). The first
#: one's clicks give a maker region (relaxed box + 1 voxel) of exactly SPEED_SHAPE; the second is the size of
#: a left-atrium MRI crop, the object filling 70 % of it
MAKER_CASES = {
    "region 200 x 150 x 90, 1 mm": ((206, 156, 96), 1.0, (97.5 / 206, 72.5 / 156, 42.5 / 96)),
    "left-atrium-like crop 183 x 140 x 88, 0.625 mm": ((183, 140, 88), 0.625, (0.35, 0.35, 0.35)),
}
#: the maker's parts in a profile: name -> (file name ending, function); indented names are inside the one above
PROFILE_PARTS = {
    "random walker": ("pseudolabel/random_walker.py", "random_walker"),
    "  coarse start": ("pseudolabel/random_walker.py", "_coarse_start"),
    "  band solve": ("pseudolabel/random_walker.py", "_solve_torch_band"),
    "geodesic paths": ("pseudolabel/geodesic.py", "extreme_point_paths"),
    "  Dijkstra searches": ("pseudolabel/geodesic.py", "_dijkstra"),
    "post-processing": ("pseudolabel/extreme_points.py", "postprocess"),
    "  closing": ("ExtremeSegLib/masks.py", "close_mm"),
    "  hole filling": ("ExtremeSegLib/masks.py", "fill_enclosed_holes"),
}


def quality(data: Path, work: Path, noises, limit, options: dict, datasets, log) -> list:
    """One run_benchmark per dataset, structure and noise level (structures scored independently)."""
    rows = []
    for dataset in datasets:
        structures = DATASETS[dataset]
        cases = discover_cases(data / dataset)[:limit]
        for name, values in structures.items():
            maker_options = {**DATASET_OPTIONS[dataset], **STRUCTURE_OPTIONS.get((dataset, name), {}), **options}
            for noise in noises:
                out = work / f"{dataset}_{name}_noise{noise:g}"
                method_options = MethodOptions(structures={name: values}, seed=0, noise_mm=noise,
                                               extra=maker_options)

                def method(case, method_options=method_options):
                    return extreme_points_random_walker(case, method_options)

                start = time.perf_counter()
                results = run_benchmark(cases, method, out, {name: values}, overlays=2, overwrite=True,
                                        title=f"extreme-point pseudo-labels, {dataset} {name}, noise {noise:g} mm",
                                        config={"options": maker_options, "noise_mm": noise, "seed": 0})
                summary = results["summary"][name]
                row = {"dataset": dataset, "structure": name, "noise_mm": noise, "n_cases": results["n_cases"],
                       "options": maker_options, "n_failed": results["n_failed"], "dice_mean": summary["dice"]["mean"],
                       "dice_std": summary["dice"]["std"], "hd95_mean_mm": summary.get("hd95", {}).get("mean"),
                       "seconds_per_case": results["timing"]["seconds_per_case_mean"],
                       "wall_seconds": time.perf_counter() - start, "report": str(out / "results.md")}
                rows.append(row)
                log(f"{dataset:12s} {name:12s} noise {noise:g} mm: Dice {row['dice_mean']:.3f} ± {row['dice_std']:.3f} "
                    f"({row['n_cases']} cases, {row['seconds_per_case']:.2f} s/case)")
    return rows


def speed_problem(seed: int = 0):
    """Noisy bright ellipsoid filling most of a 200 x 150 x 90 region; seeds as the maker builds them."""
    rng = np.random.default_rng(seed)
    shape = np.asarray(SPEED_SHAPE)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float32)
    centre = (shape - 1) / 2.0
    inside = np.sum(((grid - centre) / (0.42 * shape)) ** 2, axis=-1) <= 1.0
    image = (0.2 + 0.6 * inside + 0.08 * rng.standard_normal(SPEED_SHAPE)).astype(np.float32)
    seeds = np.full(SPEED_SHAPE, -1, dtype=np.int16)
    for axis in range(3):
        border = [slice(None)] * 3
        border[axis] = [0, -1]
        seeds[tuple(border)] = 0
    c = centre.astype(int)
    seeds[20:180, c[1] - 2:c[1] + 3, c[2] - 2:c[2] + 3] = 1
    seeds[c[0] - 2:c[0] + 3, 15:135, c[2] - 2:c[2] + 3] = 1
    seeds[c[0] - 2:c[0] + 3, c[1] - 2:c[1] + 3, 9:81] = 1
    return image, seeds, inside


def maker_case(shape, spacing_mm, semi_axes, seed: int = 0):
    """A noisy bright ellipsoid with a smooth intensity ramp (coil shading): image Volume, truth mask, 6 clicks."""
    rng = np.random.default_rng(seed)
    shape = np.asarray(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float32)
    centre = (shape - 1) / 2.0
    inside = np.sum(((grid - centre) / (np.asarray(semi_axes) * shape)) ** 2, axis=-1) <= 1.0
    ramp = 0.15 * grid[..., 0] / shape[0]
    array = (0.2 + ramp + 0.5 * inside + 0.08 * rng.standard_normal(tuple(shape))).astype(np.float32)
    image = Volume.from_spacing(array, (spacing_mm,) * 3)
    clicks = simulate_extreme_points(image.with_array(inside.astype(np.uint8)))
    return image, inside, ExtremePoints.from_points(clicks, image)


def maker_speed(log, repeats: int = 5, profile: bool = False) -> list:
    """The whole maker, defaults, on MAKER_CASES: the first call (imports, e.g. torch), the median of ``repeats``
    calls after it and, with ``profile``, the seconds of its parts (:func:`maker_profile`)."""
    import torch

    rows = []
    for name, (shape, spacing_mm, semi_axes) in MAKER_CASES.items():
        image, inside, points = maker_case(shape, spacing_mm, semi_axes)
        lo, hi = points.box_index(image, 0.0)
        times = []
        for _ in range(repeats + (0 if rows else 1)):
            start = time.perf_counter()
            label = extreme_points_pseudolabel(image, points)
            times.append(time.perf_counter() - start)
        warm = times[1:] if not rows else times
        row = {"case": name, "image_shape": list(shape), "spacing_mm": spacing_mm,
               "box_shape": [int(v) for v in hi - lo], "repeats": len(warm), "torch_threads": torch.get_num_threads(),
               "cpu": cpu_model(),
               "seconds_median": float(np.median(warm)), "seconds_best": min(warm), "seconds_worst": max(warm),
               "seconds_all": times, "first_call_seconds": times[0] if not rows else None,
               "dice_vs_truth": _dice(label.probabilities[1] > 0.5, inside)}
        if profile:
            row["profile_one_thread"] = maker_profile(image, points)
        rows.append(row)
        log(f"maker, {name}: median {row['seconds_median']:.2f} s of {len(warm)} "
            f"(all {', '.join(f'{t:.2f}' for t in times)}), Dice vs truth {row['dice_vs_truth']:.4f}")
        for part, seconds in row.get("profile_one_thread", {}).items():
            log(f"  profile, 1 thread: {part:20s} {seconds:.2f} s")
    return rows


def maker_profile(image: Volume, points: ExtremePoints) -> dict:
    """Seconds of one maker call and of its PROFILE_PARTS (cumulative, cProfile, 1 torch thread).

    cProfile's own overhead makes the total somewhat longer than an unprofiled call; "rest" is the total less the
    three top-level parts (region set-up, gradient, seeds, intensity models, the label's assembly).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    profiler = cProfile.Profile()
    try:
        start = time.perf_counter()
        profiler.runcall(extreme_points_pseudolabel, image, points)
        total = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    stats = pstats.Stats(profiler).stats  # (file, line, function) -> (calls, primitive calls, own, cumulative, ...)
    parts = {"total": total}
    for part, (file_end, function) in PROFILE_PARTS.items():
        parts[part] = sum(entry[3] for (file, _, name), entry in stats.items()
                          if name == function and file.endswith(file_end))
    parts["rest"] = total - sum(seconds for part, seconds in parts.items()
                                if part not in ("total",) and not part.startswith(" "))
    return parts


def _dice(a, b):
    return float(2.0 * np.sum(a & b) / max(int(a.sum() + b.sum()), 1))


def speed(log, repeats: int = 3) -> list:
    import torch

    image, seeds, inside = speed_problem()
    log(f"speed: region {SPEED_SHAPE}, torch threads {torch.get_num_threads()}, computing the converged reference")
    reference = random_walker(image, seeds, solver="cg_torch", multiscale=False, tol=1e-6)[1]
    runs = [
        ("auto (cg_torch, coarse-to-fine + band)", lambda: random_walker(image, seeds, solver="auto")[1]),
        ("cg_torch single level", lambda: random_walker(image, seeds, solver="cg_torch", multiscale=False)[1]),
        ("cg_j (SciPy, Jacobi)", lambda: random_walker(image, seeds, solver="cg_j")[1]),
    ]
    try:
        import pyamg  # noqa: F401

        runs.append(("cg_mg (SciPy + PyAMG)", lambda: random_walker(image, seeds, solver="cg_mg")[1]))
        from skimage.segmentation import random_walker as skimage_random_walker

        runs.append(("scikit-image random_walker, mode cg_mg",
                     lambda: skimage_random_walker(image, seeds + 1, beta=130, mode="cg_mg",
                                                   return_full_prob=True)[1]))
    except ImportError:
        log("pyamg is not installed: cg_mg and scikit-image's cg_mg are not measured")
    rows = []
    for name, call in runs:
        times = []
        for _ in range(repeats if name.startswith(("auto", "cg_torch")) else 1):
            start = time.perf_counter()
            fg = call()
            times.append(time.perf_counter() - start)
        hard, ref_hard = fg > 0.5, reference > 0.5
        row = {"solver": name, "seconds_best": min(times), "seconds_all": times,
               "max_abs_diff_vs_reference": float(np.max(np.abs(fg - reference))),
               "mean_abs_diff_vs_reference": float(np.mean(np.abs(fg - reference))),
               "label_agreement_vs_reference": float(np.mean(hard == ref_hard)),
               "dice_vs_reference": _dice(hard, ref_hard), "dice_vs_truth": _dice(hard, inside)}
        rows.append(row)
        log(f"{name:42s} {row['seconds_best']:6.2f} s  max|dp| {row['max_abs_diff_vs_reference']:.4f}  "
            f"Dice vs reference {row['dice_vs_reference']:.5f}")
    return rows


def write_results(quality_rows, speed_rows, maker_rows, command, options):
    """Write the .md and .json; datasets and parts not run now keep the rows (and commands) of the previous run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "pseudolabel_extreme.json"
    old = json.loads(previous.read_text()) if previous.exists() else {}
    for row in quality_rows:
        row["command"] = command
    run_now = {row["dataset"] for row in quality_rows}
    quality_rows += [row for row in old.get("quality", []) if row["dataset"] not in run_now]
    old_commands = old.get("commands", {})
    speed_command = command
    if not speed_rows:
        speed_rows, speed_command = old.get("speed", []), old_commands.get("speed")
    maker_command = command
    if not maker_rows:
        maker_rows = old.get("maker_speed", [])
        maker_command = old_commands.get("maker_speed", old_commands.get("speed"))
    quality_commands = sorted({row["command"] for row in quality_rows if row["command"]})
    data = {"commands": {"quality": quality_commands, "speed": speed_command, "maker_speed": maker_command},
            "options": options,
            "quality": quality_rows, "speed": speed_rows, "maker_speed": maker_rows, "speed_region": list(SPEED_SHAPE),
            "cpu_threads": os.cpu_count(), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    (RESULTS / "pseudolabel_extreme.json").write_text(json.dumps(data, indent=1))
    maker = {}  # dataset -> structure -> options; one entry per dataset where its structures share them
    for row in quality_rows:
        options_text = json.dumps(row["options"]) if row["options"] else "defaults"
        maker.setdefault(row["dataset"], {})[row["structure"]] = options_text
    maker_text = []
    for dataset, per_structure in maker.items():
        if len(set(per_structure.values())) == 1:
            maker_text.append(f"{dataset} `{next(iter(per_structure.values()))}`")
        else:
            maker_text += [f"{dataset} {structure} `{o}`" for structure, o in per_structure.items()]
    lines = ["# Extreme points -> pseudo-labels", "",
             "Timings run holding the CPU slots they time with (2 cores shared with other jobs).", "",
             *[f"- quality: `{c}`" for c in quality_commands], f"- whole maker: `{maker_command}`",
             f"- solvers: `{speed_command}`", "",
             "Clicks simulated from the ground truth (`simulate_extreme_points`, seeded per case); each structure is "
             "its own object with its own 6 clicks. Maker options (defaults otherwise): "
             + "; ".join(maker_text) + ".", ""]
    if quality_rows:
        lines += ["## Pseudo-label Dice (mean ± std over cases)", "",
                  "| dataset | structure | cases | Dice, exact clicks | Dice, 2 mm click noise | drop | s/case |",
                  "|---|---|---|---|---|---|---|"]
        keyed = {(r["dataset"], r["structure"], r["noise_mm"]): r for r in quality_rows}
        for dataset, structures in DATASETS.items():
            for name in structures:
                exact, noisy = keyed.get((dataset, name, 0.0)), keyed.get((dataset, name, 2.0))
                if exact is None:
                    continue
                noisy_text = f"{noisy['dice_mean']:.3f} ± {noisy['dice_std']:.3f}" if noisy else "-"
                drop = f"{exact['dice_mean'] - noisy['dice_mean']:.3f}" if noisy else "-"
                lines.append(f"| {dataset} | {name} | {exact['n_cases']} | {exact['dice_mean']:.3f} ± "
                             f"{exact['dice_std']:.3f} | {noisy_text} | {drop} | {exact['seconds_per_case']:.2f} |")
        lines.append("")
    if maker_rows:
        lines += ["## The whole maker, end to end (defaults)", "",
                  "6 clicks (simulated from a noisy bright ellipsoid with an intensity ramp) in, pseudo-label out: "
                  "`extreme_points_pseudolabel` with its defaults, wall clock, median of the calls after a first "
                  "one that also imports torch, on the torch threads the run was given (column threads). "
                  f"Processor: {maker_rows[0].get('cpu', 'not recorded')}.", "",
                  "| case | image | clicks' box | threads | calls | median s (best - worst) | first call s | "
                  "Dice vs truth |", "|---|---|---|---|---|---|---|---|"]
        for r in maker_rows:
            first = f"{r['first_call_seconds']:.2f}" if r.get("first_call_seconds") else "-"
            median = r.get("seconds_median")  # runs before the median was kept: best of 3 only
            timing = (f"{median:.2f} ({r['seconds_best']:.2f} - {r['seconds_worst']:.2f})" if median is not None
                      else f"best {r['seconds_best']:.2f}")
            lines.append(f"| {r['case']} | {' x '.join(map(str, r['image_shape']))} | "
                         f"{' x '.join(map(str, r['box_shape']))} | {r.get('torch_threads', 2)} | "
                         f"{r.get('repeats', 3)} | {timing} | {first} | "
                         f"{r['dice_vs_truth']:.4f} |")
        lines.append("")
        profiled = [r for r in maker_rows if r.get("profile_one_thread")]
        if profiled:
            parts = list(profiled[0]["profile_one_thread"])
            lines += ["Profile of one call, cProfile, 1 torch thread (cumulative seconds; indented parts are inside "
                      "the part above; rest = total less the three top-level parts):", "",
                      "| part | " + " | ".join(r["case"] for r in profiled) + " |",
                      "|---|" + "---|" * len(profiled)]
            for part in parts:
                name = "&nbsp;&nbsp;" + part.strip() if part.startswith(" ") else part
                lines.append(f"| {name} | " + " | ".join(f"{r['profile_one_thread'][part]:.2f}" for r in profiled)
                             + " |")
            lines.append("")
    if speed_rows:
        lines += [f"## Random-walker solvers on a {' x '.join(map(str, SPEED_SHAPE))} region", "",
                  "A noisy bright ellipsoid, seeds as the maker builds them (three dilated axis segments inside, the "
                  "region's border outside), beta 130, isotropic 1 mm (so scikit-image solves the same system). "
                  "Reference: `cg_torch` single level converged to a relative residual of 1e-6. Time: best of 3 "
                  "(1 run for the SciPy/PyAMG solvers), wall clock, 2 torch threads, under the lock. The other "
                  "solvers stop at a relative residual of 1e-3. `auto` keeps the coarse solution where it is sure "
                  "(above 0.7) and re-solves the band around the boundary: labels agree, probabilities in the kept "
                  "part carry the coarse level's error.", "",
                  "| solver | seconds | max abs. diff. | mean abs. diff. | label agreement | Dice vs reference |",
                  "|---|---|---|---|---|---|"]
        for r in speed_rows:
            lines.append(f"| {r['solver']} | {r['seconds_best']:.2f} | {r['max_abs_diff_vs_reference']:.4f} | "
                         f"{r['mean_abs_diff_vs_reference']:.5f} | {r['label_agreement_vs_reference']:.7f} | "
                         f"{r['dice_vs_reference']:.5f} |")
        lines.append("")
    (RESULTS / "pseudolabel_extreme.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/extremeseg-bench/pseudolabel_extreme"))
    parser.add_argument("--limit", type=int, help="only the first N cases of each dataset")
    parser.add_argument("--noise", type=float, action="append", help="click noise levels in mm (default 0 and 2)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="maker parameter (JSON value)")
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS),
                        help="measure only these datasets (default: all); the others keep their previous rows")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="neither the whole maker nor the solvers")
    parser.add_argument("--skip-solvers", action="store_true", help="the whole maker's speed only")
    parser.add_argument("--repeats", type=int, default=5, help="timed maker calls per case (median reported)")
    parser.add_argument("--profile", action="store_true", help="profile one maker call per case on 1 thread")
    args = parser.parse_args(argv)
    options = {}
    for item in args.option or []:
        key, _, value = item.partition("=")
        options[key] = json.loads(value)
    command = benchmark_command("benchmarks/pseudolabel_extreme.py", argv)

    def log(text):
        print(text, flush=True)

    quality_rows = [] if args.skip_quality else quality(args.data, args.work, args.noise or [0.0, 2.0], args.limit,
                                                        options, args.dataset or list(DATASETS), log)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    maker_rows = [] if args.skip_speed else maker_speed(log, args.repeats, args.profile)
    speed_rows = [] if args.skip_speed or args.skip_solvers else speed(log)
    write_results(quality_rows, speed_rows, maker_rows, command, options)
    log(f"wrote {RESULTS / 'pseudolabel_extreme.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
