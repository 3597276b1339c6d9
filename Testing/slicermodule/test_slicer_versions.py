"""Supported Slicer versions: 5.10 and later (Python 3.12); older ones get a message, not a traceback.

Slicer 5.6 and 5.8 ship Python 3.9, which the imagetomesh library (Python 3.10+) cannot run. The
module file must still load there and say what to do. The module's own code is run on Python
3.12 by ``.ci/run`` (a second, torch-free environment), as Slicer 5.10 ships it.
"""

import ast
import glob
import os
import shutil
import subprocess
import textwrap

import pytest

from harness import application

MODULE_FILE = application.REPO / "ImageToMesh" / "ImageToMesh.py"


def test_the_module_file_is_valid_python_3_9():
    ast.parse(MODULE_FILE.read_text(encoding="utf-8"), feature_version=(3, 9))


def test_the_extension_metadata_and_docs_state_the_supported_versions(itm):
    assert itm.MINIMUM_SLICER == "5.10" and itm.MINIMUM_PYTHON == (3, 10)
    docs = (application.REPO / "docs" / "slicer.md").read_text(encoding="utf-8")
    assert "3D Slicer 5.10 or later" in docs
    cmake = (application.REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "5.10" in cmake


def _python39():
    found = shutil.which("python3.9")
    candidates = ([found] if found else []) + sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))
    )
    for candidate in candidates:
        if (
            subprocess.run(
                [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"], capture_output=True
            ).returncode
            == 0
        ):
            return candidate
    return None


OLD_SLICER = textwrap.dedent("""
    import sys, types
    slicer = types.ModuleType("slicer"); sys.modules["slicer"] = slicer
    i18n = types.ModuleType("slicer.i18n"); i18n.tr = lambda t: t; i18n.translate = lambda c, t: t
    sys.modules["slicer.i18n"] = i18n
    slm = types.ModuleType("slicer.ScriptedLoadableModule"); sys.modules["slicer.ScriptedLoadableModule"] = slm
    class ScriptedLoadableModule:
        def __init__(self, parent): self.parent = parent
    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None): self.parent = parent
    slm.ScriptedLoadableModule, slm.ScriptedLoadableModuleWidget = ScriptedLoadableModule, ScriptedLoadableModuleWidget
    namespace = {"__name__": "ImageToMesh"}
    exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"), namespace)
    parent = types.SimpleNamespace()
    namespace["ImageToMesh"](parent)
    assert not namespace["SUPPORTED"] and "ImageToMeshWidget" in namespace
    assert "ImageToMeshModule.widget" not in sys.modules
    print(parent.helpText.splitlines()[0])
""")


def test_an_older_slicer_gets_a_message_instead_of_a_traceback():
    python = _python39()
    if python is None:
        pytest.skip("no Python 3.9 interpreter here (Slicer 5.6/5.8's Python)")
    run = subprocess.run([python, "-c", OLD_SLICER, str(MODULE_FILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "needs 3D Slicer 5.10 or later" in run.stdout and "Python 3.9" in run.stdout
