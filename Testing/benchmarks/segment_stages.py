"""Run one ``imagetomesh segment`` command as the CLI does, and print where its wall time went, stage by stage.

Usage: python Testing/benchmarks/segment_stages.py SEGMENT_ARGS...   (e.g. CT --model nudf-headneck-ct -o FOLDER)

Stages (seconds, each the wall time spent inside it; they do not overlap):

- ``python`` (printed by ``ct_segment_benchmark.py --stages`` only, which starts this script and times it): the
  interpreter's start, before this script's first line;
- ``import torch``, then ``import library``: the rest of what ``segment`` imports up front (its CLI, inference,
  image and mesh I/O);
- ``load model``: building the :class:`~imagetomesh.inference.Segmenter` (the weights, its ensemble, the inference
  copies; torch-geometric is imported here for the mesh models);
- ``read image``: :func:`~imagetomesh.io.images.read_image`;
- ``scan image``: the body crop and the resampling onto the scan grid (``Segmenter.scan_image``);
- ``U-Nets``: the U-Nets' pass over the scan grid (``scan.mean_probabilities``: the ensemble, windows);
- ``organs``: the rest of ``segment_organs``: the organ masks, the layout check and each organ's mesh (decoders,
  meshing, finishing; side by side on two threads for the mesh models);
- ``write meshes``: :func:`~imagetomesh.io.meshes.write_mesh`;
- ``other``: what is left of the command (argument checks, ``--roi``, output).

Why: the 15 s target of issue 16 was missed only in some hours of some machines; this says which stage grew.
``ct_segment_benchmark.py --stages`` prints it for each input after the timed runs.
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

import torch  # noqa: E402  (timed: the first stage)

TORCH = time.perf_counter()

import imagetomesh.inference as inference  # noqa: E402
import imagetomesh.io.images as images  # noqa: E402
import imagetomesh.io.meshes as meshes  # noqa: E402
from imagetomesh.cli import main  # noqa: E402

LIBRARY = time.perf_counter()
del torch

#: stage -> seconds spent inside it (the functions :func:`timed` wraps)
SPENT: dict[str, float] = {}


def timed(owner, name: str, stage: str) -> None:
    """Wrap ``owner.name`` (a module's function or a class's method) so that each call adds its wall time to
    ``SPENT[stage]``."""
    function = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[stage] = SPENT.get(stage, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)


def run(argv: list[str]) -> dict[str, float]:
    """``imagetomesh segment *argv`` in this process; returns ``{stage: seconds}`` in the order of the docstring."""
    timed(inference.Segmenter, "__init__", "load model")
    timed(images, "read_image", "read image")
    timed(inference.Segmenter, "scan_image", "scan image")
    timed(inference, "mean_probabilities", "U-Nets")
    timed(inference.Segmenter, "segment_organs", "segment_organs")
    timed(meshes, "write_mesh", "write meshes")
    before = time.perf_counter()
    code = main(["segment", *argv])
    if code:
        raise SystemExit(f"segment exited {code}")
    command = time.perf_counter() - before
    inside = {key: SPENT.get(key, 0.0) for key in ("load model", "read image", "scan image", "U-Nets")}
    inside["organs"] = SPENT["segment_organs"] - inside["scan image"] - inside["U-Nets"]
    inside["write meshes"] = SPENT.get("write meshes", 0.0)
    imports = {"import torch": TORCH - START, "import library": LIBRARY - TORCH}
    return {**imports, **inside, "other": command - sum(inside.values())}


if __name__ == "__main__":
    for stage, seconds in run(sys.argv[1:]).items():
        print(f"{stage}\t{seconds:.2f}")
