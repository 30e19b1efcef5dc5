"""Files: NIfTI/NRRD volumes, Slicer markups (.mrk.json) and segmentations (.seg.nrrd).

All readers return the core conventions (``Volume``: ``array[i, j, k]`` + IJK-to-RAS; points in RAS mm);
all file-format conversions (LPS, axis order, scale factors, cropped segment extents) happen here.
"""

from .markups import read_points, write_points
from .segmentations import (
    Segment,
    labelmap_to_segments,
    read_segmentation,
    segments_to_labelmap,
    write_segmentation,
)
from .volumes import read_image, read_labelmap, read_volume, write_volume

__all__ = [
    "Segment",
    "labelmap_to_segments",
    "read_image",
    "read_labelmap",
    "read_points",
    "read_segmentation",
    "read_volume",
    "segments_to_labelmap",
    "write_points",
    "write_segmentation",
    "write_volume",
]
