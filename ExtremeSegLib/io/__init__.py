"""Files: NIfTI/NRRD volumes, Slicer markups (.mrk.json), segmentations (.seg.nrrd) and meshes (.vtk).

All readers return the core conventions (``Volume``: ``array[i, j, k]`` + IJK-to-RAS; points in RAS mm);
all file-format conversions (LPS, axis order, scale factors, cropped segment extents) happen here.
"""

from .markups import read_points, write_points
from .meshes import write_mesh_vtk
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
    "write_mesh_vtk",
    "write_points",
    "write_segmentation",
    "write_volume",
]
