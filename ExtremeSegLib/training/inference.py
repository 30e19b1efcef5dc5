"""Prediction with a trained model: sliding windows over the model grid, back onto the image grid.

With test-time clicks (a model trained with cue channels or a crop around the extreme points) the user's
6 points give the cue channels and the crop; without (fully automatic models) the whole image is used.
Results: class probabilities and a label map on the image grid, written as ``.seg.nrrd`` (one segment per
class) and, on request, probability volumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from ..annotations import ExtremePoints
from ..errors import InputError
from ..io.markups import read_points
from ..io.segmentations import Segment, write_segmentation
from ..io.volumes import read_image, write_volume
from ..progress import Progress
from ..volume import Volume
from .data import frame_case, network_inputs
from .engine import select_device
from .model_file import LoadedModel, load_model
from .postprocess import clean_label_map


def predict_probabilities(network: torch.nn.Module, inputs: np.ndarray, patch_size, device: torch.device,
                          amp: bool = True, overlap: float = 0.5, progress: Progress = None) -> np.ndarray:
    """Softmax probabilities ``(C, ...)`` of ``network`` over ``inputs`` ``(C_in, ...)``.

    Gaussian-weighted sliding windows of ``patch_size`` overlapping by ``overlap``; autocast on CUDA when
    ``amp``. If the GPU runs out of memory the prediction is redone on the CPU (and said through ``progress``).
    A cancel request (``progress``) raises :class:`CancelledError` before the next window.
    """
    network.eval()
    if progress is not None:
        network = _CancellableNetwork(network, progress).eval()
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))[None]
    try:
        return _windows(network, x, patch_size, device, amp, overlap)
    except torch.OutOfMemoryError:
        pass
    torch.cuda.empty_cache()
    if progress is not None:
        progress.message("GPU out of memory during prediction: predicting this volume on the CPU", level="warning")
    try:
        return _windows(network.to("cpu"), x, patch_size, torch.device("cpu"), False, overlap)
    finally:
        network.to(device)


class _CancellableNetwork(torch.nn.Module):
    """``network`` asking ``progress`` whether the run was cancelled before each window batch."""

    def __init__(self, network, progress):
        super().__init__()
        self.network, self.progress = network, progress

    def forward(self, x):
        self.progress.check_cancelled()
        return self.network(x)


def _windows(network, x, patch_size, device, amp, overlap) -> np.ndarray:
    use_amp = bool(amp and device.type == "cuda")
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        logits = sliding_window_inference(x.to(device), roi_size=tuple(int(n) for n in patch_size), sw_batch_size=1,
                                          predictor=network, overlap=overlap, mode="gaussian")
    return torch.softmax(torch.as_tensor(logits).float(), dim=1)[0].cpu().numpy()


@dataclass(frozen=True, eq=False)
class Prediction:
    """Class probabilities ``(C, I, J, K)`` and the label map (argmax, post-processed, uint8) on an image's grid."""

    probabilities: np.ndarray
    labels: np.ndarray
    image: Volume


def background_fill(num_classes: int) -> list:
    """Per-class value outside the model grid: certain background."""
    return [1.0] + [0.0] * (num_classes - 1)


def segment_image(model: LoadedModel, image: Volume, points: ExtremePoints = None, device="cpu",
                  overlap: float = 0.5, progress: Progress = None, postprocess: bool = True) -> Prediction:
    """Segment ``image`` with a loaded model (``points`` required when the model was trained with clicks); the
    label map is cleaned as the model's description says (:mod:`.postprocess`; ``postprocess=False``: the
    network's own argmax), the probabilities are never cleaned."""
    spec = model.inputs
    frame = frame_case(image, spec, points)
    inputs = network_inputs(frame, spec, points)
    device = torch.device(device)
    probabilities = predict_probabilities(model.network, inputs, model.patch_size, device, overlap=overlap,
                                          progress=progress)
    full = frame.to_image(probabilities, background_fill(probabilities.shape[0]))
    labels = np.argmax(full, axis=0).astype(np.uint8)
    if postprocess:
        labels = clean_label_map(labels, image, model.postprocess, points, model.class_names)
    return Prediction(full, labels, image)


def probability_paths(path, class_names) -> list:
    """One file per foreground class: ``path`` itself for a single class, else ``<stem>_<class><suffix>``."""
    path = Path(path)
    if len(class_names) == 1:
        return [path]
    name = path.name
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else path.suffix
    stem = name[: len(name) - len(suffix)]
    return [path.with_name(f"{stem}_{c}{suffix}") for c in class_names]


def write_prediction(prediction: Prediction, class_names, segmentation_path, probability_path=None,
                     overwrite: bool = False) -> dict:
    """Write the label map as a ``.seg.nrrd`` (one segment per class, label value = class index) and, when
    ``probability_path`` is given, each foreground class's probability as a volume. Returns the paths."""
    segments = [Segment(name, prediction.labels == c, label_value=c) for c, name in enumerate(class_names, start=1)]
    written = {"segmentation": write_segmentation(segmentation_path, prediction.image, segments, overwrite=overwrite)}
    if probability_path is not None:
        written["probabilities"] = [
            write_volume(prediction.image.with_array(prediction.probabilities[c].astype(np.float32)), p, overwrite)
            for c, p in enumerate(probability_paths(probability_path, class_names), start=1)
        ]
    return written


def predict_file(model_path, image_path, segmentation_path, points_path=None, probability_path=None,
                 device: str = "auto", overwrite: bool = False, progress: Progress = None,
                 postprocess: bool = True) -> dict:
    """Segment an image file with a model file; the Python twin of ``extremeseg predict``.

    ``points_path``: a ``.mrk.json`` with the object's 6 extreme points (needed by click-based models).
    ``postprocess=False`` skips the model's label-map cleaning.
    Returns ``{"segmentation": path, "probabilities": [paths]}`` (the latter when asked for).
    """
    torch_device = select_device(device)
    model = load_model(model_path, torch_device)
    targets = [segmentation_path] + (probability_paths(probability_path, model.class_names) if probability_path else [])
    for target in targets:
        if Path(target).exists() and not overwrite:  # before the work, not after it
            raise InputError(f"{target} already exists; choose another name or allow overwriting")
    if progress is not None:
        progress.check_cancelled()
    image = read_image(image_path)
    points = None
    if points_path is not None:
        points = ExtremePoints.from_points(read_points(points_path)[0], image)
    prediction = segment_image(model, image, points, torch_device, progress=progress, postprocess=postprocess)
    if progress is not None:
        progress.check_cancelled()  # nothing is written for a cancelled prediction
    return write_prediction(prediction, model.class_names, segmentation_path, probability_path, overwrite)
