"""tools/train_from_arrays.py: an MSD folder as arrays, and training from them where the image libraries are missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "data" / "pre_engine_runs"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import train_from_arrays  # noqa: E402
from make_fixtures import tiny_msd  # noqa: E402


@pytest.fixture
def tool():
    return train_from_arrays


def test_the_arrays_are_the_volumes_read_image_gives(tool, tmp_path):
    from imagetomesh.io.images import read_image

    msd = tiny_msd(tmp_path / "msd")
    document = json.loads((msd / "dataset.json").read_text())
    document["training"][0]["labels_present"] = [1]
    (msd / "dataset.json").write_text(json.dumps(document))
    tool.convert(msd, tmp_path / "arrays")
    converted = json.loads((tmp_path / "arrays" / "dataset.json").read_text())
    assert converted["training"][0] == {
        "image": "imagesTr/hippocampus_000.npz",
        "label": "labelsTr/hippocampus_000.npz",
        "labels_present": [1],
    }
    for entry, original in zip(converted["training"], document["training"]):
        for key in ("image", "label"):
            got, expected = tool.read_array_volume(tmp_path / "arrays" / entry[key]), read_image(msd / original[key])
            assert got.array.dtype == expected.array.dtype and np.array_equal(got.array, expected.array)
            for field in ("spacing", "origin", "direction"):
                assert np.array_equal(getattr(got, field), getattr(expected, field))


def test_stand_ins_import_and_decorate_but_fail_when_used(tool):
    finder = tool._StandIns({"imagetomesh_missing_library"})
    sys.meta_path.insert(0, finder)
    try:
        from imagetomesh_missing_library.util import decorate, helper  # noqa: PLC0415

        @decorate(1)
        def method():
            pass

        with pytest.raises(RuntimeError, match="imagetomesh_missing_library.util.helper is not installed"):
            _ = helper.compute
        with pytest.raises(AttributeError):
            _ = sys.modules["imagetomesh_missing_library"].__file__
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.startswith("imagetomesh_missing_library")]:
            del sys.modules[name]


def test_training_from_the_arrays_reads_them(tool, tmp_path, monkeypatch):
    import imagetomesh.training.data as data
    import imagetomesh.training.tasks.image_to_mesh as image_to_mesh
    from imagetomesh.preprocessing import GridSpec
    from imagetomesh.training.configs import TrainConfig

    tiny = TrainConfig(
        "unet", {"unet": {"base": 4, "depth": 3}}, grid=GridSpec((16, 16, 16), (1.0, 1.0, 1.0)), steps=1, threads=1
    )
    monkeypatch.setattr(image_to_mesh, "image_configs", lambda: {"unet": {"cpu": tiny}})
    monkeypatch.setattr(data, "read_image", data.read_image)  # the tool replaces it; restored after the test
    original, read = tool.read_array_volume, []

    def recording(path):
        read.append(path)
        return original(path)

    monkeypatch.setattr(tool, "read_array_volume", recording)
    tool.convert(tiny_msd(tmp_path / "msd"), tmp_path / "arrays")
    argv = ["unet", "--data", str(tmp_path / "arrays"), "--out", str(tmp_path / "run"), "--threads", "1"]
    assert tool.train(argv) == 0
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(read) == 2 * (len(split["train"]) + len(split["val"])) and all(Path(p).suffix == ".npz" for p in read)
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 1


def test_a_script_runs_as_main_with_its_arguments_and_the_stand_ins(tmp_path):
    import subprocess

    script = tmp_path / "probe.py"
    script.write_text(
        "import json, sys\n"
        "import imagetomesh.training.configs\n"
        "if __name__ == '__main__':\n"
        "    finders = [type(f).__name__ for f in sys.meta_path]\n"
        "    print(json.dumps({'argv': sys.argv[1:], 'stand_ins': '_StandIns' in finders}))\n"
    )
    tool = Path(__file__).resolve().parents[2] / "tools" / "train_from_arrays.py"
    done = subprocess.run(
        [sys.executable, str(tool), "script", str(script), "--", "--device", "cuda"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"argv": ["--device", "cuda"], "stand_ins": True}


def test_cases_left_out_are_neither_converted_nor_listed(tool, tmp_path):
    msd = tiny_msd(tmp_path / "msd")
    tool.convert(msd, tmp_path / "arrays", leave_out=["hippocampus_001", "hippocampus_005"])
    document = json.loads((tmp_path / "arrays" / "dataset.json").read_text())
    listed = [Path(e["image"]).stem for e in document["training"]]
    assert listed == [f"hippocampus_{n:03d}" for n in (0, 2, 3, 4, 6, 7)] and document["numTraining"] == 6
    written = sorted(p.stem for p in (tmp_path / "arrays").rglob("*.npz"))
    assert written == sorted(listed * 2)
