"""ExtremeSeg: weakly supervised 3D segmentation in 3D Slicer (registration and layout only).

The panel is ``ExtremeSegSlicerLib.widget``, the work ``ExtremeSegSlicerLib.logic`` (MRML nodes in, nodes out;
tested headless) over the core ``ExtremeSegLib``.
"""

import importlib
import sys
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

# A source checkout added as a module path keeps the core package one folder up (a built extension ships it
# beside this file instead): make "import ExtremeSegLib" work in both.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "ExtremeSegLib" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
    sys.path.append(str(_CHECKOUT))

from ExtremeSegSlicerLib.logic import ExtremeSegNodeLogic  # noqa: E402
from ExtremeSegSlicerLib.parameter_binding import WrapperCache  # noqa: E402

#: what Reload reloads, dependencies first (the core ExtremeSegLib holds torch state and is left alone)
RELOADED_MODULES = ("dependencies", "placement", "parameter_binding", "sample_data", "logic", "scribble_preview",
                    "scenarios", "installer", "widget")


class ExtremeSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "ExtremeSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Markups", "Segmentations", "SegmentEditor"]
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
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerScribbleEffect():
    """Register the "ExtremeSeg Scribbles" Segment Editor effect (as Slicer's effect template does)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    source = Path(__file__).parent / "SegmentEditorExtremeSegLib" / "SegmentEditorEffect.py"
    instance.setPythonSource(source.as_posix())
    instance.self().register()


def registerSampleData():
    """List the bundled cases in the Sample Data module (their SHA-256 checked when loaded)."""
    try:
        import SampleData
    except ImportError:  # the Sample Data module is disabled in this Slicer
        return
    from ExtremeSegSlicerLib.sample_data import sample_data_root, sample_data_sources

    root = sample_data_root(Path(__file__).parent)
    for source in sample_data_sources(root) if root else []:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)


class ExtremeSegWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from ExtremeSegSlicerLib.widget import ExtremeSegPanel

        self.logic = ExtremeSegLogic()
        self.panel = ExtremeSegPanel(self, self.logic)
        self.panel.initializeParameterNode()

    def enter(self):
        self.panel.enter()

    def exit(self):
        self.panel.exit()

    def cleanup(self):
        self.panel.cleanup()

    def onReload(self):
        """Reload the Lib packages too; refused while a job runs (its process would be cut off from the panel)."""
        if self.panel.busy:
            slicer.util.warningDisplay("A job is running: cancel it or wait until it ends, then reload.",
                                       windowTitle="ExtremeSeg")
            return
        for name in RELOADED_MODULES:
            importlib.reload(importlib.import_module(f"ExtremeSegSlicerLib.{name}"))
        if "SegmentEditorExtremeSegLib.SegmentEditorEffect" in sys.modules:
            importlib.reload(sys.modules["SegmentEditorExtremeSegLib.SegmentEditorEffect"])
        ScriptedLoadableModuleWidget.onReload(self)


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
        self._wrappers = None

    def getParameterNode(self):
        """The parameter node's wrapper, the same object for the same node (connections are made per wrapper)."""
        from ExtremeSegSlicerLib.widget import ExtremeSegParameterNode

        if self._wrappers is None:
            self._wrappers = WrapperCache(ExtremeSegParameterNode)
        return self._wrappers.wrapper_for(super().getParameterNode())

    def default_python(self):
        from ExtremeSegSlicerLib.installer import python_executable

        return python_executable()


class ExtremeSegTest(ScriptedLoadableModuleTest):
    """The pytest scenarios (Testing/test_slicer_*.py) inside Slicer; skipped while torch or MONAI is missing."""

    def runTest(self):
        from ExtremeSegSlicerLib import scenarios
        from ExtremeSegSlicerLib.dependencies import missing_requirements

        missing = missing_requirements()
        if missing:
            self.delayDisplay("Skipped: ExtremeSeg's packages are not installed ("
                              + ", ".join(r for _, r in missing) + "); install them from the module, then rerun.")
            return
        slicer.mrmlScene.Clear()
        self.delayDisplay("Extreme points on a synthetic volume -> placement guide -> training -> new segments")
        report = scenarios.extreme_points_to_segmentation(ExtremeSegLogic(), slicer.app.temporaryPath)
        self.assertTrue(report.guide_complete, report.guide_message)
        self.assertTrue(report.user_segments_untouched)
        self.assertTrue(report.same_geometry)
        self.assertGreater(report.dice, scenarios.MIN_DICE_AFTER_TRAINING)
        slicer.mrmlScene.Clear()
        self.delayDisplay("Scribbles -> preview -> apply -> undo")
        report = scenarios.scribble_preview_apply_undo(slicer.mrmlScene)
        self.assertGreater(report.dice, scenarios.MIN_DICE_SCRIBBLE_PREVIEW)
        self.assertTrue(report.scribbles_untouched)
        self.assertTrue(report.undo_restored)
        self.delayDisplay("Test passed")
