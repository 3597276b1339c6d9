"""The layering of ARCHITECTURE.md, checked on the source (what each part may import).

- ``imagetomesh.core`` is numpy-only: no torch, no other part of the library but ``errors``.
- ``imagetomesh.models`` builds networks: no files, CLI, backend, Slicer or Qt.
- The library never imports Slicer or Qt; the Slicer module never imports torch, pymeshlab or
  scipy (its process is Slicer's: the worker does the heavy work).
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "ImageToMeshLib" / "imagetomesh"
MODULE = REPO / "ImageToMesh"


def _sys_path_root(path: Path) -> Path:
    """The folder on ``sys.path`` that ``path`` is imported from (the library's, or the Slicer module's)."""
    return LIBRARY.parent if LIBRARY in path.parents else MODULE


def imports_of(path: Path) -> set:
    """Absolute module names imported anywhere in ``path`` (functions included; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(_sys_path_root(path)).parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module)
    return names


def _python_files(folder: Path) -> list:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _violations(files, forbidden) -> list:
    found = []
    for path in files:
        for name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(REPO)} imports {name}")
    return found


def test_core_is_numpy_only():
    forbidden = ["torch", "scipy", "pymeshlab", "SimpleITK", "vtk", "vtkmodules"] + [
        f"imagetomesh.{part}"
        for part in (
            "nn",
            "models",
            "training",
            "fitting",
            "geometry",
            "io",
            "backend",
            "cli",
            "inference",
            "zoo",
            "weights",
            "metrics",
            "preprocessing",
            "preview",
            "demo",
        )
    ]
    assert _violations(_python_files(LIBRARY / "core"), forbidden) == []


def test_models_touch_no_files_cli_backend_or_slicer():
    forbidden = [
        "imagetomesh.io",
        "imagetomesh.cli",
        "imagetomesh.backend",
        "imagetomesh.demo",
        "imagetomesh.preview",
        "slicer",
        "qt",
        "ctk",
        "SimpleITK",
    ]
    assert _violations(_python_files(LIBRARY / "models"), forbidden) == []


def test_the_library_never_imports_slicer_or_qt():
    assert _violations(_python_files(LIBRARY), ["slicer", "qt", "ctk", "PySide6", "PythonQt"]) == []


def test_the_slicer_module_never_imports_heavy_packages():
    assert _violations(_python_files(MODULE), ["torch", "pymeshlab", "scipy", "skimage", "torch_geometric"]) == []


@pytest.mark.parametrize("path", [LIBRARY / "core" / "volume.py", MODULE / "ImageToMeshModule" / "logic.py"])
def test_the_import_reader_resolves_relative_imports(path):
    names = imports_of(path)
    assert all(not n.startswith(".") for n in names)
    if path.name == "logic.py":
        assert {"ImageToMeshModule", "ImageToMeshModule.parameterNode"} <= names  # from . / from .parameterNode
