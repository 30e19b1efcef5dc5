"""``extremeseg train``: run a training job described by a JSON config (see ``recipes/config.py``).

``--nproc-per-node N`` (or the job's device ``cuda:all``) trains on N processes with DistributedDataParallel:
the command re-launches itself under torchrun (``torch.distributed.run``); see ``training/distributed.py``.
"""

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
    group = parser.add_argument_group("several processes (torchrun; each process trains batch_size patches a step)")
    group.add_argument("--nproc-per-node", type=int,
                       help="processes on this machine (one per GPU; default 1, or every GPU for device cuda:all)")
    group.add_argument("--nnodes", default="1", help="machines taking part (default 1)")
    group.add_argument("--node-rank", type=int, help="this machine's index, 0 .. nnodes-1 (several machines)")
    group.add_argument("--rdzv-endpoint", help="HOST:PORT every machine reaches (several machines; e.g. node 0)")
    group.add_argument("--rdzv-id", help="a job id, the same on every machine (default: extremeseg)")


def resumable(folder: Path) -> bool:
    """Whether a run folder holds work worth resuming (pseudo-labels or a checkpoint), not just a failed start."""
    state = Path(folder) / "state"
    return (state / "checkpoint.pt").exists() or any(state.glob("labels_round*.npz"))


def run(args) -> int:
    from ..io.outputs import current_files
    from ..progress import Progress
    from ..recipes import JobConfig, train
    from ..training import distributed

    progress = Progress(jsonl=args.progress_jsonl)
    try:
        config = JobConfig.from_json(args.config)
        processes = _processes(args, config.device)
        if not distributed.in_torchrun_worker() and (processes > 1 or str(args.nnodes) != "1"):
            command = ["train", "--config", str(args.config)] + ["--resume"] * args.resume + \
                ["--progress-jsonl"] * args.progress_jsonl
            return distributed.launch(command, distributed.torchrun_arguments(
                processes, args.nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_id))
        if current_files() is not None:  # a failed start is cleaned up; a run with work done is kept for --resume
            current_files().keep(config.output, when=lambda: resumable(config.output))
        if distributed.join_group(config.device) and not distributed.is_main():
            progress = Progress(jsonl=True, stream=open(os.devnull, "w"))  # rank 0 alone reports
        progress.cancel_file = Path(config.output) / "CANCEL"
        progress.install_signal_handlers()
        outputs = train(config, progress, resume=args.resume, config_path=args.config)
    except (InputError, CancelledError) as err:
        progress.close_bar()
        if args.progress_jsonl:
            progress.emit("error", message=str(err))
        raise
    finally:
        distributed.leave_group()
    if not args.progress_jsonl and distributed.is_main():
        print(json.dumps(outputs, indent=1))
    return 0


def _processes(args, device: str) -> int:
    """Processes per node: ``--nproc-per-node``, else one per GPU for ``cuda:all``, else 1."""
    import torch

    from ..training.engine import ALL_GPUS

    if args.nproc_per_node is not None:
        return args.nproc_per_node
    if device == ALL_GPUS:

        if not torch.cuda.is_available():
            raise InputError("device 'cuda:all' was asked for, but PyTorch sees no CUDA GPU here; use 'auto' or 'cpu'")
        return torch.cuda.device_count()
    return 1
