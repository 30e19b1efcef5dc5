"""The ``extremeseg`` command: a thin dispatcher over ``ExtremeSegLib.commands.<name>``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``extremeseg --help`` stays fast and
commands that never train do not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .errors import CancelledError, InputError, InputWarning

#: command name -> module under ExtremeSegLib.commands (in the order --help lists them)
COMMANDS = {
    "demo": "demo",
    "simulate": "simulate",
    "pseudolabel": "pseudolabel",
    "train": "train",
    "predict": "predict",
    "export": "export",
    "benchmark": "benchmark",
}


def _load(name: str):
    return importlib.import_module(f"ExtremeSegLib.commands.{COMMANDS[name]}")


def build_parser(load_all: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="extremeseg", description="Weakly supervised 3D segmentation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _load(name) if load_all else None
        except ModuleNotFoundError:
            continue
        help_text = module.HELP if module else None
        p = sub.add_parser(name, help=help_text)
        if module:
            module.add_arguments(p)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command is None:
        build_parser(load_all=True).parse_args(argv or ["--help"])
        return 2
    module = _load(command)
    parser = argparse.ArgumentParser(prog=f"extremeseg {command}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        warnings.showwarning = _one_line_warning(command)
        return _run(command, module, args)


def _one_line_warning(command: str):
    """``warnings.showwarning`` for the command line: what is wrong about the input, one line, no source line."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InputWarning):
            print(f"extremeseg {command}: warning: {message}", file=sys.stderr)
        else:
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
    return show


def _run(command: str, module, args) -> int:
    """Run a command; its outputs are removed again when it fails (:func:`~.io.outputs.tracking_files`)."""
    from .io.outputs import os_error, tracking_files

    try:
        with tracking_files():
            return int(module.run(args) or 0)
    except InputError as err:
        print(f"extremeseg {command}: error: {err}", file=sys.stderr)
        return 2
    except CancelledError as err:
        print(f"extremeseg {command}: cancelled: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"extremeseg {command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if err.filename is None:
            raise
        # A file operation no reader or writer turned into a sentence: still a sentence about the disk, not a bug.
        print(f"extremeseg {command}: error: {os_error(err, err.filename, 'use')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
