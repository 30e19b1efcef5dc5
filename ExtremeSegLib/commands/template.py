"""``extremeseg template``: surface points -> the deformed template as a segmentation (+ the mesh)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

HELP = "deform a closed template to surface points (active surface) and write its mask as a segmentation"


def add_arguments(parser) -> None:
    import inspect

    from ..pseudolabel.surface_template import SurfaceTemplate

    DEFAULTS = {name: p.default for name, p in inspect.signature(SurfaceTemplate).parameters.items()}

    parser.add_argument("--image", type=Path, required=True, help="image volume (.nii.gz, .nii, .nrrd)")
    parser.add_argument("--points", type=Path, required=True,
                        help="points on the object's surface (.mrk.json or .fcsv point list), at least 4, any order")
    parser.add_argument("--out", type=Path, required=True, help="output segmentation (.seg.nrrd)")
    parser.add_argument("--mesh", type=Path, help="also write the template mesh (.vtk, a Slicer model)")
    parser.add_argument("--segment-name", default="Object", help="name of the segment written (default Object)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    group = parser.add_argument_group("template parameters")
    group.add_argument("--smoothness", type=float, default=DEFAULTS["smoothness"],
                       help="bending stiffness against the points' pull: larger = smoother, closer to an "
                            f"ellipsoid (default {DEFAULTS['smoothness']})")
    group.add_argument("--subdivisions", type=int, default=DEFAULTS["subdivisions"],
                       help=f"icosphere level: 3 = 642 vertices, 4 = 2562 (default {DEFAULTS['subdivisions']})")


def run(args) -> int:
    import numpy as np

    from ..io.markups import read_points
    from ..io.meshes import write_mesh_vtk
    from ..io.segmentations import Segment, write_segmentation
    from ..io.volumes import read_image
    from ..pseudolabel.surface_template import SurfaceTemplate

    if not args.out.name.lower().endswith(".seg.nrrd"):
        raise InputError(f"{args.out}: the segmentation is written as a .seg.nrrd file; "
                         "give a name ending in .seg.nrrd")
    if args.mesh is not None and args.mesh.suffix.lower() != ".vtk":
        raise InputError(f"{args.mesh}: the mesh is written as a legacy VTK file; give a name ending in .vtk")
    for path in (args.out, args.mesh):
        if path is not None and path.exists() and not args.overwrite:
            raise InputError(f"{path} already exists; choose another output name or add --overwrite")

    image = read_image(args.image)
    points_ras, _ = read_points(args.points)
    try:
        mesh = SurfaceTemplate(image, subdivisions=args.subdivisions, smoothness=args.smoothness).update(points_ras)
    except InputError as err:
        raise InputError(f"{args.points}: {err}") from None
    mask = mesh.mask(image)
    if not mask.any():
        raise InputError(f"{args.points}: the template holds no voxel centre of the image; "
                         "place the points on a larger part of the object")
    written = write_segmentation(args.out, image, [Segment(args.segment_name, mask)], overwrite=args.overwrite)
    print(f"wrote segment {args.segment_name!r} ({int(mask.sum())} voxels, "
          f"{float(mask.sum() * np.prod(image.spacing)) / 1000.0:.2f} ml; points {mesh.fit_error_mm:.2f} mm from "
          f"the template on average) to {written}")
    if args.mesh is not None:
        print(f"wrote the template mesh ({len(mesh.vertices)} vertices) to "
              f"{write_mesh_vtk(args.mesh, mesh.vertices, mesh.faces, overwrite=args.overwrite)}")
    return 0
