"""Slicer markups JSON and point lists: round trips, RAS vs LPS files, and bad input."""

import json

import numpy as np
import pytest

from imagetomesh.core import Mesh
from imagetomesh.errors import InputError
from imagetomesh.io import Markup, read_markups, read_points, write_markups, write_mesh
from imagetomesh.io.markups import MARKUPS_SCHEMA

POINTS_LPS = np.array([[10.5, -20.25, 30.0], [11.0, -19.0, 31.5], [12.75, -18.5, 29.0]])


def _slicer_file(path, space, points, kind="ClosedCurve", units="mm", extra=None):
    """A file shaped like the ones 3D Slicer saves."""
    markup = {
        "type": kind,
        "name": "C",
        "coordinateSystem": space,
        "coordinateUnits": units,
        "locked": False,
        "controlPoints": [
            {"id": str(i + 1), "label": f"C-{i + 1}", "position": list(map(float, p)), "positionStatus": "defined"}
            for i, p in enumerate(points)
        ],
        "display": {"visibility": True, "color": [0.4, 1.0, 1.0]},
    }
    if space is None:
        del markup["coordinateSystem"]
    markup.update(extra or {})
    path.write_text(json.dumps({"@schema": MARKUPS_SCHEMA, "markups": [markup]}))
    return path


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# --- markups -------------------------------------------------------------------------------
def test_ras_file_reads_equal_to_lps_file(tmp_path):
    lps = _slicer_file(tmp_path / "lps.mrk.json", "LPS", POINTS_LPS)
    ras = _slicer_file(tmp_path / "ras.mrk.json", "RAS", POINTS_LPS * [-1, -1, 1])
    absent = _slicer_file(tmp_path / "none.mrk.json", None, POINTS_LPS)
    for path in (lps, ras, absent):
        (markup,) = read_markups(path)
        assert markup.kind == "ClosedCurve" and markup.closed and markup.name == "C"
        assert markup.points.dtype == np.float64
        np.testing.assert_allclose(markup.points, POINTS_LPS, atol=1e-12)
    np.testing.assert_allclose(read_points(ras), POINTS_LPS)


@pytest.mark.parametrize("space", ["LPS", "RAS"])
def test_write_read_round_trip(tmp_path, space):
    markups = [
        Markup("Fiducial", "F", POINTS_LPS),
        Markup("Curve", "open", POINTS_LPS + 1.0),
        Markup("Curve", "", POINTS_LPS - 2.0, closed=True),
    ]
    path = write_markups(markups, tmp_path / "out.mrk.json", coordinate_system=space)
    assert _listing(tmp_path) == ["out.mrk.json"]
    back = read_markups(path)
    assert [(m.kind, m.name, m.closed) for m in back] == [
        ("Fiducial", "F", False),
        ("Curve", "open", False),
        ("ClosedCurve", "", True),
    ]
    for original, read in zip(markups, back):
        np.testing.assert_allclose(read.points, original.points, atol=1e-12)

    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["@schema"] == MARKUPS_SCHEMA
    entry = document["markups"][0]
    assert entry["type"] == "Fiducial" and entry["coordinateSystem"] == space and entry["coordinateUnits"] == "mm"
    point = entry["controlPoints"][0]
    assert set(point) >= {
        "id",
        "label",
        "position",
        "orientation",
        "selected",
        "locked",
        "visibility",
        "positionStatus",
    }
    assert point["positionStatus"] == "defined" and len(point["orientation"]) == 9
    expected = POINTS_LPS[0] * ([-1, -1, 1] if space == "RAS" else 1)
    np.testing.assert_allclose(point["position"], expected)


def test_unplaced_points_skipped_and_micrometres(tmp_path):
    path = tmp_path / "m.mrk.json"
    _slicer_file(path, "LPS", POINTS_LPS * 1000.0, kind="Fiducial", units="um")
    document = json.loads(path.read_text(encoding="utf-8"))
    document["markups"][0]["controlPoints"].append({"id": "9", "position": [0, 0, 0], "positionStatus": "undefined"})
    path.write_text(json.dumps(document))
    (markup,) = read_markups(path)
    np.testing.assert_allclose(markup.points, POINTS_LPS)


def test_markup_validation():
    with pytest.raises(InputError, match="unknown markup type"):
        Markup("Blob", "", POINTS_LPS)
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        Markup("Fiducial", "", np.zeros((3, 2)))
    assert Markup("Fiducial", "", []).points.shape == (0, 3)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "could not parse .* as JSON"),
        ("[1, 2, 3]", "not a Slicer markups file"),
        ('{"@schema": "x", "markups": []}', "holds no markups"),
        (
            '{"markups": [{"type": "Fiducial", "coordinateSystem": "XYZ", "controlPoints": []}]}',
            "coordinateSystem 'XYZ'",
        ),
        (
            '{"markups": [{"type": "Fiducial", "controlPoints": [{"position": [1, "a", 2]}]}]}',
            "must be 3 finite numbers",
        ),
        ('{"markups": [{"type": "Fiducial", "controlPoints": [{"position": [1, 2]}]}]}', "must be 3 finite numbers"),
    ],
)
def test_bad_markups_files(tmp_path, content, message):
    path = tmp_path / "bad.mrk.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_markups(path)


def test_missing_markups_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_markups(tmp_path / "none.mrk.json")


def test_write_markups_errors_leave_nothing(tmp_path):
    bad = POINTS_LPS.copy()
    bad[1, 0] = np.nan
    with pytest.raises(InputError, match="NaN/Inf"):
        write_markups(Markup("Fiducial", "", bad), tmp_path / "nan.mrk.json")
    with pytest.raises(InputError, match="does not exist; create it first"):
        write_markups(Markup("Fiducial", "", POINTS_LPS), tmp_path / "missing" / "x.mrk.json")
    with pytest.raises(InputError, match="unknown coordinate system"):
        write_markups(Markup("Fiducial", "", POINTS_LPS), tmp_path / "x.mrk.json", coordinate_system="IJK")
    assert _listing(tmp_path) == []


# --- point lists ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "10.5,-20.25,30\n11,-19,31.5\n12.75,-18.5,29\n",
        "x,y,z\n10.5,-20.25,30\n11,-19,31.5\n12.75,-18.5,29\n",
        "label, X ,y,z,weight\na,10.5,-20.25,30,1\nb,11,-19,31.5,2\nc,12.75,-18.5,29,3\n",
        "# points\n10.5 -20.25 30\n\n11\t-19 31.5\n12.75   -18.5 29\n",
        '"x","y","z"\n10.5,-20.25,30\n11,-19,31.5\n12.75,-18.5,29\n',
    ],
)
def test_read_points_csv_forms(tmp_path, text):
    path = tmp_path / "points.csv"
    path.write_text(text)
    np.testing.assert_allclose(read_points(path), POINTS_LPS)


def test_read_points_ras_columns_and_fcsv(tmp_path):
    ras = POINTS_LPS * [-1, -1, 1]
    (tmp_path / "ras.csv").write_text(
        "label,r,a,s\n" + "".join(f"p{i},{p[0]},{p[1]},{p[2]}\n" for i, p in enumerate(ras))
    )
    np.testing.assert_allclose(read_points(tmp_path / "ras.csv"), POINTS_LPS)
    fcsv = (
        "# Markups fiducial file version = 4.11\n# CoordinateSystem = RAS\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        + "".join(
            f"vtkMRMLMarkupsFiducialNode_{i},{p[0]},{p[1]},{p[2]},0,0,0,1,1,1,0,F-{i},,\n" for i, p in enumerate(ras)
        )
    )
    (tmp_path / "f.fcsv").write_text(fcsv)
    np.testing.assert_allclose(read_points(tmp_path / "f.fcsv"), POINTS_LPS)


def test_read_points_from_markups_and_mesh(tmp_path):
    write_markups(
        [Markup("Fiducial", "a", POINTS_LPS[:2]), Markup("Curve", "b", POINTS_LPS[2:])], tmp_path / "p.mrk.json", "RAS"
    )
    np.testing.assert_allclose(read_points(tmp_path / "p.mrk.json"), POINTS_LPS)
    mesh = Mesh(POINTS_LPS, [[0, 1, 2]])
    write_mesh(mesh, tmp_path / "tri.ply", coordinate_system="RAS")
    np.testing.assert_allclose(read_points(tmp_path / "tri.ply"), POINTS_LPS.astype(np.float32), atol=1e-5)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("p.csv", "1,2,x\n", "'x' is not a number"),
        ("p.csv", "1,2,3\n4,5\n", "line 2 has 2 values"),
        ("p.csv", "1,2,3,4\n", "4 columns and no header"),
        ("p.csv", "x,y,z\n", "holds no points"),
        ("p.csv", "", "holds no points"),
        ("p.csv", "a,b,c\n1,2,3\n", "without x, y, z columns"),
        ("p.csv", "1,2,nan\n", "NaN/Inf"),
        ("p.dat", "1,2,3\n", "unknown extension"),
        ("p.mrk.json", '{"markups": [{"type": "Fiducial", "controlPoints": []}]}', "holds no points"),
    ],
)
def test_read_points_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_points(path)


def test_read_points_missing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_points(tmp_path / "none.csv")


def test_read_points_default_space_for_unmarked_csv(tmp_path):
    (tmp_path / "p.csv").write_text("".join(f"{-p[0]},{-p[1]},{p[2]}\n" for p in POINTS_LPS))
    np.testing.assert_allclose(read_points(tmp_path / "p.csv", coordinate_system="RAS"), POINTS_LPS)
    (tmp_path / "lps.csv").write_text("l,p,s\n" + "".join(f"{p[0]},{p[1]},{p[2]}\n" for p in POINTS_LPS))
    np.testing.assert_allclose(read_points(tmp_path / "lps.csv", coordinate_system="RAS"), POINTS_LPS)


# --- hostile markups files: one clear InputError each ----------------------------------------------
def _curve_document(**changes):
    markup = {
        "type": "ClosedCurve",
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "controlPoints": [{"position": [0, 0, 0]}, {"position": [10, 0, 0]}, {"position": [0, 10, 0]}],
    }
    markup.update(changes)
    return {"markups": [markup]}


@pytest.mark.parametrize("units", [{"x": 1}, [{"mm": 1}], 3, None])
def test_coordinate_units_of_the_wrong_type(tmp_path, units):
    path = tmp_path / "c.mrk.json"
    path.write_text(json.dumps(_curve_document(coordinateUnits=units)))
    with pytest.raises(InputError, match="coordinateUnits"):
        read_markups(path)


def test_json_nested_too_deeply(tmp_path):
    path = tmp_path / "deep.mrk.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        read_markups(path)


def test_a_coordinate_too_large_for_a_float(tmp_path):
    path = tmp_path / "big.mrk.json"
    path.write_text(json.dumps(_curve_document()).replace("[10, 0, 0]", "[1" + "0" * 400 + ", 0, 0]"))
    with pytest.raises(InputError, match="must be 3 finite numbers") as err:
        read_markups(path)
    assert len(str(err.value)) < 300  # the number is not printed in full


def test_a_position_that_is_not_a_list(tmp_path):
    path = tmp_path / "p.mrk.json"
    document = _curve_document()
    document["markups"][0]["controlPoints"][1]["position"] = "10,0,0"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match="must be 3 finite numbers"):
        read_markups(path)
