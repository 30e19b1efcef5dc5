"""Training on several processes (GPUs, machines) with PyTorch's own machinery: ``torchrun`` + DDP.

``extremeseg train --nproc-per-node N`` re-launches itself through :func:`launch` (``torch.distributed.run``,
the module behind ``torchrun``); every worker then calls :func:`join_group`, which reads torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, rendezvous) and joins the process group with ``nccl`` on
CUDA and ``gloo`` on the CPU. Without torchrun's environment nothing here does anything: one process, the
default, runs exactly as before.

What the ranks share (see :func:`~.engine.fit`): the network's gradients (``DistributedDataParallel``
averages them), a stop flag every step (:func:`any_rank`: a ``CANCEL`` file or a signal on any rank stops all
of them after the same step), the epoch's loss and Dice, and their random states (gathered into rank 0's
checkpoint, so that ``--resume`` continues every rank's patch sampling). Rank 0 alone writes files and reports
progress. A rank that dies makes torchrun stop the others; :func:`launch` says which one and that the last
checkpoint can be resumed.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..errors import CancelledError, InputError

#: exit status of a cancelled ``extremeseg`` command (cli.py)
CANCELLED_EXIT = 130


def active() -> bool:
    """Whether this process belongs to a group of more than one."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and reports progress."""
    return rank() == 0


def in_torchrun_worker() -> bool:
    """Whether torchrun started this process as one of several workers."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA, ``gloo`` for the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def join_group(device_name: str) -> bool:
    """Join torchrun's process group (when this process is one of its workers); returns whether it did.

    ``device_name``: the job's device (``auto``, ``cpu``, ``cuda``, ``cuda:all``); on CUDA each worker takes the
    GPU of its ``LOCAL_RANK``, so the job's ``cuda`` means this worker's GPU.
    """
    if not in_torchrun_worker() or active():
        return active()
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not use_cuda:
        raise InputError(f"device {device_name!r} was asked for, but PyTorch sees no CUDA GPU here; use 'cpu'")
    if use_cuda:
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise InputError(f"worker {local} of this machine has no GPU (PyTorch sees {torch.cuda.device_count()}); "
                             "start at most one process per GPU")
        torch.cuda.set_device(local)
    dist.init_process_group(backend_for(torch.device("cuda" if use_cuda else "cpu")))
    return True


def leave_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """``flag`` OR-ed over the ranks (every rank must call it at the same point)."""
    if not active():
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def stop_if_cancelled(progress) -> None:
    """:meth:`Progress.check_cancelled` for the whole group: a cancel on any rank stops every rank here."""
    if not active():
        progress.check_cancelled()
    elif any_rank(progress.cancelled):
        raise CancelledError("run cancelled; the last checkpoint is kept and the run can be resumed")


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over the ranks (a new tensor on ``tensor``'s device)."""
    if not active():
        return tensor
    total = tensor.detach().to(_device(), dtype=torch.float64).clone()
    dist.all_reduce(total)
    return total.to(tensor.device)


def mean_over_ranks(value: float) -> float:
    return float(sum_over_ranks(torch.tensor([float(value)], dtype=torch.float64))[0]) / world_size()


def gather(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def from_main(obj):
    """Rank 0's ``obj`` on every rank (picklable)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn):
    """``fn()`` run by rank 0 alone (e.g. a file written once), its result given to every rank; an
    :class:`InputError` it raises is raised on every rank, so that no rank waits for a rank 0 that gave up."""
    if not active():
        return fn()
    outcome = None
    if is_main():
        try:
            outcome = ("ok", fn())
        except InputError as err:
            outcome = ("error", str(err))
    kind, value = from_main(outcome)
    if kind == "error":
        raise InputError(value)
    return value


def my_share(count: int) -> range:
    """Indices ``0 .. count-1`` this rank works on when items are split across the ranks (round robin)."""
    return range(rank(), count, world_size())


def map_cases(fn, items, progress, description: str):
    """``[fn(item) for item in items]`` with the items split across the ranks; the results, in order, on rank 0
    (``None`` on the others). One process: the plain loop, checking for a cancel before every item. Several: a
    rank that is cancelled stops its own share, and every rank stops together once all have finished theirs."""
    if items:
        progress.bar(len(items), description)
    mine = {}
    for n in my_share(len(items)):
        if not active():
            progress.check_cancelled()
        elif progress.cancelled:
            break
        mine[n] = fn(items[n])
        progress.advance(1)
    progress.close_bar()
    if not active():
        return [mine[n] for n in range(len(items))]
    stop_if_cancelled(progress)
    parts = gather_on_main(mine)
    if parts is None:
        return None
    merged = {n: value for part in parts for n, value in part.items()}
    return [merged[n] for n in range(len(items))]


def gather_on_main(obj):
    """Every rank's ``obj`` in rank order on rank 0 (``None`` on the others)."""
    if not active():
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


class _Step(torch.nn.Module):
    """Network + objective as one module, so DDP reduces the gradients of both (an objective may own weights)."""

    def __init__(self, network, objective):
        super().__init__()
        self.network = network
        self.objective = objective

    def forward(self, x, target, weight):
        return self.objective(self.network, x, target, weight)


def data_parallel_step(network: torch.nn.Module, objective: torch.nn.Module, device: torch.device):
    """``forward(x, target, weight) -> (loss, logits)`` whose backward pass averages the gradients of
    ``network`` and ``objective`` over the ranks (``DistributedDataParallel``; it also makes every rank start
    from rank 0's weights)."""
    from torch.nn.parallel import DistributedDataParallel

    # "cuda" without an index is this worker's GPU (join_group made it current)
    ids = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_Step(network, objective), device_ids=ids)


# -- launching ----------------------------------------------------------------------------------------------

def torchrun_arguments(nproc_per_node: int, nnodes: str = "1", node_rank: int = None, rdzv_endpoint: str = None,
                       rdzv_id: str = None) -> list:
    """torchrun's options for this many processes per node and, with ``rdzv_endpoint``, several machines."""
    if nproc_per_node < 1:
        raise InputError(f"--nproc-per-node must be at least 1, got {nproc_per_node}")
    args = ["--nproc-per-node", str(nproc_per_node), "--nnodes", str(nnodes), "--max-restarts", "0"]
    if rdzv_endpoint is None:
        if str(nnodes) != "1":
            raise InputError("several machines (--nnodes) need a rendezvous: give --rdzv-endpoint HOST:PORT "
                             "(the same on every machine)")
        return args + ["--standalone"]
    args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", rdzv_id or "extremeseg"]
    return args + ([] if node_rank is None else ["--node-rank", str(node_rank)])


def launch(command: list, torchrun_args: list) -> int:
    """Run ``python -m ExtremeSegLib.cli <command>`` under torchrun with ``torchrun_args``; returns 0.

    Raises :class:`CancelledError` when this process got SIGINT/SIGTERM (torchrun passes it on to the workers,
    which stop after a common step) or every failed worker was cancelled, and :class:`InputError` naming the
    first rank that failed otherwise (torchrun has then stopped the others).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(torchrun_args + ["--module", "ExtremeSegLib.cli"] + list(command))
    except SignalException:
        raise CancelledError("run cancelled; the last checkpoint is kept and the run can be resumed with "
                             "--resume") from None
    except ChildFailedError as err:
        failures = err.failures
        if all(f.exitcode in (CANCELLED_EXIT, -2, -15) for f in failures.values()):  # 130, SIGINT, SIGTERM
            raise CancelledError("run cancelled on every process; the last checkpoint is kept and the run can "
                                 "be resumed with --resume") from None
        # the rank whose own error stopped the group, not one that torchrun's shutdown signal stopped after it
        causes = {rank: f for rank, f in failures.items() if f.exitcode not in (-2, -15)} or failures
        first_rank, first = min(causes.items(), key=lambda item: (item[1].timestamp, item[0]))  # by global rank
        cause = f"signal {first.signal_name()}" if first.exitcode < 0 else f"exit status {first.exitcode}"
        raise InputError(f"process of rank {first_rank} failed ({cause}); torchrun stopped the others. "
                         "Its own error is above; any checkpoint is kept: fix the cause and run again (with "
                         "--resume once the run has started)") from None
    return 0
