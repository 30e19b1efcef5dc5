"""A fully automatic model file as a MONAI Bundle, runnable by ``python -m monai.bundle run`` without ExtremeSeg.

Layout written by :func:`export_bundle`::

    DIR/configs/metadata.json   MONAI metadata (versions, classes, network inputs/outputs) + ExtremeSeg's description
    DIR/configs/inference.json  read image -> model grid -> normalise -> sliding windows -> softmax -> image grid
                                -> argmax -> largest component per class -> NIfTI label map
    DIR/models/model.pt         a plain MONAI DynUNet state dict (``torch.load(weights_only=True)``)
    DIR/scripts/                extremeseg_transforms.py: the model-grid resampling MONAI lacks (see that module)
    DIR/README.md               training data, classes, spacing, normalisation, post-processing, licence, usage

Everything else is MONAI's own transforms and inferers, configured to do what ExtremeSeg's prediction does
(:mod:`.inference`): no reorientation (ExtremeSeg works on the stored voxel axes), the model's normalisation on
the model grid, Gaussian sliding windows with overlap 0.5, probabilities resampled back before the argmax.
ExtremeSeg's network wrappers are unwrapped: dropout layers (identity in evaluation) are dropped and a
slice-wise network becomes MONAI's 2D DynUNet run by ``SliceInferer``.
Click-based models (cue channels, crop around the clicks) are refused: a bundle has no clicks to give.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ..errors import InputError
from ..io.volumes import write_atomically, write_stream_atomically, write_text_atomically
from .model_file import load_model, read_description
from .postprocess import PostprocessConfig

#: MONAI's metadata schema the written metadata.json follows
METADATA_SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                   "meta_schema_20220324.json")
SCRIPTS_MODULE = "extremeseg_transforms"
NOT_STATED = "not stated: ask the model's author before sharing or using this model"


def export_refusal(description: dict):
    """Why a model file cannot become a MONAI Bundle (one sentence), or ``None`` when it can."""
    inputs = description["inputs"]
    if inputs.get("cues") or inputs.get("crop_to_points"):
        return (f"this {description['recipe']} model needs the object's extreme points at prediction time, and a "
                "MONAI Bundle takes no clicks: only fully automatic models (e.g. scribbles, fully_supervised) "
                "can be exported")
    settings = PostprocessConfig.from_description(description.get("postprocess"))
    if settings.foreground_threshold not in (None, 0.5):  # 0.5 on two classes is the bundle's argmax (bar ties)
        return (f"this model thresholds its foreground at {settings.foreground_threshold} "
                "(postprocess.foreground_threshold), which the MONAI Bundle export does not reproduce yet")
    if settings.convex is not False:
        return ("this model's label maps are made convex (postprocess.convex), which the MONAI Bundle export does "
                "not reproduce yet; retrain with \"convex\": false to export it")
    return None


def bundle_summary(description: dict) -> str:
    """One sentence on what ``extremeseg export`` makes of a model file (or why it cannot)."""
    refusal = export_refusal(description)
    if refusal:
        return f"MONAI Bundle export: not possible ({refusal})."
    spacing = " x ".join(f"{s:g}" for s in description["inputs"]["spacing_mm"])
    classes = ", ".join(c["name"] for c in description["classes"])
    network = "2D DynUNet run slice by slice" if description["network"].get("slice_axis") is not None \
        else "3D DynUNet"
    return (f"MONAI Bundle export: {network} on {spacing} mm voxels, {_normalisation_text(description)}, classes "
            f"background + {classes}, {_postprocess_text(description)}; writes configs/, models/model.pt, "
            f"scripts/{SCRIPTS_MODULE}.py, README.md.")


def _normalisation_text(description: dict) -> str:
    n = description["inputs"]["normalisation"]
    return {"zscore": f"intensities clipped to percentiles {n['lower']:g}-{n['upper']:g} then z-scored",
            "percentile": f"percentiles {n['lower']:g}-{n['upper']:g} mapped to [0, 1]",
            "window": f"intensity window [{n['lower']:g}, {n['upper']:g}] mapped to [0, 1]",
            "none": "intensities unchanged"}[n["mode"]]


def _postprocess_text(description: dict) -> str:
    settings = PostprocessConfig.from_description(description.get("postprocess"))
    return "largest 26-connected component kept per class" if settings.largest_component else "no label cleaning"


def plain_dynunet_weights(state_dict: dict) -> dict:
    """ExtremeSeg's weights renamed for a plain MONAI DynUNet: a dropout wrapper's ``block.`` and a slice-wise
    wrapper's ``unet2d.`` leave the names (neither holds parameters of its own)."""
    renamed = {}
    for name, tensor in state_dict.items():
        name = re.sub(r"^unet2d\.", "", name)
        renamed[re.sub(r"(^|\.)block\.", r"\1", name)] = tensor
    return renamed


def _dynunet_args(network: dict) -> dict:
    """MONAI DynUNet arguments equal to ExtremeSeg's :func:`~.networks.build_network` for these parameters."""
    axis = network.get("slice_axis")

    def drop(lists):
        return [[int(n) for a, n in enumerate(v) if a != axis] for v in lists]

    kernels, strides = drop(network["kernels"]), drop(network["strides"])
    return {"_target_": "DynUNet", "spatial_dims": 3 if axis is None else 2,
            "in_channels": int(network["in_channels"]), "out_channels": int(network["out_channels"]),
            "kernel_size": kernels, "strides": strides, "upsample_kernel_size": strides[1:],
            "filters": [int(f) for f in network["filters"]][: len(strides)],
            "norm_name": network.get("norm", "instance"), "res_block": False}


def _normalisation_transforms(description: dict) -> list:
    n = description["inputs"]["normalisation"]
    lower, upper = float(n["lower"]), float(n["upper"])
    if n["mode"] == "window":
        return [{"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": lower, "a_max": upper,
                 "b_min": 0.0, "b_max": 1.0, "clip": True}]
    if n["mode"] == "percentile":
        return [{"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": lower, "upper": upper,
                 "b_min": 0.0, "b_max": 1.0, "clip": True}]
    if n["mode"] == "zscore":
        return [{"_target_": "ClipIntensityPercentilesd", "keys": "image", "lower": lower, "upper": upper},
                {"_target_": "NormalizeIntensityd", "keys": "image"}]
    return []


def inference_config(description: dict) -> dict:
    """The bundle's ``configs/inference.json`` for a fully automatic model's description."""
    network = description["network"]
    axis = network.get("slice_axis")
    patch = [int(n) for n in description["patch_size"]]
    if axis is None:
        inferer = {"_target_": "SlidingWindowInferer", "roi_size": patch}
    else:
        inferer = {"_target_": "SliceInferer", "spatial_dim": int(axis),
                   "roi_size": [n for a, n in enumerate(patch) if a != axis]}
    inferer.update(sw_batch_size=1, overlap=0.5, mode="gaussian")
    foreground = list(range(1, len(description["classes"]) + 1))
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]
    if PostprocessConfig.from_description(description.get("postprocess")).largest_component:
        postprocessing.append({"_target_": "KeepLargestConnectedComponentd", "keys": "pred",
                               "applied_labels": foreground, "independent": True, "connectivity": 3})
    postprocessing.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
                           "output_postfix": "seg", "output_dtype": "$numpy.uint8", "resample": False,
                           "separate_folder": False, "print_log": False})
    return {
        "imports": ["$import numpy", "$import torch", f"$import scripts.{SCRIPTS_MODULE}"],
        "bundle_root": ".",
        "image": "",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$[{'image': @image}]",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "network_def": _dynunet_args(network),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
            {"_target_": f"scripts.{SCRIPTS_MODULE}.ResizeToSpacingd", "keys": "image",
             "pixdim": [float(s) for s in description["inputs"]["spacing_mm"]]},
            *_normalisation_transforms(description),
        ]},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        "run": [
            "$torch.set_grad_enabled(False)",
            "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
            "$@network.eval()",
            "$[@postprocessing({**item, 'pred': @inferer(item['image'][None].to(@device), @network)[0]})"
            " for item in @dataset]",
        ],
    }


def metadata(description: dict, license_text: str, data_description: str) -> dict:
    """The bundle's ``configs/metadata.json`` (MONAI's schema; ``extremeseg`` holds the model description)."""
    versions = description.get("versions", {})
    classes = ["background"] + [c["name"] for c in description["classes"]]
    spatial = ["8*n"] * (3 if description["network"].get("slice_axis") is None else 2)
    inputs = description["inputs"]
    return {
        "schema": METADATA_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported from an ExtremeSeg {description['recipe']} model"},
        "monai_version": versions.get("monai", ""),
        "pytorch_version": versions.get("torch", ""),
        "numpy_version": versions.get("numpy", ""),
        "required_packages_version": {"nibabel": "", "scikit-image": ""},
        "name": f"ExtremeSeg {description['recipe']} model",
        "task": f"segmentation of {', '.join(classes[1:])}",
        "description": f"A {description['recipe']} model trained with ExtremeSeg (weakly supervised 3D "
                       "segmentation); fully automatic.",
        "authors": "ExtremeSeg user",
        "copyright": license_text,
        "license": license_text,
        "data_source": data_description,
        "data_type": "nibabel",
        "image_classes": f"one channel: the {description.get('modality', 'image')} image, normalised in the bundle",
        "label_classes": {str(n): name for n, name in enumerate(classes)},
        "pred_classes": {str(n): name for n, name in enumerate(classes)},
        "intended_use": "research only; check the segmentations",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": description.get("modality", ""),
                                 "num_channels": 1, "spatial_shape": spatial, "dtype": "float32",
                                 "value_range": [], "is_patch_data": True, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(classes),
                                 "spatial_shape": spatial, "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True,
                                 "channel_def": {str(n): name for n, name in enumerate(classes)}}},
        },
        "extremeseg": {"description": description, "spacing_mm": inputs["spacing_mm"],
                       "normalisation": inputs["normalisation"]},
    }


def readme(description: dict, license_text: str, data_description: str) -> str:
    """The bundle's README (Markdown)."""
    training = description.get("training", {})
    classes = "\n".join(f"- {n}: {c['name']} (training label values {c.get('label_values')})"
                        for n, c in enumerate(description["classes"], start=1))
    return f"""# ExtremeSeg {description['recipe']} model (MONAI Bundle)

Exported by `extremeseg export` from an ExtremeSeg model file (created {description.get('created', '?')}, weights
SHA-256 `{description.get('weights_sha256', '?')}`). Fully automatic: no clicks needed.

## Training data
{data_description}

Recipe `{description['recipe']}`, modality {description.get('modality', '?')}, {training.get('cases', '?')} training
cases, {training.get('rounds', '?')} round(s) of {training.get('epochs_per_round', '?')} epochs, seed
{training.get('seed', '?')}, final training loss {training.get('final_loss', '?')}.

## Classes (label values of the output)
- 0: background
{classes}

## Preprocessing and post-processing
- Voxel spacing: resampled (trilinear, field of view kept) to {description['inputs']['spacing_mm']} mm; no
  reorientation (the network saw the images' stored voxel axes).
- Normalisation: {_normalisation_text(description)}.
- Sliding windows of {description['patch_size']} voxels, overlap 0.5, Gaussian weights; softmax probabilities
  resampled back onto the image grid; argmax; {_postprocess_text(description)}.

## Licence
{license_text}

## Usage
```
python -m monai.bundle run --config_file DIR/configs/inference.json --bundle_root DIR \\
    --image IMAGE.nii.gz --output_dir OUT
```
writes `OUT/<image name>_seg.nii.gz`. Needs MONAI {description.get('versions', {}).get('monai', '')}, PyTorch,
nibabel and scikit-image (`python -m monai.bundle` also needs `fire`); not ExtremeSeg.
"""


def export_bundle(model_path, out, license_text: str = NOT_STATED, data_description: str = None) -> Path:
    """Write a MONAI Bundle for the fully automatic model file ``model_path`` into the new or empty folder ``out``.

    ``license_text``: the model's licence (a bundle's ``license`` field); ``data_description``: what it was
    trained on (the README's training data section; default: what the model file says).
    :class:`InputError` for a click-based model, a damaged model file or a non-empty ``out``.
    """
    out = Path(out)
    refusal = export_refusal(read_description(model_path))
    if refusal:
        raise InputError(f"cannot export {model_path}: {refusal}")
    model = load_model(model_path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; choose a new folder for the bundle")
    description = model.description
    weights = plain_dynunet_weights(model.network.state_dict())
    _check_plain_network(description, weights)
    data_description = data_description or (
        f"{description.get('training', {}).get('cases', 'an unstated number of')} training cases "
        f"({description.get('modality', 'unstated modality')}); the data set was not described at export.")
    for folder in ("configs", "models", "scripts"):
        (out / folder).mkdir(parents=True, exist_ok=True)

    write_text_atomically(out / "configs" / "metadata.json",
                          json.dumps(metadata(description, license_text, data_description), indent=2), False)
    write_text_atomically(out / "configs" / "inference.json", json.dumps(inference_config(description), indent=2),
                          False)
    write_stream_atomically(out / "models" / "model.pt", False, lambda stream: torch.save(weights, stream))
    write_text_atomically(out / "scripts" / "__init__.py", "", False)
    source = Path(__file__).with_name("bundle_transforms.py")
    write_atomically(out / "scripts" / f"{SCRIPTS_MODULE}.py", False, lambda tmp: shutil.copyfile(source, tmp))
    write_text_atomically(out / "README.md", readme(description, license_text, data_description), False)
    return out


def _check_plain_network(description: dict, weights: dict) -> None:
    """The renamed weights must fit the plain DynUNet the config builds (a bug otherwise, not user input)."""
    from monai.networks.nets import DynUNet

    args = {k: v for k, v in _dynunet_args(description["network"]).items() if k != "_target_"}
    DynUNet(**args).load_state_dict(weights, strict=True)
