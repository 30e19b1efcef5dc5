"""``extremeseg pseudolabel``: 6 extreme points -> pseudo-label segmentation (+ probability map)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

HELP = "make a pseudo-label segmentation from 6 extreme-point clicks (geodesic seeds + random walker)"


def add_arguments(parser) -> None:
    import inspect

    from ..pseudolabel.extreme_points import extreme_points_pseudolabel
    from ..pseudolabel.random_walker import SOLVERS

    DEFAULTS = {name: p.default for name, p in inspect.signature(extreme_points_pseudolabel).parameters.items()}

    parser.add_argument("--image", type=Path, required=True, help="image volume (.nii.gz, .nii, .nrrd)")
    parser.add_argument("--points", type=Path, required=True,
                        help="the 6 extreme points (.mrk.json or .fcsv point list), in any order")
    parser.add_argument("--out", type=Path, required=True, help="output segmentation (.seg.nrrd)")
    parser.add_argument("--probability", type=Path,
                        help="also write P(foreground) as a float volume (.nii.gz, .nii or .nrrd)")
    parser.add_argument("--segment-name", default="Object", help="name of the segment written (default Object)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    group = parser.add_argument_group("pseudo-label parameters (distances in mm)")
    group.add_argument("--box-margin-mm", type=float, default=DEFAULTS["box_margin_mm"],
                       help="relax the box through the clicks by this much; beyond it is background "
                            f"(default {DEFAULTS['box_margin_mm']})")
    group.add_argument("--path-radius-mm", type=float, default=DEFAULTS["path_radius_mm"],
                       help="dilate the geodesic paths by this into foreground seeds (default: "
                            f"{DEFAULTS['path_radius_fraction']:g} of the smallest extent between opposite clicks)")
    group.add_argument("--background-distance-mm", type=float, default=DEFAULTS["background_distance_mm"],
                       help="voxels farther than this from every path are background seeds (default: off)")
    group.add_argument("--beta", type=float, default=DEFAULTS["beta"],
                       help=f"random-walker edge sensitivity (default {DEFAULTS['beta']})")
    group.add_argument("--intensity-prior-weight", type=float, default=DEFAULTS["intensity_prior_weight"],
                       help="pull towards the seeds' intensity model (0 = plain random walker; "
                            f"default {DEFAULTS['intensity_prior_weight']})")
    group.add_argument("--shape-prior-weight", type=float, default=DEFAULTS["shape_prior_weight"],
                       help="pull towards the 3D confidence map of the clicks (helps compact objects; "
                            f"default {DEFAULTS['shape_prior_weight']})")
    group.add_argument("--conductance-power", type=float, default=DEFAULTS["conductance_power"],
                       help="random-walker coupling across thick slices: (finest/this spacing)^power "
                            f"(default {DEFAULTS['conductance_power']})")
    group.add_argument("--convex", action="store_true",
                       help="shape prior: each slice across the thickest axis becomes its convex hull (for objects "
                            "convex in those slices, e.g. the left ventricle's cavity; not for rings or curved ones)")
    group.add_argument("--solver", choices=SOLVERS, default="auto", help="random-walker solver (default auto)")
    group.add_argument("--device", default="cpu", help="torch device for the cg_torch solver (default cpu)")


def run(args) -> int:
    import numpy as np

    from ..annotations import ExtremePoints
    from ..io.markups import read_points
    from ..io.segmentations import Segment, write_segmentation
    from ..io.volumes import read_image, write_volume
    from ..pseudolabel.extreme_points import extreme_points_pseudolabel

    if not args.out.name.lower().endswith(".seg.nrrd"):
        raise InputError(f"{args.out}: the segmentation is written as a .seg.nrrd file; give a name ending in "
                         ".seg.nrrd")
    for path in (args.out, args.probability):
        if path is not None and path.exists() and not args.overwrite:
            raise InputError(f"{path} already exists; choose another output name or add --overwrite")
    if args.probability is not None and not args.probability.name.lower().endswith((".nii.gz", ".nii", ".nrrd")):
        raise InputError(f"{args.probability}: the probability map is a volume; give a name ending in "
                         ".nii.gz, .nii or .nrrd")

    image = read_image(args.image)
    points_ras, _ = read_points(args.points)
    try:
        extreme = ExtremePoints.from_points(points_ras, image)
    except InputError as err:
        raise InputError(f"{args.points}: {err}") from None
    label = extreme_points_pseudolabel(
        image, extreme, box_margin_mm=args.box_margin_mm, path_radius_mm=args.path_radius_mm,
        background_distance_mm=args.background_distance_mm, beta=args.beta,
        intensity_prior_weight=args.intensity_prior_weight, shape_prior_weight=args.shape_prior_weight,
        conductance_power=args.conductance_power, convex=args.convex, solver=args.solver, device=args.device)
    mask = label.hard() == 1
    written = write_segmentation(args.out, image, [Segment(args.segment_name, mask)], overwrite=args.overwrite)
    print(f"wrote segment {args.segment_name!r} ({int(mask.sum())} voxels, "
          f"{float(mask.sum() * np.prod(image.spacing)) / 1000.0:.1f} ml) to {written}")
    if args.probability is not None:
        prob = image.with_array(label.probabilities[1].astype(np.float32))
        print(f"wrote P(foreground) to {write_volume(prob, args.probability, overwrite=args.overwrite)}")
    return 0
