"""Installing ExtremeSeg's Python packages inside Slicer, with the user's consent and a progress dialog (GUI).

What is missing or too old comes from :mod:`.dependencies` (headless, tested). PyTorch comes from the PyTorch
extension (``PyTorchUtils``, which picks the build that matches the GPU driver); the others from
``slicer.util.pip_install``, one package at a time so the dialog can say which one is being installed.
Dialogs are never shown under the wait cursor.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import qt
import slicer

from .dependencies import describe_missing, missing_requirements


def python_executable() -> str:
    """PythonSlicer: the interpreter that runs ExtremeSeg's child processes (Slicer's sys.executable is the app)."""
    executable = shutil.which("PythonSlicer")
    if executable:
        return executable
    candidate = Path(slicer.app.slicerHome) / "bin" / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("PythonSlicer was not found; ExtremeSeg cannot start its background process")


def _install_torch() -> str:
    """"" when PyTorch is there afterwards, else what went wrong (a sentence)."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        return ("Install the PyTorch extension (Extensions Manager), restart Slicer, then try again: ExtremeSeg "
                "uses it to install the PyTorch build that matches this computer's GPU.")
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled() and torch_logic.installTorch(askConfirmation=False) is None:
        return "PyTorch could not be installed; see the Python console for details."
    return ""


def ensure_dependencies(ask: bool = True) -> bool:
    """Make ExtremeSeg's packages importable (installing what is missing or too old); True when they are."""
    missing = missing_requirements()
    if not missing:
        return True
    if ask and not slicer.util.confirmOkCancelDisplay(
            "ExtremeSeg needs these Python packages, which are missing or too old: "
            f"{describe_missing(missing)}.\n\nInstall them now? This downloads several hundred MB (PyTorch) and "
            "can take a few minutes.", windowTitle="ExtremeSeg: install dependencies"):
        return False
    progress = slicer.util.createProgressDialog(labelText="Installing ExtremeSeg's dependencies...",
                                                maximum=len(missing), windowTitle="ExtremeSeg")
    progress.setCancelButton(None)  # pip cannot be interrupted half-way safely
    problem = ""
    try:
        for step, (module, requirement) in enumerate(missing):
            progress.labelText = f"Installing {requirement} ({step + 1} of {len(missing)})..."
            progress.value = step
            slicer.app.processEvents(qt.QEventLoop.ExcludeUserInputEvents)
            if module == "torch":
                problem = _install_torch()
            else:
                slicer.util.pip_install(requirement)
            if problem:
                break
    except Exception as err:  # noqa: BLE001  (pip and the PyTorch extension raise many kinds)
        logging.exception("ExtremeSeg: installing the dependencies failed")
        problem = f"Installing ExtremeSeg's dependencies failed: {err}"
    finally:
        progress.close()
    if not problem:
        still = missing_requirements()
        if still:
            problem = (f"Still missing or too old after installation: {describe_missing(still)}. "
                       "Restart Slicer and try again.")
    if problem:
        slicer.util.errorDisplay(problem, windowTitle="ExtremeSeg")
        return False
    return True
