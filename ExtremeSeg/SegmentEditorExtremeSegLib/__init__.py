"""The "ExtremeSeg Scribbles" Segment Editor effect (GUI). Its compute step is ExtremeSegSlicerLib.scribble_preview."""

from .SegmentEditorEffect import SegmentEditorEffect  # noqa: F401  (Slicer finds the class on this package)
