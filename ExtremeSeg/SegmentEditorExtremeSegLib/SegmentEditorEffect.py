"""Segment Editor effect "ExtremeSeg Scribbles": scribbles painted as segments -> previewed segmentation.

Thin GUI over ``ExtremeSegSlicerLib.scribble_preview`` (tested headless): the visible segments are the
classes, one of them chosen as the background; Preview runs the random walker from the scribbles (with a
trained ExtremeSeg model, its prediction is the prior and the scribbles correct it) and shows the result
in a preview segmentation; Apply saves the state for undo and adds the result as new segments; Cancel
drops the preview. The scribbles themselves are never modified.
"""

import logging
import os

import ctk
import qt
import vtk

import slicer
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from ExtremeSegSlicerLib.scribble_preview import apply_preview, compute_scribble_preview, model_prior, show_preview

#: the node reference and parameter Slicer's auto-complete effects use for their preview, so that
#: only one effect owns a preview at a time
PREVIEW_REFERENCE_ROLE = "SegmentationResultPreview"
PREVIEW_OWNER_PARAMETER = "SegmentationResultPreviewOwnerEffect"
PREVIEW_OPACITY = 0.6


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Random-walker (or model-guided) segmentation from scribble segments, with preview, apply and undo."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "ExtremeSeg Scribbles"
        scriptedEffect.perSegment = False  # works on all visible segments at once
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self._preview = None

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
        for widget, signal, slot in ((self.previewButton, "clicked()", self.onPreview),
                                     (self.cancelButton, "clicked()", self.onCancel),
                                     (self.applyButton, "clicked()", self.onApply)):
            widget.disconnect(signal, slot)

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor  # no painting cursor: this effect does not paint

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("BackgroundSegmentID", "")
        self.scriptedEffect.setParameterDefault("Beta", 130.0)
        self.scriptedEffect.setParameterDefault("ModelPath", "")

    def activate(self):
        self.updateGUIFromMRML()

    def deactivate(self):
        self.removePreview()

    # -- GUI <-> parameters ---------------------------------------------------------------------
    def _visibleSegments(self):
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        if not segmentationNode or not segmentationNode.GetDisplayNode():
            return segmentationNode, []
        ids = vtk.vtkStringArray()
        segmentationNode.GetDisplayNode().GetVisibleSegmentIDs(ids)
        return segmentationNode, [ids.GetValue(n) for n in range(ids.GetNumberOfValues())]

    def _backgroundSegmentId(self, segmentationNode, visible):
        chosen = self.scriptedEffect.parameter("BackgroundSegmentID")
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
        self.modelPathLineEdit.currentPath = self.scriptedEffect.parameter("ModelPath")
        self.modelPathLineEdit.blockSignals(wasBlocked)

        hasPreview = self.getPreviewNode() is not None
        self.applyButton.enabled = hasPreview
        self.cancelButton.enabled = hasPreview
        self.previewButton.text = "Update" if hasPreview else "Preview"

    def updateMRMLFromGUI(self, *_):
        combo = self.backgroundSegmentComboBox
        self.scriptedEffect.setParameter("BackgroundSegmentID", combo.itemData(combo.currentIndex) or "")
        self.scriptedEffect.setParameter("Beta", self.betaSlider.value)
        self.scriptedEffect.setParameter("ModelPath", self.modelPathLineEdit.currentPath)

    # -- preview / apply / cancel -----------------------------------------------------------------
    def getPreviewNode(self):
        node = self.scriptedEffect.nodeReference(PREVIEW_REFERENCE_ROLE)
        if node and self.scriptedEffect.parameter(PREVIEW_OWNER_PARAMETER) != self.scriptedEffect.name:
            return None  # another effect's preview
        return node

    def _sourceVolumeNode(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        getter = getattr(parameterSetNode, "GetSourceVolumeNode", None) or parameterSetNode.GetMasterVolumeNode
        return getter()

    def onPreview(self):
        segmentationNode, visible = self._visibleSegments()
        volumeNode = self._sourceVolumeNode()
        if not segmentationNode or not volumeNode:
            slicer.util.errorDisplay("Select a segmentation and its source volume first.")
            return
        with slicer.util.tryWithErrorDisplay("ExtremeSeg scribble preview failed.", waitCursor=True):
            modelPath = self.scriptedEffect.parameter("ModelPath")
            background = self._backgroundSegmentId(segmentationNode, visible)
            prior = model_prior(modelPath, volumeNode) if modelPath else None
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
                self.scriptedEffect.setCommonNodeReference(PREVIEW_REFERENCE_ROLE, previewNode)
                self.scriptedEffect.setCommonParameter(PREVIEW_OWNER_PARAMETER, self.scriptedEffect.name)
            show_preview(self._preview, previewNode)
        self.updateGUIFromMRML()

    def onApply(self):
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        if self._preview is None or segmentationNode is None:
            return
        self.scriptedEffect.saveStateForUndo()  # Undo in the Segment Editor removes the added segments
        with slicer.util.tryWithErrorDisplay("Adding the ExtremeSeg result failed.", waitCursor=True):
            newIds = apply_preview(self._preview, segmentationNode)
            logging.info(f"ExtremeSeg Scribbles: added segments {newIds}")
        self.removePreview()

    def onCancel(self):
        self.removePreview()

    def removePreview(self):
        self._preview = None
        previewNode = self.getPreviewNode()
        if previewNode is not None:
            self.scriptedEffect.setCommonNodeReference(PREVIEW_REFERENCE_ROLE, None)
            self.scriptedEffect.setCommonParameter(PREVIEW_OWNER_PARAMETER, "")
            slicer.mrmlScene.RemoveNode(previewNode)
        self.updateGUIFromMRML()
