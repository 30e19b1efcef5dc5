"""Triangle meshes as legacy VTK polydata (``.vtk``), the model format Slicer reads.

Vertices are RAS mm in the core; the file stores LPS and says so in its header (``SPACE=LPS``), which is how
Slicer writes models and how it reads them back without asking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import LPS_TO_RAS
from .volumes import write_atomically


def write_mesh_vtk(path, vertices_ras, faces, overwrite: bool = False) -> Path:
    """Write a triangle mesh (vertices (V, 3) RAS mm, faces (F, 3) int) as ASCII legacy VTK polydata in LPS.

    :class:`InputError` for a name not ending in ``.vtk``, bad arrays or an existing file (unless ``overwrite``).
    """
    path = Path(path)
    if path.suffix.lower() != ".vtk":
        raise InputError(f"{path}: meshes are written as legacy VTK files; give a name ending in .vtk")
    vertices = np.asarray(vertices_ras, dtype=float)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.all(np.isfinite(vertices)):
        raise InputError(f"mesh vertices must be a finite (V, 3) array, got shape {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.size == 0 or faces.min() < 0 or faces.max() >= len(vertices):
        raise InputError("mesh faces must be a non-empty (F, 3) array of vertex indices")
    lps = vertices * np.diag(LPS_TO_RAS)[:3]

    def write(tmp):
        with open(tmp, "w", encoding="ascii") as f:
            f.write("# vtk DataFile Version 4.2\nExtremeSeg template SPACE=LPS\nASCII\nDATASET POLYDATA\n")
            f.write(f"POINTS {len(lps)} double\n")
            np.savetxt(f, lps, fmt="%.6f")
            f.write(f"POLYGONS {len(faces)} {4 * len(faces)}\n")
            np.savetxt(f, np.hstack([np.full((len(faces), 1), 3), faces]).astype(np.int64), fmt="%d")

    return write_atomically(path, overwrite, write)
