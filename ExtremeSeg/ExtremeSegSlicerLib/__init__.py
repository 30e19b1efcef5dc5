"""The Slicer side of ExtremeSeg without a GUI: MRML nodes in, MRML nodes out.

Imports only slicer's MRML classes (through ``ExtremeSegLib.mrml``) and the core, never qt, ctk or
``slicer.app``, so it runs headless with ``slicer-core`` and is tested there. ``ExtremeSeg.py`` (the
panel) and the Segment Editor effect are thin GUIs over it.
"""
