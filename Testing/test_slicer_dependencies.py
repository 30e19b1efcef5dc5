"""What the module installs on first use: the same packages and ranges as pyproject.toml, detected without import."""

import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ExtremeSeg"))

from ExtremeSegSlicerLib.dependencies import REQUIREMENTS, missing_requirements  # noqa: E402


def test_requirements_match_pyproject():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(req for _, req in REQUIREMENTS) == sorted(declared)
    assert REQUIREMENTS[0][0] == "torch"  # installed first, through the PyTorch extension


def test_missing_packages_are_found_without_importing_them():
    assert missing_requirements() == []  # this environment has everything
    wanted = (("numpy", "numpy>=1.24"), ("no_such_package_xyz", "no-such-package-xyz>=1"))
    assert missing_requirements(wanted) == [("no_such_package_xyz", "no-such-package-xyz>=1")]
    assert "no_such_package_xyz" not in sys.modules


BLOCKED_START = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):  # a fresh Slicer: none of the packages ExtremeSeg installs
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"torch", "monai", "skimage", "nibabel", "nrrd", "tqdm", "matplotlib"}:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Blocker())
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import ExtremeSegSlicerLib.dependencies, ExtremeSegSlicerLib.logic, ExtremeSegSlicerLib.placement
import ExtremeSegSlicerLib.scribble_preview
from ExtremeSegSlicerLib.logic import ExtremeSegNodeLogic
print(ExtremeSegNodeLogic.recipes())  # none listed until the packages are there
"""


def test_the_module_loads_before_its_dependencies_are_installed():
    """What Slicer imports at startup (panel logic, effect compute step) needs none of the packages it installs."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", BLOCKED_START, str(REPO), str(REPO / "ExtremeSeg")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_background_word_matches_the_scribbles_recipe():
    from ExtremeSegSlicerLib.logic import BACKGROUND_WORD

    from ExtremeSegLib.pseudolabel.scribbles import BACKGROUND_WORD as CORE

    assert BACKGROUND_WORD == CORE
