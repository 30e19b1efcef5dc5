"""Allowed values of numeric settings, checked where they are read: command-line options, config sections,
``--option`` keywords and function keywords alike, with the same one-line :class:`InputError`.

A :class:`Range` is finite numbers within optional bounds (NaN and infinity are never a setting's value);
:meth:`Range.parse` is an ``argparse`` type, :func:`check_keywords` checks a dict of keyword settings against
the function they are for (unknown keys, types from the defaults, ranges).
"""

from __future__ import annotations

import argparse
import inspect
import math
from dataclasses import dataclass
from typing import Optional

from .errors import InputError


@dataclass(frozen=True)
class Range:
    """Finite numbers ``low <= x`` (``low < x`` when ``open_low``) and ``x <= high``; ``integer``: whole numbers."""

    low: Optional[float] = None
    high: Optional[float] = None
    open_low: bool = False
    integer: bool = False

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a finite number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"<= {self.high:g}")
        return kind + (" " + " and ".join(bounds) if bounds else "")

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or value <= self.high

    def check(self, value, name: str):
        """``value`` if it lies in the range, else :class:`InputError` naming the setting."""
        if not self.contains(value):
            raise InputError(f"{name} must be {self.describe()}, got {value!r}")
        return value

    def parse(self, text: str):
        """``argparse`` type: the number in ``text``, or an ``ArgumentTypeError`` (usage line, exit 2)."""
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {self.describe()}") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value


AT_LEAST_0 = Range(0.0)
POSITIVE = Range(0.0, open_low=True)
FRACTION = Range(0.0, 1.0)
COUNT = Range(1, integer=True)
SEED = Range(0, integer=True)


def check_keywords(settings: dict, function, ranges: dict, where: str, exclude=(), name="{where}.{key}") -> dict:
    """Check keyword ``settings`` for ``function``.

    Every key must be one of its keyword-only parameters (but ``exclude``); ``None`` is accepted where the default
    is ``None``; otherwise a value must be true/false where the default is, a number in ``ranges[key]`` (or any
    finite number, whole where the default is an int) where the default is a number or the key is in ``ranges``,
    a word where the default is one. Returns ``settings``; :class:`InputError` naming ``where`` and the key
    (a value as ``name`` formats it: ``pseudolabel.beta`` by default).
    """
    parameters = {name: p for name, p in inspect.signature(function).parameters.items()
                  if p.kind == p.KEYWORD_ONLY and name not in exclude}
    for key, value in settings.items():
        if key not in parameters:
            raise InputError(f"unknown {where} parameter {key!r}; known: {', '.join(sorted(parameters))}")
        default = parameters[key].default
        name_ = name.format(where=where, key=key)
        if value is None and default is None:
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise InputError(f"{name_} must be true or false, got {value!r}")
        elif key in ranges or isinstance(default, (int, float)):
            ranges.get(key, Range(integer=isinstance(default, int))).check(value, name_)
        elif isinstance(default, str) and not isinstance(value, str):
            raise InputError(f"{name_} must be a word (text), got {value!r}")
    return settings
