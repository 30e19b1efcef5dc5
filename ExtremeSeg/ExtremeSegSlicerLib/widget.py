"""The ExtremeSeg panel (GUI): the .ui bound to the parameter node, calling :class:`~.logic.ExtremeSegNodeLogic`.

Long jobs run in a child process (the ``extremeseg`` command line run by PythonSlicer), read by a QTimer.
The testable parts live in headless modules: the binding bookkeeping (:mod:`.parameter_binding`), what is
ready and what a model file is (:mod:`.logic`), what is installed (:mod:`.dependencies`).
"""

import logging
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.parameterNodeWrapper.guiConnectors import ctkPathLineEditToPathConnector
from slicer.util import VTKObservationMixin

from .installer import ensure_dependencies, python_executable
from .logic import ANNOTATIONS, DEVICES, ModelInfo, optional_path, present_nodes
from .parameter_binding import ParameterNodeBinding, bound_widgets

#: how often the panel reads the child's progress (ms)
POLL_INTERVAL_MS = 250
#: the model file is read this long after the last edit of its path (ms), not on every keystroke
MODEL_INFO_DELAY_MS = 400


@parameterNodeWrapper
class ExtremeSegParameterNode:
    annotation: Annotated[str, Choice(list(ANNOTATIONS))] = ANNOTATIONS[0]
    currentVolume: slicer.vtkMRMLScalarVolumeNode
    trainingVolumes: list[slicer.vtkMRMLScalarVolumeNode]
    recipe: str = ""
    structureName: str = "Structure"
    epochs: Annotated[int, WithinRange(0, 100000)] = 0  # 0: the recipe's default (the spin box says so)
    rounds: Annotated[int, WithinRange(0, 100)] = 0
    device: Annotated[str, Choice(list(DEVICES))] = DEVICES[0]
    workFolder: Path  # Path() (".") is unset: the logic's default folder
    modelPath: Path
    predictVolume: slicer.vtkMRMLScalarVolumeNode
    predictPoints: slicer.vtkMRMLMarkupsFiducialNode
    cleanPrediction: bool = True
    outputSegmentation: slicer.vtkMRMLSegmentationNode


class UnsetPathConnector(ctkPathLineEditToPathConnector):
    """A path field bound to a ``Path`` parameter that shows an unset path (``Path()``, i.e. ".") as empty."""

    def read(self):
        text = self._widget.currentPath
        return self._type(text) if text else self._type()

    def write(self, value) -> None:
        path = optional_path(value)
        self._widget.currentPath = "" if path is None else str(path)


class ExtremeSegPanel(VTKObservationMixin):
    """The panel's behaviour; ``ExtremeSegWidget`` (the module file) creates it and forwards enter/exit/cleanup."""

    def __init__(self, moduleWidget, logic):
        VTKObservationMixin.__init__(self)
        self.moduleWidget = moduleWidget
        self.logic = logic
        self._parameterNode = None
        self._observedAnnotationNode = None
        self._job = None  # the PreparedJob being run (or last run)
        self._run = None  # its ChildRun
        self._lastCancelledJob = None
        self._shownAnnotation = None  # (annotation, volume) the panel shows
        self._modelInfo = ModelInfo("", False)  # the model file as last read (after the path stopped changing)
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPoll)
        self._modelInfoTimer = qt.QTimer()
        self._modelInfoTimer.setSingleShot(True)
        self._modelInfoTimer.setInterval(MODEL_INFO_DELAY_MS)
        self._modelInfoTimer.connect("timeout()", self.updateModelInfo)

        uiWidget = slicer.util.loadUI(moduleWidget.resourcePath("UI/ExtremeSeg.ui"))
        moduleWidget.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        mapping = bound_widgets(self.ui)
        for name in ("workFolder", "modelPath"):
            mapping[name] = UnsetPathConnector(mapping[name], Path)
        self._binding = ParameterNodeBinding(mapping)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self.onNodeRemoved)

        self.ui.volumesComboBox.connect("checkedNodesChanged()", self.onTrainingVolumesChanged)
        self.ui.recipeComboBox.connect("currentIndexChanged(int)", self.onRecipeChanged)
        self.ui.startPointsButton.connect("clicked(bool)", self.onStartPoints)
        self.ui.clearPointsButton.connect("clicked(bool)", self.onClearPoints)
        self.ui.editScribblesButton.connect("clicked(bool)", self.onEditScribbles)
        self.ui.annotationTable.connect("cellDoubleClicked(int,int)", self.onTableDoubleClicked)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.predictButton.connect("clicked(bool)", self.onPredict)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", lambda _path: self._modelInfoTimer.start())
        self.ui.progressBar.setVisible(False)
        self.ui.pointsPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups

    @property
    def busy(self) -> bool:
        return self._run is not None and not self._run.state.finished

    # -- life cycle -----------------------------------------------------------------------------------
    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        """The panel is hidden; it stays bound to the parameter node (see :meth:`setParameterNode`)."""

    def cleanup(self):
        """Slicer closes: the child is stopped (its last checkpoint kept), nothing outlives the application."""
        self.setParameterNode(None)
        self.removeObservers()
        self._pollTimer.stop()
        self._modelInfoTimer.stop()
        if self._run is not None and self._run.running:
            self._run.cancel()
            self._run.wait(timeout=self._run.grace_s)
            self._run.kill()

    def onSceneStartClose(self, caller, event):
        if self.busy and not self._job.detached:
            # the scene's volumes go away: the job either stops or finishes into its files only
            if slicer.util.confirmYesNoDisplay(
                    f"{self._job.title} is still running. Cancel it?\n\nYes: cancel it"
                    f"{' (the last checkpoint is kept, so it can be resumed)' if self._job.kind == 'training' else ''}."
                    f"\nNo: let it finish; its results stay in {self._job.folder} and are not added to the new "
                    "scene.", windowTitle="ExtremeSeg"):
                self.onCancel()
            else:
                self._job.detach()
                self._lastCancelledJob = None
        self.setParameterNode(None)
        self.observeAnnotationNode(None)
        self._shownAnnotation = None

    def onSceneEndClose(self, caller, event):
        if self.moduleWidget.parent.isEntered:
            self.initializeParameterNode()

    def onNodeRemoved(self, caller, event):
        """A deleted training volume leaves ``None`` in the list: drop it."""
        p = self._parameterNode
        if p is not None and not slicer.mrmlScene.IsClosing():
            volumes = list(p.trainingVolumes)
            if any(v is None for v in volumes):
                p.trainingVolumes = present_nodes(volumes)
                self.syncTrainingVolumesToGUI()

    # -- parameter node ---------------------------------------------------------------------------------
    def initializeParameterNode(self):
        p = self.logic.getParameterNode()
        if not p.currentVolume:
            p.currentVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if optional_path(p.workFolder) is None:
            p.workFolder = self.logic.default_work_folder()
        self.setParameterNode(p)
        self.syncTrainingVolumesToGUI()

    def setParameterNode(self, wrapper):
        """Bind the widgets to ``wrapper`` (``None``: to nothing); the previous binding is undone exactly once.

        Bound once per parameter node, not per module entry: every ``connectParametersToGui`` call also leaves
        a ModifiedEvent observer on the node that ``disconnectGui`` does not remove (Slicer 5.8 and later).
        """
        if self._parameterNode is not None and self._parameterNode is not wrapper:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        elif self._parameterNode is wrapper and self._binding.connected:
            return
        self._binding.connect(wrapper)
        self._parameterNode = wrapper
        if wrapper is not None:
            self.addObserver(wrapper, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self._shownAnnotation = None  # show everything afresh
            self.onParameterNodeModified()
            self._modelInfoTimer.start()

    def syncTrainingVolumesToGUI(self):
        """The checkable combo box has no parameter-node connector: mirror the list by hand."""
        if self._parameterNode is None:
            return
        checked = {n.GetID() for n in present_nodes(self._parameterNode.trainingVolumes)}
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
        """Follow the bound widgets: a new annotation kind lists its methods; a new volume shows its points."""
        p = self._parameterNode
        if p is None:
            return
        shown, before = (p.annotation, p.currentVolume), self._shownAnnotation
        annotationChanged = before is None or shown[0] != before[0]
        volumeChanged = before is None or shown[1] is not before[1]
        if annotationChanged or volumeChanged:
            self._shownAnnotation = shown
            if annotationChanged:
                self.fillRecipes()
            if volumeChanged and p.currentVolume is not None:
                slicer.util.setSliceViewerLayers(background=p.currentVolume, fit=True)  # show what is annotated
            self.updateAnnotationNode()
        self.updateGUIState()

    # -- annotation -------------------------------------------------------------------------------------
    def fillRecipes(self):
        p = self._parameterNode
        combo = self.ui.recipeComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        recipes = self.logic.recipes(p.annotation)
        for recipe in recipes:
            combo.addItem(recipe.title, recipe.name)
        if not recipes:  # points can be placed and saved already; training waits for a method that reads them
            combo.addItem(f"(no method trains from {p.annotation} yet)", "")
        combo.setCurrentIndex(max(combo.findData(p.recipe), 0))
        combo.blockSignals(wasBlocked)
        self.onRecipeChanged(combo.currentIndex)

    def onRecipeChanged(self, index):
        p = self._parameterNode
        if not p or index < 0:
            return
        name = self.ui.recipeComboBox.itemData(index) or ""
        if p.recipe != name:
            p.recipe = name
        recipe = next((r for r in self.logic.recipes(p.annotation) if r.name == name), None)
        if recipe is None:
            self.ui.recipeDescriptionLabel.text = ""
            return
        inference = ("The trained model needs the same annotation on each new volume." if recipe.clicks_at_inference
                     else "The trained model segments new volumes by itself (no clicks).")
        self.ui.recipeDescriptionLabel.text = f"{recipe.description} {inference}"

    def updateAnnotationNode(self):
        """Show the current volume's point list in the place widget; a list is made only when placing starts."""
        p = self._parameterNode
        scribbles = p.annotation == "scribbles"
        node = None
        if p.currentVolume and not scribbles:
            node = self.logic.annotation_node(p.currentVolume, p.annotation, create=False)
        self.ui.pointsPlaceWidget.setVisible(not scribbles and node is not None)
        self.ui.startPointsButton.setVisible(not scribbles and node is None)
        self.ui.startPointsButton.enabled = p.currentVolume is not None
        self.ui.clearPointsButton.setVisible(not scribbles)
        self.ui.editScribblesButton.setVisible(scribbles)
        self.ui.structureNameLabel.setVisible(not scribbles)
        self.ui.structureNameLineEdit.setVisible(not scribbles)
        self.ui.pointsLabel.text = "Scribbles:" if scribbles else "Points:"
        self.ui.pointsPlaceWidget.setCurrentNode(node)
        self.observeAnnotationNode(node)
        self.updatePlacementGuide()
        self.updateAnnotationTable()

    def onStartPoints(self):
        p = self._parameterNode
        if not p or not p.currentVolume:
            return
        self.logic.annotation_node(p.currentVolume, p.annotation, create=True)
        self.updateAnnotationNode()
        self.ui.pointsPlaceWidget.setPlaceModeEnabled(True)

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
        rows = self.logic.annotation_status(p.trainingVolumes, p.annotation) if p else []
        table.setRowCount(len(rows))
        for row, (volume, node, guide) in enumerate(rows):
            state = (guide.message if guide.error
                     else "ready" if guide.complete else f"{guide.count} of {guide.required}")
            for column, text in enumerate((volume.GetName(), node.GetName() if node else "(none)", state)):
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

    # -- state ------------------------------------------------------------------------------------------
    def updateGUIState(self):
        p = self._parameterNode
        if p is None:
            return
        ready, message = self.logic.training_readiness(p.trainingVolumes, p.annotation, p.recipe)
        self.ui.trainButton.enabled = ready and not self.busy
        self.ui.trainButton.toolTip = message if not self.busy else "A job is running."
        self.ui.resumeButton.enabled = self._lastCancelledJob is not None and not self.busy
        self.ui.cancelButton.enabled = self.busy
        info = self._modelInfo
        needsClicks = info.usable and info.needs_clicks
        self.ui.predictPointsLabel.setVisible(needsClicks)
        self.ui.predictPointsSelector.setVisible(needsClicks)
        self.ui.predictButton.enabled = bool(info.usable and p.predictVolume and not self.busy
                                             and (p.predictPoints or not needsClicks))

    def updateModelInfo(self):
        """Read the model file (once per file version; the logic caches) after the path stopped changing."""
        p = self._parameterNode
        if p is None:
            return
        self._modelInfo = self.logic.model_info(p.modelPath)
        self.ui.modelInfoLabel.text = self._modelInfo.summary
        self.updateGUIState()

    # -- long jobs --------------------------------------------------------------------------------------
    def onTrain(self):
        p = self._parameterNode
        if not ensure_dependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot start training.", waitCursor=True):
            job = self.logic.prepare_training(
                p.trainingVolumes, p.annotation, p.recipe, optional_path(p.workFolder), structure=p.structureName,
                epochs=p.epochs or None, rounds=p.rounds or None, device=p.device)
            self.startJob(job, self.logic.start_training(job, python=python_executable()))

    def onResume(self):
        job = self._lastCancelledJob
        if job is None or not ensure_dependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot resume training.", waitCursor=True):
            self.startJob(job, self.logic.start_training(job, python=python_executable(), resume=True))

    def onPredict(self):
        p = self._parameterNode
        if not ensure_dependencies():
            return
        with slicer.util.tryWithErrorDisplay("Cannot start segmentation.", waitCursor=True):
            job = self.logic.prepare_prediction(p.modelPath, p.predictVolume, p.predictPoints,
                                                optional_path(p.workFolder), device=p.device,
                                                postprocess=p.cleanPrediction)
            self.startJob(job, self.logic.start_prediction(job, python=python_executable()))

    def startJob(self, job, run):
        self._job, self._run = job, run
        self._lastCancelledJob = None
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setRange(0, 0)  # busy until the child reports its epochs
        self.ui.statusLabel.text = f"{job.title}: starting..."
        self._pollTimer.start()
        self.updateGUIState()

    def onCancel(self):
        if self.busy:
            self._run.cancel()
            kept = " (the last checkpoint is kept)" if self._job.kind == "training" else ""
            self.ui.statusLabel.text = f"{self._job.title}: cancelling{kept}..."

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
            self._lastCancelledJob = job if job.kind == "training" and not job.detached else None
            return
        if state.status == "failed":
            slicer.util.errorDisplay(f"{job.title} failed: {state.error}", detailedText=self._run.stderr_tail)
            return
        if job.detached:  # its scene was closed: nothing is added to this one
            self.ui.statusLabel.text = f"{job.title}: done; its results are in {job.folder}"
            return
        # the module may be closed (no bound parameter node): the logic's node is the same one
        p = self._parameterNode or self.logic.getParameterNode()
        error = None
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            if job.kind == "training":
                results = self.logic.import_training_results(job, state)
                p.modelPath = results.model_path
                text = (f"{job.title}: done; {len(results.segmentation_nodes)} segmentation(s) added, model saved "
                        f"as {results.model_path}")
            else:
                node, segmentIds = self.logic.import_prediction(job, p.outputSegmentation)
                p.outputSegmentation = node
                text = f"{job.title}: done; {len(segmentIds)} segment(s) added to {node.GetName()}"
        except Exception as err:  # noqa: BLE001  (shown to the user below, outside the wait cursor)
            logging.exception("ExtremeSeg: loading the results failed")
            error, text = err, f"{job.title}: finished, but its results could not be loaded"
        finally:
            slicer.app.restoreOverrideCursor()
        self.ui.statusLabel.text = text
        if error is not None:
            slicer.util.errorDisplay(f"{text}: {error}. The files are in {job.folder}.")
