"""The worker's wire format: JSON messages (never pickles), arrays as ``.npy`` files in a folder.

A ``run`` message holds the job's task, params and the folder the parent shares with the
worker; each array of the job (volume, curves, points, mesh) is saved there as
``<job id>-<what>.npy`` and named in the message by its path. A result is either
``{"type": "mesh", "vertices": path, "faces": path}`` or ``{"type": "json", "value": ...}``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from imagetomesh.backend.jobs import Job
from imagetomesh.core.mesh import Mesh
from imagetomesh.core.volume import Volume
from imagetomesh.organs import OrganMesh

__all__ = ["job_to_wire", "job_from_wire", "result_to_wire", "result_from_wire", "wire_folder", "dumps"]


def _save_array(folder: Path, stem: str, array: np.ndarray) -> str:
    path = folder / f"{stem}.npy"
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    return str(path)


def _load_array(path: str) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _volume_to_wire(volume: Volume, folder: Path, stem: str) -> dict:
    return {
        "array": _save_array(folder, stem, volume.array),
        "spacing": volume.spacing.tolist(),
        "origin": volume.origin.tolist(),
        "direction": volume.direction.tolist(),
    }


def _volume_from_wire(data: dict) -> Volume:
    return Volume(
        _load_array(data["array"]), np.array(data["spacing"]), np.array(data["origin"]), np.array(data["direction"])
    )


def _mesh_to_wire(mesh: Mesh, folder: Path, stem: str) -> dict:
    return {
        "vertices": _save_array(folder, stem + "-vertices", mesh.vertices),
        "faces": _save_array(folder, stem + "-faces", mesh.faces),
    }


def _mesh_from_wire(data: dict) -> Mesh:
    return Mesh(_load_array(data["vertices"]), _load_array(data["faces"]))


def job_to_wire(job: Job, job_id: str, folder: Path) -> dict:
    """The ``run`` message of ``job``; its arrays are saved in ``folder`` as ``<job_id>-*.npy``."""
    message: dict = {"cmd": "run", "id": job_id, "task": job.task, "params": job.params, "folder": str(folder)}
    if job.volume is not None:
        message["volume"] = _volume_to_wire(job.volume, folder, f"{job_id}-volume")
    if job.curves is not None:
        message["curves"] = [
            _save_array(folder, f"{job_id}-curve{i}", np.asarray(c, np.float64)) for i, c in enumerate(job.curves)
        ]
    if job.points is not None:
        message["points"] = _save_array(folder, f"{job_id}-points", np.asarray(job.points, np.float64))
    if job.mesh is not None:
        message["mesh"] = _mesh_to_wire(job.mesh, folder, f"{job_id}-mesh")
    return message


def job_from_wire(message: dict) -> Job:
    """The :class:`Job` of a ``run`` message (its arrays read back from their files)."""
    return Job(
        task=message["task"],
        params=message.get("params") or {},
        volume=_volume_from_wire(message["volume"]) if "volume" in message else None,
        curves=[_load_array(p) for p in message["curves"]] if "curves" in message else None,
        points=_load_array(message["points"]) if "points" in message else None,
        mesh=_mesh_from_wire(message["mesh"]) if "mesh" in message else None,
    )


def result_to_wire(result: Any, folder: Path, stem: str) -> dict:
    """A job's result as a message part: a mesh goes to ``folder/<stem>-{vertices,faces}.npy``, a list of
    :class:`~imagetomesh.organs.OrganMesh` to one such pair per organ found (with the organ as JSON),
    anything else as JSON."""
    if isinstance(result, Mesh):
        return {"type": "mesh", **_mesh_to_wire(result, folder, stem)}
    if isinstance(result, list) and result and all(isinstance(r, OrganMesh) for r in result):
        return {
            "type": "organs",
            "organs": [
                {
                    "organ": r.organ_dict(),
                    "mesh": _mesh_to_wire(r.mesh, folder, f"{stem}-{n}") if r.mesh is not None else None,
                }
                for n, r in enumerate(result)
            ],
        }
    return {"type": "json", "value": result}


def result_from_wire(data: dict) -> Any:
    """The inverse of :func:`result_to_wire`."""
    if data.get("type") == "mesh":
        return _mesh_from_wire(data)
    if data.get("type") == "organs":
        return [
            OrganMesh.from_dict(r["organ"], _mesh_from_wire(r["mesh"]) if r["mesh"] is not None else None)
            for r in data["organs"]
        ]
    return data.get("value")


def wire_folder(message: dict) -> Path:
    """Where the parent wants the result files (its private temporary folder)."""
    return Path(message.get("folder") or tempfile.gettempdir())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(message: dict) -> str:
    """``message`` as one JSON line's text (numpy scalars and arrays, and paths, converted)."""
    return json.dumps(message, default=_json_default)
