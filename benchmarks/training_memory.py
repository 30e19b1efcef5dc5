"""Memory of one training step per U-Net feature voxel: the constant behind the patch-size bound
(``ExtremeSegLib/training/memory.py``, issue 20).

Each row runs in a fresh interpreter: build the planned DynUNet (filters 16..256, 1 mm spacing, 2 input channels),
one float32 forward and backward pass on a random batch, and record the growth of the process's peak resident set
over the step. Bytes per feature voxel = that growth / (batch x sum over levels of filters x voxels at the level's
stride), the quantity :func:`~ExtremeSegLib.training.memory.feature_voxels` counts::

    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/training_memory.py

Writes ``benchmarks/results/training_memory.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: (cube side in voxels, batch)
ROWS = ((48, 1), (64, 1), (64, 2), (96, 1))

_STEP = """
import json, resource, sys
import torch
torch.set_num_threads(1)
from ExtremeSegLib.training.memory import feature_voxels
from ExtremeSegLib.training.networks import build_network, plan_network
side, batch = int(sys.argv[1]), int(sys.argv[2])
kernels, strides = plan_network((1.0, 1.0, 1.0), (side,) * 3, max_levels=5)
filters = [16, 32, 64, 128, 256][:len(strides)]
net = build_network(in_channels=2, out_channels=2, kernels=kernels, strides=strides, filters=filters)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = net(torch.randn(batch, 2, side, side, side))
(out[0] if isinstance(out, (list, tuple)) else out).sum().backward()
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({"side": side, "batch": batch, "levels": len(strides), "step_bytes": grown,
                  "feature_voxels": batch * feature_voxels((side,) * 3, filters, strides)}))
"""


def main(argv=None) -> int:
    from ExtremeSegLib.evaluation.report import benchmark_command, versions
    from ExtremeSegLib.training.memory import BYTES_PER_FEATURE_VOXEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    rows = []
    for side, batch in ROWS:
        done = subprocess.run([sys.executable, "-c", _STEP, str(side), str(batch)], capture_output=True, text=True,
                              cwd=REPO, check=True)
        row = json.loads(done.stdout)
        row["bytes_per_feature_voxel"] = round(row["step_bytes"] / row["feature_voxels"], 1)
        rows.append(row)
        print(row, flush=True)
    results = {"command": benchmark_command("benchmarks/training_memory.py", argv), "versions": versions(),
               "bound_bytes_per_feature_voxel": BYTES_PER_FEATURE_VOXEL, "rows": rows}
    lines = ["# Training-step memory per feature voxel (CPU, float32)", "", f"Command: `{results['command']}`", "",
             f"torch {results['versions'].get('torch', '?')}, {results['versions']['cpu']}. The patch-size bound "
             f"uses {BYTES_PER_FEATURE_VOXEL} bytes per feature voxel (below every row).", "",
             "| Patch | Batch | Levels | Feature voxels (M) | Step memory (MiB) | Bytes / feature voxel |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['side']}^3 | {r['batch']} | {r['levels']} | {r['feature_voxels'] / 1e6:.2f} "
                     f"| {r['step_bytes'] / 2**20:,.0f} | {r['bytes_per_feature_voxel']} |")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "training_memory.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.results / "training_memory.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
