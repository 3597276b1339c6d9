"""Training plumbing: split determinism, boundary targets, schedule rescaling, augmentation shapes."""

from pathlib import Path

import numpy as np
import pytest
import torch

from imagetomesh.training.augment import AugmentConfig, augment
from imagetomesh.training.data import boundary_points
from imagetomesh.training.msd import make_split
from imagetomesh.training.schedules import rescale_one_cycle


def test_split_is_deterministic_disjoint_and_complete():
    ids = [f"case_{i:03d}" for i in range(50)]
    a, b = make_split(ids, seed=3), make_split(list(reversed(ids)), seed=3)
    assert a == b
    parts = a["train"] + a["val"] + a["test"]
    assert sorted(parts) == ids and len(set(parts)) == len(ids)
    assert make_split(ids, seed=4) != a


def test_boundary_points_match_slow_face_enumeration():
    label = torch.zeros(5, 6, 7, dtype=torch.uint8)
    label[1:4, 2:5, 3:5] = 1
    label[2, 3, 5] = 1
    points, normals = boundary_points(label)
    expected = set()
    d, h, w = label.shape
    for k in range(d):
        for j in range(h):
            for i in range(w):
                if not label[k, j, i]:
                    continue
                for di, dj, dk in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
                    for sign in (1, -1):
                        ni, nj, nk = i + sign * di, j + sign * dj, k + sign * dk
                        outside = not (0 <= ni < w and 0 <= nj < h and 0 <= nk < d) or not label[nk, nj, ni]
                        if outside:
                            ijk = np.array([i, j, k], float) + 0.5 * sign * np.array([di, dj, dk])
                            grid = ijk * 2 / (np.array([w, h, d]) - 1) - 1
                            normal = sign * np.array([di, dj, dk])
                            expected.add((tuple(round(float(x), 4) for x in grid), tuple(int(x) for x in normal)))
    got = {
        (tuple(round(float(x), 4) for x in p), tuple(int(x) for x in n))
        for p, n in zip(points.double().numpy(), normals.numpy())
    }
    assert got == expected


def test_rescaled_one_cycle_follows_the_new_schedule():
    def make(total):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=total, pct_start=0.05)

    opt, long = make(2000)
    for _ in range(400):
        opt.step()
        long.step()
    opt2, short = make(1200)
    short.load_state_dict(rescale_one_cycle(long.state_dict(), 1200))
    opt3, reference = make(1200)
    for _ in range(400):
        opt3.step()
        reference.step()
    for _ in range(300):
        opt2.step(), short.step(), opt3.step(), reference.step()
        assert short.get_last_lr()[0] == pytest.approx(reference.get_last_lr()[0], rel=1e-9)
    with pytest.raises(ValueError):
        rescale_one_cycle(long.state_dict(), 300)


def test_augment_keeps_shapes_and_binary_labels():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(16, 24, 20)
    label = (torch.rand(16, 24, 20) > 0.7).to(torch.uint8)
    img, lab = augment(image, label, AugmentConfig(), g)
    assert img.shape == image.shape and lab.shape == label.shape and lab.dtype == torch.uint8
    assert set(lab.unique().tolist()) <= {0, 1}
    # no rotation, scaling or flips: the label is unchanged
    still = AugmentConfig(flip=0, rotate_deg=0, scale=0, intensity_scale=0, intensity_shift=0, noise=0)
    img, lab = augment(image, label, still, g)
    assert torch.equal(lab, label) and torch.allclose(img, image, atol=1e-5)


def test_augment_resamples_the_image_and_its_label_as_transformed_does_each():
    """The one sampling grid augment shares between an image and its label gives what resampling each alone with
    its transform gives."""
    from imagetomesh.training.augment import transformed

    image = torch.randn(16, 24, 20)
    label = (torch.rand(16, 24, 20) > 0.7).to(torch.uint8) * 3
    config = AugmentConfig(flip=0.5, rotate_deg=20, scale=0.2, shift=0.1, intensity_scale=0, intensity_shift=0, noise=0)
    for seed in range(3):
        img, lab, linear, shift = augment(
            image, label, config, torch.Generator().manual_seed(seed), return_transform=True
        )
        assert torch.equal(img, transformed(image, linear, shift, "bilinear", float(image.min())))
        assert torch.equal(lab, transformed(label.float(), linear, shift, "nearest").round().to(torch.uint8))


def _gaussian_blur_slowly(image: np.ndarray, sigmas) -> np.ndarray:
    """The obvious Gaussian blur: along each axis, every voxel the weighted sum of its neighbours within 4 sigma
    (weights exp(-x^2 / 2 sigma^2), normalised), indices past the edge read the edge voxel."""
    out = image.astype(np.float64)
    for axis, sigma in enumerate(sigmas):
        if sigma == 0:
            continue
        radius = int(4.0 * sigma + 0.5)
        offsets = np.arange(-radius, radius + 1)
        weights = np.exp(-(offsets**2) / (2 * sigma**2))
        weights /= weights.sum()
        moved = np.moveaxis(out, axis, 0)
        n = moved.shape[0]
        result = np.zeros_like(moved)
        for i in range(n):
            for offset, weight in zip(offsets, weights):
                result[i] += weight * moved[min(max(i + offset, 0), n - 1)]
        out = np.moveaxis(result, 0, axis)
    return out


def test_blur_augmentation_smooths_the_image_by_the_drawn_gaussian_and_leaves_the_label():
    from imagetomesh.training.augment import blurred_image

    image = torch.randn(12, 16, 14)
    sigmas = [0.0, 0.6, 1.3]
    assert np.allclose(blurred_image(image, sigmas).numpy(), _gaussian_blur_slowly(image.numpy(), sigmas), atol=1e-5)

    label = (torch.rand(12, 16, 14) > 0.7).to(torch.uint8)
    still = dict(flip=0, rotate_deg=0, scale=0, intensity_scale=0, intensity_shift=0, noise=0)
    drawn = []
    for seed in range(4):
        img, lab = augment(
            image, label, AugmentConfig(**still, blur=1.0, blur_sigma=0.75), torch.Generator().manual_seed(seed)
        )
        g = torch.Generator().manual_seed(seed)  # the draws augment makes, in its order
        torch.rand(3, generator=g), torch.rand(1, generator=g), torch.rand(3, generator=g)  # angles, scale, flips
        torch.rand(1, generator=g)  # whether to blur
        sigma = 0.75 * torch.rand(3, generator=g)
        assert torch.equal(lab, label) and torch.allclose(img, blurred_image(image, sigma.tolist()), atol=1e-5)
        drawn.append(sigma)
    assert all(0 <= s.min() and s.max() <= 0.75 for s in drawn) and len({tuple(s.tolist()) for s in drawn}) == 4
    # never blurred, and without the option the random stream (and so every other config's batches) is as before
    img, _ = augment(image, label, AugmentConfig(**still, blur=0.0), torch.Generator().manual_seed(0))
    assert torch.allclose(img, image, atol=1e-5)
    g_before, g_after = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    augment(image, label, AugmentConfig(), g_after)
    torch.rand(3, generator=g_before), torch.rand(1, generator=g_before), torch.rand(3, generator=g_before)  # spatial
    torch.rand(1, generator=g_before), torch.rand(1, generator=g_before)  # intensity scale, shift
    torch.randn(image.shape, generator=g_before)  # noise
    assert torch.equal(torch.rand(4, generator=g_after), torch.rand(4, generator=g_before))


def test_init_from_model_copies_the_unet_of_another_kind_and_all_of_the_same_kind(tmp_path):
    from imagetomesh.errors import InputError
    from imagetomesh.models.registry import build_model
    from imagetomesh.training.init_weights import init_from_model
    from imagetomesh.weights import save_weights

    unet = {"in_channels": 1, "num_classes": 2, "base": 4, "depth": 3, "norm": "batch"}
    v2m = {"unet": unet, "hidden": 8, "stages": 2}
    torch.manual_seed(0)
    source = build_model("unet", {"unet": unet})
    save_weights(source, tmp_path / "unet", {"kind": "unet", "config": {"unet": unet}})
    torch.manual_seed(1)
    target = build_model("voxel2mesh", v2m)
    decoder_before = {k: v.clone() for k, v in target.state_dict().items() if not k.startswith("unet.")}
    seen = []
    init_from_model(target, "voxel2mesh", tmp_path / "unet", seen.append)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert all(torch.equal(target.state_dict()[k], v) for k, v in decoder_before.items())
    assert "U-Net tensors" in seen[0]

    # a model of the same kind starts every tensor (fine-tuning)
    save_weights(target, tmp_path / "v2m", {"kind": "voxel2mesh", "config": v2m})
    torch.manual_seed(2)
    again = build_model("voxel2mesh", v2m)
    init_from_model(again, "voxel2mesh", tmp_path / "v2m", seen.append)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in target.state_dict().items())
    assert "all" in seen[1]
    wider = build_model("voxel2mesh", dict(v2m, hidden=16))
    with pytest.raises(InputError, match="another architecture"):
        init_from_model(wider, "voxel2mesh", tmp_path / "v2m")

    # a model grown by a refinement stage starts every saved tensor; the new stage keeps its own
    torch.manual_seed(3)
    grown = build_model("voxel2mesh", dict(v2m, refine_stages=1))
    new_stage = {k: v.clone() for k, v in grown.state_dict().items() if k.startswith("stages.2.")}
    assert new_stage
    init_from_model(grown, "voxel2mesh", tmp_path / "v2m", seen.append)
    assert all(torch.equal(grown.state_dict()[k], v) for k, v in target.state_dict().items())
    assert all(torch.equal(grown.state_dict()[k], v) for k, v in new_stage.items())
    assert f"({len(new_stage)} others fresh)" in seen[2]
    # ... but a saved model with more than this config has is another architecture
    save_weights(grown, tmp_path / "grown", {"kind": "voxel2mesh", "config": dict(v2m, refine_stages=1)})
    with pytest.raises(InputError, match="another architecture"):
        init_from_model(build_model("voxel2mesh", v2m), "voxel2mesh", tmp_path / "grown")


def test_run_checkpoint_round_trip(tmp_path):
    from imagetomesh.training.checkpoint import RunCheckpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    checkpoint = RunCheckpoint(tmp_path / "checkpoint.pt", model=model, optimizer=optimizer)
    assert checkpoint.load("cpu") is None  # nothing saved yet
    checkpoint.save(7, best=0.25, elapsed=12.5)

    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    seen = []
    restored = RunCheckpoint(
        tmp_path / "checkpoint.pt", {"optimizer": lambda s: seen.append(s) or s}, model=fresh, optimizer=fresh_opt
    )
    assert restored.load("cpu") == (7, 0.25, 12.5)
    assert len(seen) == 1
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert not list(tmp_path.glob("*tmp*"))


def test_bundling_with_average_with_writes_the_mean_of_each_tensor(tmp_path):
    import importlib.util

    from safetensors.torch import load_file

    from imagetomesh.errors import InputError
    from imagetomesh.models.registry import build_model
    from imagetomesh.weights import average_states, read_card, save_weights

    path = Path(__file__).resolve().parents[2] / "tools" / "bundle_model.py"
    spec = importlib.util.spec_from_file_location("bundle_model", path)
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    unet = {"in_channels": 1, "num_classes": 3, "base": 4, "depth": 2, "norm": "batch"}
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("unet", {"unet": unet})
        model(torch.randn(2, 1, 8, 8, 8))  # moves the batch-norm statistics and step counters
        save_weights(model, tmp_path / f"m{seed}", {"kind": "unet", "config": {"unet": unet}, "name": f"m{seed}"})
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    states[1] = {k: (v + 3 if not v.is_floating_point() else v) for k, v in states[1].items()}
    model = build_model("unet", {"unet": unet})
    model.load_state_dict(states[1])
    save_weights(model, tmp_path / "m1", {"kind": "unet", "config": {"unet": unet}, "name": "m1"})

    named = bundle.averaged(
        tmp_path / "m0", read_card(tmp_path / "m0"), [tmp_path / "m1"], tmp_path / "mean.safetensors"
    )
    mean = load_file(str(tmp_path / "mean.safetensors"))
    assert named == [{"name": "m1", "sha256": read_card(tmp_path / "m1")["sha256"]}]
    assert mean.keys() == states[0].keys()
    for key, first in states[0].items():
        if first.is_floating_point():  # slow and obvious: half the sum, tensor by tensor
            assert torch.allclose(mean[key], (first + states[1][key]) / 2, atol=1e-6), key
        else:  # step counters: the first model's
            assert torch.equal(mean[key], first), key
    with pytest.raises(InputError, match="same architecture"):
        average_states([states[0], {k: v for k, v in states[1].items() if "head" not in k}])
    save_weights(
        build_model("unet", {"unet": dict(unet, base=8)}),
        tmp_path / "wide",
        {"kind": "unet", "config": {"unet": dict(unet, base=8)}},
    )
    with pytest.raises(SystemExit, match="cannot be averaged"):
        bundle.averaged(tmp_path / "m0", read_card(tmp_path / "m0"), [tmp_path / "wide"], tmp_path / "x.safetensors")
    # a card written before a field existed (here the U-Net's ``windows``) is the same architecture at its default
    assert bundle.same_architecture("unet", {"unet": dict(unet, windows=[])}, {"unet": unet})
    assert not bundle.same_architecture("unet", {"unet": dict(unet, windows=[[0.0, 1.0]])}, {"unet": unet})
    assert not bundle.same_architecture("unet", {"unet": dict(unet, unknown=1)}, {"unet": unet})
    assert not bundle.same_architecture("unet", None, {"unet": unet})
    # a calibration set in the card after training (surface_offsets) does not change the weights' architecture
    v2m = {"unet": {"base": 4, "depth": 3}, "hidden": 8}
    imn = {"unet": {"base": 4, "depth": 3}, "stages": 2}
    assert bundle.same_architecture("voxel2mesh", v2m, v2m)
    assert bundle.same_architecture("voxel2mesh", dict(v2m, surface_offsets=[0.05]), v2m)
    assert bundle.same_architecture("implicitmeshnet", dict(imn, smooth_iterations=3, surface_offsets=[0.1]), imn)
    assert not bundle.same_architecture("voxel2mesh", dict(v2m, surface_offsets=[0.05], hidden=16), v2m)
    save_weights(model, tmp_path / "spelled", {"kind": "unet", "config": {"unet": dict(unet, windows=[])}})
    bundle.averaged(tmp_path / "m0", read_card(tmp_path / "m0"), [tmp_path / "spelled"], tmp_path / "y.safetensors")
    assert (tmp_path / "y.safetensors").is_file()


def test_unet_windows_add_each_channel_clipped_and_rescaled():
    from imagetomesh.nn.unet import UNet3D, UNetConfig, windowed

    x = torch.linspace(-1.0, 2.0, 2 * 3 * 8).reshape(2, 3, 2, 2, 2)
    windows = ((-0.16, 0.24), (0.2, 1.5))
    got = windowed(x, windows)
    assert got.shape == (2, 9, 2, 2, 2)
    assert torch.equal(got[:, :3], x)
    for w, (lo, hi) in enumerate(windows):  # element by element, as a window is defined
        for value, out in zip(x.flatten().tolist(), got[:, 3 * (w + 1) : 3 * (w + 2)].flatten().tolist()):
            clipped = min(max(value, lo), hi)
            assert out == pytest.approx(-1.0 + 2.0 * (clipped - lo) / (hi - lo), abs=1e-6)
    config = UNetConfig(in_channels=1, num_classes=2, base=4, depth=2, windows=[[-0.16, 0.24]])  # as JSON gives it
    assert config.windows == ((-0.16, 0.24),) and config.first_channels == 2
    assert UNet3D(config).down[0][0].in_channels == 2
    with pytest.raises(ValueError, match="lo < hi"):
        UNetConfig(windows=[(0.2, 0.1)])


def test_init_from_model_widens_the_first_convolution_for_new_input_windows(tmp_path):
    from imagetomesh.errors import InputError
    from imagetomesh.models.registry import build_model
    from imagetomesh.training.init_weights import init_from_model
    from imagetomesh.weights import save_weights

    unet = {"in_channels": 1, "num_classes": 3, "base": 4, "depth": 2, "norm": "batch"}
    windowed_unet = dict(unet, windows=[(-0.16, 0.24)])
    torch.manual_seed(0)
    source = build_model("unet", {"unet": unet}).eval()
    save_weights(source, tmp_path / "plain", {"kind": "unet", "config": {"unet": unet}})
    torch.manual_seed(1)
    target = build_model("unet", {"unet": windowed_unet}).eval()
    seen = []
    init_from_model(target, "unet", tmp_path / "plain", seen.append)
    assert "widened" in seen[0]
    image = torch.randn(1, 1, 8, 8, 8) * 0.3
    with torch.no_grad():  # the new channels start at zero: the widened network computes what the saved one did
        assert torch.allclose(target(image)[0], source(image)[0], atol=1e-6)
    first = target.state_dict()["unet.down.0.0.weight"]
    assert torch.equal(first[:, :1], source.state_dict()["unet.down.0.0.weight"]) and not first[:, 1:].any()
    # a model reading fewer channels than the saved one, or wider elsewhere, is another architecture
    save_weights(target, tmp_path / "windowed", {"kind": "unet", "config": {"unet": windowed_unet}})
    with pytest.raises(InputError, match="another architecture"):
        init_from_model(build_model("unet", {"unet": unet}), "unet", tmp_path / "windowed")
    with pytest.raises(InputError, match="another architecture"):
        init_from_model(build_model("unet", {"unet": dict(windowed_unet, base=8)}), "unet", tmp_path / "plain")


def test_the_config_help_of_each_kind_names_only_its_configs_and_those_of_the_bundled_models():
    """``imagetomesh train KIND --help`` names configs by example: each must exist, and the one each bundled model's
    card says it was trained with must be among them (a help written once went stale as configs were added)."""
    import json
    import re

    from imagetomesh.kinds import KINDS

    repo = Path(__file__).resolve().parents[2]
    named = {}
    for kind, entry in KINDS.items():
        known = entry.training.load().configs(kind)
        words = set(re.findall(r"(?<![-\w])(?:cpu|gpu|headneck-ct|ps|hs|lns)(?:-[a-z0-9]+)*\b", entry.training.configs))
        assert words, kind
        assert words <= set(known), (kind, words - set(known))
        named[kind] = words
    for card_path in sorted((repo / "Resources" / "Models").glob("*/card.json")):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        config = re.search(r"--config (\S+)", card.get("training", {}).get("command", ""))
        if config is not None and card["kind"] in named:
            assert config.group(1) in named[card["kind"]], (card_path.parent.name, config.group(1))
