"""The module's own self-test (``ImageToMeshTest``, what Slicer's test runner executes).

It must skip cleanly, with a message, when the worker's packages are missing, and when they are
installed it must run with torch and pymeshlab only in the worker, never in Slicer's process.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_self_test_skips_cleanly_without_dependencies(itm, scene, monkeypatch):
    from ImageToMeshModule import dependencies, logic

    messages = []
    missing = [dependencies.DependencyStatus("torch>=2.1,<3", "torch", None)]
    monkeypatch.setattr(logic.ImageToMeshLogic, "unsatisfiedDependencies", staticmethod(lambda: missing))
    case = itm.ImageToMeshTest()
    monkeypatch.setattr(case, "delayDisplay", lambda message, msec=0: messages.append(message))
    case.runTest()
    assert any("skipped" in m for m in messages), messages


PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from harness import application as env
    env.make_scene()
    itm = env.load_module()
    messages = []
    case = itm.ImageToMeshTest()
    case.delayDisplay = lambda message, msec=0: messages.append(message)
    case.runTest()
    print(json.dumps({"messages": messages, "heavy": [m for m in ("torch", "pymeshlab") if m in sys.modules]}))
""")


@pytest.mark.slow
def test_self_test_runs_with_the_worker_and_keeps_torch_out_of_slicer():
    run = subprocess.run([sys.executable, "-c", PROBE, str(HERE)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "Segmentation test passed" in result["messages"], result["messages"]
    assert result["heavy"] == [], f"the self-test imported {result['heavy']} into Slicer's process"
