"""``extremeseg benchmark``: run a method over a data folder and score it against the ground truth."""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

from ..errors import InputError

HELP = "run a segmentation method on evaluation cases and report Dice/HD95/precision/recall (JSON, Markdown, PNG)"


def parse_structures(text: str) -> dict:
    """``"RV=1 Myo=2 LV=3"`` or ``"hippocampus=1,2"`` (structures separated by spaces or ';') -> dict."""
    structures = {}
    for item in text.replace(";", " ").split():
        name, sep, values = item.partition("=")
        try:
            numbers = [int(v) for v in values.split(",") if v]
        except ValueError:
            numbers = []
        if not sep or not name or not numbers:
            raise InputError(f"cannot read structure {item!r}: write NAME=VALUE[,VALUE...], "
                             'e.g. --structures "hippocampus=1,2" or --structures "RV=1 Myo=2 LV=3"')
        if name in structures:
            raise InputError(f"structure {name!r} is named twice in --structures")
        structures[name] = numbers
    if not structures:
        raise InputError('--structures is empty; e.g. --structures "hippocampus=1,2"')
    return structures


def parse_options(items) -> dict:
    """``["key=value", ...]`` -> dict (numbers become int/float); method-specific settings."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"cannot read option {item!r}: write KEY=VALUE")
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                continue
        options[key] = value
    return options


def add_arguments(parser) -> None:
    parser.add_argument("--data", type=Path,
                        help="folder of cases (MSD images/ + labels/, or <name>_image/_label files)")
    parser.add_argument("--split", help="split JSON file or the name of one in benchmarks/splits (hippocampus, acdc)")
    parser.add_argument("--subset", default="test", help="subset of the split to run (default: test)")
    parser.add_argument("--method", help="method name (see --list-methods)")
    parser.add_argument("--structures", help='structures to score: "NAME=V[,V...] ...", e.g. "RV=1 Myo=2 LV=3"')
    parser.add_argument("--out", type=Path, help="output folder for results.json, results.md, overlays/, predictions/")
    parser.add_argument("--limit", type=int, help="only the first N cases (of the subset)")
    parser.add_argument("--seed", type=int, default=0, help="seed for simulated annotations (default 0)")
    parser.add_argument("--noise-mm", type=float, default=0.0, help="click noise of simulated points, sd in mm")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="method-specific setting (repeatable)")
    parser.add_argument("--overlays", type=int, default=4, help="number of cases pictured as PNG (default 4)")
    parser.add_argument("--title", help="report title (default: method and data folder)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--progress-jsonl", action="store_true", help="report progress as JSON lines on stdout")
    parser.add_argument("--list-methods", action="store_true", help="list the method names and exit")


def command_line(args) -> str:
    """The command that reproduces this run."""
    words = ["extremeseg", "benchmark", "--data", str(args.data)]
    if args.split:
        words += ["--split", str(args.split), "--subset", args.subset]
    words += ["--method", args.method, "--structures", args.structures]
    if args.limit is not None:
        words += ["--limit", str(args.limit)]
    words += ["--seed", str(args.seed), "--noise-mm", f"{args.noise_mm:g}"]
    for item in args.option or []:
        words += ["--option", item]
    words += ["--out", str(args.out)]
    return shlex.join(words)


def run(args) -> int:
    from ..evaluation import (
        METHODS,
        MethodOptions,
        discover_cases,
        load_split,
        make_method,
        run_benchmark,
        select_cases,
    )
    from ..progress import Progress

    if args.list_methods:
        for name, target in sorted(METHODS.items()):
            print(f"{name:24s} {target}")
        return 0
    missing = [flag for flag, value in (("--data", args.data), ("--method", args.method),
                                        ("--structures", args.structures), ("--out", args.out)) if value is None]
    if missing:
        raise InputError(f"missing {', '.join(missing)}; e.g. extremeseg benchmark --data DATA --method extreme-box "
                         '--structures "hippocampus=1,2" --out results/')
    structures = parse_structures(args.structures)
    options = MethodOptions(structures=structures, seed=args.seed, noise_mm=args.noise_mm,
                            extra=parse_options(args.option))
    method = make_method(args.method, options)

    cases = discover_cases(args.data)
    if args.split:
        subsets = load_split(args.split)
        if args.subset not in subsets:
            raise InputError(f"split {args.split} has no subset {args.subset!r}; it has {', '.join(subsets)}")
        cases = select_cases(cases, subsets[args.subset], f"the {args.subset} subset of {args.split}")
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"--limit must be at least 1, got {args.limit}")
        cases = cases[: args.limit]

    progress = Progress(jsonl=args.progress_jsonl)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    progress.install_signal_handlers()  # Ctrl-C stops after the current case
    config = {"command": command_line(args), "method": args.method, "data": str(args.data),
              "split": args.split, "subset": args.subset if args.split else None, "limit": args.limit,
              "seed": args.seed, "noise_mm": args.noise_mm, "options": options.extra}
    title = args.title or f"{args.method} on {args.data.name}" + (f" ({args.subset})" if args.split else "")
    try:
        results = run_benchmark(cases, method, args.out, structures, overlays=args.overlays, title=title,
                                config=config, progress=progress, overwrite=args.overwrite)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    progress.emit("done", outputs={"json": str(args.out / "results.json"), "markdown": str(args.out / "results.md")})
    if not args.progress_jsonl:
        for name in structures:
            stats = results["summary"][name]["dice"]
            print(f"{name}: Dice {stats['mean']:.3f} ± {stats['std']:.3f} over {results['n_cases']} cases")
        print(f"wrote {args.out / 'results.md'}")
    return 0
