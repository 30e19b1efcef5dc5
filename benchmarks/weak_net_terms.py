"""Weak-Net's two loss terms during training, and what the reconstruction network reads (issue 17 diagnosis).

Trains the ``weak_net`` recipe on the first K hippocampus training cases (N = 125 simulated surface points) and,
every 5th step, logs for the batch: the loss, the mean foreground probability inside and outside the template,
the fraction of soft voxels (0.05 < p < 0.95), and the (unweighted) squared reconstruction error when the
reconstruction network is fed what it reads in training (``mse``), 0.01 x the probabilities (``mse_scaled``) and
the template itself (``mse_template_in``). ``mse_scaled`` close to ``mse`` and both well below
``mse_template_in`` mean that the reconstruction reads the image out of the probabilities' fine values rather
than a segmentation. Training split only; the log goes to ``<runs>/<name>/terms.json``::

    /tmp/cpu1 .venv/bin/python benchmarks/weak_net_terms.py --weight 1 --cases 16 --epochs 8 --name terms
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import surface_points as sp  # noqa: E402

from ExtremeSegLib.evaluation import discover_cases, load_split, select_cases  # noqa: E402
from ExtremeSegLib.recipes import JobConfig, train  # noqa: E402
from ExtremeSegLib.training import weak_net  # noqa: E402


def logging_forward(log: list, every: int = 5):
    """The objective's forward, recording the batch's figures every ``every`` steps."""
    forward = weak_net.WeakNetObjective.forward
    reads = getattr(weak_net, "binary_straight_through", lambda p: p)  # before the fix: the probabilities

    def logged(self, network, x, target, weight):
        loss, logits = forward(self, network, x, target, weight)
        if len(log) * every <= logged.steps:
            with torch.no_grad():
                template = target[:, 1] > 0.5
                p = torch.softmax(logits.float(), 1)[:, 1]
                row = {"step": logged.steps + 1, "loss": float(loss), "p_inside": float(p[template].mean()),
                       "p_outside": float(p[~template].mean()), "soft": float(((p > 0.05) & (p < 0.95)).float().mean())}
                if self.lam > 0:
                    image = x[:, :1].float()
                    for key, seen in (("mse", reads(p[:, None])), ("mse_scaled", 0.01 * p[:, None]),
                                      ("mse_template_in", template[:, None].float())):
                        row[key] = float(((self.reconstruction(seen).float() - image) ** 2).mean())
            log.append(row)
            print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
        logged.steps += 1
        return loss, logits

    logged.steps = 0
    return logged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weight", type=float, default=1.0, help="reconstruction weight (lambda)")
    parser.add_argument("--cases", type=int, default=16, help="the first K training cases")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", type=Path, default=REPO / "benchmarks" / "runs")
    parser.add_argument("--name", default="weak_net_terms")
    args = parser.parse_args(argv)
    cases = select_cases(discover_cases(args.data / sp.DATASET), load_split(sp.DATASET)["train"])[:args.cases]
    folder = args.runs / args.name
    points = sp.write_surface_points(cases, 125, folder / "points")
    log = []
    weak_net.WeakNetObjective.forward = logging_forward(log)
    data = json.loads(json.dumps(sp.JOB))
    data["training"]["epochs"] = args.epochs
    data.update(recipe="weak_net", output=str(folder / "run"), pseudolabel={"reconstruction_weight": args.weight},
                cases=[{"name": c.name, "image": str(c.image), "label": str(c.label), "points": points[c.name]}
                       for c in cases])
    started = time.perf_counter()
    train(JobConfig.from_dict(data), sp.Recorder(args.name))
    seconds = time.perf_counter() - started
    (folder / "terms.json").write_text(json.dumps({"argv": argv or sys.argv[1:], "seconds": seconds, "log": log},
                                                  indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
