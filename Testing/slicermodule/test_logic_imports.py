"""The module never imports torch, pymeshlab or scipy into Slicer's own process: models run in the worker.

Checked in a fresh interpreter (this test session has torch loaded already by other tests).
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from harness import application as env
    itm = env.load_module()
    heavy = ("torch", "pymeshlab", "scipy")
    result = {"module": [m for m in heavy if m in sys.modules]}
    scene = env.make_scene()
    import numpy as np
    from imagetomesh.core.mesh import Mesh
    mesh = Mesh(np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float),
                np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))
    from ImageToMeshModule import sceneAdapters
    logic = itm.ImageToMeshLogic(backend=None)
    logic.applyResult(mesh, sceneAdapters.ResultTarget("segment", "tetra"))
    logic.getParameterNode()
    widget, panel = env.open_module_panel()
    widget.cleanup()
    result["scene"] = [m for m in heavy if m in sys.modules]
    print(json.dumps(result))
""")


@pytest.mark.slow
def test_module_and_scene_side_do_not_import_torch():
    run = subprocess.run([sys.executable, "-c", PROBE, str(HERE)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert not result["module"], f"importing ImageToMesh.py imported {result['module']}"
    assert not result["scene"], (
        f"the panel or putting a mesh into the scene imported {result['scene']} into Slicer's process"
    )
