"""One process of a distributed ``fit`` on a tiny synthetic volume, run by the tests under torchrun (or alone).

Usage: ``python distributed_fit_worker.py OUT BATCH EPOCHS [kill|cancel] [AT_EPOCH]``. Rank 0 writes
``OUT/result.pt`` (final weights, losses); the checkpoint is ``OUT/checkpoint.pt``. ``kill``: rank 1 kills
itself (SIGKILL) after epoch AT_EPOCH; ``cancel``: rank 1 alone is cancelled there (as by a signal it got).
The patch is the whole volume and there is one volume, so every rank trains on the same input and a batch of
2 in one process must match 2 processes of batch 1 (DDP averages their gradients).
"""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch

from ExtremeSegLib.errors import CancelledError
from ExtremeSegLib.progress import Progress
from ExtremeSegLib.training import distributed
from ExtremeSegLib.training.data import Normalisation, TrainingVolume
from ExtremeSegLib.training.engine import TrainingSettings, fit
from ExtremeSegLib.training.networks import build_network, plan_network, total_stride

PATCH = (16, 16, 16)


class FaultyProgress(Progress):
    """Silent progress that, on rank 1 after epoch ``at``, kills its process or cancels it."""

    def __init__(self, fault, at):
        super().__init__(jsonl=True, stream=open(os.devnull, "w"))
        self.fault, self.at = fault, at

    last_epoch = 0  # the last epoch this process finished

    def emit(self, event, **fields):
        super().emit(event, **fields)
        if event == "epoch":
            FaultyProgress.last_epoch = fields["epoch"]
        if event == "epoch" and fields["epoch"] == self.at and distributed.rank() == 1:
            if self.fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            self.cancel()


def main(out, batch, epochs, fault=None, at=0):
    torch.set_num_threads(1)
    distributed.join_group("cpu")
    grid = np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"), -1)
    inside = (np.sum(((grid - 7.5) / np.array([5.0, 4.0, 6.0])) ** 2, -1) <= 1).astype(np.float32)
    image = inside + 0.3 * np.random.default_rng(0).standard_normal(inside.shape).astype(np.float32)
    volume = TrainingVolume(Normalisation().apply(image)[None], np.stack([1 - inside, inside]), np.ones_like(inside))
    kernels, strides = plan_network((1.0, 1.0, 1.0), PATCH, min_feature_size=2, max_levels=3)
    torch.manual_seed(0)
    network = build_network(1, 2, kernels, strides, [8, 16, 32])
    settings = TrainingSettings(epochs=epochs, steps_per_epoch=2, batch_size=batch, augment=False,
                                learning_rate=3e-3)
    try:
        result = fit(network, [volume], settings, spacing_mm=(1.0, 1.0, 1.0), patch_size=PATCH,
                     multiple=total_stride(strides), device=torch.device("cpu"), checkpoint=Path(out) / "checkpoint.pt",
                     progress=FaultyProgress(fault, at))
    except CancelledError:
        # every rank says where it stopped before any exits (torchrun stops the rest once one has exited)
        Path(out, f"cancelled_rank{distributed.rank()}.txt").write_text(str(FaultyProgress.last_epoch))
        distributed.barrier()
        return 130
    finally:
        distributed.leave_group()
    if distributed.is_main():
        torch.save({"weights": network.state_dict(), "losses": result.losses}, Path(out) / "result.pt")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[0], int(args[1]), int(args[2]), *(args[3:4]), *[int(a) for a in args[4:5]]))
