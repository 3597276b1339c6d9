"""Surface mesh files <-> :class:`~imagetomesh.core.mesh.Mesh`, through VTK.

Formats: ``.stl`` (binary), ``.vtp``, ``.vtk`` (legacy polydata), ``.obj``, ``.ply``.

Meshes in memory are LPS millimetres. Files record their space the way 3D Slicer writes and
reads it, so Slicer loads what we write in the right place and we read what Slicer writes:

- STL: the 80-byte header ``3D Slicer output. SPACE=LPS`` (or ``RAS``);
- legacy VTK: the same text as the header line;
- VTP: a field-data string array ``SPACE`` holding ``LPS`` or ``RAS``;
- OBJ: the comment line ``# 3D Slicer output. SPACE=LPS``; PLY: the comment ``SPACE=LPS``.

A file without a marker is taken to be in ``coordinate_system`` (default LPS, Slicer's own
assumption). LPS <-> RAS negates x and y, a rotation (det +1), so face winding is unchanged.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from vtkmodules.util.misc import calldata_type
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.util.vtkConstants import VTK_STRING
from vtkmodules.vtkCommonCore import vtkCommand, vtkObject, vtkStringArray
from vtkmodules.vtkCommonDataModel import vtkPolyData
from vtkmodules.vtkIOGeometry import vtkOBJReader, vtkSTLReader, vtkSTLWriter
from vtkmodules.vtkIOLegacy import vtkPolyDataReader, vtkPolyDataWriter
from vtkmodules.vtkIOPLY import vtkPLYWriter
from vtkmodules.vtkIOXML import vtkXMLPolyDataReader, vtkXMLPolyDataWriter

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.transforms import lps_to_ras, ras_to_lps
from imagetomesh.errors import InputError
from imagetomesh.geometry.vtk_convert import mesh_to_polydata, polydata_from_arrays, polydata_to_mesh
from imagetomesh.io.atomic import atomic_write, check_output_path, format_suffix
from imagetomesh.io.inputs import check_coordinates, check_input_path

#: Mesh file extensions read and written.
MESH_SUFFIXES = (".stl", ".vtp", ".vtk", ".obj", ".ply")

#: Prefix of the header text 3D Slicer writes into STL and legacy VTK files.
SLICER_HEADER_PREFIX = "3D Slicer output. SPACE="

_SPACE_FIELD = "SPACE"


def _check_space(coordinate_system: str) -> str:
    space = str(coordinate_system).upper()
    if space not in ("LPS", "RAS"):
        raise InputError(f"unknown coordinate system '{coordinate_system}'; use LPS or RAS")
    return space


def _space_in_text(text: str | bytes | None) -> str | None:
    """``"RAS"``/``"LPS"`` when ``text`` holds Slicer's ``SPACE=...`` marker, else None."""
    if not text:
        return None
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    if "SPACE=RAS" in text:
        return "RAS"
    if "SPACE=LPS" in text:
        return "LPS"
    return None


def _check_suffix(path: Path, action: str) -> str:
    suffix = format_suffix(path)
    if suffix not in MESH_SUFFIXES:
        raise InputError(
            f"cannot {action} mesh file {path.name}: unknown extension '{suffix}'; "
            f"use one of {', '.join(MESH_SUFFIXES)}"
        )
    return suffix


# --- VTK messages -> exceptions -------------------------------------------------------------
class _VtkMessages:
    """Collects error and warning messages of VTK objects instead of letting VTK print them."""

    def __init__(self, *objects) -> None:
        self.errors: list[str] = []
        for obj in objects:
            obj.AddObserver(vtkCommand.ErrorEvent, self._on_error)
            obj.AddObserver(vtkCommand.WarningEvent, self._on_warning)
            executive = obj.GetExecutive() if hasattr(obj, "GetExecutive") else None
            if executive is not None:
                executive.AddObserver(vtkCommand.ErrorEvent, self._on_error)

    @staticmethod
    def _clean(message) -> str:
        lines = [ln.strip() for ln in str(message or "").splitlines() if ln.strip()]
        body = lines[1] if len(lines) > 1 and lines[0].startswith(("ERROR", "Warning")) else " ".join(lines)
        if "): " in body:
            body = body.split("): ", 1)[1]
        return body.strip()[:200]

    @calldata_type(VTK_STRING)
    def _on_error(self, obj, event, message) -> None:
        self.errors.append(self._clean(message))

    @calldata_type(VTK_STRING)
    def _on_warning(self, obj, event, message) -> None:
        pass

    def first(self) -> str:
        return self.errors[0] if self.errors else "the file is corrupt or ends early (truncated?)"


@contextlib.contextmanager
def _quiet_vtk():
    """Silence VTK's console output (helper objects such as XML parsers) while reading."""
    previous = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        yield
    finally:
        vtkObject.SetGlobalWarningDisplay(previous)


class _Corrupt(Exception):
    """A file's structure contradicts itself; the message says where."""


def _check_ids(ids: np.ndarray, n_points: int | None, what: str) -> None:
    if n_points is not None and ids.size and (ids.min() < 0 or ids.max() >= n_points):
        raise _Corrupt(f"{what} refer to points outside 0..{n_points - 1}")


def _walk_counted_cells(cells: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """``[n, id_1..id_n, n, ...]`` -> (offsets, connectivity); raises :class:`_Corrupt`."""
    if len(cells) == 4 * n_cells and (cells[0::4] == 3).all():  # triangles, the common case
        return np.arange(0, 3 * n_cells + 1, 3, dtype=np.int64), cells.reshape(-1, 4)[:, 1:].reshape(-1)
    starts = []
    index = 0
    while index < len(cells):
        count = int(cells[index])
        if count < 0 or index + 1 + count > len(cells):
            raise _Corrupt("a cell runs past the end of its list")
        starts.append(index)
        index += 1 + count
    if len(starts) != n_cells:
        raise _Corrupt(f"the cell list holds {len(starts)} cells, not the {n_cells} its header says")
    counts = cells[starts] if starts else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    keep = np.ones(len(cells), bool)
    keep[starts] = False
    return offsets, cells[keep]


_VTK_TYPES = {
    "bit": None,
    "unsigned_char": "u1",
    "char": "i1",
    "signed_char": "i1",
    "short": "i2",
    "unsigned_short": "u2",
    "int": "i4",
    "unsigned_int": "u4",
    "long": "i8",
    "unsigned_long": "u8",
    "float": "f4",
    "double": "f8",
    "vtkidtype": "i4",
    "vtktypeint64": "i8",
    "vtktypeuint64": "u8",
    "vtktypeint32": "i4",
    "vtktypeuint32": "u4",
}
_VTK_CELL_KEYWORDS = (b"VERTICES", b"LINES", b"POLYGONS", b"TRIANGLE_STRIPS")


class _LegacyStream:
    """Reads keyword lines and binary/ASCII number blocks of a legacy VTK file."""

    def __init__(self, data: bytes, pos: int, binary: bool) -> None:
        self.data, self.pos, self.binary = data, pos, binary
        self.tokens = data[pos:].split() if not binary else None
        self.token = 0

    def words(self, n: int) -> list[bytes]:
        if self.binary:
            while self.pos < len(self.data) and self.data[self.pos : self.pos + 1] in b" \t\r\n":
                self.pos += 1
            end = self.data.find(b"\n", self.pos)
            end = len(self.data) if end < 0 else end
            words = self.data[self.pos : end].split()
            self.pos = end + 1
            return words
        words = self.tokens[self.token : self.token + n]
        self.token += n
        return words

    def numbers(self, count: int, vtk_type: str) -> np.ndarray:
        code = _VTK_TYPES.get(vtk_type.lower())
        if code is None:
            raise _Corrupt(f"unsupported data type '{vtk_type}'")
        if self.binary:
            dtype = np.dtype(">" + code)
            if count < 0 or self.pos + count * dtype.itemsize > len(self.data):
                raise _Corrupt("the data ends early (truncated?)")
            values = np.frombuffer(self.data, dtype, count, self.pos)
            self.pos += count * dtype.itemsize
            return values
        if count < 0 or self.token + count > len(self.tokens):
            raise _Corrupt("the data ends early (truncated?)")
        chunk = self.tokens[self.token : self.token + count]
        self.token += count
        try:
            return np.array(chunk).astype(np.float64 if code[0] == "f" else np.int64)
        except ValueError:
            raise _Corrupt("a number is malformed") from None

    def at_end(self) -> bool:
        if self.binary:
            return not self.data[self.pos :].strip()
        return self.token >= len(self.tokens)


def _check_stl(data: bytes) -> None:
    """Validate an STL file before VTK reads it (vtkSTLReader skips what it cannot parse and
    returns nothing, whatever the reason). Raises :class:`_Corrupt` naming the problem."""
    if len(data) < 84 or data.lstrip()[:5].lower() == b"solid":
        text = data.decode("ascii", "replace")
        if data.lstrip()[:5].lower() == b"solid" and ("facet" in text or "endsolid" in text):
            rows = [line.split()[1:4] for line in text.splitlines() if line.strip().lower().startswith("vertex")]
            try:
                values = np.array(rows, dtype=np.float64)
            except ValueError:
                raise _Corrupt("a vertex line of this ASCII STL does not hold three numbers") from None
            if not len(rows):
                raise _Corrupt("it holds no triangles (an empty mesh)")
            if not np.isfinite(values).all():
                raise _Corrupt("it has NaN or infinite vertex coordinates")
            return
        if len(data) < 84:
            raise _Corrupt(f"it is {len(data)} bytes, too short for an STL file (an 84-byte header at least)")
    count = int(np.frombuffer(data, "<u4", 1, 80)[0])
    expected = 84 + 50 * count
    if count == 0:
        raise _Corrupt("it holds no triangles (an empty mesh)")
    if len(data) < expected:
        raise _Corrupt(
            f"its header announces {count} triangles ({expected} bytes) but the file has {len(data)} bytes "
            "(truncated, or not a binary STL)"
        )
    records = np.frombuffer(data, np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]), count, 84)
    bad = ~np.isfinite(records["v"]).all(axis=(1, 2))
    if bad.any():
        raise _Corrupt(
            f"{int(bad.sum())} of its {count} triangles have NaN or infinite vertex coordinates "
            f"(the first is triangle {int(np.argmax(bad))})"
        )


def _check_legacy_vtk(data: bytes) -> None:
    """Validate the point and cell sections of a legacy VTK polydata file before VTK reads it.

    vtkPolyDataReader trusts cell counts and point ids and crashes on corrupt ones. This walks
    the ``POINTS`` and cell sections (4.2 counted lists and 5.1 offsets/connectivity) and stops
    at the first section it does not need (point/cell data, field data). Raises :class:`_Corrupt`.
    """
    lines = data.split(b"\n", 4)
    if len(lines) < 5:
        return
    binary = lines[2].strip().upper() == b"BINARY"
    if not lines[3].strip().upper().startswith(b"DATASET POLYDATA"):
        return
    stream = _LegacyStream(data, sum(len(line) + 1 for line in lines[:4]), binary)
    n_points: int | None = None
    try:
        while not stream.at_end():
            head = stream.words(3)
            if not head:
                continue
            keyword = head[0].upper()
            if keyword == b"POINTS" and len(head) >= 3:
                n_points = int(head[1])
                stream.numbers(3 * n_points, head[2].decode("ascii", "replace"))
            elif keyword in _VTK_CELL_KEYWORDS and len(head) >= 3:
                first, second = int(head[1]), int(head[2])
                if binary:
                    saved = stream.pos
                    peek = stream.words(2)
                    if not (peek and peek[0].upper() == b"OFFSETS"):
                        stream.pos = saved
                else:
                    peek = stream.tokens[stream.token : stream.token + 2]
                    if peek and peek[0].upper() == b"OFFSETS":
                        stream.token += 2
                if peek and peek[0].upper() == b"OFFSETS":  # VTK >= 9 layout
                    offsets = stream.numbers(first, peek[1].decode("ascii", "replace") if len(peek) > 1 else "")
                    conn_head = stream.words(2)
                    if not conn_head or conn_head[0].upper() != b"CONNECTIVITY":
                        raise _Corrupt("CONNECTIVITY does not follow OFFSETS")
                    connectivity = stream.numbers(second, conn_head[1].decode("ascii", "replace"))
                    if first and (offsets[0] != 0 or offsets[-1] != second or (np.diff(offsets) < 0).any()):
                        raise _Corrupt(f"the {keyword.decode()} offsets are inconsistent")
                else:
                    cells = stream.numbers(second, "int").astype(np.int64)
                    _, connectivity = _walk_counted_cells(cells, first)
                _check_ids(connectivity, n_points, f"{keyword.decode()} cells")
            else:
                return  # attribute or field data: VTK checks those itself
    except (ValueError, IndexError):
        raise _Corrupt("a section header is malformed") from None


_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def _ply_element_binary(data: bytes, pos: int, count: int, props: list, endian: str) -> tuple[dict, int]:
    """Read one binary PLY element block; returns ({prop: array or (offsets, values)}, new pos)."""
    if all(kind == "scalar" for _, kind, _ in props):
        dtype = np.dtype([(name, endian + types[0]) for name, _, types in props])
        if pos + count * dtype.itemsize > len(data):
            raise _Corrupt("the data ends early (truncated?)")
        block = np.frombuffer(data, dtype, count, pos)
        return {name: block[name] for name, _, _ in props}, pos + count * dtype.itemsize
    # lists: guess every record is as long as the first one, then verify; walk records otherwise
    fields, lengths, cursor = [], {}, pos
    for name, kind, types in props:
        if kind == "scalar":
            fields.append((name, endian + types[0]))
            cursor += np.dtype(types[0]).itemsize
        else:
            count_type = np.dtype(endian + types[0])
            if cursor + count_type.itemsize > len(data):
                raise _Corrupt("the data ends early (truncated?)")
            length = int(np.frombuffer(data, count_type, 1, cursor)[0]) if count else 0
            lengths[name] = length
            fields.append((name + "#n", count_type))
            if length > 0:
                fields.append((name, endian + types[1], (length,)))
            cursor += count_type.itemsize + length * np.dtype(types[1]).itemsize
    dtype = np.dtype(fields)
    if count == 0 or pos + count * dtype.itemsize <= len(data):
        block = np.frombuffer(data, dtype, count, pos)
        if all((block[name + "#n"] == length).all() for name, length in lengths.items()):
            out = {}
            for name, kind, _ in props:
                if kind == "scalar":
                    out[name] = block[name]
                else:
                    length = lengths[name]
                    values = block[name].reshape(-1) if length > 0 else np.zeros(0, np.int64)
                    out[name] = (np.arange(count + 1, dtype=np.int64) * length, values)
            return out, pos + count * dtype.itemsize
    columns: dict = {name: [] for name, _, _ in props}
    for _ in range(count):
        for name, kind, types in props:
            if kind == "scalar":
                code = np.dtype(endian + types[0])
                if pos + code.itemsize > len(data):
                    raise _Corrupt("the data ends early (truncated?)")
                columns[name].append(np.frombuffer(data, code, 1, pos)[0])
                pos += code.itemsize
            else:
                count_type, item_type = np.dtype(endian + types[0]), np.dtype(endian + types[1])
                if pos + count_type.itemsize > len(data):
                    raise _Corrupt("the data ends early (truncated?)")
                length = int(np.frombuffer(data, count_type, 1, pos)[0])
                pos += count_type.itemsize
                if length < 0 or pos + length * item_type.itemsize > len(data):
                    raise _Corrupt("the data ends early (truncated?)")
                columns[name].append(np.frombuffer(data, item_type, length, pos))
                pos += length * item_type.itemsize
    out = {}
    for name, kind, _ in props:
        if kind == "scalar":
            out[name] = np.asarray(columns[name])
        else:
            lists = columns[name]
            offsets = np.concatenate([[0], np.cumsum([len(v) for v in lists])]).astype(np.int64)
            out[name] = (offsets, np.concatenate(lists) if lists else np.zeros(0, np.int64))
    return out, pos


def _ply_element_ascii(tokens: list, index: int, count: int, props: list) -> tuple[dict, int]:
    """Read one ASCII PLY element block from whitespace tokens; returns (columns, new index)."""

    def numbers(chunk):
        try:
            return np.array(chunk).astype(np.float64)
        except ValueError:
            raise _Corrupt("a number is malformed") from None

    layout, cursor = [], index
    for name, kind, _ in props:
        if kind == "scalar":
            layout.append((name, 1))
            cursor += 1
        else:
            if cursor >= len(tokens) and count:
                raise _Corrupt("the data ends early (truncated?)")
            length = int(numbers(tokens[cursor : cursor + 1])[0]) if count else 0
            layout.append((name, 1 + length))
            cursor += 1 + length
    width = sum(w for _, w in layout)
    if index + count * width <= len(tokens):
        block = numbers(tokens[index : index + count * width]).reshape(count, width)
        out, column, uniform = {}, 0, True
        for (name, kind, _), (_, w) in zip(props, layout):
            if kind == "scalar":
                out[name] = block[:, column]
            else:
                if not (block[:, column] == w - 1).all():
                    uniform = False
                    break
                out[name] = (
                    np.arange(count + 1, dtype=np.int64) * (w - 1),
                    block[:, column + 1 : column + w].reshape(-1),
                )
            column += w
        if uniform:
            return out, index + count * width
    columns: dict = {name: [] for name, _, _ in props}
    for _ in range(count):
        for name, kind, _ in props:
            if index >= len(tokens):
                raise _Corrupt("the data ends early (truncated?)")
            if kind == "scalar":
                columns[name].append(numbers(tokens[index : index + 1])[0])
                index += 1
            else:
                length = int(numbers(tokens[index : index + 1])[0])
                if length < 0 or index + 1 + length > len(tokens):
                    raise _Corrupt("the data ends early (truncated?)")
                columns[name].append(numbers(tokens[index + 1 : index + 1 + length]))
                index += 1 + length
    out = {}
    for name, kind, _ in props:
        if kind == "scalar":
            out[name] = np.asarray(columns[name], dtype=np.float64)
        else:
            lists = columns[name]
            offsets = np.concatenate([[0], np.cumsum([len(v) for v in lists])]).astype(np.int64)
            out[name] = (offsets, np.concatenate(lists) if lists else np.zeros(0))
    return out, index


def _parse_ply_header(lines: list[str]) -> tuple[str | None, str | None, list]:
    """PLY header lines after ``ply`` -> (format, space marker, [(element, count, props)])."""
    fmt, space, elements = None, None, []
    for raw in lines:
        words = raw.split()
        if not words:
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "comment":
            space = space or _space_in_text(raw)
        elif words[0] == "element" and len(words) >= 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if len(words) >= 5 and words[1] == "list" and words[2] in _PLY_TYPES and words[3] in _PLY_TYPES:
                elements[-1][2].append((words[4], "list", (_PLY_TYPES[words[2]], _PLY_TYPES[words[3]])))
            elif len(words) >= 3 and words[1] in _PLY_TYPES:
                elements[-1][2].append((words[2], "scalar", (_PLY_TYPES[words[1]],)))
            else:
                raise _Corrupt(f"unsupported PLY property line '{raw.strip()}'")
    return fmt, space, elements


def _read_ply(data: bytes) -> tuple[vtkPolyData, str | None]:
    """Parse a PLY file (ASCII or binary) into a polydata of its vertices and faces.

    Written here because vtkPLYReader crashes on truncated or corrupt files. Reads the
    ``vertex`` element's x, y, z and the ``face`` element's index list; other elements and
    properties are skipped. Raises :class:`_Corrupt`.
    """
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise _Corrupt("it has no PLY header")
    newline = data.find(b"\n", end)
    body_start = len(data) if newline < 0 else newline + 1
    try:
        fmt, space, elements = _parse_ply_header(data[:end].decode("latin-1").splitlines()[1:])
    except (ValueError, IndexError):
        raise _Corrupt("its header is malformed") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _Corrupt(f"unknown PLY format '{fmt}'")
    if any(count < 0 for _, count, _ in elements):
        raise _Corrupt("an element count is negative")
    columns: dict = {}
    if fmt == "ascii":
        tokens, index = data[body_start:].split(), 0
        for name, count, props in elements:
            columns[name], index = _ply_element_ascii(tokens, index, count, props)
    else:
        endian, pos = ("<" if fmt == "binary_little_endian" else ">"), body_start
        for name, count, props in elements:
            columns[name], pos = _ply_element_binary(data, pos, count, props, endian)
    vertex = columns.get("vertex", {})
    if not all(axis in vertex for axis in "xyz"):
        raise _Corrupt("it has no vertex element with x, y, z")
    points = np.stack([np.asarray(vertex[axis], np.float64) for axis in "xyz"], axis=1)
    offsets, connectivity = np.zeros(1, np.int64), np.zeros(0, np.int64)
    face = columns.get("face", {})
    lists = [face[k] for k in ("vertex_indices", "vertex_index") if k in face]
    lists += [v for v in face.values() if isinstance(v, tuple)]
    if lists:
        offsets, values = lists[0]
        connectivity = np.asarray(values)
        if connectivity.dtype.kind == "f":
            if not np.array_equal(connectivity, np.round(connectivity)):
                raise _Corrupt("face indices are not integers")
        connectivity = connectivity.astype(np.int64)
        _check_ids(connectivity, len(points), "faces")
        sizes = np.diff(offsets)
        if (sizes < 3).any():  # drop points and edges listed as faces
            keep = np.repeat(sizes >= 3, sizes)
            connectivity = connectivity[keep]
            offsets = np.concatenate([[0], np.cumsum(sizes[sizes >= 3])]).astype(np.int64)
    return polydata_from_arrays(points, offsets, connectivity), space


# --- reading --------------------------------------------------------------------------------
def _read_polydata(path: Path, suffix: str) -> tuple[vtkPolyData, str | None]:
    """Read ``path`` with the reader for ``suffix``; return the polydata and the space marker."""
    if suffix == ".vtp":
        with open(path, "rb") as handle:
            head = handle.read(512)
        if b"<VTKFile" not in head and not head.lstrip().startswith(b"<?xml"):
            raise InputError(f"could not read {path} as a mesh: it is not a VTK XML file; give a valid .vtp file")
    if suffix in (".ply", ".vtk", ".stl"):
        data = path.read_bytes()
        try:
            if suffix == ".ply":
                return _read_ply(data)
            if suffix == ".stl":
                _check_stl(data)
            else:
                _check_legacy_vtk(data)
        except _Corrupt as err:
            raise InputError(
                f"could not read {path} as a mesh: {err}; check that it is a valid {suffix} file"
            ) from None
    reader = {
        ".stl": vtkSTLReader,
        ".vtp": vtkXMLPolyDataReader,
        ".vtk": vtkPolyDataReader,
        ".obj": vtkOBJReader,
    }[suffix]()
    reader.SetFileName(str(path))
    messages = _VtkMessages(reader)
    if suffix == ".vtk":
        if not reader.IsFilePolyData():
            raise InputError(
                f"could not read {path} as a mesh: it is not a legacy VTK polydata file "
                "(it may hold a volume or an unstructured grid); give a surface mesh"
            )
    with _quiet_vtk():
        reader.Update()
    error_code = reader.GetErrorCode() if hasattr(reader, "GetErrorCode") else 0
    if messages.errors or error_code:
        raise InputError(f"could not read {path} as a mesh: {messages.first()}; check that it is a valid {suffix} file")
    polydata = reader.GetOutput()
    space = None
    if suffix in (".stl", ".vtk"):
        space = _space_in_text(reader.GetHeader())
    elif suffix == ".obj":
        space = _space_in_text(reader.GetComment())
    elif suffix == ".vtp":
        field = polydata.GetFieldData().GetAbstractArray(_SPACE_FIELD) if polydata.GetFieldData() else None
        if isinstance(field, vtkStringArray) and field.GetNumberOfValues() > 0:
            value = field.GetValue(0).upper()
            space = "RAS" if "RAS" in value else "LPS" if "LPS" in value else None
    return polydata, space


def _open_mesh_file(path: str | os.PathLike, coordinate_system: str) -> tuple[Path, str, vtkPolyData, str]:
    """Checks shared by the readers; returns (path, suffix, polydata, space of its coordinates)."""
    default_space = _check_space(coordinate_system)
    path = Path(path).expanduser()
    suffix = _check_suffix(path, "read")
    if Path(path).is_dir():
        raise InputError(f"mesh path {path} is a folder; give a mesh file ({', '.join(MESH_SUFFIXES)})")
    path = check_input_path(path, "mesh file")
    polydata, space = _read_polydata(path, suffix)
    if polydata.GetPoints() is not None and polydata.GetNumberOfPoints():
        points = vtk_to_numpy(polydata.GetPoints().GetData())
        if not np.isfinite(points).all():
            bad = int((~np.isfinite(points).all(axis=1)).sum())
            raise InputError(
                f"mesh file {path} has {bad} point(s) with NaN or infinite coordinates; repair or re-export it"
            )
        check_coordinates(points, f"mesh file {path}")
    return path, suffix, polydata, space or default_space


def read_mesh(path: str | os.PathLike, coordinate_system: str = "LPS") -> Mesh:
    """Read a surface mesh file into LPS millimetres.

    Args:
        path: ``.stl``, ``.vtp``, ``.vtk``, ``.obj`` or ``.ply`` file.
        coordinate_system: ``"LPS"`` or ``"RAS"``, the space assumed when the file carries
            no Slicer ``SPACE`` marker; a marker in the file always wins.

    Returns:
        Mesh with float32 ``(N, 3)`` LPS vertices and int64 ``(F, 3)`` faces; polygons are
        triangulated, vertex and line cells dropped.

    Raises:
        InputError: missing or unreadable file, unknown extension, no triangles.
    """
    path, suffix, polydata, space = _open_mesh_file(path, coordinate_system)
    try:
        mesh = polydata_to_mesh(polydata)
    except ValueError as err:
        raise InputError(f"could not read {path} as a mesh: {err}; check that it is a valid {suffix} file") from None
    if mesh.num_vertices == 0:
        raise InputError(
            f"could not read {path} as a mesh: it holds no points (empty, truncated or not a {suffix} file); "
            "check that it is valid and complete"
        )
    if mesh.num_faces == 0:
        raise InputError(f"{path} has no triangles; give a surface mesh ({', '.join(MESH_SUFFIXES)} with faces)")
    if space == "RAS":
        mesh = Mesh(ras_to_lps(mesh.vertices), mesh.faces)
    return mesh


def read_mesh_vertices(path: str | os.PathLike, coordinate_system: str = "LPS") -> np.ndarray:
    """All points of a mesh or point-cloud file in LPS mm, triangles not required.

    Same formats and space rules as :func:`read_mesh`. Returns float64 ``(N, 3)``.

    Raises:
        InputError: missing or unreadable file, unknown extension, no points.
    """
    path, suffix, polydata, space = _open_mesh_file(path, coordinate_system)
    if polydata.GetPoints() is None or polydata.GetNumberOfPoints() == 0:
        raise InputError(f"{path} holds no points; give a mesh or point cloud with vertices")
    points = np.array(vtk_to_numpy(polydata.GetPoints().GetData()), dtype=np.float64).reshape(-1, 3)
    return ras_to_lps(points) if space == "RAS" else points


# --- writing --------------------------------------------------------------------------------
def _write_obj(mesh: Mesh, path: Path, header: str) -> None:
    with open(path, "w", encoding="ascii", newline="\n") as handle:
        handle.write(f"# {header}\n")
        np.savetxt(handle, mesh.vertices, fmt="v %.9g %.9g %.9g")
        np.savetxt(handle, mesh.faces + 1, fmt="f %d %d %d")


def _run_writer(writer, target: Path) -> None:
    messages = _VtkMessages(writer)
    ok = writer.Write()
    if not ok or messages.errors:
        raise InputError(f"could not write {target}: {messages.first()}")


def write_mesh(mesh: Mesh, path: str | os.PathLike, coordinate_system: str = "LPS") -> Path:
    """Write an LPS ``mesh`` to ``path`` atomically, in LPS or RAS, with Slicer's space marker.

    Args:
        mesh: triangles in LPS millimetres.
        path: ``.stl`` (binary), ``.vtp``, ``.vtk``, ``.obj`` or ``.ply``.
        coordinate_system: ``"LPS"`` (default, as Slicer writes) or ``"RAS"``.

    Returns:
        The written path.

    Raises:
        InputError: unknown extension or coordinate system, mesh without triangles,
            missing/unwritable output folder, or a failed write (nothing is left behind).
    """
    space = _check_space(coordinate_system)
    target = check_output_path(path)
    suffix = _check_suffix(target, "write")
    if mesh.num_faces == 0:
        raise InputError(f"the mesh has no triangles, so there is nothing to write to {target}")
    if space == "RAS":
        mesh = Mesh(lps_to_ras(mesh.vertices), mesh.faces)
    header = SLICER_HEADER_PREFIX + space
    with atomic_write(target) as tmp:
        if suffix == ".obj":
            _write_obj(mesh, tmp, header)
            return target
        polydata = mesh_to_polydata(mesh)
        if suffix == ".stl":
            writer = vtkSTLWriter()
            writer.SetFileTypeToBinary()
            writer.SetHeader(header)
        elif suffix == ".vtk":
            writer = vtkPolyDataWriter()
            writer.SetFileVersion(42)  # readable by Slicer 4 and other tools, as Slicer writes
            writer.SetFileTypeToBinary()
            writer.SetHeader(header)
        elif suffix == ".vtp":
            marker = vtkStringArray()
            marker.SetName(_SPACE_FIELD)
            marker.InsertNextValue(space)
            polydata.GetFieldData().AddArray(marker)
            writer = vtkXMLPolyDataWriter()
            writer.SetDataModeToAppended()
            writer.SetCompressorTypeToZLib()
        else:  # .ply
            writer = vtkPLYWriter()
            writer.SetFileTypeToBinary()
            writer.AddComment(f"{_SPACE_FIELD}={space}")
        writer.SetFileName(str(tmp))
        writer.SetInputData(polydata)
        _run_writer(writer, target)
    return target
