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
print(" ".join(r.name for r in ExtremeSegNodeLogic.recipes()))  # listed from the static catalog
print(ExtremeSegNodeLogic().model_summary(sys.argv[3]))  # a sentence, not an exception
"""


def test_the_module_loads_before_its_dependencies_are_installed():
    """What Slicer imports at startup (panel logic, effect compute step) needs none of the packages it installs."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", BLOCKED_START, str(REPO), str(REPO / "ExtremeSeg"), __file__],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    names, summary = done.stdout.strip().splitlines()
    assert names.split() == ["extreme_points", "inextremis", "scribbles", "weak_net", "fully_supervised"]
    assert summary.startswith("Install ExtremeSeg's dependencies to read model files")


LIST_METHODS = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from ExtremeSegSlicerLib.logic import ExtremeSegNodeLogic
recipes = ExtremeSegNodeLogic.recipes("extreme points")
assert recipes and recipes[0].name == "extreme_points", recipes
heavy = sorted(m for m in ("torch", "monai", "skimage") if m in sys.modules)
assert not heavy, f"listing the methods imported {heavy}"
"""


def test_listing_the_methods_imports_no_torch():
    """What the panel does when it opens: with torch installed, it still must not load it into Slicer."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", LIST_METHODS, str(REPO), str(REPO / "ExtremeSeg")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_packages_older_than_their_range_are_reported():
    from ExtremeSegSlicerLib.dependencies import describe_missing, requirement_problem

    assert requirement_problem("numpy", "numpy>=1.24") == ""
    assert requirement_problem("numpy", "numpy>=999.0").startswith("version ")
    assert missing_requirements((("numpy", "numpy>=999.0"),)) == [("numpy", "numpy>=999.0")]
    assert describe_missing([("no_such_package_xyz", "no-such-package-xyz>=1")]) == (
        "no-such-package-xyz>=1 (not installed)")
    assert requirement_problem("torch", "torch>=2.1") == ""  # "2.13.0+cpu": local build tags are ignored


def test_the_background_word_matches_the_scribbles_recipe():
    from ExtremeSegSlicerLib.logic import BACKGROUND_WORD

    from ExtremeSegLib.pseudolabel.scribbles import BACKGROUND_WORD as CORE

    assert BACKGROUND_WORD == CORE
