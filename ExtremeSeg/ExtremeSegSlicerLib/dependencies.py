"""Which Python packages ExtremeSeg needs inside Slicer, and which are missing (nothing is installed here).

The module asks the user before installing (``ensureDependencies`` in ``ExtremeSeg.py``): PyTorch
through the PyTorch extension, the rest with ``slicer.util.pip_install``. The ranges match
``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util

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


def missing_requirements(requirements=REQUIREMENTS) -> list:
    """``(import name, pip requirement)`` of every package that cannot be imported, without importing it."""
    return [(module, requirement) for module, requirement in requirements
            if importlib.util.find_spec(module) is None]
