"""Fixed train/test splits (JSON files in ``benchmarks/splits/``), made per subject so that no patient's
volumes end up on both sides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError

#: where the project's committed splits live (a source checkout; pass a path when installed elsewhere)
SPLITS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "splits"


def make_split(cases: list, n_test_subjects: int, seed: int = 0) -> dict:
    """``{"train": [...], "test": [...]}`` case names; ``n_test_subjects`` subjects drawn at random (``seed``)
    go to the test side with all their cases. Names are sorted within each side."""
    subjects = sorted({case.subject for case in cases})
    if not 0 < n_test_subjects < len(subjects):
        raise InputError(f"cannot put {n_test_subjects} of {len(subjects)} subjects in the test set; "
                         "choose a number between 1 and the number of subjects minus 1")
    rng = np.random.default_rng(seed)
    test_subjects = set(rng.choice(subjects, size=n_test_subjects, replace=False).tolist())
    return {
        "train": sorted(c.name for c in cases if c.subject not in test_subjects),
        "test": sorted(c.name for c in cases if c.subject in test_subjects),
    }


def load_split(name_or_path) -> dict:
    """Subsets of a split file: ``{"train": [case names], "test": [case names], ...}``.

    ``name_or_path`` is a JSON file, or the name of one in ``benchmarks/splits/`` (``"acdc"``).
    Every top-level key whose value is a list of names is a subset; other keys are descriptive.
    """
    path = Path(name_or_path)
    if not path.is_file():
        named = SPLITS_DIR / f"{name_or_path}.json"
        if not named.is_file():
            known = sorted(p.stem for p in SPLITS_DIR.glob("*.json")) if SPLITS_DIR.is_dir() else []
            raise InputError(f"split {str(name_or_path)!r} is neither a file nor one of the project's splits "
                             f"({', '.join(known) or 'none found'}); give the path to a split JSON file")
        path = named
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read split file {path}: {err}") from err
    subsets = {key: value for key, value in data.items()
               if isinstance(value, list) and all(isinstance(v, str) for v in value)} if isinstance(data, dict) else {}
    if not subsets:
        raise InputError(f'split file {path} lists no subsets; expected e.g. {{"train": [...], "test": [...]}}')
    return subsets
