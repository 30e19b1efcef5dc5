"""Does Weak-Net's reconstruction term push the segmentation towards the true boundary? (issue 17 diagnosis)

For a trained Weak-Net run (its model file and the checkpoint holding the reconstruction network) and cases of
the training split it did not train on, N = 125 surface points each: the gradient of the reconstruction term
(boundary-weighted squared error over the image's variance, as in training) with respect to the foreground
logit, on the voxels of the image where the template disagrees with the ground truth. ``agrees``: the share of
those voxels where the term asks for more foreground exactly where the truth is foreground (50% = no
information; ``weighted``: each voxel counted by the size of its push). Training split only; prints one line
per case and the means::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/weak_net_direction.py \
        benchmarks/runs/sp_valA_limit30/weak_net_125_0.1 --first 30 --cases 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import surface_points as sp  # noqa: E402

from ExtremeSegLib.evaluation import discover_cases, load_split, select_cases  # noqa: E402
from ExtremeSegLib.pseudolabel.surface_template import SurfaceTemplate  # noqa: E402
from ExtremeSegLib.recipes.weak_net import WeakNetSettings  # noqa: E402
from ExtremeSegLib.training.data import frame_case, network_inputs  # noqa: E402
from ExtremeSegLib.training.engine import load_checkpoint  # noqa: E402
from ExtremeSegLib.training.model_file import load_model  # noqa: E402
from ExtremeSegLib.training.networks import build_network  # noqa: E402
from ExtremeSegLib.training.weak_net import binary_straight_through, boundary_band  # noqa: E402


def case_direction(segmentation, reconstruction, case, inputs, patch_size) -> dict:
    image, mask = sp.load_case(case)
    points = sp.simulate_surface_points(mask, 125, seed=sp.case_seed(case))
    frame = frame_case(image, inputs)
    x = network_inputs(frame, inputs)
    template = SurfaceTemplate(image).update(points).mask(frame.grid)
    truth = frame.to_model(mask.array[None].astype(np.float32), "nearest")[0] > 0.5
    shape = np.asarray(x.shape[1:])
    padded = -(-np.maximum(np.asarray(patch_size), shape) // 8) * 8  # as the sliding window pads, to the net's grid
    pad = [(int((p - s) // 2), int(p - s - (p - s) // 2)) for p, s in zip(padded, shape)]
    inside = np.zeros(padded, dtype=bool)
    inside[tuple(slice(a, a + int(n)) for (a, _), n in zip(pad, shape))] = True
    X = torch.from_numpy(np.pad(x, [(0, 0)] + pad))[None]
    T = torch.from_numpy(np.pad(template.astype(np.float32), pad))[None]
    truth = np.pad(truth, pad)
    logits = segmentation(X).detach().requires_grad_(True)
    probabilities = torch.softmax(logits, 1)[:, 1:]
    rebuilt = reconstruction(binary_straight_through(probabilities))
    settings = WeakNetSettings()
    w = torch.where(boundary_band(T, (3, 3, 3)), 1.0, settings.far_weight).unsqueeze(1)
    term = (w * (rebuilt - X[:, :1]) ** 2).mean() / X[:, :1].var()
    term.backward()
    push = -(logits.grad[0, 1] - logits.grad[0, 0]).numpy()  # > 0: the term asks for more foreground
    wrong = inside & (truth != (T[0].numpy() > 0.5))
    agrees = np.sign(push[wrong]) == np.where(truth[wrong], 1.0, -1.0)
    hard = (probabilities[0, 0].detach().numpy() >= 0.5) & inside
    return {"case": case.name, "template_wrong_voxels": int(wrong.sum()), "agrees": float(agrees.mean()),
            "weighted": float(np.abs(push[wrong])[agrees].sum() / np.abs(push[wrong]).sum()),
            "segmentation_iou": float((hard & truth).sum() / (hard | truth).sum())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished weak_net run folder (model.pt, state/checkpoint.pt)")
    parser.add_argument("--first", type=int, default=30, help="skip the first K training cases (those it trained on)")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args(argv)
    model = load_model(args.run / "model.pt")
    state = load_checkpoint(args.run / "state" / "checkpoint.pt")["objective"]
    reconstruction = build_network(**dict(model.description["network"], in_channels=1, out_channels=1, dropout=0.0))
    reconstruction.load_state_dict({k[len("reconstruction."):]: v for k, v in state.items()
                                    if k.startswith("reconstruction.")})
    reconstruction.eval()
    cases = select_cases(discover_cases(args.data / sp.DATASET), load_split(sp.DATASET)["train"])
    rows = [case_direction(model.network, reconstruction, case, model.inputs, model.patch_size)
            for case in cases[args.first:args.first + args.cases]]
    for row in rows:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    print(json.dumps({key: round(float(np.mean([r[key] for r in rows])), 3)
                      for key in ("agrees", "weighted", "segmentation_iou")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
