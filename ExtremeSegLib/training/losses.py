"""Losses on soft, partially trusted labels (MONAI style: ``loss(logits, target, weight)``).

Every loss takes logits ``(B, C, ...)``, a target of class probabilities ``(B, C, ...)`` (a pseudo-label,
or one-hot dense labels) and an optional trust weight ``(B, ...)`` or ``(B, 1, ...)`` in [0, 1]: 0 means
unknown, and such voxels add nothing to the loss. Hard labels with an "unannotated" value become
(target, weight) through :func:`one_hot_with_ignore`, so every recipe goes through the same path.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError


def _weight_like(logits: torch.Tensor, weight) -> torch.Tensor:
    """Trust weight as ``(B, 1, ...)`` float (ones when ``None``)."""
    if weight is None:
        return torch.ones_like(logits[:, :1])
    weight = weight.to(logits.dtype)
    return weight if weight.dim() == logits.dim() else weight.unsqueeze(1)


class SoftDiceLoss(nn.Module):
    """1 - Dice between softmax probabilities and soft targets, counting trusted voxels only.

    ``squared`` uses squared terms in the denominator (the paper's Eq. 2, V-Net form). With
    ``batch=True`` the sums run over the whole batch (stable when a patch holds no foreground).
    The result is the mean over the classes scored (background excluded unless asked).
    """

    def __init__(self, include_background: bool = False, squared: bool = True, batch: bool = True,
                 smooth: float = 1e-5):
        super().__init__()
        self.include_background, self.squared, self.batch, self.smooth = include_background, squared, batch, smooth

    def forward(self, logits, target, weight=None):
        w = _weight_like(logits, weight)
        prob = torch.softmax(logits, dim=1)
        if not self.include_background:
            prob, target = prob[:, 1:], target[:, 1:]
        dims = [0] + list(range(2, logits.dim())) if self.batch else list(range(2, logits.dim()))
        intersection = torch.sum(w * prob * target, dim=dims)
        if self.squared:
            denominator = torch.sum(w * prob * prob, dim=dims) + torch.sum(w * target * target, dim=dims)
        else:
            denominator = torch.sum(w * prob, dim=dims) + torch.sum(w * target, dim=dims)
        dice = (2.0 * intersection + self.smooth) / (denominator + self.smooth)
        return 1.0 - dice.mean()


class PartialCrossEntropyLoss(nn.Module):
    """Cross-entropy with soft targets, averaged over the trust weight (0 where nothing is known).

    A batch without any trusted voxel gives 0 (with a gradient path), not NaN.
    """

    def forward(self, logits, target, weight=None):
        w = _weight_like(logits, weight)
        per_voxel = -torch.sum(target * F.log_softmax(logits, dim=1), dim=1, keepdim=True)
        return torch.sum(w * per_voxel) / torch.clamp(torch.sum(w), min=1.0)


class PartialFocalLoss(nn.Module):
    """Class-balanced focal loss (Lin et al.) on trusted voxels: ``-sum_c alpha_c (1 - p_c)^gamma t_c log p_c``.

    ``alpha_c`` is the inverse of class ``c``'s share of the trusted target mass in the batch (normalised to sum
    to 1 over the classes present), so a class with a few labelled voxels (e.g. paths between clicks) weighs as
    much as a large one. Averaged over the trust weight; 0 without any trusted voxel.
    """

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits, target, weight=None):
        w = _weight_like(logits, weight)
        log_p = F.log_softmax(logits, dim=1)
        dims = [0] + list(range(2, logits.dim()))
        mass = torch.sum(w * target, dim=dims).detach()
        alpha = torch.where(mass > 0, 1.0 / mass.clamp(min=1e-6), torch.zeros_like(mass))
        alpha = (alpha / alpha.sum().clamp(min=1e-12)).reshape([1, -1] + [1] * (logits.dim() - 2))
        per_voxel = -torch.sum(alpha * (1.0 - log_p.exp()) ** self.gamma * target * log_p, dim=1, keepdim=True)
        return torch.sum(w * per_voxel) / torch.clamp(torch.sum(w), min=1.0)


class CombinedLoss(nn.Module):
    """Weighted sum of losses that share the ``(logits, target, weight)`` signature."""

    def __init__(self, terms):
        super().__init__()
        self.factors = [float(f) for f, _ in terms]
        self.terms = nn.ModuleList([loss for _, loss in terms])

    def forward(self, logits, target, weight=None):
        return sum(f * loss(logits, target, weight) for f, loss in zip(self.factors, self.terms))


#: loss name in a job config -> factory
LOSSES = {
    "dice": lambda: SoftDiceLoss(),
    "ce": lambda: PartialCrossEntropyLoss(),
    "dice_ce": lambda: CombinedLoss([(1.0, SoftDiceLoss()), (1.0, PartialCrossEntropyLoss())]),
    "dice_ce_focal": lambda: CombinedLoss([(1.0, SoftDiceLoss()), (1.0, PartialCrossEntropyLoss()),
                                           (1.0, PartialFocalLoss())]),
}


def build_loss(name: str) -> nn.Module:
    """A loss by its config name.

    Parameters
    ----------
    name : {"dice", "ce", "dice_ce", "dice_ce_focal"}
        Soft Dice, partial cross-entropy, their sum, or the sum with the class-balanced focal loss (paper 001).

    Returns
    -------
    torch.nn.Module
        ``loss(logits (B, C, ...), target (B, C, ...), weight (B, ...)) -> scalar``.
    """
    if name not in LOSSES:
        raise InputError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]()


def one_hot_with_ignore(labels: torch.Tensor, num_classes: int, ignore_value=None):
    """One-hot targets and a weight from integer labels, weight 0 at an ignored value.

    Parameters
    ----------
    labels : torch.Tensor of int, shape (B, ...)
    num_classes : int
    ignore_value : int, optional
        Label value that carries no loss (``None``: every voxel counts).

    Returns
    -------
    target : torch.Tensor of float32, shape (B, C, ...)
    weight : torch.Tensor of float32, shape (B, ...)
    """
    labels = labels.long()
    known = torch.ones_like(labels, dtype=torch.float32) if ignore_value is None else (labels != ignore_value).float()
    safe = torch.where(known > 0, labels, torch.zeros_like(labels))
    if int(safe.max()) >= num_classes or int(safe.min()) < 0:
        raise InputError(f"label values must lie in 0..{num_classes - 1} (or be the ignore value {ignore_value})")
    target = F.one_hot(safe, num_classes).movedim(-1, 1).float()
    return target, known
