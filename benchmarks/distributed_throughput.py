"""Training steps per second on 1 vs several processes (torchrun + DDP, ``gloo`` on the CPU, ``nccl`` on GPUs).

Each row starts ``torch.distributed.run --standalone --nproc-per-node P`` on this script's ``--worker`` mode: every
process runs the engine's own :func:`~ExtremeSegLib.training.engine.fit` on one benchmark workload (the
hippocampus 3D network and patch of ``training_throughput.py``, synthetic volumes), ``--warmup`` steps untimed,
then ``--steps`` timed; each process trains ``batch`` patches a step, so a step of P processes trains P x batch
patches. Rank 0 reports the timed seconds. On the CPU every process gets ``--threads`` threads::

    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/distributed_throughput.py            # CPU, 1 vs 2
    .venv/bin/python benchmarks/distributed_throughput.py --device cuda --processes 1 2 4 8 \\
        --name distributed_throughput_cuda                                                         # one per GPU

Writes ``benchmarks/results/<name>.md`` and ``.json`` (default ``distributed_throughput``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from training_throughput import WORKLOADS, synthetic_volumes  # noqa: E402

from ExtremeSegLib.evaluation.report import benchmark_command, cpu_model, versions  # noqa: E402
from ExtremeSegLib.training import distributed  # noqa: E402
from ExtremeSegLib.training.engine import TrainingSettings, fit  # noqa: E402
from ExtremeSegLib.training.networks import build_network, plan_network, total_stride  # noqa: E402

WORKLOAD = "hippocampus 3D (extreme points)"


def worker(args) -> int:
    """One process of a row: warm up, time ``args.steps`` steps, rank 0 writes ``{"seconds": ...}``."""
    torch.set_num_threads(args.threads)
    distributed.join_group(args.device)
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    spec = WORKLOADS[WORKLOAD]
    kernels, strides = plan_network(spec["spacing"], spec["patch"], max_levels=len(spec["filters"]))
    torch.manual_seed(0)
    network = build_network(spec["inputs"], spec["classes"], kernels, strides, list(spec["filters"][:len(strides)]))
    volumes = synthetic_volumes(spec, 8, np.random.default_rng(distributed.rank()))
    settings = TrainingSettings(epochs=1, batch_size=args.batch, loss=spec["loss"])
    common = dict(spacing_mm=spec["spacing"], patch_size=spec["patch"], multiple=total_stride(strides), device=device)
    with tempfile.TemporaryDirectory() as folder:
        fit(network, volumes, replace(settings, steps_per_epoch=args.warmup), checkpoint=Path(folder) / "w", **common)
        distributed.barrier()
        start = time.perf_counter()
        fit(network, volumes, replace(settings, steps_per_epoch=args.steps), checkpoint=Path(folder) / "r", **common)
        if device.type == "cuda":
            torch.cuda.synchronize()
        distributed.barrier()
        seconds = time.perf_counter() - start
    if distributed.is_main():
        Path(args.worker).write_text(json.dumps({"seconds": seconds}))
    distributed.leave_group()
    return 0


def measure(args, processes: int) -> dict:
    """One row: ``processes`` workers under torchrun."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "row.json"
        own = ["--worker", str(report), "--device", args.device, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--batch", str(args.batch), "--threads", str(args.threads)]
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                   str(Path(__file__).resolve())] + own
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        seconds = json.loads(report.read_text())["seconds"]
    return {"processes": processes, "threads_per_process": args.threads, "batch_per_process": args.batch,
            "steps": args.steps, "seconds": round(seconds, 2), "steps_per_s": round(args.steps / seconds, 3),
            "patches_per_s": round(args.steps * args.batch * processes / seconds, 2)}


def markdown(results: dict) -> str:
    lines = [f"# Distributed training throughput ({results['device']}: {results['device_name']})", "",
             f"Command: `{results['command']}`", "",
             f"torch {results['versions'].get('torch', '?')}; workload {WORKLOAD} (patch "
             f"{' x '.join(map(str, WORKLOADS[WORKLOAD]['patch']))}); {results['steps']} timed steps after "
             f"{results['warmup']} untimed; the engine's own fit under torchrun (DDP, backend "
             f"{'nccl' if results['device'] == 'cuda' else 'gloo'}).", "",
             "| Processes | Threads / process | Batch / process | Steps / s | Patches / s | Speed-up (patches) |",
             "|---|---|---|---|---|---|"]
    base = results["rows"][0]["patches_per_s"]
    for r in results["rows"]:
        lines.append(f"| {r['processes']} | {r['threads_per_process']} | {r['batch_per_process']} "
                     f"| {r['steps_per_s']:.3f} | {r['patches_per_s']:.2f} | {r['patches_per_s'] / base:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="rows: processes (default 1 2)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per row (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--batch", type=int, default=2, help="patches per process and step (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (default 1)")
    parser.add_argument("--name", default="distributed_throughput")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one torchrun process of a row
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.device == "cuda" and torch.cuda.device_count() < max(args.processes):
        parser.error(f"--processes {max(args.processes)} needs as many GPUs; torch sees {torch.cuda.device_count()}")
    results = {"command": benchmark_command("benchmarks/distributed_throughput.py", argv), "device": args.device,
               "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_model(),
               "steps": args.steps, "warmup": args.warmup, "versions": versions(), "rows": []}
    args.results.mkdir(parents=True, exist_ok=True)
    for processes in args.processes:
        results["rows"].append(measure(args, processes))
        print(results["rows"][-1], flush=True)
        (args.results / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")  # as it goes
    (args.results / f"{args.name}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
