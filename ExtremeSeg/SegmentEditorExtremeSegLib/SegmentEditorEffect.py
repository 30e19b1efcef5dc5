"""Segment Editor effect "ExtremeSeg Scribbles": scribbles painted as segments -> previewed segmentation.

Thin GUI over ``ExtremeSegSlicerLib.scribble_preview`` (tested headless): the visible segments are the
classes, one of them chosen as the background; Preview runs the random walker from the scribbles (with a
trained ExtremeSeg model, its prediction is the prior and the scribbles correct it) and shows the result
in a preview segmentation; Apply saves the state for undo and adds the result as new segments, inside the
Segment Editor's editable area and intensity range; Cancel drops the preview. The scribbles themselves are
never modified. The model's prediction runs in a child process (``extremeseg predict``, as in the panel)
with a progress dialog that can cancel it; missing packages are offered for installation first.
"""

import logging
import os

import ctk
import qt
import slicer
import vtk
from ExtremeSegSlicerLib.scribble_preview import (
    apply_preview,
    compute_scribble_preview,
    editable_mask,
    prior_from_files,
    show_preview,
)
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

#: this effect's own reference from the Segment Editor's parameter node to its preview (the shared
#: "SegmentationResultPreview" belongs to Slicer's auto-complete effects)
PREVIEW_REFERENCE_ROLE = "ExtremeSegScribblesPreview"
PREVIEW_OPACITY = 0.6
#: how often the model's child process is read (ms)
POLL_INTERVAL_MS = 250


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Random-walker (or model-guided) segmentation from scribble segments, with preview, apply and undo."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "ExtremeSeg Scribbles"
        scriptedEffect.perSegment = False  # works on all visible segments at once
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self._preview = None
        self._modelRun = None  # (job, ChildRun, progress dialog) while the model predicts
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollModel)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        return ("<html>Segment from scribbles: paint a few strokes in each structure as its own segment, and "
                "strokes in the background as another segment, with the usual tools (Paint, Draw...).<br>"
                "<b>Background segment</b>: which painted segment is the background. Every other visible segment "
                "is a class.<br><b>Preview</b> computes the segmentation (a random walker from the scribbles; with "
                "an ExtremeSeg model, the model's prediction corrected by the scribbles). Paint more and preview "
                "again until it is right.<br><b>Apply</b> adds the result as new segments (Undo reverts it); the "
                "scribbles stay, ready for training in the ExtremeSeg module.</html>")

    # -- options ---------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        self.backgroundSegmentComboBox = qt.QComboBox()
        self.backgroundSegmentComboBox.setToolTip("The painted segment that marks the background.")
        self.scriptedEffect.addLabeledOptionsWidget("Background segment:", self.backgroundSegmentComboBox)

        self.classesLabel = qt.QLabel()
        self.classesLabel.wordWrap = True
        self.scriptedEffect.addLabeledOptionsWidget("Classes:", self.classesLabel)

        self.betaSlider = ctk.ctkSliderWidget()
        self.betaSlider.setToolTip("Edge sensitivity of the random walker: higher values stop more at intensity edges.")
        self.betaSlider.minimum = 10
        self.betaSlider.maximum = 1000
        self.betaSlider.singleStep = 10
        self.betaSlider.decimals = 0
        self.scriptedEffect.addLabeledOptionsWidget("Edge sensitivity:", self.betaSlider)

        self.modelPathLineEdit = ctk.ctkPathLineEdit()
        self.modelPathLineEdit.nameFilters = ["ExtremeSeg model (*.pt)", "All files (*)"]
        self.modelPathLineEdit.setToolTip("Optional: a model trained by ExtremeSeg; its prediction is refined by "
                                          "the scribbles (one painted segment per model class, background first).")
        self.scriptedEffect.addLabeledOptionsWidget("Model (optional):", self.modelPathLineEdit)

        self.previewButton = qt.QPushButton("Preview")
        self.previewButton.objectName = self.__class__.__name__ + "Preview"
        self.previewButton.setToolTip("Compute the segmentation from the scribbles and show it.")
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.objectName = self.__class__.__name__ + "Cancel"
        self.cancelButton.setToolTip("Remove the preview.")
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.objectName = self.__class__.__name__ + "Apply"
        self.applyButton.setToolTip("Add the previewed result as new segments (Undo reverts it).")
        buttons = qt.QHBoxLayout()
        buttons.addWidget(self.previewButton)
        buttons.addWidget(self.cancelButton)
        buttons.addWidget(self.applyButton)
        self.scriptedEffect.addOptionsWidget(buttons)

        self.backgroundSegmentComboBox.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.betaSlider.connect("valueChanged(double)", self.updateMRMLFromGUI)
        self.modelPathLineEdit.connect("currentPathChanged(QString)", self.updateMRMLFromGUI)
        self.previewButton.connect("clicked()", self.onPreview)
        self.cancelButton.connect("clicked()", self.onCancel)
        self.applyButton.connect("clicked()", self.onApply)

    def cleanup(self):
        self._pollTimer.stop()
        if self._modelRun is not None:
            self._modelRun[1].kill()
        for widget, signal, slot in ((self.previewButton, "clicked()", self.onPreview),
                                     (self.cancelButton, "clicked()", self.onCancel),
                                     (self.applyButton, "clicked()", self.onApply)):
            widget.disconnect(signal, slot)

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor  # no painting cursor: this effect does not paint

    def setMRMLDefaults(self):
        # Slicer stores no empty value, so "BackgroundSegmentID" and "ModelPath" have no default: see _parameter
        self.scriptedEffect.setParameterDefault("Beta", 130.0)

    def _parameter(self, name):
        """A text parameter, "" when unset (reading an undefined parameter logs a critical error in Slicer)."""
        return self.scriptedEffect.parameter(name) if self.scriptedEffect.parameterDefined(name) else ""

    def activate(self):
        self.updateGUIFromMRML()

    def deactivate(self):
        pass  # the preview stays, for Apply after painting more with another effect

    # -- GUI <-> parameters ---------------------------------------------------------------------
    def _visibleSegments(self):
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        if not segmentationNode or not segmentationNode.GetDisplayNode():
            return segmentationNode, []
        ids = vtk.vtkStringArray()
        segmentationNode.GetDisplayNode().GetVisibleSegmentIDs(ids)
        return segmentationNode, [ids.GetValue(n) for n in range(ids.GetNumberOfValues())]

    def _backgroundSegmentId(self, segmentationNode, visible):
        chosen = self._parameter("BackgroundSegmentID")
        if chosen in visible:
            return chosen
        for segmentId in visible:  # a segment named like "background" is the natural default
            if "background" in segmentationNode.GetSegmentation().GetSegment(segmentId).GetName().lower():
                return segmentId
        return visible[0] if visible else ""

    def updateGUIFromMRML(self):
        segmentationNode, visible = self._visibleSegments()
        background = self._backgroundSegmentId(segmentationNode, visible) if segmentationNode else ""
        wasBlocked = self.backgroundSegmentComboBox.blockSignals(True)
        self.backgroundSegmentComboBox.clear()
        for segmentId in visible:
            self.backgroundSegmentComboBox.addItem(segmentationNode.GetSegmentation().GetSegment(segmentId).GetName(),
                                                   segmentId)
        self.backgroundSegmentComboBox.setCurrentIndex(max(self.backgroundSegmentComboBox.findData(background), 0))
        self.backgroundSegmentComboBox.blockSignals(wasBlocked)
        classes = [segmentationNode.GetSegmentation().GetSegment(s).GetName() for s in visible if s != background]
        self.classesLabel.text = ", ".join(classes) if classes else "(paint at least one structure segment)"

        wasBlocked = self.betaSlider.blockSignals(True)
        self.betaSlider.value = self.scriptedEffect.doubleParameter("Beta")
        self.betaSlider.blockSignals(wasBlocked)
        wasBlocked = self.modelPathLineEdit.blockSignals(True)
        self.modelPathLineEdit.currentPath = self._parameter("ModelPath")
        self.modelPathLineEdit.blockSignals(wasBlocked)

        hasPreview = self.getPreviewNode() is not None
        self.applyButton.enabled = hasPreview and self._preview is not None
        self.cancelButton.enabled = hasPreview
        self.previewButton.text = "Update" if hasPreview else "Preview"
        self.previewButton.enabled = self._modelRun is None

    def updateMRMLFromGUI(self, *_):
        combo = self.backgroundSegmentComboBox
        self.scriptedEffect.setParameter("BackgroundSegmentID", combo.itemData(combo.currentIndex) or "")
        self.scriptedEffect.setParameter("Beta", self.betaSlider.value)
        self.scriptedEffect.setParameter("ModelPath", self.modelPathLineEdit.currentPath)

    # -- preview / apply / cancel -----------------------------------------------------------------
    def getPreviewNode(self):
        node = self.scriptedEffect.parameterSetNode().GetNodeReference(PREVIEW_REFERENCE_ROLE)
        return node if node is not None and node.GetScene() is slicer.mrmlScene else None

    def _sourceVolumeNode(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        getter = getattr(parameterSetNode, "GetSourceVolumeNode", None) or parameterSetNode.GetMasterVolumeNode
        return getter()

    def onPreview(self):
        from ExtremeSegSlicerLib.installer import ensure_dependencies, python_executable
        from ExtremeSegSlicerLib.logic import ExtremeSegNodeLogic

        segmentationNode, _ = self._visibleSegments()
        volumeNode = self._sourceVolumeNode()
        if not segmentationNode or not volumeNode:
            slicer.util.errorDisplay("Select a segmentation and its source volume first.")
            return
        if not ensure_dependencies():  # the random walker needs scikit-image, a model torch
            return
        modelPath = self._parameter("ModelPath")
        if not modelPath:
            self.computePreview(None)
            return
        with slicer.util.tryWithErrorDisplay("Cannot run the ExtremeSeg model.", waitCursor=True):
            logic = ExtremeSegNodeLogic(python=python_executable())
            job = logic.prepare_prediction(modelPath, volumeNode, probabilities=True)
            run = logic.start_prediction(job)
            dialog = slicer.util.createProgressDialog(labelText="ExtremeSeg model: predicting...", maximum=0,
                                                      windowTitle="ExtremeSeg Scribbles")
            dialog.connect("canceled()", run.cancel)
            self._modelRun = (job, run, dialog)
            self._pollTimer.start()
        self.updateGUIFromMRML()

    def onPollModel(self):
        job, run, dialog = self._modelRun
        run.poll()
        if not run.state.finished:
            dialog.labelText = f"ExtremeSeg model: {run.state.summary()}"
            return
        self._pollTimer.stop()
        dialog.close()
        self._modelRun = None
        if run.state.status == "done":
            with slicer.util.tryWithErrorDisplay("Reading the model's prediction failed."):
                from ExtremeSegLib import mrml

                self.computePreview(prior_from_files(job.probabilities, mrml.geometry_from_node(
                    self._sourceVolumeNode())))
        elif run.state.status == "failed":
            slicer.util.errorDisplay(f"The ExtremeSeg model failed: {run.state.error}", detailedText=run.stderr_tail)
        self.updateGUIFromMRML()

    def computePreview(self, prior):
        """The random walker from the scribbles (``prior``: the model's probabilities, or None) into the preview."""
        segmentationNode, visible = self._visibleSegments()
        volumeNode = self._sourceVolumeNode()
        slicer.util.showStatusMessage("ExtremeSeg Scribbles: computing the preview...")
        with slicer.util.tryWithErrorDisplay("ExtremeSeg scribble preview failed.", waitCursor=True):
            background = self._backgroundSegmentId(segmentationNode, visible)
            self._preview = compute_scribble_preview(
                segmentationNode, volumeNode, background, visible, beta=self.scriptedEffect.doubleParameter("Beta"),
                prior=prior, prior_weight=1.0 if prior is not None else 0.0)
            previewNode = self.getPreviewNode()
            if previewNode is None:
                previewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                 segmentationNode.GetName() + " preview")
                previewNode.CreateDefaultDisplayNodes()
                previewNode.GetDisplayNode().SetVisibility2DOutline(False)
                previewNode.GetDisplayNode().SetOpacity(PREVIEW_OPACITY)
                self.scriptedEffect.parameterSetNode().SetNodeReferenceID(PREVIEW_REFERENCE_ROLE, previewNode.GetID())
            show_preview(self._preview, previewNode)
        slicer.util.showStatusMessage("")
        self.updateGUIFromMRML()

    def onApply(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = parameterSetNode.GetSegmentationNode()
        if self._preview is None or segmentationNode is None:
            return
        self.scriptedEffect.saveStateForUndo()  # Undo in the Segment Editor removes the added segments
        with slicer.util.tryWithErrorDisplay("Adding the ExtremeSeg result failed.", waitCursor=True):
            # like the built-in effects: only inside the editable area and intensity range
            editable = editable_mask(segmentationNode, parameterSetNode, self._sourceVolumeNode(), self._preview.labels)
            newIds = apply_preview(self._preview, segmentationNode, editable)
            logging.info(f"ExtremeSeg Scribbles: added segments {newIds}")
        self.removePreview()

    def onCancel(self):
        self.removePreview()

    def removePreview(self):
        self._preview = None
        previewNode = self.getPreviewNode()
        self.scriptedEffect.parameterSetNode().RemoveNodeReferenceIDs(PREVIEW_REFERENCE_ROLE)
        if previewNode is not None:
            slicer.mrmlScene.RemoveNode(previewNode)
        self.updateGUIFromMRML()
