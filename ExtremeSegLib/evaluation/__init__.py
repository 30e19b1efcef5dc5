"""Evaluation: case discovery, fixed splits, methods by name, the benchmark runner and its reports."""

from .cases import Case, discover_cases, select_cases
from .methods import METHODS, MethodOptions, make_method, resolve_method
from .report import make_results, write_report
from .runner import run_benchmark
from .splits import load_split, make_split

__all__ = ["Case", "discover_cases", "select_cases", "METHODS", "MethodOptions", "make_method", "resolve_method",
           "make_results", "write_report", "run_benchmark", "load_split", "make_split"]
