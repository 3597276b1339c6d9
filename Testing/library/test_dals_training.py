"""DALS training: shape data (kidney splitting, mirroring), augmentation, a tiny resumable run."""

import json

import numpy as np
import pytest
import torch

from imagetomesh.core import Volume
from imagetomesh.errors import InputError
from imagetomesh.fitting import load_prior
from imagetomesh.models.dals import DALSConfig
from imagetomesh.training.dals_augment import WolfConfig, random_rotations, wolf_deform
from imagetomesh.training.dals_shapes import load_shapes, split_kidneys, surface_points
from imagetomesh.training.engine import train
from imagetomesh.training.tasks.dals import DALSTrainConfig, get_dals_config


def blob(shape, centre, radii):
    k, j, i = np.indices(shape)
    return ((i - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + (
        (k - centre[2]) / radii[2]
    ) ** 2 <= 1


def test_split_kidneys_sides_tumour_and_mirroring():
    shape = (30, 40, 60)  # (k, j, i)
    label = np.zeros(shape, np.uint8)
    label[blob(shape, (15, 20, 8), (6, 8, 5))] = 1  # k small
    label[blob(shape, (45, 20, 22), (6, 8, 5))] = 1  # k large
    label[blob(shape, (45, 26, 22), (3, 3, 3))] = 2  # tumour on the second kidney
    label[2, 2, 2] = 1  # a speck: not a kidney
    # KiTS-like header: k -> L (+x), j -> P, i -> -S
    direction = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    volume = Volume(label, [0.8, 0.9, 2.0], [0.0, 0.0, 0.0], direction)
    organs = split_kidneys(volume, "case_x")
    assert [o.shape_id for o in organs] == ["case_x_left", "case_x_right"]
    left, right = organs
    # the left kidney is the one with the larger L (x) coordinate: k = 22 -> x = 44 mm
    centre_left = (
        left.mask.index_to_lps[:3, :3] @ (np.array(np.nonzero(left.mask.array)).mean(1)[::-1]) + left.mask.origin
    )
    assert centre_left[0] > 30
    # kidney + tumour together
    assert left.mask.array.sum() == int(
        (label[..., :] > 0)[blob(shape, (45, 20, 22), (6, 8, 5)) | blob(shape, (45, 26, 22), (3, 3, 3))].sum()
    )
    p_left = surface_points(left, 500)
    p_right = surface_points(right, 500)
    assert p_left[:, 0].mean() > 0 and p_right[:, 0].mean() < 0  # right mirrored to x -> -x
    assert surface_points(right, 500, mirror=False)[:, 0].mean() > 0


def test_split_kidneys_single_and_empty():
    shape = (20, 20, 40)
    label = np.zeros(shape, np.uint8)
    label[blob(shape, (30, 10, 10), (5, 5, 5))] = 1  # right of the image centre in x (L)
    organs = split_kidneys(Volume(label), "solo")
    assert len(organs) == 1 and organs[0].side == "left"
    with pytest.raises(InputError, match="no kidney"):
        split_kidneys(Volume(np.zeros(shape, np.uint8)), "none")


def test_random_rotations_are_rotations():
    r = random_rotations(20, torch.Generator().manual_seed(0))
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(20, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(20), atol=1e-5)


def test_wolf_deform_is_smooth_and_identity_without_magnitude():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(400, 3)
    pts = pts / pts.norm(dim=1, keepdim=True)
    none = WolfConfig(rotate_deg=0, scale=0, translate=0)
    assert torch.allclose(wolf_deform(pts, none, g), pts, atol=1e-6)
    moved = wolf_deform(pts, WolfConfig(), g)
    shift = (moved - pts).norm(dim=1)
    assert 0 < shift.mean() < 0.2
    # smooth: nearby points move alike
    d = torch.cdist(pts, pts)
    close = (d < 0.05) & (d > 0)
    i, j = torch.nonzero(close, as_tuple=True)
    assert ((moved[i] - pts[i]) - (moved[j] - pts[j])).norm(dim=1).max() < 0.05


def test_named_configs():
    cpu = get_dals_config("kidney", "cpu")
    assert cpu.model.hidden == (724, 724, 362) and cpu.model.latent_dim == 128 and cpu.model.train_template_level == 3
    assert cpu.lr == 2e-3 and cpu.lr_min == 1e-5 and cpu.lambda_reg == 1e-4 and cpu.lambda_n == 1e-3
    assert get_dals_config("hippocampus", "gpu").batch_size > cpu.batch_size
    with pytest.raises(InputError):
        get_dals_config("kidney", "tpu")
    with pytest.raises(InputError):
        DALSTrainConfig(shapes="liver")


@pytest.fixture()
def fake_msd(tmp_path, write_msd):
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(6):
        shape = (20, 24, 20)
        label = np.zeros(shape, np.uint8)
        label[blob(shape, (10, 12, 10), rng.uniform(3, 7, 3))] = 1
        cases.append((label.astype(np.float32), label))
    return write_msd(tmp_path / "msd", cases)


def test_tiny_training_run_resumes_and_writes_a_loadable_prior(fake_msd, tmp_path):
    config = DALSTrainConfig(
        shapes="hippocampus",
        model=DALSConfig(latent_dim=4, hidden=(8, 8, 8), train_template_level=1, fit_template_level=1),
        steps=2,
        batch_size=2,
        target_points=100,
        surface_samples=50,
        val_shapes=1,
        val_iterations=2,
        checkpoint_every=1,
        log_every=1,
        bf16=False,
    )
    split = tmp_path / "split.json"
    out = tmp_path / "run"
    messages = []
    train(config, fake_msd, out, split_path=split, log=messages.append)
    assert json.loads(split.read_text(encoding="utf-8"))["train"] and (out / "checkpoint.pt").is_file()
    config.steps = 4
    folder = train(config, fake_msd, out, split_path=split, log=messages.append)
    assert any("resumed from step 2" in m for m in messages)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert steps == [1, 2, 3, 4]
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    assert card["kind"] == "dals" and len(card["mean_latent"]) == 4 and card["licence"] == "CC-BY-SA 4.0"
    assert card["data"]["split"]["train"] == json.loads(split.read_text(encoding="utf-8"))["train"]
    assert "--steps 4" in card["reproduce"]
    prior = load_prior(str(folder))
    assert prior.decoder.config.hidden == (8, 8, 8)
    shapes = load_shapes("hippocampus", fake_msd, "train", 4096, out / "shapes", split_path=split)
    assert shapes.points.shape == (len(json.loads(split.read_text(encoding="utf-8"))["train"]), 4096, 3)


def test_fill_cavities_fills_enclosed_and_slicewise_holes_only():
    from imagetomesh.training.dals_shapes import fill_cavities

    shell = blob((21, 21, 21), (10, 10, 10), (8, 8, 8)) & ~blob((21, 21, 21), (10, 10, 10), (5, 5, 5))
    assert (fill_cavities(shell) == blob((21, 21, 21), (10, 10, 10), (8, 8, 8))).all()
    # A tube along k is open to the outside in 3D, but every k-slice encloses its lumen.
    k, j, i = np.indices((12, 15, 15))
    radius = np.hypot(i - 7, j - 7)
    tube = (radius <= 6) & (radius > 3) & (k > 0) & (k < 11)
    filled = fill_cavities(tube)
    assert (filled == ((radius <= 6) & (k > 0) & (k < 11))).all()
    kk, jj, ii = np.indices((21, 21, 21))
    notched = blob((21, 21, 21), (10, 10, 10), (8, 8, 8)) & ~((ii > 10) & (abs(jj - 10) < 2))
    assert not fill_cavities(notched)[10, 10, 14], "a notch open in every slice through it stays open"
    assert tube.sum() == ((radius <= 6) & (radius > 3) & (k > 0) & (k < 11)).sum(), "input untouched"
