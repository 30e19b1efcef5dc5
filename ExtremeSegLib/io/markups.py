"""Read and write point lists as Slicer markups files.

- ``.mrk.json``: Slicer's markups JSON schema (``Modules/Loadable/Markups/Resources/Schema``). Positions
  are stored in the markup's ``coordinateSystem``, ``LPS`` (Slicer's default and what we write) or ``RAS``.
- ``.fcsv``: Slicer's legacy point-list CSV, read only. ``# CoordinateSystem = LPS`` / ``RAS`` (or the old
  numeric codes 0 = RAS, 1 = LPS); files without that line are RAS, as older Slicer versions wrote them.

Points are returned and accepted as RAS millimetres ``(N, 3)``. Only points whose position is defined
count: Slicer keeps "unplaced" points (``positionStatus`` undefined/preview) in a list without a position.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from .volumes import require_readable_file, write_text_atomically

#: Schema version written; every Slicer 5 release reads it.
SCHEMA_URL = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
_LPS_FLIP = np.array([-1.0, -1.0, 1.0])  # LPS <-> RAS for points
_POINT_LIST_TYPE = "Fiducial"  # Slicer's JSON type name of a "Point List" node
_FCSV_DEFINED = "2"  # vtkMRMLMarkupsNode::PositionDefined in the fcsv status column


def _flip_if_lps(points: np.ndarray, coordinate_system: str, path) -> np.ndarray:
    system = str(coordinate_system).strip().upper()
    if system in ("LPS", "1"):
        return points * _LPS_FLIP
    if system in ("RAS", "0"):
        return points
    raise InputError(f"{path}: unknown coordinate system {coordinate_system!r}; expected LPS or RAS")


def _read_json_points(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not a valid JSON file ({err}); save the points again from Slicer") from err
    markups = document.get("markups") if isinstance(document, dict) else None
    if not isinstance(markups, list) or not markups:
        raise InputError(f"{path} is not a Slicer markups file (no \"markups\" list)")
    point_lists = [m for m in markups if isinstance(m, dict) and m.get("type") == _POINT_LIST_TYPE]
    if not point_lists:
        types = sorted({str(m.get("type")) for m in markups if isinstance(m, dict)})
        raise InputError(
            f"{path} holds markups of type {', '.join(types)}, not a point list; "
            "place the points in a Markups \"Point List\" and save that"
        )
    if len(point_lists) > 1:
        raise InputError(f"{path} holds {len(point_lists)} point lists; save one point list per file")
    markup = point_lists[0]
    units = markup.get("coordinateUnits", "mm")
    if (units[0] if isinstance(units, list) and units else units) != "mm":
        raise InputError(f"{path}: coordinates are in {units!r}; ExtremeSeg reads millimetre (mm) point lists")
    points, labels = [], []
    for n, point in enumerate(markup.get("controlPoints") or []):
        if not isinstance(point, dict):
            raise InputError(f"{path}: control point {n + 1} is not a JSON object")
        if point.get("positionStatus", "defined") != "defined":
            continue
        position = point.get("position")
        try:
            xyz = np.asarray(position, dtype=float)
        except (TypeError, ValueError):
            xyz = np.empty(0)
        if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
            raise InputError(f"{path}: control point {n + 1} has no valid position ({position!r})")
        points.append(xyz)
        labels.append(str(point.get("label", f"{n + 1}")))
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    return _flip_if_lps(points, markup.get("coordinateSystem", "LPS"), path), labels


def _read_fcsv_points(path: Path) -> tuple[np.ndarray, list[str]]:
    coordinate_system = "RAS"
    columns = ["id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label", "desc", "associatedNodeID"]
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not a text .fcsv file ({err})") from err
    for line in lines:
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.strip().lower() == "coordinatesystem":
                coordinate_system = value.strip()
            elif key.strip().lower() == "columns":
                columns = [c.strip() for c in value.split(",")]
        elif line.strip():
            rows.append(line)
    try:
        ix, iy, iz = (columns.index(c) for c in ("x", "y", "z"))
    except ValueError as err:
        raise InputError(f"{path}: the columns line does not name x, y and z") from err
    ilabel = columns.index("label") if "label" in columns else None
    points, labels = [], []
    for n, fields in enumerate(csv.reader(rows)):
        # Slicer 5 appends the position status after the named columns (2 = defined).
        if len(fields) > len(columns) and fields[len(columns)].strip() not in ("", _FCSV_DEFINED):
            continue
        try:
            points.append([float(fields[ix]), float(fields[iy]), float(fields[iz])])
        except (IndexError, ValueError) as err:
            raise InputError(f"{path}: point row {n + 1} has no valid x, y, z ({','.join(fields)})") from err
        labels.append(fields[ilabel] if ilabel is not None and ilabel < len(fields) else f"{n + 1}")
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(points)):
        raise InputError(f"{path}: a point has a NaN or infinite coordinate")
    return _flip_if_lps(points, coordinate_system, path), labels


def read_points(path) -> tuple[np.ndarray, list[str]]:
    """Points ``(N, 3)`` in RAS mm and their labels from a Slicer ``.mrk.json`` or legacy ``.fcsv`` file.

    :class:`InputError` when the file is missing or unreadable, is not a single point list, or has no
    placed (defined) points.
    """
    name = Path(path).name.lower()
    if not name.endswith((".json", ".fcsv")):
        raise InputError(f"{path}: unsupported points file; use a Slicer .mrk.json (or legacy .fcsv) file")
    path = require_readable_file(path)
    points, labels = _read_fcsv_points(path) if name.endswith(".fcsv") else _read_json_points(path)
    if len(points) == 0:
        raise InputError(f"{path} has no placed points; place the points in Slicer and save the list again")
    return points, labels


def write_points(path, points_ras, labels=None, name: str = "ExtremePoints", overwrite: bool = False) -> Path:
    """Write points (RAS mm, ``(N, 3)``) as a Slicer point list ``.mrk.json`` (stored in LPS).

    ``labels`` default to ``"<name>-1"``, ``"<name>-2"``, ... (Slicer's own label format).
    :class:`InputError` for bad points, a label count that does not match, an existing file (unless
    ``overwrite``) or a name that does not end in ``.mrk.json``.
    """
    path = Path(path)
    if not path.name.lower().endswith(".mrk.json"):
        raise InputError(f"{path}: point lists are written as .mrk.json files")
    points = np.asarray(points_ras, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise InputError(f"points to write must be a non-empty (N, 3) array, got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise InputError("points to write contain NaN or infinite coordinates")
    labels = [f"{name}-{n + 1}" for n in range(len(points))] if labels is None else [str(s) for s in labels]
    if len(labels) != len(points):
        raise InputError(f"{len(labels)} labels given for {len(points)} points")
    control_points = [
        {
            "id": str(n + 1),
            "label": label,
            "description": "",
            "associatedNodeID": "",
            "position": [float(v) for v in xyz * _LPS_FLIP],
            "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],  # identity in RAS, written in LPS
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": "defined",
        }
        for n, (xyz, label) in enumerate(zip(points, labels))
    ]
    document = {
        "@schema": SCHEMA_URL,
        "markups": [
            {
                "type": _POINT_LIST_TYPE,
                "name": name,
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "locked": False,
                "fixedNumberOfControlPoints": False,
                "labelFormat": "%N-%d",
                "lastUsedControlPointNumber": len(points),
                "controlPoints": control_points,
                "measurements": [],
            }
        ],
    }
    text = json.dumps(document, indent=4)
    return write_text_atomically(path, text, overwrite)
