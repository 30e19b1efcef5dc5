"""Methods a benchmark can run, by name, resolved lazily (``"module:function"``) so that listing them
imports nothing heavy and a method whose module is missing fails only when chosen.

A method is ``function(case, options) -> prediction`` (or ``function(case)`` when it needs no options):
``case`` is a :class:`~.cases.Case`, ``options`` a :class:`MethodOptions`; the prediction is an integer
label map (numpy array or :class:`Volume`) on the case's image grid, using the reference's label values
(those named in ``options.structures``).
Weak annotations are simulated from the case's ground truth with ``options.case_seed(case)``.
"""

from __future__ import annotations

import importlib
import inspect
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..annotations import ExtremePoints
from ..errors import InputError
from ..simulate import simulate_extreme_points

#: method name -> "module:function"
METHODS = {
    "ground-truth": "ExtremeSegLib.evaluation.methods:ground_truth",
    "extreme-box": "ExtremeSegLib.evaluation.methods:extreme_point_box",
    "extreme-points-rw": "ExtremeSegLib.evaluation.methods:extreme_points_random_walker",
}


@dataclass(frozen=True)
class MethodOptions:
    """What every method is told: the structures to segment, the seed and click noise for simulated
    annotations, and method-specific settings (``extra``, from ``--option key=value``)."""

    structures: dict
    seed: int = 0
    noise_mm: float = 0.0
    extra: dict = field(default_factory=dict)

    def case_seed(self, case) -> int:
        """A seed for this case that depends only on ``seed`` and the case name (not on the case order)."""
        return (int(self.seed) * 1_000_003 + zlib.crc32(case.name.encode())) % 2**32


def resolve_method(name: str):
    """The function registered as ``name`` in :data:`METHODS`."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    module_name, _, function_name = METHODS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise InputError(f"method {name!r} is not available in this installation ({err})") from err
    return getattr(module, function_name)


def make_method(name: str, options: MethodOptions):
    """``method(case) -> prediction`` for :func:`~.runner.run_benchmark`: the named method with ``options``
    (passed as ``options=`` when the function has such a parameter, else the function gets the case only)."""
    function = resolve_method(name)
    takes_options = "options" in inspect.signature(function).parameters

    def method(case):
        return function(case, options=options) if takes_options else function(case)

    method.__name__ = name
    return method


def ground_truth(case, options: MethodOptions):
    """The reference itself (a sanity check of the benchmark: Dice 1, HD95 0)."""
    from ..io.volumes import read_labelmap

    return read_labelmap(case.label)


def simulated_extreme_points(case, reference, options: MethodOptions):
    """The 6 simulated clicks of each structure of ``options.structures`` that the reference contains.

    One generator seeded per case (``options.case_seed``) draws each present structure's seed in the order
    of ``options.structures``, so every method that simulates clicks this way sees the same clicks.

    Parameters
    ----------
    case : Case
        The benchmark case (its name seeds the simulation).
    reference : Volume
        The case's label map, array ``(I, J, K)`` of label values.
    options : MethodOptions
        ``structures`` (name -> label values), ``noise_mm`` (click noise, mm) and ``seed``.

    Yields
    ------
    values : list of int
        The structure's label values (the first marks it in a prediction).
    points : ndarray, shape (6, 3)
        Its simulated extreme points in RAS mm (see :func:`~ExtremeSegLib.simulate.simulate_extreme_points`).
    """
    rng = np.random.default_rng(options.case_seed(case))
    for values in options.structures.values():
        mask = np.isin(reference.array, values)
        if not mask.any():
            continue
        yield values, simulate_extreme_points(reference.with_array(mask), options.noise_mm, seed=rng.integers(2**32))


def extreme_point_box(case, options: MethodOptions):
    """Baseline: each structure's axis-aligned box spanned by its 6 simulated extreme points.

    Boxes are filled with the structure's first label value, in the order of ``options.structures``
    (later ones drawn over earlier ones). A structure absent from the reference gets no box.
    """
    from ..io.volumes import read_labelmap

    reference = read_labelmap(case.label)
    out = np.zeros(reference.shape, dtype=np.int16)
    for values, points in simulated_extreme_points(case, reference, options):
        lo, hi = ExtremePoints.from_points(points, reference).box_index(reference)
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = values[0]
    return reference.with_array(out)


def _option_value(value):
    """``--option`` values arrive as numbers or strings: map "true"/"false"/"none" to Python."""
    if isinstance(value, str) and value.lower() in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[value.lower()]
    return value


def extreme_points_random_walker(case, options: MethodOptions):
    """The extreme-point maker (:func:`~ExtremeSegLib.pseudolabel.extreme_points.extreme_points_pseudolabel`),
    one pseudo-label per structure.

    Each structure gets the clicks of :func:`simulated_extreme_points` (the same as the ``extreme-box``
    baseline's) and its own pseudo-label; where several structures claim a voxel (P > 0.5) the most probable
    wins. ``options.extra`` holds maker parameters (``--option beta=300``). Returns the label map (a
    :class:`Volume` on the image grid).
    """
    from ..io.volumes import read_image, read_labelmap
    from ..pseudolabel.extreme_points import extreme_points_pseudolabel

    image = read_image(case.image)
    reference = read_labelmap(case.label)
    params = {key: _option_value(value) for key, value in options.extra.items()}
    out = np.zeros(image.shape, dtype=np.int16)
    best = np.zeros(image.shape, dtype=np.float32)
    for values, clicks in simulated_extreme_points(case, reference, options):
        points = ExtremePoints.from_points(clicks, image)
        foreground = extreme_points_pseudolabel(image, points, **params).probabilities[1]
        wins = (foreground > 0.5) & (foreground > best)
        out[wins] = values[0]
        best[wins] = foreground[wins]
    return image.with_array(out)
