"""The loop every recipe shares: cases -> model grids -> pseudo-labels -> training rounds -> model + segmentations.

:func:`run_job` reads the cases, plans the network, trains with :func:`~ExtremeSegLib.training.engine.fit`,
predicts, refines with the recipe (:mod:`.recipe`), measures, stops when consecutive pseudo-labels agree or at
the round limit, and writes the model file, the segmentations and the per-round history (:mod:`.history`).

Run folder (``config.output``)::

    model.pt                      the trained model (see training/model_file.py)
    segmentations/<case>.seg.nrrd training cases segmented by the final network
    validation/<case>.seg.nrrd    validation cases (when the job lists some)
    rounds.json, rounds.md        per-round losses, Dice against the references (when labels are given; validation
                                  also before ``postprocess``), agreement
    rounds.png                    the same as a plot (when matplotlib is installed)
    state/                        job.json, state.json, checkpoint.pt, labels_round<R>.npz: what --resume needs
    CANCEL                        create it to cancel (the run stops after its last checkpoint)
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import InputError
from ..io.outputs import make_folder
from ..io.segmentations import Segment, write_segmentation
from ..io.volumes import write_atomically
from ..metrics import dice
from ..progress import Progress
from ..pseudolabel.label import PseudoLabel
from ..run_lock import LOCK_NAME
from ..training import distributed
from ..training.data import (
    MIN_ROUND_TRIP_DICE,
    VOXELS_ACROSS,
    TrainingVolume,
    coarsest_spacing,
    grid_axes,
    median_spacing,
    round_trip_dice,
    structure_thickness_mm,
)
from ..training.engine import fit, load_checkpoint, select_device
from ..training.inference import background_fill
from ..training.memory import require_patch_fits
from ..training.model_file import save_model
from ..training.networks import MIN_FEATURE_SIZE, build_network, plan_network, total_stride
from ..training.postprocess import PostprocessConfig, clean_label_map, hard_labels
from .config import JobConfig, to_plain
from .history import evaluation_interval, write_history, write_json
from .recipe import PreparedCase, Recipe, RunningJob, case_name, prepare_case, read_case, require_classes_in_labels

# -- planning -----------------------------------------------------------------------------------------------

def plan(config: JobConfig, spacing_mm, grid_shapes, in_channels: int, out_channels: int):
    """``(network hyper-parameters, patch size)``: the patch covers the median model grid (or the configured
    patch), rounded up to the network's total stride, shrunk along its longest side (mm) to fit
    ``training.max_patch_voxels``. A slice-wise network's default patch is one whole (median) slice: the
    context a 2D network needs to tell a structure from look-alikes elsewhere in the image."""
    settings, net = config.training, config.network
    target = np.asarray(settings.patch_size or np.median(np.asarray(grid_shapes), axis=0), dtype=float)
    if net.slice_wise and settings.patch_size is None:
        target[int(np.argmax(spacing_mm))] = 1
    target = np.maximum(np.round(target), 1)
    while True:
        kernels, strides = plan_network(spacing_mm, target, max_levels=net.max_levels or len(net.filters),
                                        slice_wise=net.slice_wise)
        multiple = total_stride(strides)
        patch = (np.ceil(target / multiple) * multiple).astype(int)
        if np.prod(patch) <= settings.max_patch_voxels or settings.patch_size is not None:
            break
        longest = int(np.argmax(patch * np.asarray(spacing_mm)))
        target[longest] = max(1.0, np.floor(target[longest] * 0.85))
    params = dict(in_channels=in_channels, out_channels=out_channels, kernels=kernels, strides=strides,
                  filters=list(net.filters[: len(strides)]), dropout=net.dropout, dropout_levels=net.dropout_levels,
                  norm=net.norm, slice_axis=int(np.argmax(spacing_mm)) if net.slice_wise else None)
    return params, tuple(int(n) for n in patch), tuple(int(n) for n in multiple)


def plan_spacing(median_mm, labels, network, device: torch.device, tried: list = None) -> tuple:
    """``(model spacing, thinnest structure in mm)`` from the round-0 pseudo-labels on the median grid.

    On the CPU the finely sampled axes (:func:`grid_axes`) get the coarsest :func:`coarsest_spacing` of
    :data:`VOXELS_ACROSS` whose :func:`round_trip_dice` (median over the cases) stays at least
    :data:`MIN_ROUND_TRIP_DICE` for every class. The thickness is the median over the cases of
    :func:`structure_thickness_mm` of the trusted voxels (per slice for a slice-wise network), and the median
    case keeps the voxels the network's deepest level needs (4 x 2^(levels - 1): 64 for 5 levels). Only
    trusted voxels count, so a pseudo-label that knows part of a structure makes it look thinner, never
    thicker: weak labels can only keep the grid finer. On CUDA the median grid stays (``docs/training.md``).
    ``tried`` (a list), if given, gets ``(voxels across, spacing, round-trip Dice per class)`` per candidate.
    """
    median_mm = tuple(float(s) for s in median_mm)
    axes = grid_axes(median_mm, int(np.argmax(median_mm)) if network.slice_wise else None)
    maps = [np.where(label.weight > 0, label.hard().astype(np.int16), -1) for label in labels]
    num_classes = labels[0].num_classes
    rows = np.array([structure_thickness_mm(m, median_mm, num_classes, axes) for m in maps])
    per_class = np.array([np.nanmedian(col) if np.isfinite(col).any() else np.nan for col in rows.T])
    thinnest = float(np.nanmin(per_class)) if np.isfinite(per_class).any() else float("nan")
    if device.type != "cpu" or not np.isfinite(thinnest):
        return median_mm, thinnest
    extent = np.median([np.asarray(m.shape) for m in maps], axis=0) * np.asarray(median_mm)
    min_grid = MIN_FEATURE_SIZE * 2 ** ((network.max_levels or len(network.filters)) - 1)
    for across in VOXELS_ACROSS:
        spacing = coarsest_spacing(median_mm, per_class, axes, across, extent, min_grid)
        if spacing == median_mm:
            break
        factor = np.asarray(median_mm) / np.asarray(spacing)
        kept = np.nanmedian([round_trip_dice(m, np.maximum(1, np.round(np.asarray(m.shape) * factor)).astype(int),
                                             num_classes) for m in maps], axis=0)
        if tried is not None:
            tried.append((across, spacing, kept.tolist()))
        if np.all(np.nan_to_num(kept, nan=1.0) >= MIN_ROUND_TRIP_DICE):
            return spacing, thinnest
    return median_mm, thinnest


# -- run folder state -----------------------------------------------------------------------------------------

def save_labels(path: Path, labels) -> None:
    """Pseudo-labels of all cases (float16) in one compressed ``.npz`` file, written atomically."""
    arrays = {}
    for n, label in enumerate(labels):
        arrays[f"p{n}"] = label.probabilities.astype(np.float16)
        arrays[f"w{n}"] = label.weight.astype(np.float16)
    write_atomically(path, True, lambda tmp: np.savez_compressed(tmp, **arrays))


def load_labels(path: Path, cases) -> list:
    with np.load(path) as data:
        return [PseudoLabel(data[f"p{n}"].astype(np.float32), data[f"w{n}"].astype(np.float32), case.frame.grid)
                for n, case in enumerate(cases)]


def _read_state_file(path: Path, start_over: str, required=()) -> dict:
    """A JSON object of a run's ``state/`` (with the ``required`` keys); :class:`InputError` if missing or damaged."""
    run = path.parent.parent
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"the run in {run} cannot be resumed: state/{path.name} is missing; {start_over}") from None
    except (OSError, ValueError) as err:  # json's JSONDecodeError is a ValueError
        raise InputError(f"the run in {run} cannot be resumed: state/{path.name} is damaged ({err}); "
                         f"{start_over}") from None
    if not isinstance(data, dict) or not set(required) <= set(data):
        raise InputError(f"the run in {run} cannot be resumed: state/{path.name} is damaged (not the object it "
                         f"writes); {start_over}")
    return data


def _open_run_folder(config: JobConfig, resume: bool, config_path) -> tuple:
    """The run folder and its state (a new one for a new run); refuses folders it must not write into."""
    folder = Path(config.output)
    state_file = folder / "state" / "state.json"
    start_over = f"to start over, delete {folder} (or choose a new output folder) and run without --resume"
    if resume:
        if not state_file.is_file():
            raise InputError(f"there is no run to resume in {folder} (no state/state.json); start it without --resume")
        saved = _read_state_file(folder / "state" / "job.json", start_over)
        state = _read_state_file(state_file, start_over, ("round", "phase"))
        try:  # sections added since the run started take their defaults, as the running code did
            saved = JobConfig.from_dict(saved).to_dict()
        except InputError:
            pass
        if saved != config.to_dict():
            changed = sorted(k for k in set(saved) | set(config.to_dict()) if saved.get(k) != config.to_dict().get(k))
            raise InputError(f"the run in {folder} was started with a different configuration (differs in: "
                             f"{', '.join(changed)}); resume with the same config, or {start_over}")
        return folder, state
    if state_file.is_file():
        raise InputError(f"{folder} already holds a training run; resume it (--resume), or {start_over}")
    ignored = {"CANCEL", LOCK_NAME} | ({Path(config_path).resolve().name} if config_path and
                                      Path(config_path).resolve().parent == folder.resolve() else set())
    if folder.is_dir() and any(p.name not in ignored for p in folder.iterdir()):
        raise InputError(f"output folder {folder} is not empty; choose a new or empty folder so that nothing in it "
                         "is overwritten")
    make_folder(folder / "state")
    write_json(folder / "state" / "job.json", config.to_dict())
    state = {"round": 0, "phase": "train", "history": []}
    write_json(state_file, state)  # from here on the run can be resumed, whatever happens
    return folder, state


# -- measuring ------------------------------------------------------------------------------------------------

def class_dice(labels: np.ndarray, reference: np.ndarray, num_classes: int) -> list:
    """Dice per foreground class of two class-index maps."""
    return [dice(labels == c, reference == c) for c in range(1, num_classes)]


def _mean(rows) -> Optional[float]:
    rows = [r for r in rows if r is not None]
    return float(np.mean(rows)) if rows else None


def _hard_on_image(case: PreparedCase, probabilities: np.ndarray, settings: PostprocessConfig) -> np.ndarray:
    return hard_labels(case.frame.to_image(probabilities, background_fill(probabilities.shape[0])), settings)


# -- the loop -----------------------------------------------------------------------------------------------

def run_job(config: JobConfig, recipe: Recipe, progress: Progress = None, resume: bool = False,
            config_path=None, lock=None) -> dict:
    """Run a training job to the end (or continue one with ``resume``); returns the outputs written.

    Everything is read and checked before the run folder is made; ``lock`` (a :class:`~ExtremeSegLib.run_lock.
    RunLock`, optional) is then acquired, so that a second job on the same folder is refused while this one runs.

    Raises :class:`InputError` for bad input and :class:`~ExtremeSegLib.errors.CancelledError` when
    cancelled (everything needed to resume is kept in ``<output>/state``).
    """
    progress = progress or Progress(bar=False)
    recipe.check(config)
    config.require_files(recipe.needs(config))
    job = RunningJob(config, recipe, progress, select_device(config.device), Path(config.output))
    settings = config.training
    max_rounds = config.rounds.max_rounds if recipe.refines else 1

    # cases -> model grids: everything is read and checked before the run folder is touched
    names = [case_name(c) for c in config.cases + config.validation]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise InputError(f"two cases are both called {duplicate!r}; give them distinct names (\"name\" in the case)")
    read = [read_case(c, config.classes, recipe.extreme_points) for c in config.cases]
    job.inputs = config.inputs.resolved(config.modality, median_spacing([r[0] for r in read]))
    cases = [prepare_case(c, n, r, job.inputs) for c, n, r in zip(config.cases, names, read)]
    validation = [prepare_case(c, n, read_case(c, config.classes, recipe.extreme_points), job.inputs)
                  for c, n in zip(config.validation, names[len(cases):])]
    require_classes_in_labels(config, [c.reference for c in cases + validation])
    job.network_params, job.patch_size, job.multiple = plan(
        config, job.inputs.spacing_mm, [c.frame.grid.shape for c in cases], len(job.inputs.channels), job.num_classes)
    require_patch_fits(job.patch_size, settings.batch_size, job.network_params["filters"],
                       job.network_params["strides"], job.device)  # the finest grid the plan may choose
    folder, state = distributed.on_main(partial(_start_run, config, resume, config_path, lock))
    distributed.barrier()  # (under torchrun) no rank checks for a cancel before rank 0 has removed an old one
    if state["phase"] == "done":
        progress.message(f"the run in {folder} is already finished")
        outputs = state["outputs"]
        progress.emit("done", outputs=outputs)
        return outputs
    progress.emit("start", total_epochs=settings.epochs * max_rounds, rounds=max_rounds, device=str(job.device))
    labels_path = job.state_dir / f"labels_round{state['round']}.npz"
    planned = config.inputs.spacing_mm is None and "spacing_mm" not in state and not labels_path.exists()
    if not labels_path.exists():
        # under torchrun each rank makes the pseudo-labels of its share of the cases; rank 0 writes them all
        first = distributed.map_cases(lambda case: recipe.initial_label(job, case), cases, progress, "pseudo-labels")
        distributed.on_main(partial(save_labels, labels_path, first))
    if planned:  # the model grid, once per run from the round-0 labels (a resumed run keeps it)
        shown = recipe.planning_labels(job, cases, load_labels(labels_path, cases), progress)
        spacing, thickness = distributed.on_main(
            lambda: plan_spacing(job.inputs.spacing_mm, shown, config.network, job.device))
        if np.isfinite(thickness):
            progress.message(f"thinnest labelled structure {thickness:.1f} mm across: model grid "
                             f"{[round(x, 3) for x in spacing]} mm")
        state["spacing_mm"] = list(spacing)
    if tuple(state.get("spacing_mm", job.inputs.spacing_mm)) != job.inputs.spacing_mm:
        job.inputs = replace(job.inputs, spacing_mm=tuple(float(x) for x in state["spacing_mm"]))
        cases = [prepare_case(c, case.name, (case.image, case.points, case.reference), job.inputs)
                 for c, case in zip(config.cases, cases)]
        validation = [prepare_case(c, case.name, (case.image, case.points, case.reference), job.inputs)
                      for c, case in zip(config.validation, validation)]
        job.network_params, job.patch_size, job.multiple = plan(
            config, job.inputs.spacing_mm, [c.frame.grid.shape for c in cases], len(job.inputs.channels),
            job.num_classes)
        if planned:  # the recipe makes its round-0 labels again on the planned grid (and whatever state it keeps)
            again = distributed.map_cases(lambda case: recipe.initial_label(job, case), cases, progress,
                                          "pseudo-labels on the planned grid")
            distributed.on_main(partial(save_labels, labels_path, again))
    labels = load_labels(labels_path, cases)  # train on exactly what a resumed run would read back
    if planned:  # after the labels: a run stopped before this point plans again from its saved labels
        distributed.on_main(partial(write_json, job.state_dir / "state.json", state))
    torch.manual_seed(settings.seed)
    job.network = build_network(**job.network_params).to(job.device)
    checkpoint = job.state_dir / "checkpoint.pt"
    if checkpoint.exists():  # a resumed run: the weights where it stopped
        job.network.load_state_dict(load_checkpoint(checkpoint)["model"])
    progress.message(f"{len(cases)} training cases on a {job.inputs.spacing_mm} mm grid, patch {list(job.patch_size)}, "
                     f"{len(job.network_params['strides'])} levels, device {job.device}"
                     + (f", {distributed.world_size()} processes" if distributed.active() else ""))

    loss_fn = recipe.loss(job)
    while True:
        r = state["round"]
        started = time.perf_counter()
        if state["phase"] == "train":
            volumes = [TrainingVolume(c.inputs, recipe.training_target(job, c, lab), lab.weight)
                       for c, lab in zip(cases, labels)]
            result = fit(job.network, volumes, settings, spacing_mm=job.inputs.spacing_mm, patch_size=job.patch_size,
                         multiple=job.multiple, device=job.device, checkpoint=checkpoint, progress=progress,
                         round_index=r, loss_fn=loss_fn, evaluate=partial(_validation_dice, job, validation)
                         if validation else None, evaluate_every=evaluation_interval(settings.epochs))
            job.patch_size = result.patch_size
            state.update(phase="refine", last_loss=result.losses[-1], train_seconds=time.perf_counter() - started,
                         epoch_log=result.epochs)
            distributed.on_main(partial(write_json, job.state_dir / "state.json", state))
        started = time.perf_counter()
        last = r + 1 >= max_rounds
        # predictions (and refinements) of the cases, split across the ranks; rank 0 gathers and decides
        done = distributed.map_cases(partial(_predict_case, job, last), list(zip(cases, labels)), progress,
                                     f"round {r}: predicting" + ("" if last else " and refining"))
        checked = distributed.map_cases(partial(_predict_validation, job), validation, progress,
                                        f"round {r}: validation")
        state, stop = distributed.on_main(partial(_close_round, job, state, done, checked, last, started))
        if stop:
            break
        labels = load_labels(job.state_dir / f"labels_round{r + 1}.npz", cases)

    outputs = distributed.on_main(lambda: _write_outputs(job, cases, validation, done, checked, state))
    progress.emit("done", outputs=outputs)
    return outputs


def _predict_case(job: RunningJob, last: bool, item: tuple) -> dict:
    """A training case ``item = (case, pseudo-label)`` after a round: its cleaned label map, Dice of the
    pseudo-label and of the network against the reference (if any), and (unless ``last``) the refined
    pseudo-label and its agreement."""
    config, (case, label) = job.config, item
    probabilities = job.predict(case)
    hard = _hard_on_image(case, probabilities, config.postprocess)
    out = {"labels": clean_label_map(hard, case.image, config.postprocess, case.points, config.class_names)}
    if case.reference is not None:
        label_hard = _hard_on_image(case, label.probabilities, config.postprocess)
        out["label_dice"] = class_dice(label_hard, case.reference, job.num_classes)
        out["network_dice"] = class_dice(out["labels"], case.reference, job.num_classes)
    if not last:
        out["refined"] = job.recipe.refine(job, case, probabilities, label)
        out["agreement"] = class_dice(out["refined"].hard(), label.hard(), job.num_classes)
    return out


def _predict_validation(job: RunningJob, case: PreparedCase) -> dict:
    """A validation case's cleaned label map and Dice per class, with and without the cleaning."""
    config = job.config
    raw = _hard_on_image(case, job.predict(case), config.postprocess)
    labels = clean_label_map(raw, case.image, config.postprocess, case.points, config.class_names)
    return {"labels": labels, "dice": class_dice(labels, case.reference, job.num_classes),
            "raw_dice": class_dice(raw, case.reference, job.num_classes)}


def _validation_dice(job: RunningJob, validation: list, epoch: int) -> dict:
    """``fit``'s evaluation during training: the validation cases' mean Dice as the round table scores it
    (after ``postprocess``); under torchrun only rank 0 evaluates (``fit``)."""
    scores = [_predict_validation(job, case)["dice"] for case in validation]
    return {"validation_dice": _mean(np.mean(scores, axis=0))}


def _close_round(job: RunningJob, state: dict, done: list, checked: list, last: bool, started: float) -> tuple:
    """Record the round (history, progress), write the next round's pseudo-labels unless it stops;
    returns ``(state, stop)``."""
    config, progress, r = job.config, job.progress, state["round"]
    label_dice = [d["label_dice"] for d in done if "label_dice" in d]
    network_dice = [d["network_dice"] for d in done if "network_dice" in d]
    agreement = [d["agreement"] for d in done if "agreement" in d]
    validation_dice, raw_dice = [c["dice"] for c in checked], [c["raw_dice"] for c in checked]
    row = {"round": r, "epochs": config.training.epochs, "loss": state.get("last_loss"),
           "train_seconds": state.get("train_seconds"), "epoch_log": state.get("epoch_log")}
    row.update(
        pseudolabel_dice=_mean(np.mean(label_dice, axis=0)) if label_dice else None,
        train_dice=_mean(np.mean(network_dice, axis=0)) if network_dice else None,
        validation_dice=_mean(np.mean(validation_dice, axis=0)) if validation_dice else None,
        validation_dice_per_class=np.mean(validation_dice, axis=0).tolist() if validation_dice else None,
        # the same before ``postprocess``: what the cleaning adds
        validation_dice_raw=_mean(np.mean(raw_dice, axis=0)) if raw_dice else None,
        validation_dice_per_class_raw=np.mean(raw_dice, axis=0).tolist() if raw_dice else None,
        agreement=_mean(np.mean(agreement, axis=0)) if agreement else None,
        refine_seconds=time.perf_counter() - started,
    )
    state["history"].append(row)
    shown = row["validation_dice"] if row["validation_dice"] is not None else row["train_dice"]
    progress.emit("round", round=r, dice=shown, agreement=row["agreement"], pseudolabel_dice=row["pseudolabel_dice"],
                  validation_dice=row["validation_dice"])
    converged = row["agreement"] is not None and row["agreement"] >= config.rounds.agreement
    if last or converged:
        if converged:
            progress.message(f"pseudo-labels of rounds {r} and {r + 1} agree (Dice {row['agreement']:.4f} >= "
                             f"{config.rounds.agreement}): stopping")
        return state, True
    save_labels(job.state_dir / f"labels_round{r + 1}.npz", [d["refined"] for d in done])
    state.update(round=r + 1, phase="train")
    write_json(job.state_dir / "state.json", state)
    (job.state_dir / f"labels_round{r}.npz").unlink(missing_ok=True)
    return state, False


def _write_outputs(job: RunningJob, cases, validation, done: list, checked: list, state: dict) -> dict:
    """The model file, segmentations and history of the finished run; the state marked done."""
    final_labels = {case.name: d["labels"] for case, d in zip(cases, done)}
    validation_labels = {case.name: c["labels"] for case, c in zip(validation, checked)}
    outputs = _finish(job, cases, validation, final_labels, validation_labels, state["history"])
    state.update(phase="done", outputs=outputs)
    write_json(job.state_dir / "state.json", state)
    for old in job.state_dir.glob("labels_round*.npz"):
        old.unlink()
    return outputs


def _start_run(config: JobConfig, resume: bool, config_path, lock) -> tuple:
    """Take the run folder's lock (under torchrun rank 0 alone holds it), open the folder and drop a cancel
    request aimed at an earlier run; returns ``(folder, state)``."""
    if lock is not None:
        lock.acquire()
    folder, state = _open_run_folder(config, resume, config_path)
    cancel = folder / "CANCEL"
    if cancel.exists():
        cancel.unlink()  # this run starts now
    return folder, state


def _finish(job: RunningJob, cases, validation, final_labels: dict, validation_labels: dict, history: list) -> dict:
    """Write the model file, the segmentations and the round history; returns their paths (strings)."""
    config = job.config
    description = {
        "recipe": config.recipe,
        "network": job.network_params,
        "inputs": job.inputs.to_dict(),
        "patch_size": list(job.patch_size),
        "classes": [{"name": c.name, "label_values": list(c.label_values)} for c in config.classes],
        "modality": config.modality,
        "clicks_at_inference": job.inputs.needs_points,
        "postprocess": to_plain(config.postprocess),
        "training": {"cases": len(cases), "rounds": len(history), "epochs_per_round": config.training.epochs,
                     "final_loss": history[-1]["loss"], "seed": config.training.seed},
    }
    outputs = {"model": str(save_model(job.folder / "model.pt", job.network.cpu(), description, overwrite=True))}
    job.network.to(job.device)
    groups = (("segmentations", cases, final_labels), ("validation", validation, validation_labels))
    for subfolder, group, hard in groups:
        if not group:
            continue
        (job.folder / subfolder).mkdir(exist_ok=True)
        paths = []
        for case in group:
            segments = [Segment(c.name, hard[case.name] == n, label_value=n)
                        for n, c in enumerate(config.classes, start=1)]
            paths.append(str(write_segmentation(job.folder / subfolder / f"{case.name}.seg.nrrd", case.image, segments,
                                                overwrite=True)))
        outputs[subfolder] = paths
    outputs.update(write_history(job.folder, history, config.recipe))
    return outputs

