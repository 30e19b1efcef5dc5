"""``extremeseg predict``: segment an image with a trained model file (with the user's clicks if it uses them)."""

from __future__ import annotations

import os
from pathlib import Path

# before torch loads: idle OpenMP threads must not spin on shared CPUs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..errors import CancelledError, InputError  # noqa: E402

HELP = "segment an image with a trained model (.pt), optionally with the object's 6 extreme points"


def add_arguments(parser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="model file written by `extremeseg train` (model.pt)")
    parser.add_argument("--image", type=Path, required=True, help="image to segment (.nii.gz, .nii, .nrrd)")
    parser.add_argument("--points", type=Path, help="the object's 6 extreme points (.mrk.json), for click-based models")
    parser.add_argument("--out", type=Path, required=True, help="segmentation to write (.seg.nrrd)")
    parser.add_argument("--probability", type=Path,
                        help="also write the foreground probability (.nii.gz/.nrrd; one file per class if several)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="write the network's own label map, without the cleaning the model file asks for "
                             "(clicks' box, largest component, convex hull)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--progress-jsonl", action="store_true",
                        help="report as JSON lines on stdout (a final \"done\" event lists the files written)")
    parser.add_argument("--cancel-file", type=Path,
                        help="stop (exit 130, nothing written) once this file exists; default: CANCEL in the "
                             "output's folder. SIGINT/SIGTERM stop it too")


def run(args) -> int:
    from ..progress import Progress
    from ..recipes import predict

    # the same cancel contract as `extremeseg train`: a CANCEL file (the Slicer job folder is the output's
    # folder) or SIGINT/SIGTERM, checked between the steps and between sliding windows
    progress = Progress(jsonl=args.progress_jsonl, cancel_file=args.cancel_file or args.out.parent / "CANCEL")
    progress.install_signal_handlers()
    try:
        written = predict(args.model, args.image, args.out, points=args.points, probability=args.probability,
                          device=args.device, overwrite=args.overwrite, progress=progress,
                          postprocess=not args.no_postprocess)
    except CancelledError as err:
        # a prediction keeps no checkpoint: say what happened to its output instead
        cancelled = CancelledError(f"prediction cancelled; {args.out} was not written")
        if args.progress_jsonl:
            progress.emit("error", message=str(cancelled))
        raise cancelled from err
    except InputError as err:
        if args.progress_jsonl:
            progress.emit("error", message=str(err))
        raise
    outputs = {k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in written.items()}
    if args.progress_jsonl:
        progress.emit("done", outputs=outputs)
    else:
        for what, paths in outputs.items():
            print(f"{what}: {', '.join(paths) if isinstance(paths, list) else paths}")
    return 0
