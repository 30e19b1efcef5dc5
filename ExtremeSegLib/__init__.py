"""ExtremeSeg core: weak annotations -> pseudo-labels -> 3D network -> segmentations.

Pure Python; never imports slicer, qt or ctk (except ``ExtremeSegLib.mrml``, the MRML adapter).
Array convention: ``array[i, j, k]`` with a 4x4 IJK-to-RAS matrix (see ``volume.py``).
"""

__version__ = "0.1.0"
