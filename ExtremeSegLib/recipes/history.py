"""The per-round history of a training run: ``rounds.json``, ``rounds.md`` and ``rounds.png``, each written
atomically (:func:`~ExtremeSegLib.io.volumes.write_atomically`).

Besides the per-round figures, the history holds each round's epoch log (``row["epoch_log"]``, from
:func:`~ExtremeSegLib.training.engine.fit`): the report shows Dice against elapsed training minutes over all
rounds (validation Dice where the job has validation cases, measured at about :data:`CURVE_POINTS` epochs per
round, else the training Dice of the engine's meter, on the trusted voxels of the training batches), so that a
user sees where a run stands and what more time buys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..io.volumes import write_atomically, write_text_atomically


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON at ``path``, written atomically (an existing file is replaced: run state)."""
    write_text_atomically(path, json.dumps(data, indent=1) + "\n", True)


#: about this many validation measurements per round (each costs a prediction of the validation cases)
CURVE_POINTS = 10


def evaluation_interval(epochs: int) -> int:
    """Evaluate every n-th epoch (and the last) so that a round gets about :data:`CURVE_POINTS` points."""
    return max(1, -(-int(epochs) // CURVE_POINTS))


def dice_curve(history: list) -> list:
    """Points ``{"round", "epoch", "minutes", "loss", "train_dice", "validation_dice"}`` over all rounds.

    ``minutes``: training time up to the end of that epoch (summed over rounds; predictions, refinements and
    validation are not training time). ``validation_dice`` is ``None`` at epochs that were not evaluated. A row
    without an epoch log (a history written before logs existed) gives no points.
    """
    points, elapsed = [], 0.0
    for row in history:
        for record in row.get("epoch_log") or []:
            elapsed += record["seconds"]
            points.append({"round": row["round"], "epoch": record["epoch"], "minutes": elapsed / 60.0,
                           "loss": record["loss"], "train_dice": record.get("train_dice"),
                           "validation_dice": record.get("validation_dice")})
    return points


def _curve_table(points: list) -> list:
    """Markdown lines of the Dice-against-minutes table (evaluated epochs, or about CURVE_POINTS per round)."""
    validated = any(p["validation_dice"] is not None for p in points)
    if validated:
        shown = [p for p in points if p["validation_dice"] is not None]
    else:
        shown = []
        for r in sorted({p["round"] for p in points}):
            in_round = [p for p in points if p["round"] == r]
            every = evaluation_interval(len(in_round))
            shown += [p for n, p in enumerate(in_round, start=1) if n % every == 0 or n == len(in_round)]

    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"

    which = "validation Dice (mean over classes and validation cases)" if validated else (
        "training Dice of the engine's meter (trusted voxels of the training batches; no validation cases)")
    lines = ["", "## Dice against training minutes", "",
             f"Training time summed over rounds (predictions, refinements and validation excluded); {which}.", "",
             "| Round | Epoch | Training min | Loss | Dice (train batches) | Dice (validation) |", "|---" * 6 + "|"]
    for p in shown:
        lines.append(f"| {p['round']} | {p['epoch']} | {p['minutes']:.2f} | {fmt(p['loss'], 4)} | "
                     f"{fmt(p['train_dice'])} | {fmt(p['validation_dice'])} |")
    return lines


def write_history(folder: Path, history: list, title: str) -> dict:
    """``rounds.json``, ``rounds.md`` and (with matplotlib) ``rounds.png`` of the per-round figures."""
    write_json(folder / "rounds.json", history)

    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [f"# {title}: rounds", "",
             "| Round | Epochs | Final loss | Pseudo-label Dice (train) | Network Dice (train) "
             "| Network Dice (validation) | Agreement with next labels | Train s | Predict+refine s |",
             "|---" * 9 + "|"]
    for row in history:
        lines.append(f"| {row['round']} | {row['epochs']} | {fmt(row['loss'], 4)} | {fmt(row['pseudolabel_dice'])} | "
                     f"{fmt(row['train_dice'])} | {fmt(row['validation_dice'])} | {fmt(row['agreement'], 4)} | "
                     f"{fmt(row['train_seconds'], 0)} | {fmt(row['refine_seconds'], 0)} |")
    points = dice_curve(history)
    if points:
        lines += _curve_table(points)
    write_text_atomically(folder / "rounds.md", "\n".join(lines) + "\n", True)
    outputs = {"rounds": str(folder / "rounds.json"), "rounds_table": str(folder / "rounds.md")}
    plot = plot_rounds(folder / "rounds.png", history, title)
    if plot is not None:
        outputs["rounds_plot"] = str(plot)
    return outputs


def plot_rounds(path: Path, history: list, title: str) -> Optional[Path]:
    """Dice per round and Dice against training minutes as a PNG; ``None`` when matplotlib is not installed (the
    figures are in rounds.json)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    points = dice_curve(history)
    figure = Figure(figsize=(11 if points else 6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 2 if points else 1, 1)
    rounds = [row["round"] for row in history]
    for key, name in (("pseudolabel_dice", "pseudo-labels (train)"), ("train_dice", "network (train)"),
                      ("validation_dice", "network (validation)"), ("agreement", "agreement with next labels")):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            axes.plot(rounds, [np.nan if v is None else v for v in values], marker="o", label=name)
    axes.set_xlabel("round")
    axes.set_ylabel("Dice")
    axes.set_xticks(rounds)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(loc="lower right")
    if points:
        draw_dice_curve(figure.add_subplot(1, 2, 2), points, label=None)
    figure.tight_layout()
    return write_atomically(path, True, figure.savefig)


def draw_dice_curve(axes, points: list, label: Optional[str]) -> None:
    """Dice against training minutes on ``axes``: validation Dice (markers) where measured, the training
    batches' Dice (thin line); dotted lines where a new round starts. ``label`` names the run in a legend of
    several runs (``None``: one run)."""
    minutes = [p["minutes"] for p in points]
    train = [np.nan if p["train_dice"] is None else p["train_dice"] for p in points]
    validated = [(p["minutes"], p["validation_dice"]) for p in points if p["validation_dice"] is not None]
    prefix = "" if label is None else f"{label}: "
    line = axes.plot(minutes, train, linewidth=1, alpha=0.6, label=f"{prefix}training batches")[0]
    if validated:
        axes.plot(*zip(*validated), marker="o", color=line.get_color(), label=f"{prefix}validation")
    for previous, point in zip(points, points[1:]):
        if point["round"] != previous["round"]:
            axes.axvline(previous["minutes"], linestyle=":", color="grey", linewidth=1)
    axes.set_xlabel("training minutes")
    axes.set_ylabel("Dice")
    axes.set_title("Dice against training minutes")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")


def plot_dice_curves(path: Path, runs: dict, title: str) -> Optional[Path]:
    """One PNG with the Dice-against-minutes curve of several runs (``{name: history}``, e.g. a benchmark's
    workloads); ``None`` without matplotlib or when no run has an epoch log."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    curves = {name: dice_curve(history) for name, history in runs.items()}
    curves = {name: points for name, points in curves.items() if points}
    if not curves:
        return None
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, points in curves.items():
        draw_dice_curve(axes, points, label=name)
    axes.set_title(title)
    figure.tight_layout()
    return write_atomically(path, True, figure.savefig)
