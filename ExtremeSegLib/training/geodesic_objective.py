"""The InExtremIS training objective (paper 001, Eq. 3): partial losses on box + deep geodesics, plus a CRF loss.

At every step, after the forward pass, the geodesics between each pair of opposite clicks are recomputed from the
network's current background probability (:mod:`~ExtremeSegLib.pseudolabel.deep_geodesics`); their voxels join the
labelled foreground. The segmentation loss (Dice + cross-entropy + class-balanced focal, on labelled voxels only)
is added to ``crf_weight`` times the CRF regularised loss over the whole patch (:mod:`.crf_loss`).

Batch layout (what the recipe puts in the training target): channels ``0..C-1`` the class probabilities of the
fixed labels (background outside the relaxed box, foreground at the clicks; the trust weight 0 elsewhere), channel
``C`` the tight box (1 inside), channel ``C + 1`` the click codes (:func:`~ExtremeSegLib.pseudolabel.deep_geodesics.
click_codes`). Channel 0 of the input is the normalised image (gradient and CRF intensities).
"""

from __future__ import annotations

import time

import torch

from ..pseudolabel.deep_geodesics import GEODESIC_COSTS, batch_geodesic_masks
from .crf_loss import SIGMA_INTENSITY, SIGMA_MM, CRFLoss
from .engine import Objective
from .losses import build_loss

#: target channels the objective adds after the classes: the tight box and the click codes
EXTRA_CHANNELS = 2


class GeodesicObjective(Objective):
    """Partial segmentation loss on the fixed labels + the current geodesics, plus the CRF loss.

    Args:
        spacing_mm: the model grid's voxel size (mm), 3 floats.
        geodesics: path cost, one of ``GEODESIC_COSTS`` (``gradient``, ``gradient_euclidean``, ``deep``), or
            ``None`` for no paths (the paper's Eq. 1: box and clicks only).
        crf_weight: lambda of the CRF loss (0 = none); paper 1e-4.
        sigma_mm, sigma_intensity: the CRF kernel widths (mm; normalised intensity units); paper 15 and 0.05.
        loss: the segmentation loss's config name; paper: ``dice_ce_focal``.

    ``seconds`` accumulates the time spent on geodesics and the CRF loss, and ``steps`` counts the calls (the
    benchmark reports their share of a training step).
    """

    def __init__(self, spacing_mm, geodesics: str = "deep", crf_weight: float = 1e-4, sigma_mm: float = SIGMA_MM,
                 sigma_intensity: float = SIGMA_INTENSITY, loss: str = "dice_ce_focal"):
        super().__init__()
        if geodesics is not None and geodesics not in GEODESIC_COSTS:
            raise ValueError(f"unknown geodesic cost {geodesics!r}")  # the recipe's config check says it first
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.geodesics = geodesics
        self.segmentation = build_loss(loss)
        self.crf = CRFLoss(spacing_mm, sigma_mm, sigma_intensity, crf_weight) if crf_weight > 0 else None
        self.seconds = {"geodesics": 0.0, "crf": 0.0}
        self.steps = 0

    def forward(self, network, x, target, weight):
        logits = network(x)
        classes = logits.shape[1]
        labels, box, codes = target[:, :classes], target[:, classes], target[:, classes + 1]
        if self.geodesics is not None:
            started = time.perf_counter()
            background = torch.softmax(logits.detach().float(), dim=1)[:, 0] if self.geodesics == "deep" else None
            paths = batch_geodesic_masks(
                x[:, 0].detach().float().cpu().numpy(), codes.cpu().numpy(), box.cpu().numpy(), self.spacing_mm,
                None if background is None else background.cpu().numpy(), self.geodesics)
            paths = torch.from_numpy(paths).to(x.device)
            foreground = torch.zeros_like(labels)
            foreground[:, 1] = 1.0
            labels = torch.where(paths[:, None], foreground, labels)
            weight = torch.where(paths, torch.ones_like(weight), weight)
            self.seconds["geodesics"] += time.perf_counter() - started
        loss = self.segmentation(logits.float(), labels, weight)
        if self.crf is not None:
            started = time.perf_counter()
            loss = loss + self.crf(logits, x[:, 0])
            self.seconds["crf"] += time.perf_counter() - started  # the forward part; its backward runs later
        self.steps += 1
        return loss, logits
