"""The widget tests catch a broken widget: each deliberate break of the module's code makes them fail.

A copy of ``ImageToMesh/`` gets one break (a misspelt signal, slot or backend call, a wrong
signal signature, a Qt property called as a method, which PythonQt does not allow) and
``test_widget.py`` runs against it in a fresh interpreter; it must fail. The unbroken copy must pass, so a failure means the break was seen.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MODULE = HERE.parents[1] / "ImageToMesh"
WIDGET = Path("ImageToMeshModule") / "widget.py"

BREAKS = {
    "misspelt signal": ('self.ui.applyButton.connect("clicked(bool)"', 'self.ui.applyButton.connect("clickd(bool)"'),
    "wrong signal signature": (
        'slider.connect("valueChanged(double)", self._onFitLambdaChanged)',
        'slider.connect("valueChanged(int)", self._onFitLambdaChanged)',
    ),
    "misspelt slot": (
        'self.ui.fitButton.connect("clicked(bool)", self.onFitButton)',
        'self.ui.fitButton.connect("clicked(bool)", self.onFitButon)',
    ),
    "misspelt backend call": ("self.logic.backend.start(job)", "self.logic.backend.strat(job)"),
    "property called as a method": (
        "p.inputVolume, self.ui.methodComboBox.currentText, p.outputModel",
        "p.inputVolume, self.ui.methodComboBox.currentText(), p.outputModel",
    ),
}


def run_widget_tests(module_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, IMAGETOMESH_MODULE_DIR=str(module_dir), QT_QPA_PLATFORM="offscreen")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            str(HERE / "test_widget.py"),
            "-k",
            "apply_shows_progress or fit_uses_the_drawn_curves or cancel_leaves",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=str(HERE.parents[1]),
    )


def broken_copy(tmp_path: Path, before: str, after: str) -> Path:
    copy = tmp_path / "ImageToMesh"
    shutil.copytree(MODULE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = (copy / WIDGET).read_text(encoding="utf-8")
    assert source.count(before) == 1, f"the break no longer applies: {before!r}"
    (copy / WIDGET).write_text(source.replace(before, after), encoding="utf-8")
    return copy


@pytest.mark.slow
def test_the_unbroken_copy_passes(tmp_path):
    copy = tmp_path / "ImageToMesh"
    shutil.copytree(MODULE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    run = run_widget_tests(copy)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_broken_widget_fails_the_widget_tests(tmp_path, name):
    run = run_widget_tests(broken_copy(tmp_path, *BREAKS[name]))
    assert run.returncode == 1, f"{name}: the widget tests did not fail\n{run.stdout[-3000:]}"
    assert "failed" in run.stdout.splitlines()[-1]
