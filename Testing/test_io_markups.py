"""Slicer point lists (.mrk.json, legacy .fcsv): RAS/LPS conversion, unplaced points, bad files."""

import json

import numpy as np
import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import read_points, write_points

POINTS = np.array([[10.5, -20.25, 30.0], [-1.0, 2.0, -3.0], [0.0, 0.0, 0.0]])


def markups_file(path, control_points, markup_type="Fiducial", **fields):
    document = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                           "Resources/Schema/markups-schema-v1.0.3.json#",
                "markups": [{"type": markup_type, "controlPoints": control_points, **fields}]}
    path.write_text(json.dumps(document))
    return path


def test_round_trip_and_lps_on_disk(tmp_path):
    path = write_points(tmp_path / "p.mrk.json", POINTS, labels=["a", "b", "c"])
    points, labels = read_points(path)
    np.testing.assert_allclose(points, POINTS)
    assert labels == ["a", "b", "c"]
    markup = json.loads(path.read_text())["markups"][0]
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == "LPS"
    np.testing.assert_allclose(markup["controlPoints"][0]["position"], [-10.5, 20.25, 30.0])


def test_default_labels_follow_slicer_format(tmp_path):
    _, labels = read_points(write_points(tmp_path / "p.mrk.json", POINTS, name="Clicks"))
    assert labels == ["Clicks-1", "Clicks-2", "Clicks-3"]


def test_ras_file_is_not_flipped_and_lps_is_the_default(tmp_path):
    cps = [{"label": "x", "position": [1.0, 2.0, 3.0]}]
    ras, _ = read_points(markups_file(tmp_path / "ras.mrk.json", cps, coordinateSystem="RAS"))
    lps, _ = read_points(markups_file(tmp_path / "lps.mrk.json", cps))
    np.testing.assert_allclose(ras, [[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(lps, [[-1.0, -2.0, 3.0]])


def test_unplaced_points_are_skipped(tmp_path):
    cps = [{"label": "a", "position": [1.0, 1.0, 1.0], "positionStatus": "defined"},
           {"label": "b", "position": "", "positionStatus": "undefined"},
           {"label": "c", "position": [5.0, 5.0, 5.0], "positionStatus": "preview"},
           {"label": "d", "position": [2.0, 2.0, 2.0]}]
    points, labels = read_points(markups_file(tmp_path / "p.mrk.json", cps, coordinateSystem="RAS"))
    assert labels == ["a", "d"]
    np.testing.assert_allclose(points, [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])


def test_legacy_fcsv_lps_with_status_column_and_quoted_label(tmp_path):
    path = tmp_path / "F.fcsv"
    path.write_text(
        "# Markups fiducial file version = 5.2\n# CoordinateSystem = LPS\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        '1,-1,-2,3,0,0,0,1,1,1,0,"p, one",,,2,0\n'
        "2,4,-5,6,0,0,0,1,1,1,0,p2,,,2,0\n"
        "3,-7,-7,7,0,0,0,1,1,1,0,p3,,,0,0\n"
    )
    points, labels = read_points(path)
    assert labels == ["p, one", "p2"]
    np.testing.assert_allclose(points, [[1, 2, 3], [-4, 5, 6]])


def test_legacy_fcsv_numeric_ras_code(tmp_path):
    path = tmp_path / "old.fcsv"
    path.write_text("# Markups fiducial file version = 4.10\n# CoordinateSystem = 0\n"
                    "vtkMRMLMarkupsFiducialNode_0,1.5,2.5,3.5,0,0,0,1,1,1,0,F-1,,\n")
    points, labels = read_points(path)
    np.testing.assert_allclose(points, [[1.5, 2.5, 3.5]])
    assert labels == ["F-1"]


# -- bad input -------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_points(tmp_path / "none.mrk.json")


def test_not_json(tmp_path):
    (tmp_path / "bad.mrk.json").write_text("{not json")
    with pytest.raises(InputError, match="not a valid JSON"):
        read_points(tmp_path / "bad.mrk.json")


def test_not_a_markups_document(tmp_path):
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(InputError, match="not a Slicer markups file"):
        read_points(tmp_path / "other.json")


def test_no_control_points(tmp_path):
    with pytest.raises(InputError, match="no placed points"):
        read_points(markups_file(tmp_path / "empty.mrk.json", []))
    only_unplaced = [{"label": "a", "position": "", "positionStatus": "undefined"}]
    with pytest.raises(InputError, match="no placed points"):
        read_points(markups_file(tmp_path / "unplaced.mrk.json", only_unplaced))


def test_wrong_markups_type(tmp_path):
    path = markups_file(tmp_path / "curve.mrk.json", [{"position": [0, 0, 0]}], markup_type="Curve")
    with pytest.raises(InputError, match="type Curve, not a point list"):
        read_points(path)


def test_several_point_lists(tmp_path):
    path = tmp_path / "two.mrk.json"
    lst = {"type": "Fiducial", "controlPoints": [{"position": [0, 0, 0]}]}
    path.write_text(json.dumps({"@schema": "x", "markups": [lst, lst]}))
    with pytest.raises(InputError, match="2 point lists"):
        read_points(path)


def test_bad_position(tmp_path):
    path = markups_file(tmp_path / "p.mrk.json", [{"label": "a", "position": [1.0, "x"]}])
    with pytest.raises(InputError, match="control point 1 has no valid position"):
        read_points(path)


def test_other_units(tmp_path):
    path = markups_file(tmp_path / "um.mrk.json", [{"position": [0, 0, 0]}], coordinateUnits="um")
    with pytest.raises(InputError, match="millimetre"):
        read_points(path)


def test_bad_fcsv_row(tmp_path):
    (tmp_path / "bad.fcsv").write_text("# CoordinateSystem = LPS\n1,a,b,c\n")
    with pytest.raises(InputError, match="row 1 has no valid x, y, z"):
        read_points(tmp_path / "bad.fcsv")


def test_writer_refusals(tmp_path):
    with pytest.raises(InputError, match=r"\.mrk\.json"):
        write_points(tmp_path / "p.json", POINTS)
    with pytest.raises(InputError, match="3 points"):
        write_points(tmp_path / "p.mrk.json", POINTS, labels=["only one"])
    with pytest.raises(InputError, match="NaN"):
        write_points(tmp_path / "p.mrk.json", [[np.nan, 0, 0]])
    with pytest.raises(InputError, match="non-empty"):
        write_points(tmp_path / "p.mrk.json", np.zeros((0, 3)))
    existing = tmp_path / "mine.mrk.json"
    existing.write_text("keep")
    with pytest.raises(InputError, match="already exists"):
        write_points(existing, POINTS)
    assert existing.read_text() == "keep"
