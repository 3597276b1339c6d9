"""Train on a machine that has PyTorch but not SimpleITK or VTK (a rented GPU): the MSD folder's images as arrays.

Two steps:

    python tools/train_from_arrays.py convert DATA OUT [--without-test SPLIT_FILE]
        here, with the package installed: every image and label of the MSD folder DATA read as `segment` reads
        it and written as OUT/<imagesTr|labelsTr>/<case>.npz (the array in its own dtype; spacing, origin and
        direction in LPS), with DATA's dataset.json pointing at them (other fields kept). With --without-test,
        the test cases of SPLIT_FILE are neither read nor written: a held-out split stays on this machine.

    python tools/train_from_arrays.py train -- ARGS...
        there: `imagetomesh train ARGS...` (ARGS with --data OUT) reading those arrays. SimpleITK, VTK and pymeshlab,
        where missing, are replaced by stand-ins whose names raise when used: training a U-Net reads images and
        nothing else of theirs, so a use of one of them fails at once rather than training on something else.

    python tools/train_from_arrays.py script PATH -- ARGS...
        there: the Python script PATH run with ARGS and the same stand-ins (e.g. Testing/benchmarks/ct_unet_step.py,
        whose imports reach VTK without using it).

The trained model is the same as one trained on DATA itself (the arrays are the volumes `read_image` returns).
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import runpy
import sys
import types
from collections.abc import Collection
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def convert(data: Path, out: Path, leave_out: Collection[str] = ()) -> None:
    """``out``: ``data``'s cases as ``.npz`` volumes and its ``dataset.json`` pointing at them; the cases named in
    ``leave_out`` (ids, e.g. a split's test cases) are not converted nor listed."""
    from imagetomesh.io.images import image_stem, read_image

    document = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    if leave_out:
        leave_out = set(leave_out)
        kept = [e for e in document["training"] if image_stem(Path(e["image"]).name) not in leave_out]
        document["training"], document["numTraining"] = kept, len(kept)
    for entry in document["training"]:
        for key in ("image", "label"):
            source = Path(entry[key])
            target = source.parent / f"{image_stem(source.name)}.npz"
            volume = read_image(data / source)
            (out / target.parent).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(
                out / target,
                array=volume.array,
                spacing=volume.spacing,
                origin=volume.origin,
                direction=volume.direction,
            )
            entry[key] = target.as_posix()
    (out / "dataset.json").write_text(json.dumps(document, indent=1), encoding="utf-8")


def read_array_volume(path):
    """A :class:`~imagetomesh.core.volume.Volume` written by :func:`convert`."""
    from imagetomesh.core.volume import Volume

    with np.load(path) as saved:
        return Volume(saved["array"], saved["spacing"], saved["origin"], saved["direction"])


#: The libraries a U-Net's training imports but does not use, replaced where missing.
UNUSED_LIBRARIES = ("SimpleITK", "vtk", "vtkmodules", "pymeshlab")


class _Unavailable:
    """A name of a library that is not installed: its attributes raise; a call gives another stand-in (so that a
    decorator applied when a module is imported does), whose attributes raise."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise RuntimeError(f"{self._name} is not installed here (tools/train_from_arrays.py trains without it)")

    def __call__(self, *args, **kwargs):
        return _Unavailable(f"{self._name}(...)")


def _stand_in(module: str, attr: str) -> _Unavailable:
    """The stand-in of ``module.attr`` (Python's own lookups of special names get AttributeError, as usual)."""
    if attr.startswith("__"):
        raise AttributeError(attr)
    return _Unavailable(f"{module}.{attr}")


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of the missing :data:`UNUSED_LIBRARIES` (and their submodules) give stand-in modules."""

    def __init__(self, missing: set[str]) -> None:
        self.missing = missing

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.missing:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: _stand_in(spec.name, attr)
        return module

    def exec_module(self, module) -> None:
        pass


def stand_in_missing() -> None:
    """Stand in for the :data:`UNUSED_LIBRARIES` that are not installed, and import the package from this tree."""
    missing = {name for name in UNUSED_LIBRARIES if importlib.util.find_spec(name) is None}
    sys.meta_path.insert(0, _StandIns(missing))
    sys.path.insert(0, str(REPO / "ImageToMeshLib"))


def train(args: list[str]) -> int:
    """``imagetomesh train`` with the missing image libraries stood in for and the training data read from arrays."""
    stand_in_missing()
    import imagetomesh.training.data as data
    from imagetomesh.cli import main

    data.read_image = read_array_volume
    return main(["train", *args])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    c = sub.add_parser("convert")
    c.add_argument("data", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--without-test", type=Path, metavar="SPLIT_FILE", help="leave out this split file's test cases")
    t = sub.add_parser("train")
    t.add_argument("args", nargs=argparse.REMAINDER)
    r = sub.add_parser("script")
    r.add_argument("path", type=Path)
    r.add_argument("args", nargs=argparse.REMAINDER)
    parsed = parser.parse_args()
    if parsed.step == "convert":
        test = json.loads(parsed.without_test.read_text(encoding="utf-8"))["test"] if parsed.without_test else ()
        convert(parsed.data, parsed.out, test)
    elif parsed.step == "script":
        stand_in_missing()
        sys.argv = [str(parsed.path), *[a for a in parsed.args if a != "--"]]
        runpy.run_path(str(parsed.path), run_name="__main__")
    else:
        sys.exit(train([a for a in parsed.args if a != "--"]))
