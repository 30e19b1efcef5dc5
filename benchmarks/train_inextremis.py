"""InExtremIS (paper 001): clicks at training time only, a fully automatic model; its ablation and references.

On the fixed split (``benchmarks/splits/<dataset>.json``) and with the click simulation of
``benchmarks/train_extreme_points.py`` (1 mm noise, seeded per case): every variant trains on the training cases'
clicks only and segments the test cases *without* clicks (whole image in, no click channels). Variants, the
paper's ablation in its order, then the reference:

- ``gradient``: geodesics on the image gradient only, no CRF loss;
- ``gradient_euclidean``: + the Euclidean length term;
- ``deep``: + the network's background probability (deep geodesics);
- ``deep_crf``: + the CRF regularised loss (the full method);
- ``full``: full supervision, the same network, inputs (whole image, no clicks) and epochs.

``--curve-cases N`` keeps the per-epoch validation (the training curve) to the first N test cases; the other test
cases are segmented once after training from the saved model file, without clicks, as ``extremeseg predict``
would (ACDC's whole-image validation of 40 volumes cost about 450 s an epoch on one thread). Every test case is
scored either way.

Each variant's scores are written to the results file as soon as it finishes; a rerun skips the variants already
there with the same settings (``--fresh`` starts over). ``--timing`` measures a training step's parts on real
patches (geodesics, CRF loss; 2 CPU threads) and the bilateral grid's error against the exact CRF energy on test
images (prediction-like probabilities: the blurred reference). Run it under the shared CPU lock::

    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/train_inextremis.py --dataset hippocampus

Writes ``benchmarks/results/inextremis_<dataset>.md`` and ``.json``; runs go to ``benchmarks/runs/`` (not committed).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from train_extreme_points import DATASETS, Recorder, score_run, simulate_points  # noqa: E402

from ExtremeSegLib.evaluation import discover_cases, load_split, select_cases  # noqa: E402
from ExtremeSegLib.evaluation.report import benchmark_command, cpu_model, versions  # noqa: E402
from ExtremeSegLib.recipes import JobConfig, predict, train  # noqa: E402
from ExtremeSegLib.recipes.inextremis import InExtremISSettings  # noqa: E402
from ExtremeSegLib.training.model_file import read_description  # noqa: E402

VARIANTS = {
    "gradient": ("inextremis", {"geodesics": "gradient", "crf_weight": 0.0}, "Geodesics on the image gradient"),
    "gradient_euclidean": ("inextremis", {"geodesics": "gradient_euclidean", "crf_weight": 0.0},
                           "+ Euclidean length"),
    "deep": ("inextremis", {"geodesics": "deep", "crf_weight": 0.0}, "+ network background probability (deep)"),
    "deep_crf": ("inextremis", {}, "+ CRF regularised loss (full method, paper defaults)"),
    "full": ("fully_supervised", {}, "Full supervision (same network, inputs, epochs)"),
}
#: the CRF kernels ``--crf-ranking`` compares: the paper's, then wider intensity widths (about the images' noise
#: and beyond) and a narrower spatial one (the paper's 15 voxels were about 7 mm on its 0.4-0.5 mm scans)
CRF_RANKING_SIGMAS = ((15.0, 0.05), (15.0, 0.25), (15.0, 1.0), (5.0, 0.05), (5.0, 0.25), (5.0, 1.0))
#: per data set: what the InExtremIS runs change from the extreme-point benchmark's settings (whole image, no cues)
AUTOMATIC = {"inputs": {"cues": [], "crop_to_points": False}, "postprocess": {"clip_to_points": False}}


def job_config(spec, variant, cases, test, points, output) -> JobConfig:
    recipe, pseudolabel, _ = VARIANTS[variant]

    def entry(case, clicks):
        row = {"name": case.name, "image": str(case.image), "label": str(case.label)}
        return dict(row, points=str(points[case.name])) if clicks else row

    training = dict(spec["training"])
    pseudolabel = {**spec.get("inextremis", {}), **pseudolabel} if recipe == "inextremis" else pseudolabel
    if recipe == "inextremis":
        training["augmentation"] = {"rotate_probability": 0.0}
    return JobConfig.from_dict({
        "recipe": recipe, "output": str(output), "modality": spec["modality"],
        "classes": [{"name": spec["object"], "label_values": spec["label_values"]}],
        "cases": [entry(c, recipe == "inextremis") for c in cases], "validation": [entry(c, False) for c in test],
        "inputs": AUTOMATIC["inputs"], "network": spec["network"], "training": training,
        "pseudolabel": pseudolabel, "postprocess": AUTOMATIC["postprocess"], "device": "auto",
    })


# -- timing and CRF error ------------------------------------------------------------------------------------

def measure_timing(spec, train_cases, points, steps: int = 8) -> dict:
    """Seconds per training step (forward, loss, backward, update; batch and patch of the job) with no paths, deep
    paths, and deep paths + CRF loss, and the geodesics' own time per step, on the first training cases."""
    import torch

    from ExtremeSegLib.recipes import get_recipe
    from ExtremeSegLib.recipes.loop import plan
    from ExtremeSegLib.recipes.recipe import prepare_case, read_case
    from ExtremeSegLib.training.data import TrainingVolume, make_batch, median_spacing, pad_to
    from ExtremeSegLib.training.geodesic_objective import GeodesicObjective
    from ExtremeSegLib.training.networks import build_network

    config = job_config(spec, "deep_crf", train_cases[:8], [], points, REPO / "benchmarks" / "runs" / "unused")
    read = [read_case(c, config.classes) for c in config.cases]
    inputs = config.inputs.resolved(config.modality, median_spacing([r[0] for r in read]))
    cases = [prepare_case(c, c.name, r, inputs) for c, r in zip(config.cases, read)]
    params, patch, _ = plan(config, inputs.spacing_mm, [c.frame.grid.shape for c in cases], 1, 2)
    recipe = get_recipe("inextremis")

    class Job:  # what the recipe's hooks read
        pass

    job = Job()
    job.config, job.inputs = config, inputs
    volumes = []
    for case in cases:
        label = recipe.initial_label(job, case)
        volumes.append(pad_to(TrainingVolume(case.inputs, recipe.training_target(job, case, label), label.weight),
                              patch))
    rows = {}
    for name, geodesics, crf in (("no paths, no CRF", None, 0.0), ("deep paths", "deep", 0.0),
                                 ("deep paths + CRF", "deep", 1e-4)):
        torch.manual_seed(0)
        network = build_network(**params)
        objective = GeodesicObjective(inputs.spacing_mm, geodesics, crf)
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
        rng = np.random.default_rng(0)
        times = []
        for step in range(steps + 2):
            x, y, w = make_batch(volumes, rng.permutation(len(volumes))[:config.training.batch_size], patch, rng,
                                 config.training.foreground_fraction, inputs.spacing_mm)
            started = time.perf_counter()
            optimizer.zero_grad()
            loss, _ = objective(network, x, y, w)
            loss.backward()
            optimizer.step()
            if step >= 2:  # the first steps warm up the allocator and the thread pool
                times.append(time.perf_counter() - started)
            if step == 1:
                objective.seconds = {"geodesics": 0.0, "crf": 0.0}
        rows[name] = {"step_s": float(np.mean(times)), "geodesics_s": objective.seconds["geodesics"] / steps,
                      "crf_forward_s": objective.seconds["crf"] / steps}
    return {"patch": list(patch), "batch_size": config.training.batch_size, "threads": torch.get_num_threads(),
            "steps": steps, "rows": rows}


def measure_crf_error(spec, test, n_cases: int = 3, max_voxels: int = 20_000, blur_mm: float = 1.5) -> dict:
    """Bilateral-grid vs exact CRF energy on test images (the network's normalised input) with prediction-like
    probabilities: the reference mask blurred by ``blur_mm`` (no trained model needed). Central crops of at most
    ``max_voxels`` voxels around the object (the exact form is O(N^2))."""
    import torch
    from scipy import ndimage as ndi

    from ExtremeSegLib.io import read_image, read_labelmap
    from ExtremeSegLib.training.crf_loss import bilateral_filter_exact, bilateral_filter_grid, crf_energy
    from ExtremeSegLib.training.data import Normalisation

    rows = []
    for case in test[:n_cases]:
        image = read_image(case.image)
        mask = np.isin(read_labelmap(case.label).array, spec["label_values"]).astype(np.float32)
        spacing = np.asarray(image.spacing, dtype=float)
        inputs = Normalisation.for_modality(spec["modality"]).apply(image.array)
        foreground = np.clip(ndi.gaussian_filter(mask, blur_mm / spacing), 0.0, 1.0)
        shape = np.asarray(mask.shape)
        while np.prod(shape) > max_voxels:
            shape[int(np.argmax(shape * spacing))] -= 1
        centre = np.round(np.argwhere(mask > 0).mean(axis=0)).astype(int)
        lo = np.clip(centre - shape // 2, 0, np.asarray(mask.shape) - shape)
        box = tuple(slice(int(a), int(a + n)) for a, n in zip(lo, shape))
        f = torch.from_numpy(foreground[box].astype(np.float32))[None]
        p = torch.stack([1 - f, f], dim=1)
        x = torch.from_numpy(inputs[box].astype(np.float32))[None]
        started = time.perf_counter()
        exact = float(crf_energy(p, x, spacing, method="exact"))
        exact_s = time.perf_counter() - started
        started = time.perf_counter()
        grid = float(crf_energy(p, x, spacing, method="grid"))
        grid_s = time.perf_counter() - started
        values = 1 - p[:, 1:]
        fe, fg = bilateral_filter_exact(values, x, spacing), bilateral_filter_grid(values, x, spacing)
        rows.append({"case": case.name, "shape": shape.tolist(), "exact": exact, "grid": grid,
                     "relative_energy_error": grid / exact - 1,
                     "filter_relative_l2": float((fg - fe).norm() / fe.norm()),
                     "exact_s": exact_s, "grid_s": grid_s})
    return {"rows": rows, "blur_mm": blur_mm}


def measure_crf_ranking(spec, cases, n_cases: int = 4, sigmas=((15.0, 0.05),)) -> list:
    """The CRF energy (bilateral grid) of masks derived from the reference on training images: the reference, it
    dilated by 2 voxels and eroded by 1, and its tight box (the shape the weak models predict), each blurred by half
    a voxel, for each ``(sigma_mm, sigma_intensity)`` of ``sigmas``; plus the object's share of its box, the
    image's noise (robust standard deviation of neighbour differences / sqrt 2, normalised units), the object's
    contrast (mean inside minus mean in a 3-voxel shell around it) and the kernel's mean row sum ``mean_l W_kl``
    at the first sigmas (how many voxels' worth of affinity a voxel has: the energy's scale)."""
    import torch
    from scipy import ndimage as ndi

    from ExtremeSegLib.io import read_image, read_labelmap
    from ExtremeSegLib.training.crf_loss import bilateral_filter_grid, crf_energy
    from ExtremeSegLib.training.data import Normalisation

    rows = []
    for case in cases[:n_cases]:
        image = read_image(case.image)
        spacing = np.asarray(image.spacing, dtype=float)
        normalised = Normalisation.for_modality(spec["modality"]).apply(image.array).astype(np.float32)
        x = torch.from_numpy(normalised)[None]
        reference = np.isin(read_labelmap(case.label).array, spec["label_values"])
        inside = np.argwhere(reference)
        box = np.zeros_like(reference)
        box[tuple(slice(int(a), int(b) + 1) for a, b in zip(inside.min(axis=0), inside.max(axis=0)))] = True
        masks = {"reference": reference, "dilated 2": ndi.binary_dilation(reference, iterations=2),
                 "eroded 1": ndi.binary_erosion(reference), "tight box": box}
        energies = {}
        for sigma_mm, sigma_intensity in sigmas:
            key = f"{sigma_mm:g} mm, {sigma_intensity:g}"
            energies[key] = {}
            for label, mask in masks.items():
                f = torch.from_numpy(np.clip(ndi.gaussian_filter(mask.astype(np.float32), 0.5), 0, 1))[None]
                energies[key][label] = float(crf_energy(torch.stack([1 - f, f], dim=1), x, spacing, sigma_mm,
                                                        sigma_intensity))
        row_sum = float(bilateral_filter_grid(torch.ones((1, 1) + reference.shape), x, spacing, *sigmas[0]).mean())
        in_plane = np.argsort(spacing)[:2]  # neighbour differences along the two finest axes
        diffs = np.concatenate([np.diff(normalised, axis=int(a)).ravel() for a in in_plane])
        noise = float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / np.sqrt(2))
        shell = ndi.binary_dilation(reference, iterations=3) & ~reference
        rows.append({"case": case.name, "fill": float(reference.sum() / box.sum()), "energies": energies,
                     "mean_row_sum": row_sum, "noise": noise,
                     "contrast": float(abs(normalised[reference].mean() - normalised[shell].mean()))})
    return rows


def measure_path_coverage(spec, train_cases, points) -> dict:
    """What the fixed supervision covers, on the model grid of training cases: per path cost, the voxels on the
    geodesics between the simulated clicks, their precision against the reference and the share of the reference
    they reach; ``deep`` is shown under two networks, one that fills the tight box (background probability 0
    inside it: the paths of ``gradient_euclidean``) and a perfect one (background probability 1 - reference, the
    best the network could teach). Also the reference's share of its clicks' tight box, the share of the reference
    wrongly labelled background (outside the relaxed box), the labelled background's size, the tight box's share of
    the model grid (the whole image: what is left to the background is a shell at the image's border), and the
    paths' share and precision further than the box margin from their clicks (the clicks' own error lies within
    it)."""
    from scipy import ndimage as ndi

    from ExtremeSegLib.pseudolabel.deep_geodesics import geodesic_paths_mask
    from ExtremeSegLib.recipes import get_recipe
    from ExtremeSegLib.recipes.recipe import prepare_case, read_case
    from ExtremeSegLib.training.data import median_spacing

    config = job_config(spec, "deep_crf", train_cases, [], points, REPO / "benchmarks" / "runs" / "unused")
    read = [read_case(c, config.classes) for c in config.cases]
    inputs = config.inputs.resolved(config.modality, median_spacing([r[0] for r in read]))
    recipe = get_recipe("inextremis")
    settings = recipe.settings(config)

    class Job:  # what the recipe's hooks read
        pass

    job = Job()
    job.config, job.inputs = config, inputs
    costs = {"gradient": ("gradient", None), "gradient_euclidean": ("gradient_euclidean", None),
             "deep, perfect network": ("deep", "reference")}
    rows = []
    for case_config, r in zip(config.cases, read):
        case = prepare_case(case_config, case_config.name, r, inputs)
        reference = case.reference_on_grid(2)[1] > 0.5
        label = recipe.initial_label(job, case)
        target = recipe.training_target(job, case, label)
        box, codes = target[2] > 0.5, target[3]
        near_clicks = ndi.distance_transform_edt(codes == 0, sampling=inputs.spacing_mm)
        row = {"case": case.name, "reference_voxels": int(reference.sum()),
               "fill": float(reference.sum() / box.sum()),
               "reference_outside_relaxed": float((reference & (label.weight > 0) & (label.probabilities[1] < 0.5))
                                                  .sum() / reference.sum()),
               "background_voxels": int(((label.weight > 0) & (label.probabilities[1] < 0.5)).sum()),
               "box_share_of_image": float(box.mean()), "paths": {}}
        for name, (cost, network) in costs.items():
            background = None if network is None else (~reference).astype(np.float32)
            mask = geodesic_paths_mask(case.inputs[0], codes, box, inputs.spacing_mm, background, cost)
            far = mask & (near_clicks > settings.box_margin_mm)
            row["paths"][name] = {"voxels": int(mask.sum()), "precision": float((mask & reference).sum() / mask.sum()),
                                  "reach": float((mask & reference).sum() / reference.sum()),
                                  "share_far_from_clicks": float(far.sum() / mask.sum()),
                                  "precision_far_from_clicks": float((far & reference).sum() / max(far.sum(), 1))}
        rows.append(row)
    return {"n_cases": len(rows), "rows": rows}


CRF_MEMORY_PROBE = """
import resource, sys, time, torch
from ExtremeSegLib.training.crf_loss import CRFLoss
shape, spacing = [tuple(float(v) for v in part.split(",")) for part in sys.argv[1:3]]
shape = tuple(int(n) for n in shape)
image, logits = torch.randn((2,) + shape).clamp(-2.5, 4), torch.randn((2, 2) + shape, requires_grad=True)
started = time.perf_counter()
if sys.argv[3] == "crf":
    CRFLoss(spacing)(logits, image).backward()
else:  # the control: the same process without the loss
    torch.softmax(logits, dim=1).sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - started)
"""


def measure_crf_memory() -> list:
    """Peak resident memory of a process computing the CRF loss (forward + backward, batch 2, random image and
    logits) against the same process without it, per patch size (the peak resident set is per process)."""
    import subprocess

    def probe(shape, spacing, what):
        out = subprocess.run([sys.executable, "-c", CRF_MEMORY_PROBE, ",".join(map(str, shape)),
                              ",".join(map(str, spacing)), what], capture_output=True, text=True, check=True,
                             cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
        return [float(v) for v in out.stdout.split()]

    rows = []
    for shape, spacing in (((40, 56, 40), (1, 1, 1)), ((64, 64, 64), (1, 1, 1)), ((160, 160, 10), (1.5, 1.5, 10))):
        (peak, seconds), (control, _) = probe(shape, spacing, "crf"), probe(shape, spacing, "control")
        rows.append({"patch": list(shape), "spacing_mm": list(spacing), "peak_mib": peak - control,
                     "process_peak_mib": peak, "seconds": seconds})
    return rows


# -- the run ------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", type=Path, default=REPO / "benchmarks" / "runs")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["deep_crf", "full", "deep",
                                                                                    "gradient_euclidean", "gradient"])
    parser.add_argument("--epochs", type=int, help="epochs (default: the data set's)")
    parser.add_argument("--limit", type=int, help="a quick try: train on the first N training cases and score on the "
                        "next N training cases (the test cases stay untouched)")
    parser.add_argument("--noise-mm", type=float, default=1.0, help="click noise (mm, default 1)")
    parser.add_argument("--curve-cases", type=int, help="score only the first N test cases after each epoch (the "
                        "curve); the rest once after training, from the model file (default: all in the curve)")
    parser.add_argument("--timing", action="store_true", help="also measure step timing and the CRF grid's error")
    parser.add_argument("--crf-memory", action="store_true", help="only measure the CRF loss's memory per patch "
                        "size (added to the results file)")
    parser.add_argument("--override", type=json.loads, default={},
                        help='JSON merged into the data set\'s settings; its "inextremis" section goes into the '
                        'InExtremIS variants\' pseudolabel section (the ablation variants keep their own paths and CRF '
                        'switch), e.g. \'{"inextremis": {"crf_weight": 1e-3}, "training": {"epochs": 8}}\'')
    parser.add_argument("--crf-ranking", action="store_true", help="only measure the CRF energy of the reference "
                        "against its tight box on training images (added to the results file)")
    parser.add_argument("--path-coverage", action="store_true", help="only measure what the paths and the "
                        "background cover of the reference on the (--limit) training cases (a results file of its own)")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results of this name")
    parser.add_argument("--name", help="results name (default inextremis_<dataset>)")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the saved .json")
    args = parser.parse_args(argv)
    if args.curve_cases is not None and args.curve_cases < 0:
        parser.error(f"--curve-cases must be >= 0, got {args.curve_cases}")
    name = (args.name or f"inextremis_{args.dataset}") + (f"_limit{args.limit}" if args.limit else "")
    results_dir = args.results  # --limit too: a validation subset of the training split, where settings are chosen
    results_path = results_dir / f"{name}.json"
    if args.render:
        (results_dir / f"{name}.md").write_text(markdown(json.loads(results_path.read_text())))
        return 0
    if args.crf_memory:  # a separate, short measurement; the file may be written by a running benchmark meanwhile
        memory = {"rows": measure_crf_memory(), "command": benchmark_command("benchmarks/train_inextremis.py", argv)}
        (results_dir / f"{name}_crf_memory.json").write_text(json.dumps(memory, indent=1) + "\n")
        print(json.dumps(memory, indent=1))
        return 0

    if args.crf_ranking:
        spec = DATASETS[args.dataset]
        training_cases = select_cases(discover_cases(args.data / spec["folder"]), load_split(args.dataset)["train"])
        ranking = {"rows": measure_crf_ranking(spec, training_cases, sigmas=CRF_RANKING_SIGMAS),
                   "command": benchmark_command("benchmarks/train_inextremis.py", argv)}
        (results_dir / f"{name}_crf_ranking.json").write_text(json.dumps(ranking, indent=1) + "\n")
        print(json.dumps(ranking, indent=1))
        return 0

    spec = json.loads(json.dumps(DATASETS[args.dataset]))
    if args.path_coverage:
        training_cases = select_cases(discover_cases(args.data / spec["folder"]), load_split(args.dataset)["train"])
        training_cases = training_cases[: args.limit] if args.limit else training_cases
        coverage = measure_path_coverage(spec, training_cases, simulate_points(
            training_cases, spec, args.runs / f"{name}_points", args.noise_mm))
        coverage["command"] = benchmark_command("benchmarks/train_inextremis.py", argv)
        (results_dir / f"{name}_path_coverage.json").write_text(json.dumps(coverage, indent=1) + "\n")
        summary = {k: {m: float(np.mean([r["paths"][k][m] for r in coverage["rows"]])) for m in
                       coverage["rows"][0]["paths"][k]} for k in coverage["rows"][0]["paths"]}
        for key in ("fill", "reference_outside_relaxed", "reference_voxels", "background_voxels", "box_share_of_image"):
            summary[key] = float(np.mean([r[key] for r in coverage["rows"]]))
        print(json.dumps(summary, indent=1))
        return 0
    for section, values in args.override.items():
        spec[section] = {**spec.get(section, {}), **values} if isinstance(values, dict) else values
    if args.epochs:
        spec["training"]["epochs"] = args.epochs
    settings = {k: spec[k] for k in ("network", "training", "modality")}
    # the recipe's own settings too, so that a change of its defaults invalidates earlier results
    settings["inextremis"] = {**asdict(InExtremISSettings()), **spec.get("inextremis", {})}
    cases = discover_cases(args.data / spec["folder"])
    split = load_split(args.dataset)
    train_cases = select_cases(cases, split["train"])
    test_cases = select_cases(cases, split["test"])
    if args.limit:
        train_cases, test_cases = train_cases[: args.limit], train_cases[args.limit: 2 * args.limit]
    runs = args.runs / name
    results = json.loads(results_path.read_text()) if results_path.exists() and not args.fresh else {}
    if results.get("settings") != settings or results.get("n_train") != len(train_cases):
        results = {}
    results.update({
        "dataset": args.dataset, "object": spec["object"], "n_train": len(train_cases), "n_test": len(test_cases),
        "click_noise_mm": args.noise_mm, "settings": settings, "automatic": AUTOMATIC, "versions": versions(),
        "cpu": cpu_model(), "cpu_threads": os.cpu_count(),
    })
    results.setdefault("variants", {})
    results.setdefault("commands", [])
    command = benchmark_command("benchmarks/train_inextremis.py", argv)
    if command not in results["commands"]:
        results["commands"].append(command)
    points = simulate_points(train_cases + test_cases, spec, runs / "points", args.noise_mm)

    def save():
        results_dir.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        (results_dir / f"{name}.md").write_text(markdown(results))

    if args.timing and "timing" not in results:
        results["timing"] = measure_timing(spec, train_cases, points)
        save()
    if args.timing and "crf_error" not in results:
        results["crf_error"] = measure_crf_error(spec, test_cases)
        save()
    for variant in args.variants:
        if variant in results["variants"]:
            print(f"{variant}: already in {results_path}, skipped", flush=True)
            continue
        output = runs / variant
        if output.exists():
            shutil.rmtree(output)  # an unfinished run of an earlier invocation: benchmarks/runs is scratch space
        curve = test_cases if args.curve_cases is None else test_cases[: args.curve_cases]
        started = time.perf_counter()
        outputs = train(job_config(spec, variant, train_cases, curve, points, output), Recorder(variant))
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        (output / "validation").mkdir(exist_ok=True)
        for case in test_cases[len(curve):]:  # the model file alone, no clicks: what a user's prediction gets
            predict(outputs["model"], case.image, output / "validation" / f"{case.name}.seg.nrrd", device="cpu",
                    overwrite=True)
        predict_seconds = time.perf_counter() - started
        model = read_description(outputs["model"])
        scores = score_run(output, test_cases, spec, runs / f"{variant}_report", f"{args.dataset}: {variant}")
        rounds = json.loads(Path(outputs["rounds"]).read_text())
        results["variants"][variant] = {"title": VARIANTS[variant][2], "seconds": seconds,
                                        "epochs": spec["training"]["epochs"], "rounds": rounds,
                                        "curve_cases": len(curve), "predict_seconds": predict_seconds,
                                        "spacing_mm": model["inputs"]["spacing_mm"],
                                        "levels": len(model["network"]["strides"]), "patch": model["patch_size"],
                                        "summary": scores["summary"][spec["object"]]}
        save()
    save()
    print((results_dir / f"{name}.md").read_text())
    return 0


def markdown(results: dict) -> str:
    variants = results["variants"]
    lines = [f"# InExtremIS (clicks at training only, fully automatic model): {results['dataset']}, "
             f"{results['object']}", "", "```"] + results["commands"] + ["```", "",
             f"Fixed split: {results['n_train']} training / {results['n_test']} test volumes; extreme points simulated "
             f"from the ground truth with {results['click_noise_mm']} mm click noise on the training volumes only; "
             "the test volumes are segmented without clicks (whole image in, no click channels, no clipping to a "
             f"box). {results['cpu']}, {results['cpu_threads']} CPU cores, no GPU, under the CPU lock. Wall times are "
             "whole jobs.", "",
             "| Variant | Test Dice (mean ± std) | Test HD95 mm (mean) | Precision | Recall | Epochs | Wall time |",
             "|---|---|---|---|---|---|---|"]
    for key in ("gradient", "gradient_euclidean", "deep", "deep_crf", "full"):
        if key in variants:
            v = variants[key]
            d = v["summary"]["dice"]
            lines.append(f"| {v['title']} (`{key}`) | {d['mean']:.3f} ± {d['std']:.3f} | "
                         f"{v['summary']['hd95']['mean']:.2f} | {v['summary']['precision']['mean']:.3f} | "
                         f"{v['summary']['recall']['mean']:.3f} | {v['epochs']} | {v['seconds'] / 60:.1f} min |")
    rows = [(key, variants[key]) for key in VARIANTS if key in variants and "curve_cases" in variants[key]]
    if rows:
        lines += ["", "Model grid as planned by each job; the curve is the validation Dice after each evaluated "
                      "epoch on the first test cases only; the other test cases were segmented after training from "
                      "the model file (no clicks).", "",
                  "| Variant | Model grid mm | Levels | Patch | Curve cases | Curve (per epoch) | Prediction of the "
                  "rest |", "|---|---|---|---|---|---|---|"]
        for key, v in rows:
            curve = [e.get("validation_dice") for r in v["rounds"] for e in r.get("epoch_log") or []]
            shown = " / ".join(f"{d:.3f}" for d in curve if d is not None) or "-"
            lines.append(f"| `{key}` | {' x '.join(f'{x:.3f}' for x in v['spacing_mm'])} | {v['levels']} | "
                         f"{' x '.join(map(str, v['patch']))} | {v['curve_cases']} | {shown} | "
                         f"{v['predict_seconds']:.0f} s |")
    if "deep_crf" in variants and "full" in variants:
        ratio = variants["deep_crf"]["summary"]["dice"]["mean"] / variants["full"]["summary"]["dice"]["mean"]
        lines += ["", f"Full method / full supervision Dice: **{ratio:.3f}** (target >= 0.93; paper 001: 81.9 / 87.3 "
                      "= 0.938)."]
    timing = results.get("timing")
    if timing:
        lines += ["", "## A training step's parts", "",
                  f"Batch {timing['batch_size']}, patch {' x '.join(map(str, timing['patch']))}, "
                  f"{timing['threads']} threads, mean of {timing['steps']} steps on the first training cases "
                  "(forward, loss, backward, update).", "",
                  "| Objective | s / step | geodesics s / step | CRF forward s / step |", "|---|---|---|---|"]
        for label, row in timing["rows"].items():
            lines.append(f"| {label} | {row['step_s']:.3f} | {row['geodesics_s']:.3f} | {row['crf_forward_s']:.3f} |")
        full, deep = timing["rows"]["deep paths + CRF"], timing["rows"]["deep paths"]
        lines += ["", f"Deep geodesics: {deep['geodesics_s']:.3f} s per step for the batch (target <= 0.36 s), "
                      f"{deep['geodesics_s'] / full['step_s']:.0%} of a full-method step."]
    memory_file = Path(__file__).resolve().parent / "results" / f"inextremis_{results['dataset']}_crf_memory.json"
    if memory_file.exists():
        memory = json.loads(memory_file.read_text())
        lines += ["", "## CRF loss memory", "",
                  f"`{memory['command']}` (forward + backward, batch 2; peak resident memory of a process against "
                  "the same process without the loss)", "",
                  "| Patch | Spacing mm | Added by the CRF loss, MiB | Process peak MiB | s |", "|---|---|---|---|---|"]
        for row in memory["rows"]:
            lines.append(f"| {' x '.join(map(str, row['patch']))} | {row['spacing_mm']} | {row['peak_mib']:.0f} | "
                         f"{row['process_peak_mib']:.0f} | {row['seconds']:.2f} |")
    ranking_file = Path(__file__).resolve().parent / "results" / f"inextremis_{results['dataset']}_crf_ranking.json"
    if ranking_file.exists():
        ranking = json.loads(ranking_file.read_text())
        kernels = list(ranking["rows"][0]["energies"])
        labels = list(ranking["rows"][0]["energies"][kernels[0]])
        lines += ["", "## CRF energy: the reference against its box", "",
                  f"`{ranking['command']}` (training images, masks blurred by half a voxel; the energy is "
                  "1/N sum f W (1 - f), W with peak 1; per kernel (sigma mm, sigma intensity) each mask's energy "
                  "relative to the reference's)", "",
                  "| Case | Object / box | noise | contrast | kernel | " + " | ".join(labels) + " |",
                  "|---" * (len(labels) + 5) + "|"]
        for row in ranking["rows"]:
            for kernel in kernels:
                e = row["energies"][kernel]
                lines.append(f"| {row['case']} | {row['fill']:.2f} | {row['noise']:.3f} | {row['contrast']:.3f} | "
                             f"{kernel} | " + " | ".join(f"{e[k] / e['reference']:.2f}" for k in labels) + " |")
    error = results.get("crf_error")
    if error:
        lines += ["", "## CRF loss: bilateral grid against the exact dense form", "",
                  f"Test images (the network's normalised input), the reference blurred by {error['blur_mm']} mm as "
                  "the probabilities, central crops around the object (the exact form is O(N^2)); paper sigmas "
                  "(15 mm, 0.05).", "",
                  "| Case | Crop | Exact energy | Grid energy | Energy error | Filter error (rel. L2) | Exact s "
                  "| Grid s |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in error["rows"]:
            lines.append(f"| {row['case']} | {' x '.join(map(str, row['shape']))} | {row['exact']:.2f} | "
                         f"{row['grid']:.2f} | {row['relative_energy_error']:+.2%} | {row['filter_relative_l2']:.2%} | "
                         f"{row['exact_s']:.1f} | {row['grid_s']:.2f} |")
    lines += ["", "Settings: `" + json.dumps(results["settings"]) + "`; InExtremIS and full supervision both use `"
              + json.dumps(results["automatic"]) + "`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
