"""Dense-CRF relabelling on ACDC (paper 004, Sec. 2.2): does the CRF improve the network's labels, and with
which parameters?

For training volumes of the fixed split, the round-0 network of ``benchmarks/scribbles_acdc.py`` (trained on
the scribbles' seed areas only) predicts class probabilities on the model grid; the E step relabels them with the
seed areas clamped, either by the argmax (the paper's "base") or by the dense CRF with several parameter sets
(the paper's cardiac values first). Scored against the expert labels of those volumes (which the method itself
never sees; the paper tuned its CRF on a labelled validation set the same way). Run under the shared CPU lock::

    flock /tmp/extremeseg-cpu.lock .venv/bin/python benchmarks/scribbles_crf.py --cases 12

Writes ``benchmarks/results/scribbles_crf.md`` and ``.json``.
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

from ExtremeSegLib.evaluation import discover_cases, load_split, select_cases  # noqa: E402
from ExtremeSegLib.evaluation.report import benchmark_command, versions  # noqa: E402
from ExtremeSegLib.io import read_image, read_labelmap  # noqa: E402
from ExtremeSegLib.metrics import dice  # noqa: E402
from ExtremeSegLib.pseudolabel.scribbles import random_walker_probabilities, scribbles_from_labelmap, seed_areas  # noqa: E402,E501
from ExtremeSegLib.refine.crf import PAPER_PIXEL_MM, dense_crf  # noqa: E402
from ExtremeSegLib.training.data import frame_case, network_inputs  # noqa: E402
from ExtremeSegLib.training.inference import predict_probabilities  # noqa: E402
from ExtremeSegLib.training.model_file import load_model  # noqa: E402

PAPER = {"appearance_weight": 5.0, "smoothness_weight": 10.0, "sigma_alpha_mm": 2 * PAPER_PIXEL_MM,
         "sigma_beta": 0.1, "sigma_gamma_mm": 5 * PAPER_PIXEL_MM}
PARAMETER_SETS = {
    "paper (w 5/10, sa 2.7 mm, sb 0.1, sg 6.8 mm)": PAPER,
    "sb 0.3": {**PAPER, "sigma_beta": 0.3},
    "sb 1.0": {**PAPER, "sigma_beta": 1.0},
    "w 5/3": {**PAPER, "smoothness_weight": 3.0},
    "w 3/1, sb 0.3": {**PAPER, "appearance_weight": 3.0, "smoothness_weight": 1.0, "sigma_beta": 0.3},
    "w 10/3, sa 5 mm, sb 0.3": {**PAPER, "appearance_weight": 10.0, "smoothness_weight": 3.0, "sigma_alpha_mm": 5.0,
                                "sigma_beta": 0.3},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "acdc")
    parser.add_argument("--model", type=Path, default=REPO / "benchmarks" / "runs" / "scribbles_acdc" / "2d" / "none"
                        / "model.pt")
    parser.add_argument("--cases", type=int, default=12, help="training volumes used (every n-th of the split)")
    parser.add_argument("--tau", type=float, default=0.99)
    parser.add_argument("--beta", type=float, default=130.0)
    args = parser.parse_args(argv)

    model = load_model(args.model)
    train = select_cases(discover_cases(args.data), load_split("acdc")["train"])
    cases = train[:: max(1, len(train) // args.cases)][: args.cases]
    scores = {name: [] for name in ["argmax (base)", *PARAMETER_SETS]}
    seconds = {name: [] for name in PARAMETER_SETS}
    for case in cases:
        image = read_image(case.image)
        frame = frame_case(image, model.inputs)
        inputs = network_inputs(frame, model.inputs)
        probabilities = predict_probabilities(model.network, inputs, model.patch_size, torch.device("cpu"))
        scribbles = scribbles_from_labelmap(read_labelmap(case.scribble), [[1], [2], [3]], unannotated=4)
        seeds = seed_areas(random_walker_probabilities(image, scribbles, 4, beta=args.beta), args.tau)
        painted = scribbles.labels.array >= 0
        seeds[painted] = scribbles.labels.array[painted]
        seeds = frame.to_model(seeds[None], "nearest")[0].astype(np.int16)
        reference = frame.to_model(read_labelmap(case.label).array[None].astype(np.int16), "nearest")[0]

        def score(labels, seeds=seeds, reference=reference):  # bound now: B023
            labels = np.where(seeds >= 0, seeds, labels)
            return [dice(labels == c, reference == c) for c in (1, 2, 3)]

        scores["argmax (base)"].append(score(probabilities.argmax(0)))
        for name, params in PARAMETER_SETS.items():
            started = time.perf_counter()
            q = dense_crf(probabilities, inputs[0], frame.grid.spacing, seeds, **params)
            seconds[name].append(time.perf_counter() - started)
            scores[name].append(score(q.argmax(0)))
        print(case.name, {k: round(float(np.mean(v[-1])), 3) for k, v in scores.items()}, flush=True)

    table = [{"relabelling": name, "dice": np.mean(v, axis=0).tolist(), "mean": float(np.mean(v)),
              "seconds": float(np.mean(seconds[name])) if name in seconds else None} for name, v in scores.items()]
    command = benchmark_command("benchmarks/scribbles_crf.py", argv)
    lines = ["# Dense-CRF relabelling of the round-0 network on ACDC training volumes", "",
             f"{len(cases)} training volumes (every n-th of the split), model `{args.model.relative_to(REPO)}` "
             "(round 0: "
             "trained on the seed areas only). Dice of the relabelled training labels (seed areas clamped) against the "
             "expert labels on the model grid; sigma_beta is in units of the network's normalised intensities "
             "(robust z-score); CRF seconds per volume (mean field, 5 iterations, under the shared CPU lock).", "",
             f"    {command.strip()}", "", "| Relabelling | RV | Myo | LV | Mean | s / volume |",
             "|---|---|---|---|---|---|"]
    for row in table:
        s = "–" if row["seconds"] is None else f"{row['seconds']:.1f}"
        lines.append(f"| {row['relabelling']} | " + " | ".join(f"{d:.3f}" for d in row["dice"]) +
                     f" | {row['mean']:.3f} | {s} |")
    out = REPO / "benchmarks" / "results" / "scribbles_crf"
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": command.strip(), "versions": versions(),
                                                    "cases": [c.name for c in cases], "table": table}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
