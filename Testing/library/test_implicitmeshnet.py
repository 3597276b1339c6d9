"""ImplicitMeshNet: shapes, closed meshes, gradients through g_phi, a training step, segment round trip."""

import json

import numpy as np
import pytest
import torch

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.volume import Volume
from imagetomesh.geometry.laplacian import sym_norm_laplacian
from imagetomesh.geometry.quality import check_mesh
from imagetomesh.models.implicitmeshnet import (
    ImplicitMeshNet,
    ImplicitMeshNetConfig,
    MeshToSDF,
    MeshToSDFConfig,
    level_shapes,
)
from imagetomesh.models.registry import build_model
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.nn.unet import UNet3D, UNetConfig
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.implicitmeshnet_losses import beta_at, lr_factor, sdf_step, sdf_targets, surface_terms
from imagetomesh.training.implicitmeshnet_shapes import random_shape
from imagetomesh.training.tasks.implicitmeshnet import (
    ImplicitMeshNetTask,
    ImplicitMeshNetTrainConfig,
    get_implicitmeshnet_config,
    pretrain_sdf,
    save_sdf_net,
    start_sdf_net_from,
)
from imagetomesh.weights import save_weights

SHAPE = (16, 16, 8)
SMALL = {"unet": {"base": 4, "depth": 3}, "stages": 2, "hidden": 8, "template_level": 2}
SMALL_SDF = {"graph_channels": 8, "channels": (8, 4), "dropout": 0.1}


def small_config(**kw) -> ImplicitMeshNetTrainConfig:
    return ImplicitMeshNetTrainConfig(SMALL, sdf_net=SMALL_SDF, grid=GridSpec(SHAPE, (1.0, 1.0, 1.0)), **kw)


def blob_label(batch=1):
    label = torch.zeros(batch, *SHAPE, dtype=torch.uint8)
    label[:, 4:12, 5:11, 2:6] = 1
    return label


def small_networks(seed: int):
    """``(f_theta, g_phi, L)``: the small networks, made after ``torch.manual_seed(seed)``, and the
    symmetric normalised Laplacian of f_theta's template on the test grid."""
    torch.manual_seed(seed)
    f, g = ImplicitMeshNet(ImplicitMeshNetConfig(**SMALL)), MeshToSDF(MeshToSDFConfig(**SMALL_SDF))
    t = f.template(SHAPE)
    return f, g, sym_norm_laplacian(t.edge_index, len(t.verts))


def test_residual_unet_option_and_unchanged_default_layout():
    net = UNet3D(UNetConfig(base=4, depth=3, norm="instance", block="residual", dropout=0.1))
    logits, decoder = net(torch.randn(2, 1, 8, 16, 12))
    assert logits.shape == (2, 2, 8, 16, 12) and [f.shape[1] for f in decoder] == [16, 8, 4]
    assert any(k.startswith("down.0.conv1") for k in net.state_dict())
    plain = UNet3D(UNetConfig(base=4, depth=3)).state_dict()
    assert "down.0.0.weight" in plain and "up.1.4.running_mean" in plain  # bundled models' keys
    with pytest.raises(ValueError, match="block"):
        UNetConfig(block="dense")


def test_implicitmeshnet_outputs_closed_outward_meshes_on_a_fixed_topology():
    torch.manual_seed(0)
    model = build_model("implicitmeshnet", SMALL)
    logits, meshes = model(torch.randn(2, 1, *SHAPE))
    assert logits.shape == (2, 2, *SHAPE)
    assert len(meshes) == 2 and len(meshes[0]) == 2
    assert all(len(m.verts) == 162 and m.faces is meshes[0][0].faces for m in meshes[1])
    final = meshes[1][-1]
    check = check_mesh(Mesh(final.verts.detach().numpy(), final.faces.numpy()), self_intersections=False)
    assert check.watertight and check.outward
    assert len(ImplicitMeshNet(ImplicitMeshNetConfig()).template((48, 56, 40)).verts) == 2562  # the paper's template
    with pytest.raises(ValueError, match="stages"):
        ImplicitMeshNetConfig(unet=UNetConfig(depth=3), stages=3)


def test_template_is_a_sphere_of_radius_half_in_the_isotropic_frame():
    model = ImplicitMeshNet(ImplicitMeshNetConfig(**SMALL))
    verts = model.template((48, 56, 40)).verts * isotropic_scale((48, 56, 40))
    assert torch.allclose(verts.norm(dim=1), torch.full((162,), 0.5), atol=1e-6)


def test_mesh_to_sdf_levels():
    g = MeshToSDF(MeshToSDFConfig(**SMALL_SDF))
    model = ImplicitMeshNet(ImplicitMeshNetConfig(**SMALL))
    t = model.template(SHAPE)
    out = g(torch.stack([t.verts, 0.5 * t.verts]), t.edge_index, SHAPE)
    assert [o.shape for o in out] == [(2, 1, 8, 8, 4), (2, 1, *SHAPE)]
    assert level_shapes((48, 56, 40), 4) == [(6, 7, 5), (12, 14, 10), (24, 28, 20), (48, 56, 40)]


def test_surface_loss_gradient_reaches_f_theta_and_not_g_phi():
    """The reference code's surface loss passed no gradient to the shape network; ours must."""
    f, g, lap = small_networks(1)
    config = small_config(gamma=0.0, beta_start=0.0, beta_end=0.0)  # the BCE through g_phi alone
    loss, terms, verts, _ = surface_terms(f, g, torch.randn(1, 1, *SHAPE), blob_label(), lap, 0.0, config)
    loss.backward()
    stage_grad = sum(float(p.grad.abs().sum()) for p in f.stages.parameters() if p.grad is not None)
    unet_grad = sum(float(p.grad.abs().sum()) for p in f.unet.parameters() if p.grad is not None)
    assert stage_grad > 0 and unet_grad > 0 and terms["bce"] > 0
    assert all(p.grad is None for p in g.parameters())
    assert all(p.requires_grad for p in g.parameters())


def test_training_step_updates_both_networks_and_targets_are_signed():
    f, g, lap = small_networks(2)
    config = small_config()
    t = f.template(SHAPE)  # its edges for the g_phi step
    opt_f, opt_g = torch.optim.AdamW(f.parameters(), 1e-3), torch.optim.AdamW(g.parameters(), 1e-3)
    before_f = [p.detach().clone() for p in f.stages.parameters()]
    before_g = [p.detach().clone() for p in g.parameters()]
    images, labels = torch.randn(2, 1, *SHAPE), blob_label(2)
    loss, terms, verts, faces = surface_terms(f, g, images, labels, lap, 1000.0, config)
    opt_f.zero_grad()
    loss.backward()
    opt_f.step()
    sdf = sdf_step(g, opt_g, verts, faces, t.edge_index, SHAPE, config)
    assert np.isfinite(sdf) and np.isfinite(terms["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before_f, f.stages.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_g, g.parameters()))
    target = sdf_targets(verts, faces, SHAPE, config)
    centre = target[0, SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2]
    assert centre < 0 and target[0, 0, 0, 0] > 0  # the mesh starts as a sphere around the centre


def test_pretraining_runs_resumes_and_writes_its_weights(tmp_path):
    torch.manual_seed(3)
    config = small_config(pretrain_steps=2, pretrain_batch=1)
    g = MeshToSDF(MeshToSDFConfig(**SMALL_SDF))
    pretrain_sdf(g, config, tmp_path, torch.device("cpu"), seed=0, log=lambda m: None)
    assert (tmp_path / "sdf_pretrained.safetensors").is_file()
    state = torch.load(tmp_path / "pretrain.pt", weights_only=True)
    assert state["step"] == 2
    config.pretrain_steps = 3
    messages = []
    pretrain_sdf(g, config, tmp_path, torch.device("cpu"), seed=0, log=messages.append)
    assert "resumed from step 2" in messages[0]


def test_random_shapes_are_closed_inside_the_grid_and_varied():
    gen = torch.Generator().manual_seed(0)
    t = ImplicitMeshNet(ImplicitMeshNetConfig(**SMALL)).template((48, 56, 40))
    scale = isotropic_scale((48, 56, 40))
    shapes = [random_shape(t.sphere, scale, gen) for _ in range(5)]
    for v in shapes:
        assert float(v.abs().max()) <= 0.92 + 1e-6
    extents = [float((v * scale).max(0).values.sub((v * scale).min(0).values).max()) for v in shapes]
    assert max(extents) - min(extents) > 0.1


def test_beta_is_cosine_annealed_and_configs_exist():
    config = get_implicitmeshnet_config("cpu")
    assert beta_at(0.0, config) == pytest.approx(1000.0) and beta_at(1.0, config) == pytest.approx(0.01)
    assert beta_at(0.5, config) == pytest.approx((1000.0 + 0.01) / 2)
    gpu = get_implicitmeshnet_config("gpu")
    assert (
        gpu.model["unet"]["block"] == "residual" and gpu.model["unet"]["base"] == 16 and gpu.model["unet"]["depth"] == 5
    )
    assert gpu.lr == 1e-4 and gpu.lr_sdf == 3e-5 and gpu.tau == 1e-2
    with pytest.raises(ValueError, match="no config"):
        get_implicitmeshnet_config("tpu")


def test_learning_rate_factor_is_constant_or_a_cosine_to_zero():
    assert lr_factor(0.7, small_config()) == 1.0
    cosine = small_config(lr_schedule="cosine")
    assert lr_factor(0.0, cosine) == pytest.approx(1.0) and lr_factor(1.0, cosine) == pytest.approx(0.0)
    assert lr_factor(0.5, cosine) == pytest.approx(0.5) and lr_factor(0.25, cosine) == pytest.approx((1 + 2**-0.5) / 2)
    assert lr_factor(1.5, cosine) == pytest.approx(0.0)  # past the end (a time limit overrun) stays at 0
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor(0.5, small_config(lr_schedule="step"))
    finetune = get_implicitmeshnet_config("cpu-finetune")
    assert (
        finetune.lr_schedule == "cosine"
        and finetune.pretrain_steps == 0
        and finetune.model == get_implicitmeshnet_config("cpu").model
    )


def test_sdf_net_starts_from_a_file_and_keeps_it_as_the_runs_pretrained_weights(tmp_path):
    from safetensors.torch import load_file

    from imagetomesh.errors import InputError

    torch.manual_seed(4)
    trained = MeshToSDF(MeshToSDFConfig(**SMALL_SDF))
    save_sdf_net(trained, tmp_path / "sdf_net.safetensors")
    fresh = MeshToSDF(MeshToSDFConfig(**SMALL_SDF))
    start_sdf_net_from(fresh, tmp_path / "sdf_net.safetensors", tmp_path / "run_pretrained.safetensors")
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert load_file(str(tmp_path / "run_pretrained.safetensors")).keys() == trained.state_dict().keys()
    other = MeshToSDF(MeshToSDFConfig(graph_channels=4, channels=(4, 4)))
    with pytest.raises(InputError, match="not the mesh-to-SDF network of this config"):
        start_sdf_net_from(other, tmp_path / "sdf_net.safetensors", tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="--sdf-from"):
        start_sdf_net_from(fresh, tmp_path / "junk.safetensors", tmp_path / "other.safetensors")
    assert not (tmp_path / "other.safetensors").exists()


def box_cases(rng, count: int = 8) -> list:
    """``count`` ``(noisy image, label)`` pairs of a box at a random place on the tiny grid."""
    cases = []
    for _ in range(count):
        label = np.zeros(SHAPE, np.uint8)
        x0, y0 = rng.integers(3, 6, 2)
        label[x0 : x0 + 8, y0 : y0 + 6, 2:6] = 1
        cases.append((label + rng.normal(0, 0.1, SHAPE), label))
    return cases


def test_tiny_run_then_a_fine_tuning_run_from_its_model_and_g_phi(tmp_path, write_msd):
    from imagetomesh.training.engine import train

    cases = box_cases(np.random.default_rng(0))
    msd = write_msd(tmp_path / "msd", cases)
    torch.manual_seed(5)
    best = train(
        small_config(steps=2, val_every=1, batch_size=1, pretrain_steps=1, pretrain_batch=1),
        msd,
        tmp_path / "run",
        log=lambda m: None,
    )
    assert (tmp_path / "run" / "pretrain.pt").is_file() and (tmp_path / "run" / "sdf_net.safetensors").is_file()
    assert json.loads((best / "card.json").read_text())["kind"] == "implicitmeshnet"

    messages = []
    config = small_config(steps=3, val_every=1, batch_size=1, pretrain_steps=0, lr=1e-3, lr_schedule="cosine")
    train(
        config,
        msd,
        tmp_path / "tune",
        init_from=best,
        sdf_from=tmp_path / "run" / "sdf_net.safetensors",
        log=messages.append,
    )
    assert any(m.startswith("initialised all") for m in messages)
    assert not (tmp_path / "tune" / "pretrain.pt").exists()  # g_phi came from the file, not from pretraining
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "tune" / "log.jsonl").read_text().splitlines()]
    # each logged step used the cosine factor at the progress before it: 1, 0.75, 0.25 of 1e-3
    assert lrs == pytest.approx([1e-3, 0.75e-3, 0.25e-3])


def test_segment_round_trip_gives_a_watertight_mesh_in_millimetres(tmp_path):
    from imagetomesh.inference import Segmenter
    from imagetomesh.zoo import load_model

    torch.manual_seed(4)
    model = build_model("implicitmeshnet", SMALL)
    grid = GridSpec(SHAPE, (2.0, 2.0, 2.0))
    save_weights(
        model, tmp_path / "imn", {"kind": "implicitmeshnet", "config": model.config.to_dict(), "grid": grid.to_dict()}
    )
    json.loads((tmp_path / "imn" / "card.json").read_text())
    segmenter = Segmenter(load_model(str(tmp_path / "imn"), "cpu"))
    origin = np.array([10.0, -20.0, 5.0])
    volume = Volume(np.random.default_rng(0).normal(size=(16, 16, 8)).astype(np.float32), (2.0, 2.0, 2.0), origin)
    meshes = segmenter.segment_batch([volume, volume])
    assert len(meshes) == 2
    for mesh in meshes:
        check = check_mesh(mesh, self_intersections=False)
        assert check.watertight and check.outward
        centre = mesh.vertices.mean(0)
        extent = origin + 2.0 * (np.array([8, 16, 16]) - 1)
        assert np.all(centre > origin - 1) and np.all(centre < extent + 1)  # LPS mm, inside the image
    assert np.allclose(meshes[0].vertices, segmenter.segment(volume).vertices, atol=1e-4)


def test_inference_smoothing_changes_only_the_eval_output_and_keeps_the_volume():
    from imagetomesh.geometry.laplacian import taubin_smooth
    from imagetomesh.geometry.topology import edge_index_from_faces, icosphere

    verts, faces = icosphere(3, dtype=torch.float64)
    rough = verts * (
        1 + 0.05 * torch.randn(len(verts), 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )
    smooth = taubin_smooth(rough, edge_index_from_faces(faces), 10)

    def radial(v):
        return float(v.norm(dim=1).std())

    assert radial(smooth) < 0.5 * radial(rough)  # wrinkles damped
    assert abs(float(smooth.norm(dim=1).mean()) - float(rough.norm(dim=1).mean())) < 0.02  # no shrinking
    torch.manual_seed(5)
    model = build_model("implicitmeshnet", dict(SMALL, smooth_iterations=3))
    image = torch.randn(1, 1, *SHAPE)
    with torch.no_grad():
        trained = model(image)[1][0][-1].verts
        model.eval()
        plain = build_model("implicitmeshnet", SMALL)
        plain.load_state_dict(model.state_dict())
        plain.eval()
        smoothed, unsmoothed = model(image)[1][0][-1].verts, plain(image)[1][0][-1].verts
    assert not torch.allclose(smoothed, unsmoothed)
    assert smoothed.shape == unsmoothed.shape == trained.shape


def test_bundled_model_segments_the_sample_hippocampus(samples):
    """The bundled f_theta: loads from its card, gives a closed mesh in LPS mm over the organ."""
    from imagetomesh.inference import Segmenter
    from imagetomesh.io.images import read_image, read_labelmap
    from imagetomesh.metrics import mesh_dice_iou
    from imagetomesh.zoo import available_models

    if "implicitmeshnet-hippocampus" not in available_models():
        pytest.skip("implicitmeshnet-hippocampus is not installed")
    segmenter = Segmenter("implicitmeshnet-hippocampus", device="cpu")
    assert segmenter.model.card["training"]["data"]["licence"] == "CC-BY-SA 4.0"
    mesh = segmenter.segment(read_image(samples / "hippocampus" / "hippocampus_024.nii.gz"))
    check = check_mesh(mesh, self_intersections=False)
    assert check.watertight and check.outward and len(mesh.vertices) == 2562
    dice, _ = mesh_dice_iou(mesh, read_labelmap(samples / "hippocampus" / "hippocampus_024_label.nii.gz"))
    assert dice > 0.7


# --- issue 15: the cpu-v2 retraining recipe ------------------------------------------------
def test_unet_gets_its_own_learning_rate_and_both_follow_the_schedule():
    from imagetomesh.training.tasks.implicitmeshnet import parameter_groups

    f = ImplicitMeshNet(ImplicitMeshNetConfig(**SMALL))
    groups, base = parameter_groups(f, small_config(lr=3e-4, lr_unet=3e-5))
    assert base == [3e-4, 3e-5] and [g["lr"] for g in groups] == [3e-4, 3e-5]
    unet = {id(p) for p in f.unet.parameters()}
    assert all(id(p) not in unet for p in groups[0]["params"]) and {id(p) for p in groups[1]["params"]} == unet
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(f.parameters()))
    single, base = parameter_groups(f, small_config(lr=3e-4))
    assert len(single) == 1 and base == [3e-4] and len(single[0]["params"]) == len(list(f.parameters()))


def test_beta_anneals_over_the_first_fraction_then_stays_at_its_end():
    config = small_config(beta_start=1000.0, beta_end=0.01, beta_anneal=0.3)
    assert beta_at(0.0, config) == pytest.approx(1000.0)
    assert beta_at(0.15, config) == pytest.approx((1000.0 + 0.01) / 2)
    assert beta_at(0.075, config) == pytest.approx(0.01 + (1000.0 - 0.01) * (1 + 2**-0.5) / 2)
    assert beta_at(0.3, config) == pytest.approx(0.01) and beta_at(0.9, config) == pytest.approx(0.01)
    assert beta_at(0.5, small_config()) == pytest.approx((1000.0 + 0.01) / 2)  # default: over the whole run
    for bad in ({"beta_anneal": 0.0}, {"seg_loss": "dice"}, {"fitted_shapes": 1.5}):
        with pytest.raises(ValueError):
            small_config(**bad)


def test_dice_ce_segmentation_term():
    from imagetomesh.training.losses import segmentation_loss

    f, g, lap = small_networks(6)
    images, labels = torch.randn(1, 1, *SHAPE), blob_label(1)
    config = small_config(seg_loss="dice_ce", gamma=1.0, alpha=0.0)
    loss, terms, _, _ = surface_terms(f, g, images, labels, lap, 0.0, config)
    logits, _ = f(images)
    assert "ce" not in terms and terms["seg"] == pytest.approx(
        float(segmentation_loss(logits, labels).detach()), rel=1e-5
    )
    assert float(loss.detach()) == pytest.approx(terms["seg"], rel=1e-5)


def test_surface_loss_backpropagates_under_bf16_autocast_with_float32_vertices():
    f, g, lap = small_networks(7)
    images, labels = torch.randn(2, 1, *SHAPE), blob_label(2)
    config = small_config(seg_loss="dice_ce")
    _, plain, verts32, _ = surface_terms(f, g, images, labels, lap, 10.0, config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, terms, verts, _ = surface_terms(f, g, images, labels, lap, 10.0, config)
    assert verts.dtype == torch.float32 and float((verts - verts32).detach().abs().max()) < 1e-3
    assert terms["laplacian"] == pytest.approx(plain["laplacian"], rel=1e-2)
    loss.backward()  # sparse Laplacian, splatting and graph convolutions stay float32
    assert all(torch.isfinite(p.grad).all() for p in f.parameters() if p.grad is not None)


def test_template_fit_keeps_the_faces_and_lies_on_the_label_surface():
    from imagetomesh.nn.sdf import inside_mask
    from imagetomesh.training.data import boundary_points
    from imagetomesh.training.implicitmeshnet_shapes import augment_fitted_shape, fit_template_to_label
    from imagetomesh.training.tasks.implicitmeshnet import FIT_WEIGHTS

    shape = (24, 28, 20)
    label = torch.zeros(shape, dtype=torch.uint8)
    label[6:18, 8:16, 4:17] = 1  # a box, far from the sphere the template starts as
    t = ImplicitMeshNet(ImplicitMeshNetConfig(**SMALL)).template(shape)
    verts = fit_template_to_label(t.sphere, t.faces, label, FIT_WEIGHTS, steps=150, lr=0.01)
    assert verts.shape == t.verts.shape
    scale = isotropic_scale(shape)
    points, _ = boundary_points(label)
    voxel = 2 / (max(shape) - 1)
    distance = torch.cdist(verts * scale, points * scale).min(1).values
    assert float(distance.mean()) < 0.5 * voxel and float(distance.max()) < 2 * voxel
    mask = inside_mask(verts, t.faces, shape).bool()
    overlap = 2 * float((mask & label.bool()).sum()) / float(mask.sum() + label.sum())
    assert overlap > 0.85
    assert check_mesh(Mesh(verts.numpy(), t.faces.numpy()), self_intersections=False).watertight
    varied = augment_fitted_shape(verts, scale, torch.Generator().manual_seed(0))
    assert (
        varied.shape == verts.shape and not torch.allclose(varied, verts) and float(varied.abs().max()) <= 0.92 + 1e-6
    )


def test_cpu_v2_config_is_the_retraining_recipe():
    config = get_implicitmeshnet_config("cpu-v2")
    assert config.lr_unet < config.lr and config.weight_decay == 1e-6 and config.seg_loss == "dice_ce"
    assert config.bf16_autocast and config.channels_last and 0 < config.beta_anneal < 1 and config.fitted_shapes > 0
    assert config.model == get_implicitmeshnet_config("cpu").model  # starts from a UNET_CPU head


def test_config_json_round_trip_and_resume_check(tmp_path):
    import copy

    from imagetomesh.errors import InputError
    from imagetomesh.training.engine import check_resumable, start_run

    config = get_implicitmeshnet_config("cpu-v2")
    start_run(config, tmp_path, tmp_path / "run", "cpu", 0, "cpu-v2", lambda m: None)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert ImplicitMeshNetTrainConfig.from_dict(saved) == config
    check_resumable(tmp_path / "run", config, "cpu-v2", 0)  # the same command resumes
    other = copy.deepcopy(config)
    other.tau = 0.01
    with pytest.raises(InputError, match="tau"):
        check_resumable(tmp_path / "run", other, "cpu-v2", 0)
    other.tau = 0.0
    with pytest.raises(InputError, match="--tau must be a positive number"):
        ImplicitMeshNetTask(other, None)


def test_pretraining_fits_training_labels_only_caches_them_and_resumes(tmp_path, write_msd):
    from imagetomesh.training.engine import Run, train
    from imagetomesh.training.tasks.implicitmeshnet import TEMPLATE_FITS, template_fits

    cases = box_cases(np.random.default_rng(1))
    msd = write_msd(tmp_path / "msd", cases)
    config = small_config(
        steps=2,
        val_every=1,
        batch_size=1,
        pretrain_steps=3,
        pretrain_batch=2,
        fitted_shapes=0.5,
        fit_steps=5,
        fit_cases=2,
        lr_unet=1e-5,
        seg_loss="dice_ce",
        beta_anneal=0.5,
    )
    messages = []
    train(config, msd, tmp_path / "run", log=messages.append)
    from safetensors.torch import load_file

    split = json.loads((tmp_path / "run" / "split.json").read_text())
    fits = load_file(str(tmp_path / "run" / TEMPLATE_FITS))
    assert sorted(fits) == sorted(split["train"][:2])  # training cases only, never val or test
    assert not set(fits) & set(split["val"] + split["test"])
    assert all(v.shape == (162, 3) for v in fits.values())  # the template's vertices (level 2)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    end_to_end = [e for e in log if e["phase"] == "end-to-end"]
    assert [e["lr"] for e in end_to_end] == pytest.approx([1e-4, 1e-4])
    assert [e["lr_unet"] for e in end_to_end] == pytest.approx([1e-5, 1e-5])
    assert "seg" in end_to_end[0] and "val_mesh_dice" in end_to_end[-1]
    config.steps = 3
    messages = []
    train(config, msd, tmp_path / "run", log=messages.append)
    assert any("resumed from step 2" in m for m in messages)
    # the cache is extended, not refitted, when more cases are asked for
    run = Run(tmp_path / "run", msd, torch.device("cpu"), 0, "", messages.append)
    t = ImplicitMeshNet(ImplicitMeshNetConfig(**SMALL)).template(SHAPE)
    config.fit_cases = 3
    fitted = template_fits(run, config, t.sphere, t.faces)
    assert len(fitted) == 3 and torch.equal(fitted[0], fits[split["train"][0]])
    assert "fitting the template to 1 training labels (2 cached" in messages[-1]


def test_bundled_steps_per_hour_counts_end_to_end_steps_only(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "bundle_model.py"
    spec = importlib.util.spec_from_file_location("bundle_model", path)
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    entries = [
        {"phase": "pretrain", "step": 100, "time_s": 600.0},
        {"phase": "end-to-end", "step": 50, "time_s": 360.0},
        {"phase": "pretrain", "step": 2500, "time_s": 5000.0},  # pretraining entries never count, wherever they are
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert bundle.steps_per_hour(tmp_path) == pytest.approx(500.0)
