"""3D Slicer markups (``.mrk.json``) and point lists (CSV, FCSV, mesh vertices) in LPS mm.

The JSON layout follows Slicer's markups schema v1.0.3: a top-level object with ``@schema``
and a ``markups`` list; each markup has ``type``, ``coordinateSystem`` (``LPS`` or ``RAS``,
LPS when absent), ``coordinateUnits`` and ``controlPoints`` with a ``position`` each.
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagetomesh.core.transforms import lps_to_ras, ras_to_lps
from imagetomesh.errors import InputError
from imagetomesh.io.atomic import atomic_write, check_output_path, format_suffix
from imagetomesh.io.inputs import check_coordinates, check_input_path

#: The schema URL 3D Slicer writes into ``.mrk.json`` files.
MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
    "Resources/Schema/markups-schema-v1.0.3.json#"
)

#: Markup types of the schema.
MARKUP_TYPES = ("Fiducial", "Line", "Angle", "Curve", "ClosedCurve", "Plane", "ROI")

#: Extensions :func:`read_points` reads as delimited text.
TEXT_POINT_SUFFIXES = (".csv", ".txt", ".xyz", ".fcsv")

_UNIT_SCALE = {"mm": 1.0, "um": 1e-3}


@dataclass(frozen=True)
class Markup:
    """One markup: a point list, open or closed curve, plane, ...

    Attributes:
        kind: Slicer markup type (``"Fiducial"``, ``"Curve"``, ``"ClosedCurve"``, ``"Plane"``, ...).
        name: display name (may be empty).
        points: ``(N, 3)`` float64 control point positions in LPS mm.
        closed: True for closed curves; ``kind == "ClosedCurve"`` implies it and a closed
            ``"Curve"`` becomes ``"ClosedCurve"``.
    """

    kind: str
    name: str
    points: np.ndarray
    closed: bool = False

    def __post_init__(self) -> None:
        kind = str(self.kind)
        if kind not in MARKUP_TYPES:
            raise InputError(f"unknown markup type '{kind}'; use one of {', '.join(MARKUP_TYPES)}")
        points = np.asarray(self.points, dtype=np.float64)
        if points.size == 0:
            points = points.reshape(0, 3)
        if points.ndim != 2 or points.shape[1] != 3:
            raise InputError(f"markup points must be an (N, 3) array, got shape {points.shape}")
        closed = bool(self.closed) or kind == "ClosedCurve"
        if closed and kind == "Curve":
            kind = "ClosedCurve"
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", str(self.name or ""))
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "closed", closed)


def _check_space(coordinate_system: str) -> str:
    space = str(coordinate_system).upper()
    if space not in ("LPS", "RAS"):
        raise InputError(f"unknown coordinate system '{coordinate_system}'; use LPS or RAS")
    return space


def _require_file(path: str | os.PathLike, what: str) -> Path:
    return check_input_path(path, what)


# --- .mrk.json ------------------------------------------------------------------------------
def _parse_markup(entry: object, index: int, path: Path) -> Markup:
    where = f"markup {index + 1} in {path}"
    if not isinstance(entry, dict):
        raise InputError(f"{where} is not a JSON object; give a Slicer .mrk.json file")
    kind = entry.get("type", "Fiducial")
    if kind not in MARKUP_TYPES:
        raise InputError(f"{where} has unknown type '{kind}'; use one of {', '.join(MARKUP_TYPES)}")
    space = str(entry.get("coordinateSystem", "LPS")).upper()
    if space not in ("LPS", "RAS"):
        raise InputError(f"{where} has coordinateSystem '{space}'; only LPS and RAS are supported")
    units = entry.get("coordinateUnits", "mm")
    if isinstance(units, list) and units:
        units = units[0]
    if not isinstance(units, str) or units not in _UNIT_SCALE:
        raise InputError(f"{where} has coordinateUnits '{units}'; only mm and um are supported")
    control_points = entry.get("controlPoints", [])
    if not isinstance(control_points, list):
        raise InputError(f"{where} has a controlPoints entry that is not a list; fix the file")
    positions = []
    for number, point in enumerate(control_points, start=1):
        if not isinstance(point, dict):
            raise InputError(f"control point {number} of {where} is not a JSON object; fix the file")
        if point.get("positionStatus", "defined") not in ("defined", "preview") or "position" not in point:
            continue  # an unplaced point
        position = point["position"]
        try:
            xyz = [float(v) for v in position] if isinstance(position, list) else []
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
            xyz = []
        if len(xyz) != 3 or not all(math.isfinite(v) for v in xyz):
            raise InputError(
                f"control point {number} of {where} has position {reprlib.repr(position)}; it must be 3 finite numbers"
            )
        positions.append(xyz)
    points = np.asarray(positions, dtype=np.float64).reshape(-1, 3) * _UNIT_SCALE[units]
    if space == "RAS":
        points = ras_to_lps(points)
    return Markup(kind=kind, name=str(entry.get("name", "")), points=points, closed=kind == "ClosedCurve")


def read_markups(path: str | os.PathLike) -> list[Markup]:
    """Read every markup of a Slicer ``.mrk.json`` file, control points in LPS mm.

    Returns:
        One :class:`Markup` per entry of the file's ``markups`` list (unplaced control points
        are skipped, so a markup may hold zero points).

    Raises:
        InputError: missing file, malformed JSON, not a markups file, no markups, bad positions.
    """
    path = _require_file(path, "markups file")
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"could not parse {path} as JSON ({err}); give a Slicer .mrk.json file") from None
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be a markups file; give a Slicer .mrk.json file") from None
    if not isinstance(document, dict) or not isinstance(document.get("markups"), list):
        raise InputError(
            f"{path} is not a Slicer markups file (no 'markups' list); save the markups from Slicer as .mrk.json"
        )
    if not document["markups"]:
        raise InputError(f"{path} holds no markups; place some points in Slicer and save again")
    markups = [_parse_markup(entry, index, path) for index, entry in enumerate(document["markups"])]
    for markup in markups:
        check_coordinates(markup.points, f"markups file {path}")
    return markups


def _markup_json(markup: Markup, space: str) -> dict:
    points = markup.points if space == "LPS" else lps_to_ras(markup.points)
    # Slicer's identity orientation is stored in the file's own space: RAS identity -> LPS diag(-1,-1,1)
    orientation = (
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        if space == "RAS"
        else [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0]
    )
    prefix = markup.name or markup.kind
    control_points = [
        {
            "id": str(i + 1),
            "label": f"{prefix}-{i + 1}",
            "description": "",
            "associatedNodeID": "",
            "position": [float(v) for v in p],
            "orientation": orientation,
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": "defined",
        }
        for i, p in enumerate(points)
    ]
    entry = {"type": markup.kind}
    if markup.name:
        entry["name"] = markup.name
    entry.update(
        {
            "coordinateSystem": space,
            "coordinateUnits": "mm",
            "locked": False,
            "fixedNumberOfControlPoints": False,
            "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": len(control_points),
            "controlPoints": control_points,
            "measurements": [],
        }
    )
    return entry


def write_markups(markups: Markup | Iterable[Markup], path: str | os.PathLike, coordinate_system: str = "LPS") -> Path:
    """Write markups to a ``.mrk.json`` file that 3D Slicer loads, atomically.

    Args:
        markups: one :class:`Markup` or a sequence of them (points in LPS mm).
        path: output file, normally ending in ``.mrk.json``.
        coordinate_system: ``"LPS"`` (default, as Slicer writes) or ``"RAS"``.

    Returns:
        The written path.

    Raises:
        InputError: bad coordinate system, non-finite points, unwritable output folder.
    """
    space = _check_space(coordinate_system)
    target = check_output_path(path)
    items = [markups] if isinstance(markups, Markup) else list(markups)
    for item in items:
        if not isinstance(item, Markup):
            raise InputError(f"write_markups takes Markup objects, got {type(item).__name__}")
        if not np.isfinite(item.points).all():
            raise InputError(f"markup '{item.name or item.kind}' has NaN/Inf points; remove them before saving")
    document = {"@schema": MARKUPS_SCHEMA, "markups": [_markup_json(m, space) for m in items]}
    text = json.dumps(document, indent=4, allow_nan=False)
    with atomic_write(target) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return target


# --- point lists ----------------------------------------------------------------------------
_COORD_NAMES = {
    ("x", "y", "z"): None,  # the caller's default space
    ("l", "p", "s"): "LPS",
    ("r", "a", "s"): "RAS",
}


def _split_row(line: str) -> list[str]:
    if "," in line:
        return [field.strip().strip('"').strip("'") for field in line.split(",")]
    return line.split()


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_plain_csv(text: str) -> np.ndarray | None:
    """The points of a plain ``x,y,z`` file (an optional ``x,y,z`` header row, then three numbers per row,
    comma or whitespace separated, no comments), parsed by numpy at once (a 250,000-point cloud in a
    fraction of a second); None for anything else, which :func:`_read_text_points` reads row by row."""
    lines = text.splitlines()
    first = next((k for k, line in enumerate(lines) if line.strip()), None)
    if first is None or "#" in text:
        return None
    head = _split_row(lines[first].strip())
    if [h.lower() for h in head] == ["x", "y", "z"]:
        first += 1
    elif not all(_is_number(t) for t in head) or len(head) != 3:
        return None
    if not any(line.strip() for line in lines[first:]):
        return None
    try:
        points = np.loadtxt(lines[first:], delimiter="," if "," in lines[first] else None, dtype=np.float64, ndmin=2)
    except ValueError:
        return None
    return points if points.shape[1:] == (3,) and len(points) else None


def _read_text_points(path: Path, default_space: str) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text file; give a CSV of x,y,z points") from None
    plain = _read_plain_csv(text)
    if plain is not None:
        if not np.isfinite(plain).all():
            raise InputError(f"{path} contains NaN/Inf coordinates; remove those rows")
        return ras_to_lps(plain) if default_space == "RAS" else plain
    header: list[str] | None = None
    space, space_in_file = default_space, False
    rows: list[tuple[int, list[str]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            # Slicer's legacy .fcsv: "# CoordinateSystem = RAS|LPS|0|1", "# columns = id,x,y,z,..."
            match = re.match(r"#\s*CoordinateSystem\s*=\s*(\w+)", line, re.IGNORECASE)
            if match:
                value = match.group(1).upper()
                space, space_in_file = ("RAS" if value in ("RAS", "0") else "LPS"), True
            match = re.match(r"#\s*columns\s*=\s*(.*)", line, re.IGNORECASE)
            if match:
                header = [name.strip().lower() for name in match.group(1).split(",")]
            continue
        rows.append((number, _split_row(line)))
    if not rows:
        raise InputError(f"{path} holds no points; give one point per row as x,y,z")
    if header is None and not any(_is_number(t) for t in rows[0][1]):
        header = [name.lower() for name in rows[0][1]]
        rows = rows[1:]
    if header is not None:
        columns = None
        for names, names_space in _COORD_NAMES.items():
            if all(n in header for n in names):
                columns = [header.index(n) for n in names]
                if names_space and not space_in_file:
                    space = names_space
                break
        if columns is None:
            raise InputError(
                f"{path} has a header row without x, y, z columns ({', '.join(header)}); name the coordinate columns x,y,z"
            )
    else:
        width = len(rows[0][1])
        if width != 3:
            raise InputError(
                f"{path} has {width} columns and no header row; give exactly x,y,z per row or add a header naming x,y,z"
            )
        columns = [0, 1, 2]
    for number, fields in rows:
        if len(fields) <= max(columns) or (header is None and len(fields) != 3):
            raise InputError(f"{path} line {number} has {len(fields)} values; every row needs x, y and z")
    points = _parse_rows(path, rows, columns)
    if not np.isfinite(points).all():
        raise InputError(f"{path} contains NaN/Inf coordinates; remove those rows")
    return ras_to_lps(points) if space == "RAS" else points


def _parse_rows(path: Path, rows: list[tuple[int, list[str]]], columns: list[int]) -> np.ndarray:
    """``rows``' ``columns`` as numbers one by one; :class:`InputError` naming the first that is not one."""
    points = np.empty((len(rows), 3), dtype=np.float64)
    for row_index, (number, fields) in enumerate(rows):
        for c, col in enumerate(columns):
            try:
                points[row_index, c] = float(fields[col])
            except ValueError:
                raise InputError(
                    f"{path} line {number}: '{fields[col]}' is not a number; fix or remove that row"
                ) from None
    return points


def read_points(path: str | os.PathLike, coordinate_system: str = "LPS") -> np.ndarray:
    """Read a point set in LPS mm.

    Sources: ``.csv``/``.txt``/``.xyz`` (x,y,z per row, comma or whitespace separated, optional
    header; with a header naming x,y,z — or l,p,s, or r,a,s for RAS — other columns are
    ignored), Slicer ``.fcsv``, a ``.mrk.json``/``.json`` markups file (all control points of
    all markups), or a mesh file (its vertices; see :func:`imagetomesh.io.meshes.read_mesh`).

    Args:
        coordinate_system: ``"LPS"`` or ``"RAS"``, the space of coordinates whose file does not
            say: CSV columns named x,y,z (or unnamed), mesh files without a Slicer ``SPACE``
            marker. ``.mrk.json`` files follow their own ``coordinateSystem`` (LPS when absent).

    Returns:
        ``(N, 3)`` float64 LPS mm, ``N >= 1``.

    Raises:
        InputError: missing file, unknown extension, malformed content, no points.
    """
    # imported here: meshes pulls in VTK, which point lists from text or JSON never need
    from imagetomesh.io.meshes import MESH_SUFFIXES, read_mesh_vertices

    space = _check_space(coordinate_system)
    path = _require_file(path, "points file")
    suffix = format_suffix(path)
    if suffix == ".json":
        markups = read_markups(path)
        points = np.concatenate([m.points for m in markups], axis=0)
    elif suffix in TEXT_POINT_SUFFIXES:
        points = _read_text_points(path, space)
    elif suffix in MESH_SUFFIXES:
        points = read_mesh_vertices(path, space)
    else:
        supported = (".mrk.json",) + TEXT_POINT_SUFFIXES + MESH_SUFFIXES
        raise InputError(
            f"cannot read points from {path.name}: unknown extension '{suffix}'; use one of {', '.join(supported)}"
        )
    if len(points) < 1:
        raise InputError(f"{path} holds no points; give at least one point")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    check_coordinates(points, f"points file {path}")
    return points


# --- regions of interest -----------------------------------------------------------------------
def read_roi(text: str | os.PathLike) -> np.ndarray:
    """``(8, 3)`` LPS corners of a box: ``"x0,y0,z0,x1,y1,z1"`` (LPS mm, two opposite corners) or a
    Slicer ROI ``.mrk.json`` file (its first ROI markup; rotated boxes included).

    Raises:
        InputError: not six numbers and not a readable ROI file, a box of zero size.
    """
    spec = str(text)
    if not spec.lower().endswith(".json"):
        try:
            values = [float(v) for v in spec.split(",")]
        except ValueError:
            values = []
        if len(values) != 6 or not all(math.isfinite(v) for v in values):
            raise InputError(
                f"--roi {spec!r}: give x0,y0,z0,x1,y1,z1 in LPS mm (two opposite corners) or a Slicer ROI .mrk.json"
            )
        lo, hi = np.minimum(values[:3], values[3:]), np.maximum(values[:3], values[3:])
        if np.any(hi - lo <= 0):
            raise InputError(f"--roi {spec!r} has zero size along an axis; give two opposite corners of a box")
        return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    path = _require_file(spec, "ROI file")
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise InputError(
            f"could not parse {path} as a Slicer ROI file; save the ROI from Slicer as .mrk.json"
        ) from None
    rois = (
        [m for m in (document.get("markups") or []) if isinstance(m, dict) and m.get("type") == "ROI"]
        if isinstance(document, dict)
        else []
    )
    if not rois:
        raise InputError(f"{path} holds no ROI markup; place a ROI in Slicer and save it as .mrk.json")
    roi = rois[0]
    try:
        center = np.array([float(v) for v in roi["center"]], dtype=np.float64)
        size = np.array([float(v) for v in roi["size"]], dtype=np.float64)
        axes = np.array([float(v) for v in roi.get("orientation", [1, 0, 0, 0, 1, 0, 0, 0, 1])]).reshape(3, 3)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise InputError(
            f"{path}: the ROI needs 'center' (3 numbers), 'size' (3 numbers) and 'orientation' (9)"
        ) from None
    if (
        center.shape != (3,)
        or size.shape != (3,)
        or not np.all(np.isfinite(np.concatenate([center, size, axes.ravel()])))
    ):
        raise InputError(f"{path}: the ROI needs 'center' (3 numbers), 'size' (3 numbers) and 'orientation' (9)")
    if np.any(size <= 0):
        raise InputError(f"{path}: the ROI has zero size; resize it in Slicer")
    signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    corners = center + (signs * size) @ axes.T  # orientation columns are the box axes, in the file's space
    space = str(roi.get("coordinateSystem", "LPS")).upper()
    return ras_to_lps(corners) if space == "RAS" else corners
