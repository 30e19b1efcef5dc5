"""A real headless MRML scene (slicer-core) with Slicer's module logics registered, for tests.

Usage in a test module (``conftest.py`` makes the ``mrml_scene`` fixture available to every test)::

    def test_something(mrml_scene):
        node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")

Tests that use the fixture are skipped, with the reason, when slicer-core is not installed (or when the
unrelated PyPI package named ``slicer`` shadows it). The application logic must outlive the scene and
the logics (they keep raw pointers to it): :class:`SlicerScene` holds them together.

The fixture also sets ``slicer.mrmlScene`` to the scene while the test runs, as the Slicer application
does, so code written for the application (``slicer.mrmlScene``, ``slicer.util.getNode``) runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import slicer
    import vtk
except ImportError as err:  # slicer-core absent
    slicer = None
    SLICER_MISSING_REASON = f"slicer-core is not installed ({err}); install the 'dev' extra to run MRML tests"
else:
    SLICER_MISSING_REASON = (
        None if hasattr(slicer, "vtkMRMLScene") else
        "the 'slicer' module found is not slicer-core (the unrelated PyPI package 'slicer' shadows it)"
    )
    if SLICER_MISSING_REASON:
        slicer = None

HAVE_SLICER = slicer is not None

#: module name -> logic class name, registered on the application logic as the Slicer application does
MODULE_LOGICS = {
    "Colors": "vtkSlicerColorLogic",
    "Volumes": "vtkSlicerVolumesLogic",
    "Markups": "vtkSlicerMarkupsLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
}


def require_slicer() -> None:
    """Skip the calling test when slicer-core is not available."""
    if not HAVE_SLICER:
        pytest.skip(SLICER_MISSING_REASON)


@dataclass
class SlicerScene:
    """An MRML scene with the application logic and module logics that must live as long as it."""

    scene: object
    app_logic: object
    logics: dict = field(default_factory=dict)

    def logic(self, module: str):
        """The registered logic of a module, e.g. ``logic("Segmentations")``."""
        return self.logics[module]

    def close(self) -> None:
        """Empty the scene and detach the logics (the application logic last).

        Detaching the Segmentations logic logs a harmless "GetSubjectHierarchyNode: Invalid scene given"
        warning; after this any destruction order is safe.
        """
        self.scene.Clear(1)
        for logic in self.logics.values():
            logic.SetMRMLScene(None)
        self.app_logic.SetMRMLScene(None)


def make_scene() -> SlicerScene:
    """A new scene with Volumes, Markups, Segmentations, SubjectHierarchy and Colors logics registered."""
    require_slicer()
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {}
    for module, class_name in MODULE_LOGICS.items():
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module, logic)
        logics[module] = logic
    return SlicerScene(scene, app_logic, logics)


@pytest.fixture
def mrml_scene():
    """A fresh :class:`SlicerScene`, also set as ``slicer.mrmlScene`` during the test."""
    holder = make_scene()
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = holder.scene
    try:
        yield holder
    finally:
        if previous is None:
            del slicer.mrmlScene
        else:
            slicer.mrmlScene = previous
        holder.close()


# -- real Slicer file IO through storage nodes -------------------------------------------------------
def save_node(node, path, storage_class: str | None = None) -> Path:
    """Write a node with a Slicer storage node (the node's default one unless ``storage_class`` is given)."""
    scene = node.GetScene()
    storage = scene.AddNewNodeByClass(storage_class) if storage_class else node.CreateDefaultStorageNode()
    if not storage_class:
        scene.AddNode(storage)
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise RuntimeError(f"Slicer's {storage.GetClassName()} failed to write {path}")
    return Path(path)


def load_node(scene, node_class: str, storage_class: str, path, name: str = "loaded"):
    """Read a file into a new node of ``node_class`` with Slicer's ``storage_class`` storage node."""
    node = scene.AddNewNodeByClass(node_class, name)
    storage = scene.AddNewNodeByClass(storage_class)
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        raise RuntimeError(f"Slicer's {storage_class} failed to read {path}")
    return node


def vtk_matrix(array) -> "vtk.vtkMatrix4x4":
    """A vtkMatrix4x4 from a 4x4 array."""
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r][c]))
    return m
