"""The training loop every recipe shares: patches -> network -> loss, with checkpoints, resume and cancel.

One code path for CPU and CUDA: on a GPU the forward pass runs under autocast (float16) with a gradient
scaler; on the CPU both are disabled no-ops. A checkpoint is written at the start of a training run and after
every epoch (weights, optimizer, scheduler, scaler, round/epoch, RNG states, current patch and batch size),
atomically; :func:`fit` continues from it. Cancellation is checked before every batch. A GPU out-of-memory
error frees memory, halves the batch (then the patch), says so through :class:`~ExtremeSegLib.progress.Progress`
and retries the step, down to batch 1 and the smallest patch the network accepts, then stops with a clear error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import InputError
from ..io.volumes import write_atomically
from ..progress import Progress
from .data import Augmentation, make_batch, pad_to
from .losses import build_loss

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainingSettings:
    """How one training run goes (one round of a recipe; every round uses the same settings).

    ``steps_per_epoch=None`` means one pass over the cases (``ceil(cases / batch_size)`` steps).
    ``patch_size=None`` means the median model-grid shape of the cases, capped at ``max_patch_voxels``.
    The learning rate decays polynomially (power 0.9) over each run; ``amp`` applies on CUDA only.
    """

    epochs: int = 30
    steps_per_epoch: Optional[int] = None
    batch_size: int = 2
    patch_size: Optional[Tuple[int, int, int]] = None
    max_patch_voxels: int = 64 * 64 * 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    loss: str = "dice"
    foreground_fraction: float = 0.5
    augment: bool = True
    augmentation: Augmentation = field(default_factory=Augmentation)
    amp: bool = True
    seed: int = 0

    def __post_init__(self):
        build_loss(self.loss)  # unknown names fail here, with the list of known ones
        checks = [
            (self.epochs >= 1, "training.epochs must be at least 1"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "training.steps_per_epoch must be >= 1"),
            (self.batch_size >= 1, "training.batch_size must be at least 1"),
            (self.max_patch_voxels >= 8 ** 3, "training.max_patch_voxels must be at least 512"),
            (self.learning_rate > 0, "training.learning_rate must be positive"),
            (0.0 <= self.foreground_fraction <= 1.0, "training.foreground_fraction must lie in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.patch_size is not None:
            if len(self.patch_size) != 3 or min(self.patch_size) < 1:
                raise InputError(f"training.patch_size must be 3 positive integers, got {list(self.patch_size)}")
            object.__setattr__(self, "patch_size", tuple(int(n) for n in self.patch_size))


def select_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when PyTorch sees a GPU, else CPU), ``cpu`` or ``cuda``."""
    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}; choose one of {list(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU here; use 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# -- checkpoints -----------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically (a crash mid-write leaves the previous checkpoint intact)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, True, lambda tmp: torch.save(state, tmp))


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

    def value(self):
        if self.total is None or float(self.total.sum()) == 0:
            return None
        dice = torch.where(self.total > 0, 2 * self.inter / self.total.clamp(min=1), torch.ones_like(self.inter))
        return float(dice.mean())


def fit(network: torch.nn.Module, volumes, settings: TrainingSettings, *, spacing_mm, patch_size, multiple,
        device: torch.device, checkpoint: Path, progress: Progress = None, round_index: int = 0,
        loss_fn: torch.nn.Module = None) -> FitResult:
    """Train ``network`` on ``volumes`` (:class:`~ExtremeSegLib.training.data.TrainingVolume`) for
    ``settings.epochs`` epochs, starting from its current weights, or continue from ``checkpoint`` when it
    holds an unfinished run of the same ``round_index``.

    ``patch_size`` must be a multiple of ``multiple`` (the network's total stride) per axis.
    ``loss_fn`` defaults to ``build_loss(settings.loss)``; a recipe may pass its own loss or an
    :class:`Objective` (whose parameters are trained alongside and checkpointed with the network's).
    Raises :class:`~ExtremeSegLib.errors.CancelledError` (checkpoint kept) when cancelled.
    """
    progress = progress or Progress(bar=False)
    objective = as_objective(loss_fn or build_loss(settings.loss))
    network.to(device)
    objective.to(device)
    parameters = list(network.parameters()) + list(objective.parameters())
    use_amp = bool(settings.amp and device.type == "cuda")
    steps = settings.steps_per_epoch or max(1, math.ceil(len(volumes) / settings.batch_size))
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=settings.epochs * steps, power=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    state = load_checkpoint(checkpoint) if Path(checkpoint).exists() else None
    if state is not None and state["round"] == round_index and state["epochs"] == settings.epochs:
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
        start, losses = state["epoch"], list(state["losses"])
        patch, batch = tuple(state["patch_size"]), int(state["batch_size"])
        if start:
            progress.message(f"resuming round {round_index} after epoch {start} of {settings.epochs}")
    else:
        rng = np.random.default_rng([settings.seed, round_index])
        torch.manual_seed(settings.seed * 1000 + round_index)
        start, losses = 0, []
        patch, batch = tuple(int(n) for n in patch_size), settings.batch_size

    def write_checkpoint(epoch):
        save_checkpoint(checkpoint, {
            "round": round_index, "epoch": epoch, "epochs": settings.epochs,
            "model": network.state_dict(), "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "numpy_rng": _rng_state(rng), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            "patch_size": list(patch), "batch_size": batch, "losses": losses,
        })

    if start == 0:
        write_checkpoint(0)
    padded = [pad_to(v, patch) for v in volumes]
    augmentation = settings.augmentation if settings.augment else None

    for epoch in range(start + 1, settings.epochs + 1):
        network.train()
        passes = math.ceil(steps * batch / len(padded)) + 1
        order = np.concatenate([rng.permutation(len(padded)) for _ in range(passes)])
        cursor, total, meter = 0, 0.0, _DiceMeter()
        progress.bar(steps, f"round {round_index} epoch {epoch}/{settings.epochs}")
        for _ in range(steps):
            progress.check_cancelled()
            while True:
                indices = order[cursor:cursor + batch]
                x, y, w = make_batch(padded, indices, patch, rng, settings.foreground_fraction, spacing_mm,
                                     augmentation)
                try:
                    loss, logits = _train_step(network, objective, parameters, optimizer, scaler, x, y, w, device,
                                               use_amp)
                    break
                except torch.OutOfMemoryError:
                    pass
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
        losses.append(total / steps)
        write_checkpoint(epoch)
        progress.emit("epoch", round=round_index, epoch=epoch, epochs=settings.epochs, loss=losses[-1],
                      dice=meter.value())
    return FitResult(losses, tuple(patch), batch)


def _train_step(network, objective, parameters, optimizer, scaler, x, y, w, device, use_amp):
    x, y, w = x.to(device), y.to(device), w.to(device)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        loss, logits = objective(network, x, y, w)
    scaler.scale(loss.float()).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, 12.0)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), logits.detach().float()
