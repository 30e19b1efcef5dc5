"""Engine levers, one at a time: seconds per training step of the benchmark workloads with torch threads,
the channels_last_3d memory format and torch.compile, against the engine's default step.

Each workload is a network and batch of ``training_throughput.py`` (synthetic volumes, the engine's own batch
sampling and training step, :func:`~ExtremeSegLib.training.engine._train_step`). Variants are timed in
interleaved rounds (A, B, C, A, B, C, ...) so that a change in the machine's load hits all of them alike; the
figure is the median seconds per step over ``--rounds`` x ``--steps`` timed steps after ``--warmup`` untimed
ones (torch.compile: its compilation happens in the warm-up and is reported separately)::

    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/training_levers.py

Writes ``benchmarks/results/<name>.md`` and ``.json`` (default ``training_levers``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads must not spin

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from training_throughput import WORKLOADS, synthetic_volumes  # noqa: E402

from ExtremeSegLib.evaluation.report import benchmark_command, cpu_model, versions  # noqa: E402
from ExtremeSegLib.training.data import make_batch, pad_to  # noqa: E402
from ExtremeSegLib.training.engine import _train_step, as_objective  # noqa: E402
from ExtremeSegLib.training.losses import build_loss  # noqa: E402
from ExtremeSegLib.training.networks import build_network, plan_network  # noqa: E402

VARIANTS = ("default", "1 thread", "channels_last_3d", "torch.compile")


class Workload:
    """A network, its optimiser and a fixed pool of batches of one workload, set up for one variant."""

    def __init__(self, spec: dict, variant: str, batches: int = 4):
        slice_axis = int(np.argmax(spec["spacing"])) if spec.get("slice_wise") else None
        kernels, strides = plan_network(spec["spacing"], spec["patch"], max_levels=len(spec["filters"]),
                                        slice_wise=slice_axis is not None)
        torch.manual_seed(0)
        self.network = build_network(spec["inputs"], spec["classes"], kernels, strides,
                                     list(spec["filters"][:len(strides)]), dropout=spec.get("dropout", 0.0),
                                     dropout_levels=spec.get("dropout_levels"), slice_axis=slice_axis)
        self.memory_format = torch.channels_last_3d if variant == "channels_last_3d" else torch.contiguous_format
        self.network = self.network.to(memory_format=self.memory_format)
        self.objective = as_objective(build_loss(spec["loss"]))
        self.model = torch.compile(self.network) if variant == "torch.compile" else self.network
        self.parameters = list(self.network.parameters())
        self.optimizer = torch.optim.AdamW(self.parameters, lr=1e-3)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        rng = np.random.default_rng(0)
        padded = [pad_to(v, spec["patch"]) for v in synthetic_volumes(spec, 8, rng)]
        self.batches = [make_batch(padded, rng.permutation(len(padded))[:spec["batch"]], spec["patch"], rng, 0.5,
                                   spec["spacing"], None) for _ in range(batches)]
        self.step_index = 0

    def step(self) -> float:
        x, y, w = self.batches[self.step_index % len(self.batches)]
        self.step_index += 1
        x = x.contiguous(memory_format=self.memory_format)
        started = time.perf_counter()
        _train_step(self.model, self.objective, self.parameters, self.optimizer, self.scaler, x, y, w,
                    torch.device("cpu"), False)
        return time.perf_counter() - started


def measure(spec: dict, rounds: int, steps: int, warmup: int, threads: int) -> dict:
    rows = {}
    workloads = {}
    for variant in VARIANTS:
        torch.set_num_threads(1 if variant == "1 thread" else threads)
        started = time.perf_counter()
        try:
            workloads[variant] = Workload(spec, variant)
            for _ in range(warmup):
                workloads[variant].step()
            rows[variant] = {"setup_s": round(time.perf_counter() - started, 1), "times": []}
        except Exception as err:  # torch.compile may be unable to build here: say why, measure the rest
            rows[variant] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    for _ in range(rounds):
        for variant, workload in workloads.items():
            if "error" in rows[variant]:
                continue
            torch.set_num_threads(1 if variant == "1 thread" else threads)
            rows[variant]["times"] += [workload.step() for _ in range(steps)]
    for row in rows.values():
        if "times" in row:
            row["s_per_step"] = float(np.median(row.pop("times")))
    torch.set_num_threads(threads)
    return rows


def markdown(results: dict) -> str:
    lines = ["# Engine levers: seconds per training step", "",
             f"Command: `{results['command']}`", "",
             f"{results['cpu']}; torch {results['versions'].get('torch', '?')}, {results['threads']} threads by "
             f"default; median of {results['rounds']} interleaved rounds x {results['steps']} steps after "
             f"{results['warmup']} warm-up steps (setup s: building, warm-up and, for torch.compile, compiling).", "",
             "| Workload | Variant | s / step | vs default | setup s |", "|---|---|---|---|---|"]
    for name, rows in results["workloads"].items():
        base = rows["default"].get("s_per_step")
        for variant, row in rows.items():
            if "error" in row:
                lines.append(f"| {name} | {variant} | failed: {row['error']} | | |")
                continue
            ratio = f"{row['s_per_step'] / base:.2f}x" if base else "–"
            lines.append(f"| {name} | {variant} | {row['s_per_step']:.3f} | {ratio} | {row['setup_s']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--name", default="training_levers")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    results = {"command": benchmark_command("benchmarks/training_levers.py", argv), "cpu": cpu_model(),
               "threads": threads, "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
               "versions": versions(), "workloads": {}}
    for name in args.workloads:
        results["workloads"][name] = measure(WORKLOADS[name], args.rounds, args.steps, args.warmup, threads)
        print(name, json.dumps(results["workloads"][name]), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.results / f"{args.name}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
