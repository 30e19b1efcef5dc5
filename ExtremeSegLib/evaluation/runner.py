"""Run a segmentation method over evaluation cases, score it per structure, write the report."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.outputs import make_folder
from ..metrics import evaluate
from ..volume import Volume
from .overlay import write_overlay_png
from .report import make_results, write_report


def _prediction_array(prediction, reference: Volume, case) -> np.ndarray:
    """The method's output as an integer array on the reference's grid."""
    if isinstance(prediction, Volume):
        reference.require_same_geometry(prediction, f"the prediction for case {case.name}")
        prediction = prediction.array
    prediction = np.asarray(prediction)
    if prediction.shape != reference.shape:
        raise InputError(f"the prediction for case {case.name} has shape {prediction.shape}, the reference "
                         f"{reference.shape}; the method must return a label map on the image grid")
    return np.rint(prediction).astype(np.int16) if prediction.dtype.kind == "f" else prediction.astype(np.int16)


def _structure_map(labels: np.ndarray, structures: dict) -> np.ndarray:
    """Structure number (1, 2, ... in ``structures`` order) per voxel, 0 elsewhere: what the overlay outlines."""
    out = np.zeros(labels.shape, dtype=np.int16)
    for n, values in enumerate(structures.values(), start=1):
        out[np.isin(labels, values)] = n
    return out


def require_structures_present(cases: list, structures: dict) -> None:
    """:class:`InputError` naming a structure whose label values occur in none of the cases' references: its
    scores would be those of two empty masks (a "perfect" Dice of 1), so the values are surely mistyped."""
    from ..io.volumes import read_labelmap

    absent = dict(structures)
    found = set()
    for case in cases:
        values = set(np.unique(read_labelmap(case.label).array).tolist())
        found |= values
        absent = {name: v for name, v in absent.items() if not values & set(v)}
        if not absent:
            return
    name, values = next(iter(absent.items()))
    raise InputError(f"structure {name!r} (label values {values}) occurs in none of the {len(cases)} reference label "
                     f"maps, which hold the values {sorted(int(v) for v in found)}; check --structures")


def _pick_overlays(rows: list, count: int) -> list:
    """Up to ``count`` cases spread over the ranking by mean Dice, worst and best included."""
    if count <= 0 or not rows:
        return []
    ranked = sorted(rows, key=lambda r: (np.mean([m["dice"] for m in r["metrics"].values()]), r["name"]))
    picks = np.unique(np.rint(np.linspace(0, len(ranked) - 1, min(count, len(ranked)))).astype(int))
    return [ranked[i] for i in picks]


def run_benchmark(cases: list, method, out_dir, structures: dict, overlays: int = 4, title: str = "Benchmark",
                  config: dict = None, progress=None, overwrite: bool = False) -> dict:
    """Run ``method(case) -> label map`` on each case, evaluate it and write the report into ``out_dir``.

    Per case: the reference label map is read, the method is run and timed (its time includes reading
    its own inputs), the result is scored per structure (``{name: [label values]}``) with
    :func:`ExtremeSegLib.metrics.evaluate` and saved as ``predictions/<case>.nii.gz``. A method that
    raises :class:`InputError` on a case fails that case only: it is scored as an empty result and the
    reason is reported. Writes ``results.json``, ``results.md`` and ``overlays/<case>.png`` for
    ``overlays`` cases (spread from the worst to the best mean Dice). Returns the results dict.
    ``progress``: an optional :class:`ExtremeSegLib.progress.Progress` (bar, JSON lines, cancellation).
    """
    from ..io.volumes import read_image, read_labelmap, write_volume

    if not cases:
        raise InputError("no cases to benchmark")
    if not structures:
        raise InputError('no structures to evaluate; name at least one, e.g. "hippocampus=1,2"')
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(f"output folder {out_dir} is not empty; choose a new folder or allow overwriting "
                         "(extremeseg benchmark --overwrite)")
    require_structures_present(cases, structures)
    predictions_dir = make_folder(out_dir / "predictions")

    if progress is not None:
        progress.bar(len(cases), "benchmark")
    rows = []
    for case in cases:
        if progress is not None:
            progress.check_cancelled()
        reference = read_labelmap(case.label)
        row = {"name": case.name, "subject": case.subject}
        start = time.perf_counter()
        try:
            prediction = _prediction_array(method(case), reference, case)
        except InputError as err:
            prediction = np.zeros(reference.shape, dtype=np.int16)
            row["error"] = str(err)
        row["seconds"] = None if "error" in row else time.perf_counter() - start
        row["metrics"] = evaluate(prediction, reference.array, reference.spacing, structures)
        write_volume(reference.with_array(prediction), predictions_dir / f"{case.name}.nii.gz", overwrite=overwrite)
        rows.append(row)
        if progress is not None:
            progress.advance(1, dice=float(np.mean([m["dice"] for m in row["metrics"].values()])))
    if progress is not None:
        progress.close_bar()

    results = make_results(rows, structures, title, config)
    by_name = {case.name: case for case in cases}
    for row in _pick_overlays(rows, overlays):
        case = by_name[row["name"]]
        reference = read_labelmap(case.label)
        prediction = read_labelmap(predictions_dir / f"{case.name}.nii.gz")
        path = write_overlay_png(out_dir / "overlays" / f"{case.name}.png", read_image(case.image),
                                 _structure_map(reference.array, structures),
                                 _structure_map(prediction.array, structures))
        mean_dice = np.mean([m["dice"] for m in row["metrics"].values()])
        results["overlays"].append({"case": case.name, "path": path.relative_to(out_dir).as_posix(),
                                    "note": f"mean Dice {mean_dice:.3f}"})
    write_report(results, out_dir)
    return results
