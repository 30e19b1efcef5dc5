"""``extremeseg train``: run a training job described by a JSON config (see ``recipes/config.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

# before torch loads: idle OpenMP threads must not spin on shared CPUs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..errors import CancelledError, InputError  # noqa: E402

HELP = "train a model from weak (or dense) annotations described by a JSON job config"


def add_arguments(parser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="job config (.json); see docs or `extremeseg demo`")
    parser.add_argument("--progress-jsonl", action="store_true",
                        help="report progress as JSON lines on stdout (what the Slicer module reads)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the config's output folder")


def run(args) -> int:
    from ..progress import Progress
    from ..recipes import JobConfig, train

    progress = Progress(jsonl=args.progress_jsonl)
    try:
        config = JobConfig.from_json(args.config)
        progress.cancel_file = Path(config.output) / "CANCEL"
        progress.install_signal_handlers()
        outputs = train(config, progress, resume=args.resume, config_path=args.config)
    except (InputError, CancelledError) as err:
        progress.close_bar()
        if args.progress_jsonl:
            progress.emit("error", message=str(err))
        raise
    if not args.progress_jsonl:
        print(json.dumps(outputs, indent=1))
    return 0
