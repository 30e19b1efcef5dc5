"""The training loop every recipe shares: patches -> network -> loss, with checkpoints, resume and cancel.

One code path for CPU and CUDA: on a GPU the forward pass runs under autocast (float16) with a gradient
scaler; on the CPU both are disabled no-ops. A checkpoint is written at the start of a training run and after
every epoch (weights, optimizer, scheduler, scaler, round/epoch, RNG states, current patch and batch size, the
epoch log), atomically; :func:`fit` continues from it. Every epoch is logged (:class:`FitResult` ``epochs``): its
training seconds, mean loss, the Dice meter's hard Dice on the trusted voxels of its batches, and what an optional
``evaluate`` callback measures (a recipe's validation Dice; its time is not training time), so that a run's Dice
can be shown against its training minutes. Cancellation is checked before every batch. A GPU out-of-memory
error frees memory, halves the batch (then the patch), says so through :class:`~ExtremeSegLib.progress.Progress`
and retries the step, down to batch 1 and the smallest patch the network accepts, then stops with a clear error.
Under torchrun (:mod:`.distributed`) the same loop runs on every rank: gradients are averaged by DDP, each rank
samples its own patches (``batch_size`` patches per rank and step), a cancel anywhere stops all ranks after the
same step, and rank 0 alone writes the checkpoint (with every rank's random state).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import InputError
from ..io.volumes import write_stream_atomically
from ..progress import Progress
from . import distributed
from .data import Augmentation, make_batch, pad_to
from .losses import build_loss

DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("auto", "on", "off")
#: ``compile="auto"``: runs with at least this many training steps go through torch.compile
COMPILE_MIN_STEPS = 500
#: optimizer name -> its default learning rate (``training.learning_rate`` unset). SGD: Nesterov momentum 0.99, the
#: choice of nnU-Net and of the InExtremIS authors; AdamW at 2e-3, the engine's choice before the option existed
OPTIMIZERS = {"adamw": 2e-3, "sgd": 1e-2}
SGD_MOMENTUM = 0.99
#: a job's device for one training process per GPU (``extremeseg train`` launches them; each uses its own GPU)
ALL_GPUS = "cuda:all"


@dataclass(frozen=True)
class TrainingSettings:
    """How one training run goes (one round of a recipe; every round uses the same settings).

    ``steps_per_epoch=None`` means one pass over the cases (``ceil(cases / batch_size)`` steps).
    ``patch_size=None`` means the median model-grid shape of the cases, capped at ``max_patch_voxels``.
    ``optimizer``: ``"adamw"`` or ``"sgd"`` (Nesterov momentum :data:`SGD_MOMENTUM`); ``learning_rate=None`` means
    that optimizer's default (:data:`OPTIMIZERS`: 2e-3 for AdamW, 1e-2 for SGD). The learning rate decays
    polynomially (power 0.9) over each run; ``amp`` applies on CUDA only.
    ``compile``: ``"auto"`` trains through ``torch.compile`` when the run has at least
    :data:`COMPILE_MIN_STEPS` steps (its compilation, about a minute on 2 CPU cores, is then a small part of the
    run; measured in ``benchmarks/results/training_levers_unlocked.md``), ``"on"`` always, ``"off"`` never; where it
    cannot compile (no C++ compiler, an unsupported platform) training goes on without it, with a warning.
    """

    epochs: int = 30
    steps_per_epoch: Optional[int] = None
    batch_size: int = 2
    patch_size: Optional[Tuple[int, int, int]] = None
    max_patch_voxels: int = 64 * 64 * 64
    optimizer: str = "adamw"
    learning_rate: Optional[float] = None
    weight_decay: float = 1e-5
    loss: str = "dice"
    foreground_fraction: float = 0.5
    augment: bool = True
    augmentation: Augmentation = field(default_factory=Augmentation)
    amp: bool = True
    compile: str = "auto"
    seed: int = 0

    def __post_init__(self):
        build_loss(self.loss)  # unknown names fail here, with the list of known ones
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown training.optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        checks = [
            (self.epochs >= 1, "training.epochs must be at least 1"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "training.steps_per_epoch must be >= 1"),
            (self.batch_size >= 1, "training.batch_size must be at least 1"),
            (self.max_patch_voxels >= 8 ** 3, "training.max_patch_voxels must be at least 512"),
            (self.learning_rate is None or self.learning_rate > 0, "training.learning_rate must be positive"),
            (self.weight_decay >= 0, "training.weight_decay must be >= 0"),
            (self.seed >= 0, "training.seed must be >= 0"),
            (0.0 <= self.foreground_fraction <= 1.0, "training.foreground_fraction must lie in [0, 1]"),
            (self.compile in COMPILE_MODES, f"training.compile must be one of {list(COMPILE_MODES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.patch_size is not None:
            if len(self.patch_size) != 3 or min(self.patch_size) < 1:
                raise InputError(f"training.patch_size must be 3 positive integers, got {list(self.patch_size)}")
            object.__setattr__(self, "patch_size", tuple(int(n) for n in self.patch_size))

    @property
    def lr(self) -> float:
        """The starting learning rate: ``learning_rate``, else the optimizer's default."""
        return OPTIMIZERS[self.optimizer] if self.learning_rate is None else self.learning_rate

    def make_optimizer(self, parameters) -> torch.optim.Optimizer:
        """The optimizer these settings name, over ``parameters``."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(parameters, lr=self.lr, momentum=SGD_MOMENTUM, nesterov=True,
                                   weight_decay=self.weight_decay)
        return torch.optim.AdamW(parameters, lr=self.lr, weight_decay=self.weight_decay)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when PyTorch sees a GPU, else CPU), ``cpu`` or ``cuda`` (the current GPU: under torchrun
    this process's own); ``cuda:all`` in one process is ``cuda``."""
    if name not in DEVICES + (ALL_GPUS,):
        raise InputError(f"unknown device {name!r}; choose one of {list(DEVICES + (ALL_GPUS,))}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for, but PyTorch sees no CUDA GPU here; use 'auto' or 'cpu'")
    if name == ALL_GPUS:
        name = "cuda"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# -- checkpoints -----------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically (a crash mid-write leaves the previous checkpoint intact)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_stream_atomically(path, True, lambda stream: torch.save(state, stream))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint as plain tensors and numbers (``weights_only``: nothing in the file is executed)."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one, do not guess
        raise InputError(f"cannot read the checkpoint {path}: {err}; delete it to start this round again") from err


def _rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _restore_rng(state: str) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(state)
    return rng


def _restore_rank_rng(state: dict, rng, seed: int, round_index: int, epoch: int) -> np.random.Generator:
    """This rank's random states from a checkpoint written by a group of the same size; a group of another
    size (or a single-process checkpoint) gives the ranks after 0 fresh seeds for this epoch."""
    ranks, rank = state.get("rank_rngs") or [], distributed.rank()
    if len(ranks) == distributed.world_size():
        torch.set_rng_state(ranks[rank][1])
        return _restore_rng(ranks[rank][0])
    if rank == 0:
        return rng
    torch.manual_seed(seed * 1000 + round_index + 1_000_003 * rank + epoch)
    return np.random.default_rng([seed, round_index, rank, epoch])


# -- out of memory ----------------------------------------------------------------------------------------

def shrink_for_memory(patch_size, batch_size: int, multiple):
    """Next smaller (patch, batch) after an out-of-memory error, or ``None`` at the minimum.

    The batch halves first; then the largest patch axis halves (staying a multiple of ``multiple``,
    the network's total stride on that axis).
    """
    patch = np.asarray(patch_size, dtype=int)
    multiple = np.asarray(multiple, dtype=int)
    if batch_size > 1:
        return tuple(int(n) for n in patch), batch_size // 2
    shrinkable = [a for a in range(3) if patch[a] // 2 >= multiple[a]]
    if not shrinkable:
        return None
    axis = max(shrinkable, key=lambda a: patch[a])
    patch[axis] = max(multiple[axis], (patch[axis] // 2) // multiple[axis] * multiple[axis])
    return tuple(int(n) for n in patch), batch_size


def _free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- what a step minimises -------------------------------------------------------------------------------

class Objective(torch.nn.Module):
    """A training step's loss from the network and a batch, for recipes whose loss needs more than the logits.

    ``forward(network, x, target, weight) -> (loss, logits)``: ``x`` ``(B, channels, *patch)``, ``target``
    ``(B, C + extra, *patch)`` (the recipe's label channels first; extra channels are the recipe's own, e.g.
    click positions), ``weight`` ``(B, *patch)``; ``logits`` ``(B, C, *patch)`` of ``network``. An objective's
    own parameters (e.g. an auxiliary network) are optimised with the network and kept in checkpoints; only
    ``network`` goes into the model file.
    """

    def forward(self, network, x, target, weight):
        raise NotImplementedError


class LossObjective(Objective):
    """The plain objective: ``loss(network(x), target, weight)`` with a ``(logits, target, weight)`` loss."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, network, x, target, weight):
        logits = network(x)
        return self.loss(logits.float(), target, weight), logits


def as_objective(loss) -> Objective:
    """``loss`` itself when it is an :class:`Objective`, else the plain objective around it."""
    return loss if isinstance(loss, Objective) else LossObjective(loss)


# -- the loop ---------------------------------------------------------------------------------------------

@dataclass
class FitResult:
    losses: list  # mean loss per epoch of this run
    patch_size: tuple  # possibly reduced after out-of-memory errors
    batch_size: int
    #: one record per epoch: {"epoch", "seconds" (training time of that epoch), "loss", "train_dice" (the meter's,
    #: None without foreground), and the figures ``evaluate`` returned at that epoch}
    epochs: list = field(default_factory=list)


class _DiceMeter:
    """Hard Dice of the batch predictions against the (trusted) targets, over an epoch, foreground classes."""

    def __init__(self):
        self.inter = self.total = None

    def add(self, logits, target, weight):
        classes = logits.shape[1]
        target = target[:, :classes]  # an objective's extra target channels are not classes
        known = (weight > 0).reshape(weight.shape[0], -1)
        pred = torch.argmax(logits, 1).reshape(known.shape)
        ref = torch.argmax(target, 1).reshape(known.shape)
        inter = torch.stack([((pred == c) & (ref == c) & known).sum() for c in range(1, classes)]).double()
        total = torch.stack([(((pred == c) & known).sum() + ((ref == c) & known).sum()) for c in range(1, classes)])
        self.inter = inter if self.inter is None else self.inter + inter
        self.total = total.double() if self.total is None else self.total + total

    def sum_over_ranks(self):
        if self.total is not None:
            self.inter, self.total = distributed.sum_over_ranks(self.inter), distributed.sum_over_ranks(self.total)

    def value(self):
        if self.total is None or float(self.total.sum()) == 0:
            return None
        dice = torch.where(self.total > 0, 2 * self.inter / self.total.clamp(min=1), torch.ones_like(self.inter))
        return float(dice.mean())


def fit(network: torch.nn.Module, volumes, settings: TrainingSettings, *, spacing_mm, patch_size, multiple,
        device: torch.device, checkpoint: Path, progress: Progress = None, round_index: int = 0,
        loss_fn: torch.nn.Module = None, evaluate=None, evaluate_every: int = 1) -> FitResult:
    """Train ``network`` on ``volumes`` (:class:`~ExtremeSegLib.training.data.TrainingVolume`) for
    ``settings.epochs`` epochs, starting from its current weights, or continue from ``checkpoint`` when it
    holds an unfinished run of the same ``round_index``.

    ``patch_size`` must be a multiple of ``multiple`` (the network's total stride) per axis.
    ``loss_fn`` defaults to ``build_loss(settings.loss)``; a recipe may pass its own loss or an
    :class:`Objective` (whose parameters are trained alongside and checkpointed with the network's).
    ``evaluate(epoch) -> dict`` (optional) is called after every ``evaluate_every``-th epoch and the last, with the
    network in eval mode (under torchrun on rank 0 only); its figures (e.g. ``{"validation_dice": 0.8}``) join that
    epoch's record. Outside torchrun the step may go through ``torch.compile`` (``settings.compile``).
    Raises :class:`~ExtremeSegLib.errors.CancelledError` (checkpoint kept) when cancelled.
    """
    progress = progress or Progress(bar=False)
    objective = as_objective(loss_fn or build_loss(settings.loss))
    network.to(device)
    objective.to(device)
    parameters = list(network.parameters()) + list(objective.parameters())
    use_amp = bool(settings.amp and device.type == "cuda")
    steps = settings.steps_per_epoch or max(1, math.ceil(len(volumes) / settings.batch_size))
    optimizer = settings.make_optimizer(parameters)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=settings.epochs * steps, power=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    state = load_checkpoint(checkpoint) if Path(checkpoint).exists() else None
    same_round = state is not None and state["round"] == round_index and state["epochs"] == settings.epochs
    # a checkpoint from before the option was trained with AdamW; another optimizer's state does not load
    trained_with = state.get("optimizer_name", "adamw") if state is not None else None
    if same_round and trained_with != settings.optimizer:
        progress.message(f"the checkpoint of round {round_index} was trained with {trained_with}, this run uses "
                         f"{settings.optimizer}: round {round_index} starts again from epoch 0")
        same_round = False
    if same_round:
        network.load_state_dict(state["model"])
        if state.get("objective"):
            objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rng = _restore_rng(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start, losses, log = state["epoch"], list(state["losses"]), list(state.get("epoch_log", []))
        patch, batch = tuple(state["patch_size"]), int(state["batch_size"])
        if distributed.active():
            rng = _restore_rank_rng(state, rng, settings.seed, round_index, start)
        if start:
            progress.message(f"resuming round {round_index} after epoch {start} of {settings.epochs}")
    else:
        rank = distributed.rank()  # 0 alone: the single-process seeds
        rng = np.random.default_rng([settings.seed, round_index] + ([rank] if rank else []))
        torch.manual_seed(settings.seed * 1000 + round_index + 1_000_003 * rank)
        start, losses, log = 0, [], []
        patch, batch = tuple(int(n) for n in patch_size), settings.batch_size
    # under torchrun: DDP over network + objective (after loading: it starts every rank from rank 0's weights)
    # outside torchrun the network may run compiled (``model``; back to ``network`` if compiling fails)
    model = network if distributed.active() else compiled(network, settings.compile, settings.epochs * steps)
    forward = distributed.data_parallel_step(network, objective, device) if distributed.active() else \
        (lambda x, y, w: objective(model, x, y, w))

    def write_checkpoint(epoch):
        ranks = distributed.gather([_rng_state(rng), torch.get_rng_state()]) if distributed.active() else None
        if not distributed.is_main():
            return
        save_checkpoint(checkpoint, {
            "round": round_index, "epoch": epoch, "epochs": settings.epochs,
            "model": network.state_dict(), "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
            "optimizer_name": settings.optimizer, "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "numpy_rng": _rng_state(rng), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            "patch_size": list(patch), "batch_size": batch, "losses": losses, "epoch_log": log,
            **({"rank_rngs": ranks} if ranks else {}),
        })

    if start == 0:
        write_checkpoint(0)
    padded = [pad_to(v, patch) for v in volumes]
    augmentation = settings.augmentation if settings.augment else None

    for epoch in range(start + 1, settings.epochs + 1):
        network.train()
        started = time.perf_counter()
        passes = math.ceil(steps * batch / len(padded)) + 1
        order = np.concatenate([rng.permutation(len(padded)) for _ in range(passes)])
        cursor, total, meter = 0, 0.0, _DiceMeter()
        progress.bar(steps, f"round {round_index} epoch {epoch}/{settings.epochs}")
        for _ in range(steps):
            distributed.stop_if_cancelled(progress)
            while True:
                indices = order[cursor:cursor + batch]
                x, y, w = make_batch(padded, indices, patch, rng, settings.foreground_fraction, spacing_mm,
                                     augmentation)
                try:
                    loss, logits = _train_step(forward, parameters, optimizer, scaler, x, y, w, device, use_amp)
                    break
                except torch.OutOfMemoryError:
                    if distributed.active():  # the other ranks wait in this step's gradient reduction
                        raise InputError(f"{device.type.upper()} out of memory on rank {distributed.rank()}; with "
                                         "several processes the batch cannot shrink on one of them: lower "
                                         "training.batch_size or training.patch_size and resume") from None
                except Exception as err:  # torch.compile fails in many ways (no compiler, ...); eager does not
                    if model is network:
                        raise
                    progress.message(f"torch.compile cannot build the training step here ({type(err).__name__}: "
                                     f"{str(err).splitlines()[0][:160] if str(err) else ''}); training without it",
                                     level="warning")
                    model = network
                    continue
                # out of memory; handled outside the except block so the failed step's tensors can be freed
                optimizer.zero_grad(set_to_none=True)
                _free_device_memory(device)
                smaller = shrink_for_memory(patch, batch, multiple)
                if smaller is None:
                    raise InputError(
                        f"the {device.type.upper()} ran out of memory even with batch size 1 and patch "
                        f"{list(patch)}; train on the CPU (device \"cpu\"), use fewer filters, or free GPU memory"
                    )
                patch, batch = smaller
                progress.message(f"{device.type.upper()} out of memory: retrying with batch size {batch} and "
                                 f"patch {list(patch)}", level="warning")
            cursor += len(indices)
            scheduler.step()
            total += loss
            meter.add(logits, y.to(logits.device), w.to(logits.device))
            progress.advance(1, loss=loss)
        progress.close_bar()
        losses.append(distributed.mean_over_ranks(total / steps) if distributed.active() else total / steps)
        if distributed.active():
            meter.sum_over_ranks()
        _synchronize(device)
        record = {"epoch": epoch, "seconds": time.perf_counter() - started, "loss": losses[-1],
                  "train_dice": meter.value()}
        if evaluate is not None and (epoch % evaluate_every == 0 or epoch == settings.epochs) \
                and distributed.is_main():
            network.eval()
            record.update(evaluate(epoch))
        log.append(record)
        write_checkpoint(epoch)
        progress.emit("epoch", round=round_index, epoch=epoch, epochs=settings.epochs, loss=losses[-1],
                      dice=record["train_dice"], seconds=sum(r["seconds"] for r in log),
                      **{k: v for k, v in record.items() if k not in ("epoch", "seconds", "loss", "train_dice")})
    return FitResult(losses, tuple(patch), batch, log)


def compiled(network: torch.nn.Module, mode: str, total_steps: int) -> torch.nn.Module:
    """``network`` through ``torch.compile`` when ``mode`` (see :class:`TrainingSettings`) asks for it for a run
    of ``total_steps``, else ``network`` itself. Compilation is lazy: a failure shows at the first step."""
    wanted = mode == "on" or (mode == "auto" and total_steps >= COMPILE_MIN_STEPS)
    if not wanted or not hasattr(torch, "compile"):
        return network
    return torch.compile(network, dynamic=False)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that an epoch's time is its own."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)




def _train_step(forward, parameters, optimizer, scaler, x, y, w, device, use_amp):
    """One optimiser step; ``forward(x, target, weight) -> (loss, logits)``."""
    x, y, w = x.to(device), y.to(device), w.to(device)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        loss, logits = forward(x, y, w)
    scaler.scale(loss.float()).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, 12.0)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), logits.detach().float()
