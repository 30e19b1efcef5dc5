"""A training job as one typed, JSON-serialisable config (one JSON file = one job).

The Slicer panel, the console and ``extremeseg train`` all build a :class:`JobConfig` and call
:func:`ExtremeSegLib.recipes.train`. Reading checks every key and type and says exactly what is wrong
(``training.epochs must be an integer, got "ten"``; ``unknown key "epoch" in training``); relative file
paths are taken relative to the config file's folder. Example (the smallest useful job)::

    {"recipe": "extreme_points", "output": "run1",
     "classes": [{"name": "hippocampus", "label_values": [1, 2]}],
     "cases": [{"image": "images/a.nii.gz", "points": "points/a.mrk.json"}, ...]}
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..errors import InputError
from ..training.data import InputSpec
from ..training.engine import DEVICES, TrainingSettings
from ..training.postprocess import PostprocessConfig

MODALITIES = ("mri", "ct", "other")
#: recipe name -> the config sections it sets differently from the generic defaults (``Recipe.defaults``);
#: the registry (``recipes/__init__.py``) fills it in, so this module never imports the recipes
RECIPE_DEFAULTS: Dict[str, dict] = {}


@dataclass(frozen=True)
class CaseConfig:
    """One volume and its annotations. ``name`` defaults to the image file name without its ending."""

    image: str
    points: Optional[str] = None
    label: Optional[str] = None
    scribble: Optional[str] = None
    name: Optional[str] = None


@dataclass(frozen=True)
class ClassConfig:
    """A foreground class: its name and the values that mark it in label (and scribble) files."""

    name: str
    label_values: Tuple[int, ...] = (1,)

    def __post_init__(self):
        if not self.name.strip():
            raise InputError("a class needs a non-empty name")
        if not self.label_values or any(v <= 0 for v in self.label_values):
            raise InputError(f"class {self.name!r}: label_values must be a non-empty list of values >= 1")


@dataclass(frozen=True)
class NetworkConfig:
    """The U-Net: filters per level (the number of levels follows from spacing and patch, at most
    ``max_levels``, by default one per filter count), dropout (``dropout_levels`` innermost levels; all if unset).
    ``slice_wise``: a 2D network run slice by slice across the thickest axis instead of the default 3D one
    with in-plane kernels only where slices are thick."""

    filters: Tuple[int, ...] = (16, 32, 64, 128, 256)
    max_levels: Optional[int] = None
    dropout: float = 0.0
    dropout_levels: Optional[int] = None
    norm: str = "instance"
    slice_wise: bool = False

    def __post_init__(self):
        if len(self.filters) < 3 or min(self.filters) < 1:
            raise InputError("network.filters must list at least 3 positive filter counts (one per level)")
        if self.max_levels is not None and not 3 <= self.max_levels <= len(self.filters):
            raise InputError(f"network.max_levels must lie in 3..{len(self.filters)} (the number of filters)")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError("network.dropout must lie in [0, 1)")
        if self.norm not in ("instance", "batch"):
            raise InputError("network.norm must be 'instance' or 'batch'")


@dataclass(frozen=True)
class RoundsConfig:
    """Refinement rounds (paper 000 step 4): train, predict, refine the pseudo-labels, train again...

    ``max_rounds``: training rounds at most (1 = no refinement). The loop stops earlier when the mean Dice
    between consecutive pseudo-labels reaches ``agreement``. ``erosion_mm``: the prediction's foreground
    and background are eroded by this radius and the random walker (``beta``) relabels the gap.
    ``prior_weight``: how strongly the walker in the gap is pulled towards the prediction itself (0 = the paper's
    plain walker). The plain walker moved the boundary to the strongest nearby edge and lost recall every round
    on ACDC (LV test Dice 0.845 -> 0.828 -> 0.805); with 2 the relabelled training volumes keep the network's
    Dice (0.898 vs 0.880 plain, docs/benchmarks.md) and only clear edges move the boundary.
    """

    max_rounds: int = 4
    agreement: float = 0.97
    erosion_mm: float = 4.0
    beta: float = 130.0
    prior_weight: float = 2.0

    def __post_init__(self):
        if self.max_rounds < 1:
            raise InputError("rounds.max_rounds must be at least 1")
        if not 0.0 < self.agreement <= 1.0:
            raise InputError("rounds.agreement must lie in (0, 1]")
        if self.erosion_mm < 0 or self.beta <= 0:
            raise InputError("rounds.erosion_mm must be >= 0 and rounds.beta > 0")
        if not self.prior_weight >= 0:
            raise InputError("rounds.prior_weight must be >= 0 (0 = the plain random walker)")


@dataclass(frozen=True)
class JobConfig:
    """One training job: recipe, cases, output folder and every setting (see the module docstring)."""

    recipe: str
    cases: Tuple[CaseConfig, ...]
    output: str
    classes: Tuple[ClassConfig, ...] = (ClassConfig("object"),)
    validation: Tuple[CaseConfig, ...] = ()
    modality: str = "mri"
    inputs: InputSpec = field(default_factory=InputSpec)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    pseudolabel: Dict[str, Any] = field(default_factory=dict)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    device: str = "auto"

    def __post_init__(self):
        if not self.cases:
            raise InputError("the job has no cases; list at least one under \"cases\"")
        if self.modality not in MODALITIES:
            raise InputError(f"unknown modality {self.modality!r}; choose one of {list(MODALITIES)}")
        if self.device not in DEVICES:
            raise InputError(f"unknown device {self.device!r}; choose one of {list(DEVICES)}")
        names = self.class_names
        if len(set(names)) != len(names):
            raise InputError(f"class names must differ, got {names}")
        values = [v for c in self.classes for v in c.label_values]
        if len(set(values)) != len(values):
            raise InputError("a label value belongs to two classes; give each class its own label_values")
        self.postprocess.check_classes(names)

    @property
    def class_names(self) -> list:
        """Names of the foreground classes 1..C-1 in order (class 0 is background)."""
        return [c.name for c in self.classes]

    # -- JSON -----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, base_dir=None, defaults: Optional[dict] = None) -> "JobConfig":
        """Build and check a config from plain data; relative paths are resolved against ``base_dir``.

        Sections the data leave out take ``defaults`` (``{section: {key: value}}``), key by key, under what the
        data say; ``None``: the registered defaults of the data's recipe (:data:`RECIPE_DEFAULTS`, e.g. the
        scribble recipe's cross-entropy loss).
        """
        if defaults is None:
            recipe = data.get("recipe") if isinstance(data, dict) else None
            defaults = RECIPE_DEFAULTS.get(recipe, {}) if isinstance(recipe, str) else {}
        config = from_plain(cls, with_defaults(data, defaults), "the config")
        return config.with_paths_resolved(Path(base_dir)) if base_dir is not None else config

    @classmethod
    def from_json(cls, path) -> "JobConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"config file {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise InputError(f"config file {path} is not valid JSON: {err}") from err
        return cls.from_dict(data, base_dir=path.resolve().parent)

    def to_dict(self) -> dict:
        return to_plain(self)

    def to_json(self, path, overwrite: bool = False) -> Path:
        """Write the config as JSON (atomically; an existing file is refused unless ``overwrite``)."""
        from ..io.volumes import write_text_atomically

        return write_text_atomically(path, json.dumps(self.to_dict(), indent=1) + "\n", overwrite)

    def with_paths_resolved(self, base_dir: Path) -> "JobConfig":
        """Every file path (cases, validation, output) made absolute against ``base_dir``."""
        def absolute(p):
            return None if p is None else str((base_dir / Path(p).expanduser()).resolve())

        def case(c):
            return dataclasses.replace(c, image=absolute(c.image), points=absolute(c.points),
                                       label=absolute(c.label), scribble=absolute(c.scribble))
        return dataclasses.replace(self, cases=tuple(case(c) for c in self.cases),
                                   validation=tuple(case(c) for c in self.validation), output=absolute(self.output))

    def require_files(self, needs=("points",)) -> None:
        """:class:`InputError` naming the first case whose files are missing (``needs``: per-case files required
        for training; validation cases always need a label, and points when the training cases do)."""
        groups = [("case", self.cases, needs), ("validation case", self.validation, tuple(needs) + ("label",))]
        for what, cases, required in groups:
            for n, case in enumerate(cases, start=1):
                for key in ("image",) + tuple(required):
                    if getattr(case, key) is None:
                        raise InputError(f"{what} {n} ({case.name or case.image}) has no {key} file; the "
                                         f"{self.recipe} recipe needs {', '.join(('image',) + tuple(required))} "
                                         "for every case")
                for key in ("image", "points", "label", "scribble"):
                    path = getattr(case, key)
                    if path is not None and not Path(path).is_file():
                        raise InputError(f"{what} {n}: the {key} file {path} does not exist")


# -- typed plain data <-> dataclasses --------------------------------------------------------------------

_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _parse(tp, value, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:  # the first alternative that takes the value; the last one explains a failure
            try:
                return _parse(option, value, where)
            except InputError:
                continue
        return _parse(options[-1], value, where)
    if dataclasses.is_dataclass(tp):
        return from_plain(tp, value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} must be a list, got {json.dumps(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
            raise InputError(f"{where} must be a list of {len(args)} values, got {len(value)}")
        item = args[0] if args else Any
        return tuple(_parse(item, v, f"{where}[{n}]") for n, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise InputError(f"{where} must be an object ({{...}}), got {json.dumps(value)}")
        return dict(value)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"config type {tp} of {where} is not supported")  # a bug in a dataclass, not user input
    if not ok:
        raise InputError(f"{where} must be {_TYPE_WORDS[tp]}, got {json.dumps(value)}")
    return value


def with_defaults(data, defaults: dict):
    """``data`` with ``defaults`` (``{section: {key: value}}``) merged in below each section's own keys."""
    if not defaults or not isinstance(data, dict):
        return data
    merged = dict(data)
    for section, values in defaults.items():
        given = merged.get(section, {})
        merged[section] = {**values, **given} if isinstance(given, dict) else given
    return merged


def from_plain(cls, data, where: str):
    """Build dataclass ``cls`` from a JSON object, checking keys and types (:class:`InputError` otherwise)."""
    if not isinstance(data, dict):
        raise InputError(f"{where} must be an object ({{...}}), got {json.dumps(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r} in {where}; known keys: {', '.join(fields)}")
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise InputError(f"{where} lacks {missing[0]!r}")
    prefix = "" if where == "the config" else f"{where}."
    values = {key: _parse(hints[key], value, f"{prefix}{key}") for key, value in data.items()}
    return cls(**values)


def to_plain(obj):
    """A dataclass (nested) as JSON-ready data: tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj
