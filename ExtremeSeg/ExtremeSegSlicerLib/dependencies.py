"""Which Python packages ExtremeSeg needs inside Slicer, and which are missing or too old (nothing is installed here).

The module asks the user before installing (:mod:`.installer`): PyTorch through the PyTorch extension, the rest
with ``slicer.util.pip_install``. The ranges match ``pyproject.toml``. Nothing here imports the packages.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

#: import name -> pip requirement, in install order (torch first: MONAI must not pull its own torch)
REQUIREMENTS = (
    ("torch", "torch>=2.1"),
    ("numpy", "numpy>=1.24"),
    ("scipy", "scipy>=1.10"),
    ("skimage", "scikit-image>=0.21"),
    ("monai", "monai>=1.3"),
    ("nibabel", "nibabel>=5.0"),
    ("nrrd", "pynrrd>=1.0"),
    ("tqdm", "tqdm>=4.60"),
)


def _release(version: str) -> tuple:
    """The leading release numbers of a version string: "2.13.0+cpu" -> (2, 13, 0); "1.3rc1" -> (1, 3)."""
    found = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(n) for n in found.group(0).split(".")) if found else ()


def _at_least(found: str, minimum: str) -> bool:
    have, want = _release(found), _release(minimum)
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) >= want + (0,) * (width - len(want))


def requirement_problem(module: str, requirement: str) -> str:
    """"" when ``requirement`` is met; else what is wrong ("not installed", "version 1.2 installed").

    The installed version is read from the package's metadata, never by importing it; a package without
    metadata (e.g. one bundled with Slicer) is taken as it is.
    """
    if importlib.util.find_spec(module) is None:
        return "not installed"
    name, _, minimum = requirement.partition(">=")
    if not minimum:
        return ""
    try:
        found = importlib.metadata.version(name.strip())
    except importlib.metadata.PackageNotFoundError:
        return ""
    return "" if _at_least(found, minimum) else f"version {found} installed"


def missing_requirements(requirements=REQUIREMENTS) -> list:
    """``(import name, pip requirement)`` of every package that is not installed or older than its range."""
    return [(module, requirement) for module, requirement in requirements if requirement_problem(module, requirement)]


def describe_missing(missing) -> str:
    """One line for the install dialog: "scikit-image>=0.21 (not installed), torch>=2.1 (version 1.13 installed)"."""
    return ", ".join(f"{requirement} ({requirement_problem(module, requirement) or 'ok now'})"
                     for module, requirement in missing)
