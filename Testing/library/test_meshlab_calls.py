"""pymeshlab one call at a time (``geometry.meshlab_calls``): every library function that makes a MeshSet holds the
lock, and two threads reconstructing surfaces at once no longer crash the process."""

import ast
import subprocess
import sys
from pathlib import Path

import imagetomesh

LIBRARY = Path(imagetomesh.__file__).parent

#: What makes a pymeshlab MeshSet in the library's sources.
MESHSET_MAKERS = ("pymeshlab.MeshSet(", "_to_meshset(")


def _functions_making_meshsets() -> dict[str, bool]:
    """``{"module.py:function": decorated with one_at_a_time}`` for every function whose own body makes a MeshSet."""
    found = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = "\n".join(ast.get_source_segment(source, statement) or "" for statement in node.body)
            if any(maker in body for maker in MESHSET_MAKERS):
                decorators = [ast.get_source_segment(source, d) for d in node.decorator_list]
                found[f"{path.relative_to(LIBRARY)}:{node.name}"] = "one_at_a_time" in decorators
    return found


def test_every_function_that_makes_a_meshset_runs_one_at_a_time():
    found = _functions_making_meshsets()
    assert {"geometry/udf_meshing.py:screened_poisson", "geometry/quality.py:_to_meshset"} <= set(found)
    assert len(found) >= 7, found
    assert [name for name, locked in found.items() if not locked] == []


#: Two threads, each reconstructing a sphere by screened Poisson six times (pymeshlab imported in the main thread
#: first). Without the lock the process crashed or hung.
CONCURRENT_POISSON = """
import threading
import numpy as np
import pymeshlab
from imagetomesh.geometry.udf_meshing import screened_poisson
points = np.random.default_rng(0).normal(size=(3000, 3))
points /= np.linalg.norm(points, axis=1, keepdims=True)
faces = []
def work():
    for _ in range(6):
        faces.append(screened_poisson(points, points, 6, 3).num_faces)
threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(faces), len(set(faces)))
"""


def test_two_threads_reconstructing_surfaces_at_once_do_not_crash():
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENT_POISSON], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["12", "1"]  # every reconstruction done, all the same surface
