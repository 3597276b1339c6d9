"""The module never imports torch into Slicer's own process: models run in the worker.

Checked in a fresh interpreter (this test session has torch loaded already by other tests).
"""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

PROBE = textwrap.dedent('''
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("testenv", sys.argv[1])
    env = importlib.util.module_from_spec(spec); spec.loader.exec_module(env)
    itm = env.load_module()
    result = {"module": "torch" in sys.modules}
    scene = env.make_scene()
    import numpy as np
    from imagetomesh.core.mesh import Mesh
    mesh = Mesh(np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float),
                np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))
    logic = itm.ImageToMeshLogic(backend=None)
    logic.applyResult(mesh, itm.ResultTarget("segment", "tetra"))
    result["scene"] = "torch" in sys.modules
    print(json.dumps(result))
''')


@pytest.mark.slow
def test_module_and_scene_side_do_not_import_torch():
    run = subprocess.run([sys.executable, "-c", PROBE, str(HERE / "conftest.py")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert not result["module"], "importing ImageToMesh.py imported torch"
    assert not result["scene"], "putting a mesh into the scene imported torch through the library"
