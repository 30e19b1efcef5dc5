"""``extremeseg simulate``: weak annotations simulated from a ground-truth label map (seeded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..ranges import AT_LEAST_0, COUNT, SEED

HELP = "simulate extreme points, surface points or scribbles from a ground-truth label map"

POINT_KINDS = ("extreme", "surface")
EXTREME_POINT_LABELS = ("I-low", "I-high", "J-low", "J-high", "K-low", "K-high")


def parse_label_values(text) -> list:
    """``"1,2"`` (or a list of such strings) -> ``[1, 2]``; :class:`InputError` for anything but integers."""
    parts = [p for item in ([text] if isinstance(text, str) else text) for p in str(item).replace(",", " ").split()]
    try:
        return [int(p) for p in parts]
    except ValueError as err:
        raise InputError(f"label values must be whole numbers separated by commas, got {text!r}") from err


def add_arguments(parser) -> None:
    parser.add_argument("label", type=Path, help="ground-truth label map (.nii.gz, .nii, .nrrd)")
    parser.add_argument("--kind", choices=("extreme", "surface", "scribbles"), required=True,
                        help="extreme: 6 extreme points; surface: --n-points boundary points; "
                             "scribbles: a scribble label map (4 = unannotated, 0 = background)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output file: .mrk.json for points, .nii.gz/.nii/.nrrd for scribbles")
    parser.add_argument("--label-value", action="append", metavar="V[,V...]",
                        help="label value(s) of the object (points) or the classes to scribble; "
                             "default: every value > 0")
    parser.add_argument("--noise-mm", type=AT_LEAST_0.parse, default=0.0,
                        help="Gaussian click noise, standard deviation in mm per coordinate (points only)")
    parser.add_argument("--n-points", type=COUNT.parse, default=20, help="number of surface points (default 20)")
    parser.add_argument("--seed", type=SEED.parse, default=0,
                        help="random seed (default 0): same seed, same annotation")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args) -> int:
    from ..io.markups import write_points
    from ..io.volumes import read_labelmap, write_volume
    from ..simulate import simulate_extreme_points, simulate_scribbles, simulate_surface_points

    out_name = args.out.name.lower()
    if args.kind in POINT_KINDS and not out_name.endswith(".mrk.json"):
        raise InputError(f"{args.out}: {args.kind} points are written as a Slicer point list; "
                         "give an output name ending in .mrk.json")
    if args.kind == "scribbles" and not out_name.endswith((".nii.gz", ".nii", ".nrrd")):
        raise InputError(f"{args.out}: scribbles are a label map; give an output name ending in .nii.gz, .nii or .nrrd")
    if args.out.exists() and not args.overwrite:
        raise InputError(f"{args.out} already exists; choose another output name or add --overwrite")

    labels = read_labelmap(args.label)
    values = parse_label_values(args.label_value) if args.label_value else None
    if values is not None:
        absent = [v for v in values if not np.any(labels.array == v)]
        if absent:
            raise InputError(f"label value(s) {absent} do not occur in {args.label}; "
                             f"it holds {sorted(int(v) for v in np.unique(labels.array))}")

    if args.kind == "scribbles":
        scribbles = simulate_scribbles(labels, classes=values, seed=args.seed)
        written = write_volume(scribbles, args.out, overwrite=args.overwrite)
        print(f"wrote scribbles ({int(np.sum(scribbles.array != 4))} annotated voxels) to {written}")
        return 0

    mask = labels.with_array(np.isin(labels.array, values) if values is not None else labels.array > 0)
    if args.kind == "extreme":
        points = simulate_extreme_points(mask, noise_mm=args.noise_mm, seed=args.seed)
        written = write_points(args.out, points, labels=EXTREME_POINT_LABELS, name="ExtremePoints",
                               overwrite=args.overwrite)
    else:
        points = simulate_surface_points(mask, args.n_points, seed=args.seed, noise_mm=args.noise_mm)
        written = write_points(args.out, points, name="SurfacePoints", overwrite=args.overwrite)
    print(f"wrote {len(points)} {args.kind} points to {written}")
    return 0
