"""``extremeseg export``: a fully automatic model file as a MONAI Bundle (runs with ``python -m monai.bundle run``)."""

from __future__ import annotations

from pathlib import Path

HELP = "write a fully automatic model (.pt) as a MONAI Bundle that runs without ExtremeSeg"


def add_arguments(parser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="model file written by `extremeseg train` (model.pt)")
    parser.add_argument("--out", type=Path, help="bundle folder to create (new or empty)")
    parser.add_argument("--license", dest="license_text",
                        help="the model's licence, written into the bundle (default: 'not stated')")
    parser.add_argument("--data-description",
                        help="what the model was trained on, for the bundle's README (default: what the model "
                             "file records: number of cases, modality)")
    parser.add_argument("--summary", action="store_true",
                        help="print what the bundle would hold (or why the model cannot be exported); write nothing")


def run(args) -> int:
    from ..errors import InputError
    from ..training.bundle import NOT_STATED, bundle_summary, export_bundle
    from ..training.model_file import read_description

    if args.summary:
        print(bundle_summary(read_description(args.model)))
        return 0
    if args.out is None:
        raise InputError("give the bundle folder to write with --out (or --summary to only describe the export)")
    out = export_bundle(args.model, args.out, args.license_text or NOT_STATED, args.data_description)
    print(f"bundle: {out}\nrun it: python -m monai.bundle run --config_file {out / 'configs' / 'inference.json'} "
          f"--bundle_root {out} --image IMAGE --output_dir OUT")
    return 0
