"""ExtremeSeg: weakly supervised 3D segmentation in 3D Slicer (the module; GUI only).

The work is done by ``ExtremeSegSlicerLib.logic.ExtremeSegNodeLogic`` (MRML nodes in, nodes out, no GUI;
tested headless) and the core ``ExtremeSegLib``. This file binds the panel to a parameter node, runs
training and prediction in a child process (PythonSlicer, the same command line as outside Slicer),
polls its progress with a QTimer, and installs the Python dependencies on first use with consent.
"""

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import ctk  # noqa: F401  (loads the ctk widgets the .ui uses)
import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin

# A source checkout added as a module path keeps the core package one folder up (a built extension ships it
# beside this file instead): make "import ExtremeSegLib" work in both.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "ExtremeSegLib" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
    sys.path.append(str(_CHECKOUT))

from ExtremeSegSlicerLib.dependencies import missing_requirements  # noqa: E402
from ExtremeSegSlicerLib.logic import ANNOTATIONS, DEVICES, ExtremeSegNodeLogic  # noqa: E402

#: how often the panel reads the child's progress (ms)
POLL_INTERVAL_MS = 250


#
# ExtremeSeg
#
class ExtremeSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "ExtremeSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["ExtremeSeg developers"]
        self.parent.helpText = (
            "Weakly supervised 3D segmentation: annotate each volume cheaply (6 extreme-point clicks, a few "
            "surface points, or scribbles in the Segment Editor), train a 3D network on the pseudo-labels made "
            "from them, and get full segmentations as new segments. The trained model segments new volumes. "
            "Training runs in a background process; the same jobs run from the Python console "
            "(ExtremeSeg.ExtremeSegLogic().segment_volumes(...)) and from the extremeseg command line.")
        self.parent.acknowledgementText = (
            "Methods (see the README): extreme points with geodesic seeds, random-walker pseudo-labels and "
            "refinement rounds; extreme-point heatmaps and confidence maps as input channels; scribbles with "
            "random-walker seed areas, dense CRF and MC-dropout uncertainty recursions.")
        slicer.app.connect("startupCompleted()", registerScribbleEffect)


def registerScribbleEffect():
    """Register the "ExtremeSeg Scribbles" Segment Editor effect (as Slicer's effect template does)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    source = Path(__file__).parent / "SegmentEditorExtremeSegLib" / "SegmentEditorEffect.py"
    instance.setPythonSource(source.as_posix())
    instance.self().register()


#
# Parameter node
#
@parameterNodeWrapper
class ExtremeSegParameterNode:
    annotation: Annotated[str, Choice(list(ANNOTATIONS))] = ANNOTATIONS[0]
    currentVolume: slicer.vtkMRMLScalarVolumeNode
    trainingVolumes: list[slicer.vtkMRMLScalarVolumeNode]
    recipe: str = ""
    structureName: str = "Structure"
    epochs: Annotated[int, WithinRange(0, 100000)] = 0
    rounds: Annotated[int, WithinRange(0, 100)] = 0
    device: Annotated[str, Choice(list(DEVICES))] = DEVICES[0]
    workFolder: Path
    modelPath: Path
    predictVolume: slicer.vtkMRMLScalarVolumeNode
    predictPoints: slicer.vtkMRMLMarkupsFiducialNode
    cleanPrediction: bool = True
    outputSegmentation: slicer.vtkMRMLSegmentationNode


#
# Dependencies (installed on first use, with the user's consent)
#
def pythonExecutable():
    """PythonSlicer: the interpreter that runs ExtremeSeg's child processes (Slicer's sys.executable is the app)."""
    executable = shutil.which("PythonSlicer")
    if executable:
        return executable
    candidate = Path(slicer.app.slicerHome) / "bin" / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("PythonSlicer was not found; ExtremeSeg cannot start its background process")


def ensureDependencies(ask=True):
    """Make torch, MONAI and the other packages importable; True when they are.

    Asks first (nothing is installed at import time). PyTorch comes from the PyTorch extension
    (PyTorchUtils), which picks the build that matches the GPU driver; the rest from pip.
    """
    missing = missing_requirements()
    if not missing:
        return True
    names = ", ".join(req for _, req in missing)
    if ask and not slicer.util.confirmOkCancelDisplay(
            f"ExtremeSeg needs these Python packages, which are not installed yet: {names}.\n\n"
            "Install them now? This downloads several hundred MB (PyTorch) and can take a few minutes.",
            windowTitle="ExtremeSeg: install dependencies"):
        return False
    with slicer.util.tryWithErrorDisplay("Installing ExtremeSeg's dependencies failed.", waitCursor=True):
        if any(module == "torch" for module, _ in missing):
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                slicer.util.errorDisplay("Install the PyTorch extension (Extensions Manager), restart Slicer, "
                                         "then try again: ExtremeSeg uses it to install the right PyTorch.")
                return False
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled() and torchLogic.installTorch(askConfirmation=False) is None:
                slicer.util.errorDisplay("PyTorch could not be installed; see the Python console for details.")
                return False
        others = [req for module, req in missing if module != "torch"]
        if others:
            slicer.util.pip_install(others)
    still = missing_requirements()
    if still:
        slicer.util.errorDisplay("Still missing after installation: " + ", ".join(r for _, r in still)
                                 + ". Restart Slicer and try again.")
        return False
    return True


#
# ExtremeSegWidget
#
class ExtremeSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to the parameter node and calls the logic; long jobs go to a child process."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedAnnotationNode = None
        self._job = None  # the training or prediction job being run (or last run)
        self._run = None  # its ChildRun
        self._lastCancelledJob = None
        self._shownAnnotation = None  # (annotation, volume ID) the panel shows
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPoll)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ExtremeSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ExtremeSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.volumesComboBox.connect("checkedNodesChanged()", self.onTrainingVolumesChanged)
        self.ui.recipeComboBox.connect("currentIndexChanged(int)", self.onRecipeChanged)
        self.ui.clearPointsButton.connect("clicked(bool)", self.onClearPoints)
        self.ui.editScribblesButton.connect("clicked(bool)", self.onEditScribbles)
        self.ui.annotationTable.connect("cellDoubleClicked(int,int)", self.onTableDoubleClicked)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.predictButton.connect("clicked(bool)", self.onPredict)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.progressBar.setVisible(False)
        self.ui.pointsPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups

        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()
        self._pollTimer.stop()
        if self._run is not None and self._run.running:  # Slicer is closing: stop the child, keep its checkpoint
            self._run.cancel()
            self._run.wait(timeout=self._run.grace_s)
            self._run.kill()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)
        self.observeAnnotationNode(None)
        self._shownAnnotation = None

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node -------------------------------------------------------------------------
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.currentVolume:
            p.currentVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not p.workFolder or str(p.workFolder) in ("", "."):
            p.workFolder = self.logic.default_work_folder()
        self.syncTrainingVolumesToGUI()

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self._shownAnnotation = None  # show everything afresh
            self.onParameterNodeModified()

    def syncTrainingVolumesToGUI(self):
        """The checkable combo box has no parameter-node connector: mirror the list by hand."""
        checked = {n.GetID() for n in self._parameterNode.trainingVolumes if n}
        combo = self.ui.volumesComboBox
        wasBlocked = combo.blockSignals(True)
        for n in range(combo.nodeCount()):
            node = combo.nodeFromIndex(n)
            combo.setCheckState(node, qt.Qt.Checked if node.GetID() in checked else qt.Qt.Unchecked)
        combo.blockSignals(wasBlocked)

    def onTrainingVolumesChanged(self):
        if self._parameterNode:
            self._parameterNode.trainingVolumes = list(self.ui.volumesComboBox.checkedNodes())
        self.updateAnnotationTable()

    def onParameterNodeModified(self, caller=None, event=None):
        """Follow the bound widgets: a new annotation kind lists its recipes; a new volume shows its points."""
        p = self._parameterNode
        shown = (p.annotation, p.currentVolume.GetID() if p.currentVolume else None)
        if shown != self._shownAnnotation:
            annotationChanged = self._shownAnnotation is None or shown[0] != self._shownAnnotation[0]
            self._shownAnnotation = shown
            if annotationChanged:
                self.fillRecipes()
            self.updateAnnotationNode()
        self.updateGUIState()

    # -- annotation -----------------------------------------------------------------------------
    def fillRecipes(self):
        if not self._parameterNode:
            return
        combo = self.ui.recipeComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        if missing_requirements():
            # the recipes need torch and MONAI: Train offers to install them first
            combo.addItem("(Python packages missing: click Train to install them)", "")
        recipes = self.logic.recipes(self._parameterNode.annotation)
        for recipe in recipes:
            combo.addItem(recipe.title, recipe.name)
        if not recipes and not missing_requirements():
            # points can be placed and saved already; training waits for a recipe that reads them
            combo.addItem(f"(no method trains from {self._parameterNode.annotation} yet)", "")
        index = combo.findData(self._parameterNode.recipe)
        combo.setCurrentIndex(max(index, 0))
        combo.blockSignals(wasBlocked)
        self.onRecipeChanged(combo.currentIndex)

    def onRecipeChanged(self, index):
        if not self._parameterNode or index < 0:
            return
        name = self.ui.recipeComboBox.itemData(index)
        self._parameterNode.recipe = name or ""
        recipe = next((r for r in self.logic.recipes(self._parameterNode.annotation) if r.name == name), None)
        self.ui.recipeDescriptionLabel.text = recipe.description if recipe else ""

    def updateAnnotationNode(self):
        """Show the current volume's point list (created on first use) in the place widget."""
        p = self._parameterNode
        if not p:
            return
        scribbles = p.annotation == "scribbles"
        self.ui.pointsPlaceWidget.setVisible(not scribbles)
        self.ui.clearPointsButton.setVisible(not scribbles)
        self.ui.editScribblesButton.setVisible(scribbles)
        self.ui.structureNameLabel.setVisible(not scribbles)
        self.ui.structureNameLineEdit.setVisible(not scribbles)
        self.ui.pointsLabel.text = "Scribbles:" if scribbles else "Points:"
        node = None
        if p.currentVolume and not scribbles:
            node = self.logic.annotation_node(p.currentVolume, p.annotation, create=True)
        self.ui.pointsPlaceWidget.setCurrentNode(node)
        self.observeAnnotationNode(node)
        self.updatePlacementGuide()
        self.updateAnnotationTable()

    def observeAnnotationNode(self, node):
        events = (slicer.vtkMRMLMarkupsNode.PointAddedEvent, slicer.vtkMRMLMarkupsNode.PointRemovedEvent,
                  slicer.vtkMRMLMarkupsNode.PointModifiedEvent, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent)
        if self._observedAnnotationNode is not None:
            for event in events:
                self.removeObserver(self._observedAnnotationNode, event, self.onPointsModified)
        self._observedAnnotationNode = node
        if node is not None:
            for event in events:
                self.addObserver(node, event, self.onPointsModified)

    def onPointsModified(self, caller=None, event=None):
        self.updatePlacementGuide()
        self.updateAnnotationTable()

    def updatePlacementGuide(self):
        p = self._parameterNode
        if not p or not p.currentVolume:
            self.ui.placementGuideLabel.text = "Select a volume to annotate."
            return
        guide = self.logic.placement_guide(p.currentVolume, p.annotation)
        color = "#c0392b" if guide.error else ("#27ae60" if guide.complete else "")
        self.ui.placementGuideLabel.setStyleSheet(f"color: {color}" if color else "")
        self.ui.placementGuideLabel.text = guide.message

    def updateAnnotationTable(self):
        p = self._parameterNode
        table = self.ui.annotationTable
        rows = self.logic.annotation_status(list(p.trainingVolumes), p.annotation) if p else []
        table.setRowCount(len(rows))
        for row, (volume, node, guide) in enumerate(rows):
            for column, text in enumerate((volume.GetName(), node.GetName() if node else "(none)",
                                           guide.message if guide.error else
                                           ("ready" if guide.complete else f"{guide.count} of {guide.required}"))):
                item = qt.QTableWidgetItem(text)
                item.setData(qt.Qt.UserRole, volume.GetID())
                table.setItem(row, column, item)
        self.updateGUIState()

    def onTableDoubleClicked(self, row, column):
        item = self.ui.annotationTable.item(row, 0)
        if item and self._parameterNode:
            self._parameterNode.currentVolume = slicer.mrmlScene.GetNodeByID(item.data(qt.Qt.UserRole))

    def onClearPoints(self):
        node = self.ui.pointsPlaceWidget.currentNode()
        if node:
            node.RemoveAllControlPoints()

    def onEditScribbles(self):
        """Open the Segment Editor on the current volume's scribble segmentation (paint tools, ExtremeSeg Scribbles)."""
        p = self._parameterNode
        if not p or not p.currentVolume:
            return
        segmentationNode = self.logic.annotation_node(p.currentVolume, "scribbles", create=True)
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentationNode)
        editor.setSourceVolumeNode(p.currentVolume)
        self.updateAnnotationTable()

    # -- state ----------------------------------------------------------------------------------
    def updateGUIState(self):
        p = self._parameterNode
        busy = self._run is not None and not self._run.state.finished
        ready = bool(p and p.trainingVolumes and (p.recipe or missing_requirements()))
        self.ui.trainButton.enabled = ready and not busy
        self.ui.resumeButton.enabled = self._lastCancelledJob is not None and not busy
        self.ui.cancelButton.enabled = busy
        self.ui.predictButton.enabled = bool(p and p.predictVolume and p.modelPath and str(p.modelPath) not in ("", ".")
                                             and not busy)

    def onModelPathChanged(self, path):
        self.ui.modelInfoLabel.text = self.logic.model_summary(path) if path else ""

    # -- long jobs ------------------------------------------------------------------------------
    def onTrain(self):
        p = self._parameterNode
        if not p.recipe:  # the recipes could not be listed: their dependencies are missing
            if ensureDependencies():
                self.fillRecipes()
                self.ui.statusLabel.text = "Dependencies installed: choose the method and click Train."
            return
        if not ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot start training.", waitCursor=True):
            job = self.logic.prepare_training(
                list(p.trainingVolumes), p.annotation, p.recipe, p.workFolder, structure=p.structureName,
                epochs=p.epochs or None, rounds=p.rounds or None, device=p.device)
            self.startJob(job, self.logic.start_training(job, python=pythonExecutable()))

    def onResume(self):
        job = self._lastCancelledJob
        if job is None or not ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot resume training.", waitCursor=True):
            self.startJob(job, self.logic.start_training(job, python=pythonExecutable(), resume=True))

    def onPredict(self):
        p = self._parameterNode
        if not ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot start segmentation.", waitCursor=True):
            job = self.logic.prepare_prediction(p.modelPath, p.predictVolume, p.predictPoints, p.workFolder,
                                               device=p.device, postprocess=p.cleanPrediction)
            self.startJob(job, self.logic.start_prediction(job, python=pythonExecutable()))

    def startJob(self, job, run):
        self._job, self._run = job, run
        self._lastCancelledJob = None
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setRange(0, 0)  # busy until the child reports its epochs
        self.ui.statusLabel.text = f"{job.title}: starting..."
        self._pollTimer.start()
        self.updateGUIState()

    def onCancel(self):
        if self._run is not None:
            self._run.cancel()
            self.ui.statusLabel.text = f"{self._job.title}: cancelling (the last checkpoint is kept)..."

    def onPoll(self):
        run = self._run
        if run is None:
            self._pollTimer.stop()
            return
        for event in run.poll():
            if event["event"] == "message" and event.get("level") == "warning":
                slicer.util.showStatusMessage(event.get("text", ""), 5000)
            elif event["event"] == "log":
                logging.info(event.get("text", ""))
        state = run.state
        if state.total_epochs:
            self.ui.progressBar.setRange(0, 1000)
            self.ui.progressBar.setValue(int(1000 * state.fraction))
        self.ui.statusLabel.text = f"{self._job.title}: {state.summary()}"
        if state.finished:
            self._pollTimer.stop()
            self.onJobFinished()
        self.updateGUIState()

    def onJobFinished(self):
        job, state = self._job, self._run.state
        self.ui.progressBar.setVisible(False)
        if state.status == "cancelled":
            self._lastCancelledJob = job if job.kind == "training" else None
            return
        if state.status == "failed":
            slicer.util.errorDisplay(f"{job.title} failed: {state.error}", detailedText=self._run.stderr_tail)
            return
        with slicer.util.tryWithErrorDisplay(f"{job.title} finished, but its results could not be loaded.",
                                             waitCursor=True):
            p = self._parameterNode
            if job.kind == "training":
                results = self.logic.import_training_results(job, state)
                p.modelPath = results.model_path
                self.ui.statusLabel.text = (f"{job.title}: done; {len(results.segmentation_nodes)} segmentation(s) "
                                            f"added, model saved as {results.model_path}")
            else:
                node, segmentIds = self.logic.import_prediction(job, p.outputSegmentation)
                p.outputSegmentation = node
                self.ui.statusLabel.text = f"{job.title}: done; {len(segmentIds)} segment(s) added to {node.GetName()}"


#
# ExtremeSegLogic
#
class ExtremeSegLogic(ScriptedLoadableModuleLogic, ExtremeSegNodeLogic):
    """The console and module API: ``ExtremeSegNodeLogic`` on ``slicer.mrmlScene``, plus the parameter node.

    Example (Python console)::

        import ExtremeSeg
        logic = ExtremeSeg.ExtremeSegLogic()
        result = logic.segment_volumes([getNode("case1"), getNode("case2")],
                                       [getNode("case1 extreme points"), getNode("case2 extreme points")],
                                       recipe="extreme_points", work_folder="/data/extremeseg")
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        ExtremeSegNodeLogic.__init__(self, scene=None, python=None)

    def getParameterNode(self):
        return ExtremeSegParameterNode(super().getParameterNode())

    def default_python(self):
        return pythonExecutable()


#
# ExtremeSegTest
#
class ExtremeSegTest(ScriptedLoadableModuleTest):
    """The pytest scenarios (Testing/test_slicer_*.py), inside the Slicer application."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_extreme_points_to_segmentation()
        self.setUp()
        self.test_scribble_preview_apply_undo()

    def test_extreme_points_to_segmentation(self):
        from ExtremeSegSlicerLib import scenarios
        self.delayDisplay("Extreme points on a synthetic volume -> placement guide -> training -> new segments")
        report = scenarios.extreme_points_to_segmentation(ExtremeSegLogic(), slicer.app.temporaryPath)
        self.assertTrue(report.guide_complete, report.guide_message)
        self.assertTrue(report.user_segments_untouched)
        self.assertTrue(report.same_geometry)
        self.assertGreater(report.dice, scenarios.MIN_DICE_AFTER_TRAINING)
        self.delayDisplay("Test passed")

    def test_scribble_preview_apply_undo(self):
        from ExtremeSegSlicerLib import scenarios
        self.delayDisplay("Scribbles -> preview -> apply -> undo")
        report = scenarios.scribble_preview_apply_undo(slicer.mrmlScene)
        self.assertGreater(report.dice, scenarios.MIN_DICE_SCRIBBLE_PREVIEW)
        self.assertTrue(report.scribbles_untouched)
        self.assertTrue(report.undo_restored)
        self.delayDisplay("Test passed")
