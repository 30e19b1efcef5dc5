"""What a coarser model grid costs a perfect prediction: reference labels through a grid and back (no training).

For ACDC (per slice, in-plane axes only, as a slice-wise network sees it) and the hippocampus (3D; its two labels
as one class, and as two), on every ``--every``-th case of the training split: each class's thickness
(``structure_thickness_mm``, on the image grid), then for a grid holding the thinnest class 3, 4, 5 or 6 voxels
across, the labels one-hot -> linear to that grid -> linear back -> most probable class, mean Dice per class::

    .venv/bin/python benchmarks/model_grid_round_trip.py --every 8

Prints a table (the figures in ``docs/benchmarks.md``, "the planned model grid").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ExtremeSegLib.evaluation import discover_cases, load_split, select_cases  # noqa: E402
from ExtremeSegLib.io.volumes import read_labelmap  # noqa: E402
from ExtremeSegLib.metrics import dice  # noqa: E402
from ExtremeSegLib.training.data import grid_axes, resample, structure_thickness_mm  # noqa: E402

WORKLOADS = (("acdc", False, True), ("hippocampus", True, False), ("hippocampus", False, False))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=8, help="every n-th training case")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args(argv)
    for name, merge, slice_wise in WORKLOADS:
        cases = select_cases(discover_cases(args.data / name), load_split(name)["train"])[::args.every]
        labels = []
        for case in cases:
            label = read_labelmap(str(case.label))
            array = label.array.astype(int)
            labels.append(((array > 0).astype(int) if merge else array, label.spacing))
        num_classes = int(max(a.max() for a, _ in labels)) + 1
        median = np.median([s for _, s in labels], axis=0)
        axes = grid_axes(median, int(np.argmax(median)) if slice_wise else None)
        thickness = np.nanmedian([structure_thickness_mm(a, s, num_classes, axes) for a, s in labels], axis=0)
        print(f"{name}{' (one class)' if merge else ''}: {len(cases)} cases, median spacing {median.round(3)}, "
              f"thickness per class {thickness.round(2)} mm")
        for across in (3, 4, 5, 6):
            step = max(median[axes[0]], thickness.min() / across)
            kept = []
            for array, spacing in labels:
                shape = list(array.shape)
                for a in axes:
                    shape[a] = max(1, round(array.shape[a] * spacing[a] / step))
                one_hot = np.stack([array == c for c in range(num_classes)]).astype(np.float32)
                back = resample(resample(one_hot, shape), array.shape).argmax(0)
                kept.append([dice(back == c, array == c) for c in range(1, num_classes)])
            print(f"  {across} voxels across ({step:.2f} mm): round-trip Dice per class {np.mean(kept, 0).round(3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
