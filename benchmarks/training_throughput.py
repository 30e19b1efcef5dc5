"""Training throughput of the engine (voxels per second) and peak memory, per benchmark network, with and
without mixed precision (issue 4's GPU target).

Each workload is the network and patch a benchmark job plans (same spacing, filters, inputs, classes, loss,
batch): the engine's own :func:`~ExtremeSegLib.training.engine.fit` (batch sampling, augmentation, the training
step, the per-epoch checkpoint) runs on synthetic volumes of the model grid's size, first ``--warmup`` steps
untimed, then ``--steps`` timed. Voxels per second = steps x batch x patch voxels / seconds. Peak memory: on
CUDA the peak allocated by torch during the timed run; on the CPU the process's peak resident set (whole run).
On the CPU ``amp`` is a no-op, so only the float32 row is measured::

    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/training_throughput.py            # CPU
    .venv/bin/python benchmarks/training_throughput.py --device cuda --name training_throughput_cuda

Writes ``benchmarks/results/<name>.md`` and ``.json`` (default ``training_throughput``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ExtremeSegLib.evaluation.report import benchmark_command, cpu_model, versions  # noqa: E402
from ExtremeSegLib.training.data import TrainingVolume  # noqa: E402
from ExtremeSegLib.training.engine import TrainingSettings, fit  # noqa: E402
from ExtremeSegLib.training.networks import build_network, plan_network, total_stride  # noqa: E402

#: name -> the network and batch a benchmark job plans (spacing mm, patch voxels, filters, input channels,
#: classes incl. background, loss, batch, slice-wise 2D, dropout); patches as the jobs logged them
WORKLOADS = {
    "hippocampus 3D (extreme points)": dict(spacing=(1.0, 1.0, 1.0), patch=(40, 56, 40), filters=(16, 32, 64, 128),
                                            inputs=2, classes=2, loss="dice", batch=2),
    "ACDC LV 3D (extreme points)": dict(spacing=(1.4453125, 1.4453125, 10.0), patch=(80, 80, 10),
                                        filters=(16, 32, 64, 128, 256), inputs=2, classes=2, loss="dice", batch=2),
    "ACDC 2D slices (scribbles)": dict(spacing=(1.4453125, 1.4453125, 10.0), patch=(224, 256, 1),
                                       filters=(16, 32, 64, 128, 256), inputs=1, classes=4, loss="ce", batch=4,
                                       slice_wise=True, dropout=0.5, dropout_levels=3),
}


def synthetic_volumes(spec: dict, count: int, rng: np.random.Generator) -> list:
    """``count`` volumes a little larger than the patch: noise plus a bright ellipsoid per class."""
    shape = tuple(int(n + (n > 1) * 8) for n in spec["patch"])
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    out = []
    for _ in range(count):
        labels = np.zeros(shape, np.int64)
        for c in range(1, spec["classes"]):
            centre = rng.uniform(-0.4, 0.4, 3)
            labels[(((grid - centre[:, None, None, None]) / 0.35) ** 2).sum(0) < 1] = c
        image = labels + rng.normal(0, 0.5, shape)
        inputs = np.concatenate([image[None], rng.random((spec["inputs"] - 1,) + shape)]).astype(np.float32)
        target = np.eye(spec["classes"], dtype=np.float32)[labels].transpose(3, 0, 1, 2)
        out.append(TrainingVolume(inputs, np.ascontiguousarray(target), np.ones(shape, np.float32)))
    return out


def measure(spec: dict, device: torch.device, amp: bool, steps: int, warmup: int, batch: int) -> dict:
    """One workload at one precision: ``{"voxels_per_s", "seconds", "peak_memory_mib", ...}``."""
    slice_axis = int(np.argmax(spec["spacing"])) if spec.get("slice_wise") else None
    kernels, strides = plan_network(spec["spacing"], spec["patch"], max_levels=len(spec["filters"]),
                                    slice_wise=slice_axis is not None)
    torch.manual_seed(0)
    network = build_network(spec["inputs"], spec["classes"], kernels, strides, list(spec["filters"][:len(strides)]),
                            dropout=spec.get("dropout", 0.0), dropout_levels=spec.get("dropout_levels"),
                            slice_axis=slice_axis)
    volumes = synthetic_volumes(spec, 8, np.random.default_rng(0))
    settings = TrainingSettings(epochs=1, batch_size=batch, loss=spec["loss"], amp=amp)
    common = dict(spacing_mm=spec["spacing"], patch_size=spec["patch"], multiple=total_stride(strides), device=device)
    with tempfile.TemporaryDirectory() as folder:
        fit(network, volumes, replace(settings, steps_per_epoch=warmup), checkpoint=Path(folder) / "warm.pt", **common)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = fit(network, volumes, replace(settings, steps_per_epoch=steps), checkpoint=Path(folder) / "run.pt",
                     **common)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    voxels = steps * result.batch_size * int(np.prod(result.patch_size))
    return {"amp": bool(amp and device.type == "cuda"), "batch": result.batch_size, "patch": list(result.patch_size),
            "steps": steps, "seconds": round(seconds, 2), "voxels_per_s": round(voxels / seconds),
            "peak_memory_mib": round(peak), "parameters": sum(p.numel() for p in network.parameters())}


def markdown(results: dict) -> str:
    memory = "peak GPU memory allocated (MiB)" if results["device"] == "cuda" else "peak process RSS (MiB)"
    lines = [f"# Training throughput ({results['device']}: {results['device_name']})", "",
             f"Command: `{results['command']}`", "",
             f"torch {results['versions'].get('torch', '?')}, {results['threads']} CPU threads; "
             f"{results['steps']} timed steps after {results['warmup']} untimed; synthetic volumes, the engine's "
             "own fit (batches, augmentation, step, checkpoint).", "",
             f"| Workload | Mixed precision | Batch | Patch | Parameters | Voxels / s | s / step | {memory} |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in results["workloads"].items():
        for r in rows:
            patch = " x ".join(map(str, r["patch"]))
            lines.append(f"| {name} | {'yes' if r['amp'] else 'no'} | {r['batch']} | {patch} "
                         f"| {r['parameters'] / 1e6:.2f} M | {r['voxels_per_s']:,} | {r['seconds'] / r['steps']:.3f} "
                         f"| {r['peak_memory_mib']:,} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per row (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--batch-scale", type=int, default=1, help="multiply each workload's batch (GPU headroom)")
    parser.add_argument("--name", default="training_throughput")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    device = torch.device(args.device)
    precisions = (False, True) if device.type == "cuda" else (False,)
    results = {"command": benchmark_command("benchmarks/training_throughput.py", argv), "device": device.type,
               "device_name": torch.cuda.get_device_name() if device.type == "cuda" else cpu_model(),
               "threads": torch.get_num_threads(), "steps": args.steps, "warmup": args.warmup,
               "versions": versions(), "workloads": {}}
    for name, spec in WORKLOADS.items():
        rows = []
        for amp in precisions:
            rows.append(measure(spec, device, amp, args.steps, args.warmup, spec["batch"] * args.batch_scale))
            print(f"{name} amp={amp}: {rows[-1]}", flush=True)
        results["workloads"][name] = rows
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.results / f"{args.name}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
