"""Deep supervision of a U-Net's coarser decoder levels (``training.deep_supervision``, ``TrainConfig.deep_supervision``)."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from synthetic_ct import train_on_synthetic_cts, two_organ_config, write_ct_msd

from imagetomesh.errors import InputError
from imagetomesh.nn.unet import UNet3D, UNetConfig
from imagetomesh.training.data import UNKNOWN
from imagetomesh.training.deep_supervision import (
    DeepSupervisionHeads,
    deep_supervised_loss,
    subsampled_label,
    supervision_weights,
)
from imagetomesh.training.losses import partial_label_loss, segmentation_loss


def test_supervision_weights_halve_per_level_and_sum_to_one():
    assert supervision_weights(0) == [1.0]
    assert supervision_weights(2) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert sum(supervision_weights(3)) == pytest.approx(1.0)


@pytest.mark.parametrize("level", [1, 2])
def test_a_subsampled_label_is_its_nearest_neighbour_interpolation(level):
    label = torch.randint(0, 300, (2, 16, 8, 12))  # codes above 255 (unknown voxels) must survive
    size = tuple(s // 2**level for s in label.shape[1:])
    nearest = F.interpolate(label[:, None].double(), size=size, mode="nearest")[:, 0].long()
    assert torch.equal(subsampled_label(label, level), nearest)


def test_the_heads_read_the_levels_next_to_the_finest():
    unet = UNet3D(UNetConfig(num_classes=3, base=4, depth=3))
    logits, decoder = unet(torch.randn(2, 1, 16, 8, 16))
    heads = DeepSupervisionHeads(unet.decoder_channels, 3, levels=2)
    coarse = heads(decoder)
    assert [tuple(c.shape) for c in coarse] == [(2, 3, 8, 4, 8), (2, 3, 4, 2, 4)]
    assert [h.in_channels for h in heads.heads] == [8, 16]  # level 1 reads 2 * base, level 2 the bottleneck's 4 * base
    with pytest.raises(ValueError, match="more than 3 decoder levels"):
        DeepSupervisionHeads(unet.decoder_channels, 3, levels=3)


def _partial_case(shape=(8, 8, 8)):
    """Random logits of three classes at full, half and quarter resolution, a label with an unknown slab
    beyond organ 2's contour, organ 1 uncontoured in the second case."""
    torch.manual_seed(0)
    label = torch.randint(0, 3, (2, *shape))
    label[:, :2] = UNKNOWN | 2  # beyond organ 2 (bit 2**(2 - 1))
    present = torch.tensor([[True, True, True], [True, False, True]])
    logits = [torch.randn(2, 3, *(s // 2**k for s in shape)) for k in range(3)]
    return logits, label, present


def test_the_deep_supervised_loss_is_the_weighted_sum_of_each_level_by_hand():
    logits, label, present = _partial_case()
    by_hand = 0.0
    for w, level_logits in zip((4 / 7, 2 / 7, 1 / 7), logits):
        size = level_logits.shape[2:]
        level_label = F.interpolate(label[:, None].double(), size=size, mode="nearest")[:, 0].long()
        by_hand = by_hand + w * partial_label_loss(level_logits, level_label, present)
    loss = deep_supervised_loss(partial_label_loss, logits[0], logits[1:], label, present)
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-6)
    # no coarse levels: the plain loss
    assert float(deep_supervised_loss(partial_label_loss, logits[0], [], label, present)) == pytest.approx(
        float(partial_label_loss(logits[0], label, present)), rel=1e-6
    )
    one_object = deep_supervised_loss(segmentation_loss, logits[0][:, :2], [logits[1][:, :2]], (label == 1).long())
    assert float(one_object) == pytest.approx(
        2 / 3 * float(segmentation_loss(logits[0][:, :2], (label == 1).long()))
        + 1 / 3 * float(segmentation_loss(logits[1][:, :2], (label[:, ::2, ::2, ::2] == 1).long())),
        rel=1e-6,
    )
    with pytest.raises(ValueError, match="do not match"):
        deep_supervised_loss(partial_label_loss, logits[0], [logits[2]], label, present)


def test_a_deep_supervised_run_resumes_trains_its_heads_and_saves_the_plain_u_net(tmp_path):
    config = replace(two_organ_config(), deep_supervision=1, steps=4, val_every=2)
    best, card, _ = train_on_synthetic_cts(replace(config, steps=2), tmp_path)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    start = {k: v.clone() for k, v in checkpoint["supervision_heads"].items()}
    assert sorted(start) == ["heads.0.bias", "heads.0.weight"]
    # the same run continued to 4 steps (as running its command again does): it resumes, heads included
    from imagetomesh.training.engine import train

    log: list[str] = []
    train(config, tmp_path / "msd", tmp_path / "run", log=log.append)
    assert any("resumed from step 2" in line for line in log)
    resumed = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == 4
    assert not torch.equal(resumed["supervision_heads"]["heads.0.weight"], start["heads.0.weight"])
    # the saved models hold the U-Net alone, as a run without deep supervision saves it
    plain, _, _ = train_on_synthetic_cts(replace(two_organ_config(), steps=1, val_every=1), tmp_path / "plain")
    saved = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert sorted(saved) == sorted(load_file(str(plain / "model.safetensors")))
    assert json.loads((tmp_path / "run" / "final" / "card.json").read_text())["config"] == card["config"]


def test_deep_supervision_is_for_u_nets_deep_enough(tmp_path):
    from imagetomesh.training.engine import train

    config = two_organ_config()  # a U-Net of depth 2: one coarser level
    with pytest.raises(InputError, match="deep_supervision"):
        train(replace(config, kind="voxel2mesh", deep_supervision=1, steps=1), tmp_path / "none", tmp_path / "a")
    msd = write_ct_msd(tmp_path / "msd", 2)
    with pytest.raises(InputError, match="more than 2 decoder levels"):
        train(replace(config, deep_supervision=2, steps=1), msd, tmp_path / "b", log=lambda m: None)


def test_a_one_object_u_net_learns_with_deep_supervision(tmp_path):
    """The one-object branch (a hippocampus-like U-Net, ``loss.ce`` times the segmentation loss at each level)."""
    import sys
    from pathlib import Path

    from imagetomesh.preprocessing import GridSpec
    from imagetomesh.training.configs import TrainConfig
    from imagetomesh.training.engine import train

    sys.path.insert(0, str(Path(__file__).parent / "data" / "pre_engine_runs"))
    from make_fixtures import tiny_msd

    unet = {"in_channels": 1, "num_classes": 2, "base": 4, "depth": 3, "norm": "batch"}
    config = TrainConfig(
        "unet", {"unet": unet}, GridSpec((16, 16, 16), (1.0, 1.0, 1.0)), 30, lr=1e-2, val_every=30, threads=1
    )
    train(replace(config, deep_supervision=2), tiny_msd(tmp_path / "msd"), tmp_path / "run", log=lambda m: None)
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["val_dice"] > 0.5  # noisy balls: the deep-supervised U-Net finds them
    assert "supervision_heads" in torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
