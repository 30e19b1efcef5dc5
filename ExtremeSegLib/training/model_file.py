"""Model files: network weights plus a JSON description, stored as data (nothing in the file is executed).

One file (``*.pt``, written by ``torch.save``) holding ``{"description": <JSON text>, "weights": state dict}``;
it is read with ``torch.load(weights_only=True)``, which refuses pickled Python objects. The description says
what the weights expect (recipe, network hyper-parameters, input channels, normalisation, voxel spacing,
crop, patch size, classes, versions) and carries a SHA-256 of the weights and, since format 2, a SHA-256 of
itself (``description_sha256``, over the rest of the description, which includes the weights' checksum), so a
modified or damaged file, or a description that does not fit its weights, is refused with a message instead of
segmenting wrongly. Format 1 files (no description checksum) stay readable: their weights are checked, their
description only for consistency with the weights.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.outputs import note_input
from ..io.volumes import write_stream_atomically
from .data import InputSpec
from .networks import build_network
from .postprocess import PostprocessConfig

FORMAT = "extremeseg-model"
FORMAT_VERSION = 2
#: description keys every model file has (besides format, format_version, versions, created, weights_sha256)
REQUIRED = ("recipe", "network", "inputs", "patch_size", "classes")


def weights_digest(state_dict: dict) -> str:
    """SHA-256 over the weights' names, types, shapes and values (independent of how they were saved)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def description_digest(description: dict) -> str:
    """SHA-256 of a description's canonical JSON (sorted keys), its own ``description_sha256`` left out."""
    rest = {k: v for k, v in description.items() if k != "description_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _versions() -> dict:
    import monai

    from .. import __version__
    return {"extremeseg": __version__, "torch": torch.__version__.split("+")[0], "monai": monai.__version__,
            "numpy": np.__version__}


def save_model(path, network: torch.nn.Module, description: dict, overwrite: bool = False) -> Path:
    """Write ``network``'s weights and ``description`` (JSON-serialisable; see :data:`REQUIRED`) to ``path``."""
    missing = [key for key in REQUIRED if key not in description]
    if missing:
        raise ValueError(f"model description lacks {missing}")  # a bug in the caller, not user input
    weights = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    full = {**description, "format": FORMAT, "format_version": FORMAT_VERSION, "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "weights_sha256": weights_digest(weights)}
    full["description_sha256"] = description_digest(full)
    content = {"description": json.dumps(full, sort_keys=True), "weights": weights}
    return write_stream_atomically(path, overwrite, lambda stream: torch.save(content, stream))


def _read(path) -> tuple:
    path = Path(path)
    if path.is_dir():
        inside = sorted((p.name for p in path.glob("*.pt")), key=lambda name: (name != "model.pt", name))
        raise InputError(f"{path} is a folder, not a model file; give the model file itself"
                         + (f", e.g. {path / inside[0]}" if inside else " (model.pt, written by extremeseg train)"))
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    note_input(path)
    if not zipfile.is_zipfile(path):  # what torch.save writes
        raise InputError(f"{path} is not an ExtremeSeg model file (not a PyTorch archive)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        raise InputError(f"{path} holds Python objects besides weights ({found.group(1) if found else 'unknown'}); "
                         "refusing to load it: a model file is data, never code") from err
    except Exception as err:  # not a torch file at all, truncated, ...
        raise InputError(f"{path} is not an ExtremeSeg model file (cannot read it: {err})") from err
    if not isinstance(content, dict) or not isinstance(content.get("description"), str) \
            or not isinstance(content.get("weights"), dict):
        raise InputError(f"{path} is not an ExtremeSeg model file (no description and weights)")
    try:
        description = json.loads(content["description"])
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: the model description is not valid JSON ({err})") from err
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise InputError(f"{path} is not an ExtremeSeg model file (format {description.get('format')!r})")
    if int(description.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(f"{path} was written by a newer ExtremeSeg (model format {description['format_version']}, "
                         f"this one reads up to {FORMAT_VERSION}); update ExtremeSeg")
    sealed = int(description.get("format_version", 0)) >= 2  # format 1 had no description checksum
    missing = [key for key in REQUIRED + ("weights_sha256",) + (("description_sha256",) if sealed else ())
               if key not in description]
    if missing:
        raise InputError(f"{path}: the model description lacks {', '.join(missing)}; the file is damaged")
    if sealed and description_digest(description) != description["description_sha256"]:
        raise InputError(f"{path}: the model description does not match its checksum; the file was modified or "
                         "damaged, so it is not used (train again, or use the original file)")
    return description, content["weights"]


def read_description(path) -> dict:
    """The JSON description of a model file (checked for format, not for its weights)."""
    return _read(path)[0]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A network in evaluation mode and what it expects."""

    network: torch.nn.Module
    description: dict

    @property
    def inputs(self) -> InputSpec:
        return InputSpec.from_dict(self.description["inputs"])

    @property
    def patch_size(self) -> tuple:
        return tuple(int(n) for n in self.description["patch_size"])

    @property
    def postprocess(self) -> PostprocessConfig:
        """How its label maps are cleaned (none for files written before post-processing existed)."""
        return PostprocessConfig.from_description(self.description.get("postprocess"))

    @property
    def class_names(self) -> list:
        """Names of the foreground classes 1..C-1 (class 0 is background)."""
        return [c["name"] for c in self.description["classes"]]


def load_model(path, device="cpu") -> LoadedModel:
    """Read, check and build the network of a model file; :class:`InputError` for anything that does not fit."""
    description, weights = _read(path)
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InputError(f"{path}: the weights hold something other than tensors; the file is damaged")
    if weights_digest(weights) != description["weights_sha256"]:
        raise InputError(f"{path}: the weights do not match the checksum in their description; the file was "
                         "modified or damaged, so it is not used")
    try:
        inputs = InputSpec.from_dict(description["inputs"])
        PostprocessConfig.from_description(description.get("postprocess")).check_classes(
            [c["name"] for c in description["classes"]])
        network = build_network(**description["network"])
    except (TypeError, KeyError, ValueError, InputError) as err:
        raise InputError(f"{path}: the model description cannot be used ({err})") from err
    if description["network"].get("in_channels") != len(inputs.channels):
        raise InputError(f"{path}: the network takes {description['network'].get('in_channels')} input channels "
                         f"but the description lists {inputs.channels}; the file is inconsistent")
    if description["network"].get("out_channels") != len(description["classes"]) + 1:
        raise InputError(f"{path}: the network has {description['network'].get('out_channels')} outputs for "
                         f"{len(description['classes'])} classes + background; the file is inconsistent")
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise InputError(f"{path}: the weights do not fit the network the description specifies ({first})") from err
    network.to(torch.device(device)).eval()
    return LoadedModel(network, description)
