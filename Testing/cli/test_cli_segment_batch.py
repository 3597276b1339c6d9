"""``segment`` with several images: every target checked first, a bad image named and skipped, the others written."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from imagetomesh.cli import main

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "Resources" / "SampleData" / "hippocampus" / "hippocampus_024.nii.gz"
MODEL = "unet-hippocampus"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "c"):
        shutil.copy(IMAGE, folder / f"{name}.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((6, 6), np.float32)), str(folder / "b_flat.nii.gz"))  # 2D
    return folder


def test_a_bad_image_is_named_and_the_good_ones_are_written(images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, stderr = run(
        [
            "segment",
            images / "a.nii.gz",
            images / "b_flat.nii.gz",
            images / "c.nii.gz",
            "--model",
            MODEL,
            "-o",
            out,
            "--batch-size",
            "3",
        ],
        capsys,
    )
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.stl", "c.stl"]
    errors = [line for line in stderr.splitlines() if line.startswith("imagetomesh: error:")]
    assert len(errors) == 1 and "b_flat.nii.gz" in errors[0] and "Traceback" not in stderr
    assert "1 of 3 images failed; 2 mesh(es) written" in stderr


def test_an_image_the_model_fails_on_is_found_in_its_batch(images, tmp_path, capsys):
    blank = images / "blank.nii.gz"
    reference = sitk.ReadImage(str(IMAGE))
    empty = sitk.Image(reference.GetSize(), sitk.sitkFloat32)
    empty.CopyInformation(reference)
    sitk.WriteImage(empty, str(blank))
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = run(
        ["segment", images / "a.nii.gz", blank, images / "c.nii.gz", "--model", MODEL, "-o", out], capsys
    )
    assert code == 2 and sorted(p.name for p in out.iterdir()) == ["a.stl", "c.stl"]
    errors = [line for line in stderr.splitlines() if line.startswith("imagetomesh: error:")]
    assert len(errors) == 1 and "blank.nii.gz" in errors[0]


def test_every_target_is_checked_before_any_work(images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.stl").mkdir()  # a folder where c's mesh would go
    code, _, stderr = run(["segment", images / "a.nii.gz", images / "c.nii.gz", "--model", MODEL, "-o", out], capsys)
    assert code == 2 and "is a folder" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["c.stl"]  # a.stl was not written first


@pytest.mark.parametrize("size", ["0", "-1", "two"])
def test_batch_size_must_be_a_positive_whole_number(images, tmp_path, capsys, size):
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["segment", str(images / "a.nii.gz"), "--model", MODEL, "-o", str(tmp_path / "a.stl"), "--batch-size", size]
        )
    assert exit_info.value.code == 2
    assert "--batch-size must be" in capsys.readouterr().err


def test_images_are_read_when_their_batch_needs_them(tmp_path, capsys, monkeypatch):
    """Streaming: no image is read before the batches before it are written; a batch holds at most
    ``--batch-size`` images and at most the model's cap (``Segmenter.max_batch``)."""
    import imagetomesh.inference as inference
    import imagetomesh.io.images as images_module
    from imagetomesh.inference import Segmenter

    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for k in range(5):
        paths.append(folder / f"h{k}.nii.gz")
        shutil.copy(IMAGE, paths[-1])
    events = []
    real_read, real_predict = images_module.read_image, Segmenter.predict

    def read(path):
        events.append("read")
        return real_read(path)

    def predict(self, prepared):
        events.append(f"predict {len(prepared)}")
        return real_predict(self, prepared)

    monkeypatch.setattr(images_module, "read_image", read)
    monkeypatch.setattr(Segmenter, "predict", predict)
    out = tmp_path / "out"
    out.mkdir()
    code, _, _ = run(["segment", *paths, "--model", MODEL, "-o", out, "--batch-size", "2"], capsys)
    assert code == 0 and len(list(out.iterdir())) == 5
    assert events == ["read", "read", "predict 2", "read", "read", "predict 2", "read", "predict 1"]

    events.clear()
    monkeypatch.setattr(inference, "MAX_BATCH_VOXELS", 2 * 48 * 56 * 40)  # the model's cap: 2 images
    code, _, _ = run(["segment", *paths, "--model", MODEL, "-o", out, "--batch-size", "200"], capsys)
    assert code == 0
    assert events == ["read", "read", "predict 2", "read", "read", "predict 2", "read", "predict 1"]
