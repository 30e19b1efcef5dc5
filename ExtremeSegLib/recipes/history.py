"""The per-round history of a training run: ``rounds.json``, ``rounds.md`` and ``rounds.png``, each written
atomically (:func:`~ExtremeSegLib.io.volumes.write_atomically`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..io.volumes import write_atomically, write_text_atomically


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON at ``path``, written atomically (an existing file is replaced: run state)."""
    write_text_atomically(path, json.dumps(data, indent=1) + "\n", True)


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
    write_text_atomically(folder / "rounds.md", "\n".join(lines) + "\n", True)
    outputs = {"rounds": str(folder / "rounds.json"), "rounds_table": str(folder / "rounds.md")}
    plot = plot_rounds(folder / "rounds.png", history, title)
    if plot is not None:
        outputs["rounds_plot"] = str(plot)
    return outputs


def plot_rounds(path: Path, history: list, title: str) -> Optional[Path]:
    """Dice per round as a PNG; ``None`` when matplotlib is not installed (the figures are in rounds.json)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
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
    figure.tight_layout()
    return write_atomically(path, True, figure.savefig)
