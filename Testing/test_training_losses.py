"""Losses on hand-made cases: values, and that unknown (weight 0) voxels add nothing."""

import math

import numpy as np
import pytest
import torch

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.training.losses import (
    CombinedLoss,
    PartialCrossEntropyLoss,
    SoftDiceLoss,
    build_loss,
    one_hot_with_ignore,
)


def two_class(foreground):
    """Target (1, 2, N, 1, 1) from foreground probabilities along one axis."""
    fg = torch.tensor(foreground, dtype=torch.float32).reshape(1, 1, -1, 1, 1)
    return torch.cat([1 - fg, fg], dim=1)


def test_soft_dice_value_by_hand():
    target = two_class([1.0, 1.0, 0.0, 0.0])
    logits = torch.zeros(1, 2, 4, 1, 1)  # p(foreground) = 0.5 everywhere
    # squared Dice on the foreground: 2 * sum(p t) / (sum p^2 + sum t^2) = 2 * 1 / (4 * 0.25 + 2) = 2/3
    assert SoftDiceLoss(smooth=0)(logits, target).item() == pytest.approx(1 - 2 / 3, abs=1e-6)
    # plain (not squared): 2 * 1 / (2 + 2) = 1/2
    assert SoftDiceLoss(squared=False, smooth=0)(logits, target).item() == pytest.approx(0.5, abs=1e-6)
    perfect = torch.cat([-20 * (target[:, 1:] - 0.5), 20 * (target[:, 1:] - 0.5)], dim=1)
    assert SoftDiceLoss()(perfect, target).item() < 1e-3
    assert SoftDiceLoss()(-perfect, target).item() > 0.99


def test_soft_dice_takes_probabilistic_targets():
    target = two_class([0.8, 0.6, 0.2, 0.0])
    logits = torch.zeros(1, 2, 4, 1, 1)
    expected = 1 - 2 * 0.5 * 1.6 / (4 * 0.25 + (0.64 + 0.36 + 0.04))
    assert SoftDiceLoss(smooth=0)(logits, target).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("loss", [SoftDiceLoss(), PartialCrossEntropyLoss(), build_loss("dice_ce")])
def test_unknown_voxels_are_ignored(loss):
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(2, 3, 5, 4, 3)), dtype=torch.float32, requires_grad=True)
    target = torch.softmax(torch.tensor(rng.normal(size=(2, 3, 5, 4, 3)), dtype=torch.float32), dim=1)
    weight = torch.ones(2, 5, 4, 3)
    weight[:, :2] = 0.0
    value = loss(logits, target, weight)
    value.backward()
    assert torch.all(logits.grad[:, :, :2] == 0)  # nothing flows from unknown voxels
    assert torch.any(logits.grad[:, :, 2:] != 0)
    changed_logits = logits.detach().clone()
    changed_target = target.clone()
    changed_logits[:, :, :2] = 50.0 * torch.randn(2, 3, 2, 4, 3)
    changed_target[:, :, :2] = torch.softmax(torch.randn(2, 3, 2, 4, 3), dim=1)
    assert loss(changed_logits, changed_target, weight).item() == pytest.approx(value.item(), abs=1e-6)


def test_partial_cross_entropy_by_hand():
    target = two_class([1.0, 0.0, 1.0, 0.0])
    logits = torch.zeros(1, 2, 4, 1, 1)
    weight = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 4, 1, 1)
    assert PartialCrossEntropyLoss()(logits, target, weight).item() == pytest.approx(math.log(2), abs=1e-6)
    none = PartialCrossEntropyLoss()(logits.requires_grad_(), target, torch.zeros(1, 4, 1, 1))
    assert none.item() == 0.0 and not torch.isnan(none)
    none.backward()  # a batch without any trusted voxel still has a gradient path


def test_one_hot_with_ignore_and_combined():
    labels = torch.tensor([[0, 1, 2, 4]]).reshape(1, 4, 1, 1)
    target, weight = one_hot_with_ignore(labels, 3, ignore_value=4)
    assert target.shape == (1, 3, 4, 1, 1)
    assert weight.flatten().tolist() == [1.0, 1.0, 1.0, 0.0]
    assert target[0, :, :3].argmax(0).flatten().tolist() == [0, 1, 2]
    with pytest.raises(InputError, match="label values"):
        one_hot_with_ignore(labels, 3)  # 4 is not a class and not ignored
    logits = torch.randn(1, 3, 4, 1, 1)
    combined = CombinedLoss([(0.5, SoftDiceLoss()), (2.0, PartialCrossEntropyLoss())])(logits, target, weight)
    expected = 0.5 * SoftDiceLoss()(logits, target, weight) + 2.0 * PartialCrossEntropyLoss()(logits, target, weight)
    assert combined.item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(InputError, match="unknown loss"):
        build_loss("hinge")


def test_focal_loss_balances_classes_and_ignores_untrusted_voxels():
    from ExtremeSegLib.training.losses import PartialFocalLoss

    target = torch.zeros(1, 2, 10, 1, 1)
    target[:, 0, :9] = 1.0
    target[:, 1, 9:] = 1.0  # 9 background voxels, 1 foreground
    logits = torch.zeros(1, 2, 10, 1, 1, requires_grad=True)
    PartialFocalLoss()(logits, target).backward()
    grad = logits.grad[0, 1, :, 0, 0]
    # the single foreground voxel pulls as hard as the nine background ones together
    assert float(-grad[9]) == pytest.approx(float(grad[:9].sum()), rel=1e-4)
    weight = torch.ones(1, 10, 1, 1)
    weight[:, 9] = 0.0
    bad = logits.detach().clone()
    bad[0, 0, 9] = 50.0  # a confidently wrong prediction where nothing is known
    assert float(PartialFocalLoss()(bad, target, weight)) == pytest.approx(
        float(PartialFocalLoss()(logits.detach(), target, weight)))
