"""Benchmark results: one dict (per-case metrics, mean/std per structure and metric, timings, config,
versions) written as ``results.json`` and a Markdown ``results.md``. Any benchmark can build its results
with :func:`make_results` and write them with :func:`write_report`.

In the JSON an infinite distance (HD95 when one mask is empty) is written as ``null``; summaries are
over the finite values, with ``n_infinite`` counting the others.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from ..io.volumes import write_text_atomically
from ..metrics import METRICS

_PACKAGES = ("numpy", "scipy", "scikit-image", "nibabel", "pynrrd", "torch", "monai")
_LABELS = {"dice": "Dice", "hd95": "HD95 (mm)", "precision": "Precision", "recall": "Recall"}


def benchmark_command(script: str, argv=None) -> str:
    """The shell command that reproduces a benchmark run: ``script`` (repository-relative) with ``argv`` (default:
    this process's arguments), under the shared CPU lock with the project's virtual environment."""
    args = list(argv if argv is not None else sys.argv[1:])
    return shlex.join(["flock", "/tmp/extremeseg-cpu.lock", ".venv/bin/python", script] + args)


def cpu_model() -> str:
    """The processor's name (training speed differs several-fold between the machines a session may get)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
    except OSError:
        return platform.processor() or platform.machine()
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    vector = next((f for f in ("avx512f", "avx2", "avx") if f in fields.get("flags", "").split()), "no avx")
    return (f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}, {vector}), {os.cpu_count()} CPUs")


def versions() -> dict:
    """Versions of Python, ExtremeSeg (and its git commit when run from a checkout) and the main packages, and
    the processor the figures were measured on."""
    from .. import __version__

    out = {"python": platform.python_version(), "extremeseg": __version__, "cpu": cpu_model()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _stats(values) -> dict:
    values = [v for v in values if v is not None]
    finite = [float(v) for v in values if math.isfinite(v)]
    out = {"mean": None, "std": None, "median": None, "n": len(finite), "n_infinite": len(values) - len(finite)}
    if finite:
        out.update(mean=float(np.mean(finite)), std=float(np.std(finite)), median=float(np.median(finite)))
    return out


def summarise(cases: list, structures: dict) -> dict:
    """``{structure: {metric: {"mean", "std", "median", "n", "n_infinite"}}}`` over ``cases`` (rows with
    ``"metrics": {structure: {metric: value}}``), plus ``"mean"``: the mean over structures of each mean."""
    summary = {name: {metric: _stats([c["metrics"][name][metric] for c in cases]) for metric in METRICS}
               for name in structures}
    summary["mean"] = {}
    for metric in METRICS:
        means = [summary[name][metric]["mean"] for name in structures if summary[name][metric]["mean"] is not None]
        summary["mean"][metric] = {"mean": float(np.mean(means)) if means else None}
    return summary


def make_results(cases: list, structures: dict, title: str, config: dict = None) -> dict:
    """The results dict :func:`write_report` writes.

    ``cases``: one dict per case with ``"name"``, ``"metrics"`` (:func:`ExtremeSegLib.metrics.evaluate`'s
    output), ``"seconds"`` and optionally ``"subject"``, ``"error"`` (the reason a case failed).
    ``config``: how the run was made (command line, method, options), stored as given.
    """
    seconds = [c["seconds"] for c in cases if c.get("seconds") is not None]
    return {
        "title": title,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config or {}),
        "versions": versions(),
        "structures": {name: [int(v) for v in values] for name, values in structures.items()},
        "metrics": list(METRICS),
        "n_cases": len(cases),
        "n_failed": sum(1 for c in cases if c.get("error")),
        "summary": summarise(cases, structures),
        "timing": {
            "seconds_per_case_mean": float(np.mean(seconds)) if seconds else None,
            "seconds_per_case_std": float(np.std(seconds)) if seconds else None,
            "seconds_total": float(np.sum(seconds)) if seconds else None,
        },
        "cases": cases,
        "overlays": [],
    }


def _json_safe(value):
    """Replace non-finite floats by None (JSON has no infinity) and numpy scalars/paths by plain values."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _fmt(value, metric: str) -> str:
    if value is None:
        return "–"
    if not math.isfinite(value):
        return "inf"
    return f"{value:.2f}" if metric == "hd95" else f"{value:.3f}"


def _mean_std(stats: dict, metric: str) -> str:
    if stats["mean"] is None:
        text = "–"
    else:
        text = f"{_fmt(stats['mean'], metric)} ± {_fmt(stats['std'], metric)}"
    if stats.get("n_infinite"):
        text += f" ({stats['n_infinite']} inf)"
    return text


def markdown(results: dict) -> str:
    """The Markdown report: summary table, timings, per-case table, failures, overlay pictures."""
    structures = list(results["structures"])
    metrics = results["metrics"]
    config = results.get("config", {})
    lines = [f"# {results['title']}", ""]
    if config.get("command"):
        lines += ["```", config["command"], "```", ""]
    lines += [f"{results['n_cases']} cases, {results['created']}, ExtremeSeg {results['versions'].get('extremeseg')}"
              + (f" ({results['versions']['git_commit']})" if results["versions"].get("git_commit") else "")
              + ". Mean ± standard deviation over cases.", ""]
    lines += ["| Structure | " + " | ".join(_LABELS.get(m, m) for m in metrics) + " |",
              "|---" * (len(metrics) + 1) + "|"]
    for name in structures:
        cells = [_mean_std(results["summary"][name][m], m) for m in metrics]
        values = ", ".join(map(str, results["structures"][name]))
        lines.append(f"| {name} (labels {values}) | " + " | ".join(cells) + " |")
    if len(structures) > 1:
        cells = [_fmt(results["summary"]["mean"][m]["mean"], m) for m in metrics]
        lines.append("| mean of structures | " + " | ".join(cells) + " |")
    timing = results["timing"]
    if timing.get("seconds_per_case_mean") is not None:
        lines += ["", f"Time per case: {timing['seconds_per_case_mean']:.3g} ± {timing['seconds_per_case_std']:.2g} s "
                      f"(total {timing['seconds_total']:.3g} s)."]
    if results.get("n_failed"):
        lines += ["", f"**{results['n_failed']} case(s) failed** (scored as an empty result):", ""]
        lines += [f"- {c['name']}: {c['error']}" for c in results["cases"] if c.get("error")]

    lines += ["", "## Per case", "",
              "| Case | " + " | ".join(f"{s} Dice | {s} HD95 (mm)" for s in structures) + " | Seconds |",
              "|---" * (2 * len(structures) + 2) + "|"]
    for case in results["cases"]:
        cells = []
        for s in structures:
            cells += [_fmt(case["metrics"][s]["dice"], "dice"), _fmt(case["metrics"][s]["hd95"], "hd95")]
        seconds = case.get("seconds")
        cells.append("–" if seconds is None else f"{seconds:.3f}")
        lines.append(f"| {case['name']} | " + " | ".join(cells) + " |")

    if results.get("overlays"):
        lines += ["", "## Pictures", "",
                  "Ground truth green, result red, both yellow; slices normal to voxel axes K, J, I through the "
                  "object, drawn to physical scale.", ""]
        for overlay in results["overlays"]:
            lines += [f"**{overlay['case']}** ({overlay['note']})", "", f"![{overlay['case']}]({overlay['path']})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: dict, out_dir, title: str = None) -> dict:
    """Write ``results.json`` and ``results.md`` into ``out_dir``; returns ``{"json": path, "markdown": path}``.

    ``title`` replaces the results' title when given. Overlay paths in ``results["overlays"]`` are taken
    relative to ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if title:
        results = {**results, "title": title}
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    # a report folder belongs to its benchmark run: its two files are replaced, each atomically
    write_text_atomically(json_path, json.dumps(_json_safe(results), indent=1, allow_nan=False) + "\n", True)
    write_text_atomically(md_path, markdown(results), True)
    return {"json": json_path, "markdown": md_path}
