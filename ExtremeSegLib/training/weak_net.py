"""Weak-Net's training objective (paper 003): segmentation from a rough template, sharpened by reconstruction.

The segmentation network ``f`` maps the image ``X`` to logits; a reconstruction network ``g`` maps the
segmentation ``Y^ = softmax(f(X))[1:]`` back to an image ``X^ = g(B(Y^))``. The loss is

    L = CE(Y, Y^) + lambda * mean_v W_v (X_v - X^_v)^2 / var(X)

with ``Y`` the rasterised template (the pseudo-label) and ``W`` high (1) within ``boundary_mm`` of the
template's boundary and low (``far_weight``) elsewhere. Since ``g`` sees only the segmentation, reconstructing
the image near the boundary needs ``Y^``'s boundary where the image's is: the template fixes the rough shape, the
image fixes the boundary. ``lambda = 0`` trains on the template alone (the baseline). Only ``f`` is the model.

Two choices the paper leaves open, made so that ``g`` reads a segmentation and ``lambda`` means the same on any
image: ``B`` thresholds ``Y^`` at 0.5 in the forward pass and passes its gradient through unchanged
(:func:`binary_straight_through`; fed ``Y^`` itself, the instance-normalised ``g`` read the image out of faint
probabilities and the segmentation emptied), and the squared error is divided by the image patch's variance (the
paper's sums of squared raw intensities make its lambda = 1e-4 specific to its intensity scale).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .engine import Objective


def boundary_band(foreground: torch.Tensor, radius_voxels) -> torch.Tensor:
    """Voxels within ``radius_voxels`` (per axis, a box neighbourhood) of the boundary of a binary mask.

    ``foreground``: float (B, I, J, K) in {0, 1}; returns a bool tensor of the same shape: voxels that have
    both a foreground and a background voxel in their box (the patch's edge counts as neither).
    """
    radius = [int(r) for r in radius_voxels]
    kernel = [2 * r + 1 for r in radius]
    x = foreground.unsqueeze(1)
    near_foreground = F.max_pool3d(x, kernel, stride=1, padding=radius)
    near_background = F.max_pool3d(1.0 - x, kernel, stride=1, padding=radius)
    return ((near_foreground > 0) & (near_background > 0)).squeeze(1)


def binary_straight_through(probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``probabilities >= threshold`` as 0/1 in the forward pass, the gradient of ``probabilities`` backwards.

    What the reconstruction network reads: a segmentation, not the probabilities' fine values. Fed the
    probabilities themselves, it learns to read the image out of them (with instance normalisation their scale
    is normalised away, so values around 0.01 carry as much as 0 to 1), and the segmentation network is pushed to
    write the image into faint probabilities below any threshold (measured: docs/benchmarks.md, issue 17).
    """
    hard = (probabilities >= threshold).to(probabilities.dtype)
    return probabilities + (hard - probabilities).detach()


class WeakNetObjective(Objective):
    """``CE(template, segmentation) + lam * boundary-weighted MSE(image, reconstruction(segmentation)) / var``.

    Args:
        reconstruction: a network from ``C - 1`` foreground-probability channels to the image's channels
            (trained with the segmentation network, checkpointed, not part of the model file).
        lam: weight of the reconstruction term, nats of cross-entropy per unit of the image's variance (0: the
            template-only baseline; the reconstruction network then gets no gradient and is not evaluated).
        spacing_mm: the model grid's voxel size (3,) in mm, to turn ``boundary_mm`` into voxels.
        boundary_mm: half-width of the band around the template's boundary where the reconstruction counts fully.
        far_weight: the reconstruction weight everywhere else.
        image_channels: how many of the input channels are the image (the reconstruction's target).

    ``forward(network, x, target, weight)``: ``x`` (B, image_channels, *patch), ``target`` (B, C, *patch) the
    template's class probabilities, ``weight`` (B, *patch) the trust of each voxel (0: no cross-entropy there).
    """

    def __init__(self, reconstruction: torch.nn.Module, lam: float, spacing_mm, boundary_mm: float = 3.0,
                 far_weight: float = 0.1, image_channels: int = 1):
        super().__init__()
        self.check_settings(lam, boundary_mm, far_weight)
        self.reconstruction = reconstruction
        self.lam = float(lam)
        self.radius = tuple(int(round(boundary_mm / s)) for s in np.asarray(spacing_mm, dtype=float))
        self.far_weight = float(far_weight)
        self.image_channels = int(image_channels)

    @staticmethod
    def check_settings(lam: float, boundary_mm: float = 3.0, far_weight: float = 0.1) -> None:
        """:class:`InputError` for a negative or non-finite lambda, a non-positive band or a far weight outside
        [0, 1]."""
        if not (np.isfinite(lam) and lam >= 0):
            raise InputError(f"the reconstruction weight (lambda) must be a number >= 0, got {lam}")
        if not (np.isfinite(boundary_mm) and boundary_mm > 0):
            raise InputError(f"boundary_mm must be a positive number of mm, got {boundary_mm}")
        if not 0 <= far_weight <= 1:
            raise InputError(f"far_weight must be in [0, 1], got {far_weight}")

    def forward(self, network, x, target, weight):
        logits = network(x)
        classes = logits.shape[1]
        template = target[:, :classes]
        log_p = F.log_softmax(logits.float(), dim=1)
        cross_entropy = -(template * log_p).sum(dim=1)
        loss = (cross_entropy * weight).sum() / weight.sum().clamp(min=1.0)
        if self.lam == 0:
            return loss, logits
        image = x[:, :self.image_channels].float()
        rebuilt = self.reconstruction(binary_straight_through(log_p.exp()[:, 1:])).float()
        foreground = (template[:, 1:].sum(dim=1) > 0.5).float()
        radius = [r if n > 1 else 0 for r, n in zip(self.radius, foreground.shape[1:])]  # a slice-wise patch
        band = boundary_band(foreground, radius)
        w = torch.where(band, 1.0, self.far_weight).unsqueeze(1)
        squared = (w * (rebuilt - image) ** 2).flatten(1).mean(dim=1)
        variance = image.flatten(1).var(dim=1).clamp(min=1e-6)  # lambda in units of the image's own variance
        return loss + self.lam * (squared / variance).mean(), logits
