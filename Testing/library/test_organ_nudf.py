"""NUDF with one distance output per organ (issue 16): each organ's field learned in a crop of the scan around
it, found by a trained several-organ U-Net the model carries; pools, crops, training and ``segment``."""

import numpy as np
import pytest
import torch
from synthetic_ct import (
    ORGAN_CENTRES,
    holds_only_its_organ,
    prepared_case,
    segment_synthetic_scan,
    train_on_synthetic_cts,
    write_ct_msd,
)

from imagetomesh.models.nudf import NUDF, NUDFConfig
from imagetomesh.preprocessing import GridSpec
from imagetomesh.scan import crop_to_scan_grid
from imagetomesh.training.augment import AugmentConfig
from imagetomesh.training.organ_crops import organ_crop_start
from imagetomesh.training.tasks.nudf import get_nudf_config, make_organ_pools, organ_training_batch
from imagetomesh.training.udf_points import UDFPointConfig

UNET = {"in_channels": 1, "num_classes": 3, "base": 8, "depth": 2, "norm": "batch"}
NO_AUGMENT = AugmentConfig(flip=0, rotate_deg=0, scale=0, intensity_scale=0, intensity_shift=0, noise=0)


def _organ_config(**change) -> NUDFConfig:
    fields = {"channels": (4, 8), "norm": "group", "hidden": 16, "unet": UNET, "organ_crops": [[8, 8, 8], [8, 8, 16]]}
    return NUDFConfig(**{**fields, **change})


def test_organ_nudf_configs_are_checked():
    with pytest.raises(ValueError, match="both or neither"):
        _organ_config(organ_crops=None)
    with pytest.raises(ValueError, match="one \\(d, h, w\\) crop per organ class of the U-Net \\(2\\)"):
        _organ_config(organ_crops=[[8, 8, 8]])
    with pytest.raises(ValueError, match="multiple of 2"):
        _organ_config(organ_crops=[[8, 8, 8], [8, 8, 15]])
    with pytest.raises(ValueError, match="use norm 'group' or 'instance'"):
        _organ_config(norm="batch")
    config = get_nudf_config("headneck-ct-cpu")
    assert len(config.organs) == NUDFConfig(**config.model).organs == 7  # a valid architecture


def test_each_organ_has_its_own_distance_output():
    torch.manual_seed(0)
    model = NUDF(_organ_config()).eval()
    image, points = torch.randn(1, 1, 8, 8, 16), torch.rand(1, 50, 3) * 2 - 1
    with pytest.raises(ValueError, match="say which organ"):
        model(image, points)
    with pytest.raises(ValueError, match="between 1 and 2"):
        model(image, points, organ=3)
    with pytest.raises(ValueError, match="say which organ"):
        model.predict_meshes(image)
    features = model.encode(image)
    full = model.decoder  # one output per organ: organ k's distances are |output k - 1|
    second = model.query(features, points, organ=2)
    assert full[-1].out_features == 2
    assert not torch.allclose(model.query(features, points, organ=1), second)
    model.train()
    second.sum().backward()
    assert model.decoder[-1].weight.grad[0].abs().sum() == 0 < model.decoder[-1].weight.grad[1].abs().sum()


def test_a_guided_encoder_reads_the_localisers_probability_of_the_organ():
    with pytest.raises(ValueError, match="localiser_input needs the localising U-Net"):
        NUDFConfig(channels=(4, 8), localiser_input=True)
    torch.manual_seed(0)
    model = NUDF(_organ_config(localiser_input=True)).eval()
    image, points = torch.randn(1, 1, 8, 8, 16), torch.rand(1, 30, 3) * 2 - 1
    for organ in (1, 2):
        features = model.encode(image, organ)
        probability = torch.softmax(model.unet(image)[0], 1)[:, organ]
        assert features[0].shape == (1, 2, 8, 8, 16)
        assert torch.equal(features[0][:, 0], image[:, 0]) and torch.allclose(features[0][:, 1], probability)
        # the caller's own softmax of the U-Net (as the mesh validation has it) gives the same features
        given = model.encode(image, organ, torch.softmax(model.unet(image)[0], 1))
        assert all(torch.allclose(a, b) for a, b in zip(given, features))
    with pytest.raises(ValueError, match="say which organ"):
        model.encode(image)
    with pytest.raises(ValueError, match="the U-Net's softmax"):
        model.encode(image, 1, torch.rand(1, 2, 8, 8, 16))
    model.train()
    model.unet.requires_grad_(False)
    model(image, points, organ=2).sum().backward()
    assert model.encoder[0][0].weight.grad[:, 1].abs().sum() > 0  # the probability channel is read
    for name in ("headneck-ct-cpu", "headneck-ct-cpu-guided"):
        config = get_nudf_config(name)
        assert NUDFConfig(**config.model).localiser_input == name.endswith("guided")


def test_pool_points_keep_their_place_in_the_scan_when_the_crop_moves():
    label = np.zeros((16, 12, 12), np.uint8)
    label[4:8, 4:8, 4:8] = 1
    label[9:12, 2:5, 2:5] = 2
    case = prepared_case(label)
    config = UDFPointConfig(count=400)
    pools = make_organ_pools({1: [case], 2: [case]}, [[8, 8, 8], [8, 8, 16]], config, seed=0, progress=False)
    pool = pools[2][0]
    _, crop, same = pool.crop()
    assert same is pool.points and int((crop == 2).sum()) == 27
    generator = torch.Generator().manual_seed(0)
    for offset in ([0.0, 0.0, 0.0], [2.0, -1.0, 3.0], [-3.0, 2.6, 0.0]):
        image, crop, points = pool.crop(np.array(offset))
        start = organ_crop_start(case, 2, pool.shape, np.array(offset))
        # each point is where it was in the scan, whichever crop it is given in
        before = crop_to_scan_grid(pool.points.double().numpy(), pool.start, pool.shape, label.shape)
        after = crop_to_scan_grid(points.double().numpy(), start, pool.shape, label.shape)
        assert np.allclose(before, after, atol=1e-5)
        assert int((crop == 2).sum()) == 27  # the jittered crop still holds the organ
    # a batch is of one organ, its points as many as asked, its distances those of the pool (no augmentation)
    train = get_nudf_config("headneck-ct-cpu")
    train.batch_size, train.points_per_case, train.augment, train.crop_jitter = 3, 100, NO_AUGMENT, 1.0
    organ, images, points, distances, guides = organ_training_batch(pools, train, generator)
    assert images.shape == (3, 1, *pools[organ][0].shape) and points.shape == (3, 100, 3)
    assert set(distances.flatten().tolist()) <= set(pools[organ][0].distances.tolist())
    assert guides is None  # no scan guides: the encoder's U-Net reads the crop


class _ImageLogits(torch.nn.Module):
    """A stand-in localiser whose logits are an obvious function of each voxel: classes ``(-s x - 1/2, 0, s x - 1/2)``
    with its one weight ``s`` (on the ramp image of ``prepared_case``, each class wins somewhere)."""

    def __init__(self, s: float = 1.0) -> None:
        super().__init__()
        self.s = torch.nn.Parameter(torch.tensor(s))

    def forward(self, x):
        return (torch.cat([-self.s * x - 0.5, torch.zeros_like(x), self.s * x - 0.5], 1),)


def test_scan_guides_are_the_whole_case_probabilities_cropped_and_augmented_with_the_image(tmp_path):
    from imagetomesh.scan import class_mask, crop_padded
    from imagetomesh.training.tasks.nudf import add_scan_guides, augmented_points

    label = np.zeros((16, 12, 12), np.uint8)
    label[4:8, 4:8, 4:8] = 1
    label[9:12, 2:5, 2:5] = 2
    case = prepared_case(label)
    pools = make_organ_pools({1: [case], 2: [case]}, [[8, 8, 8], [8, 8, 16]], UDFPointConfig(count=400), 0, False)
    cache = tmp_path / "guides.pt"
    add_scan_guides(pools, [_ImageLogits()], jitter=2.0, device="cpu", cache=cache)
    # the slow, obvious path: the whole case's softmax, the organ's channel and voxels cropped where the crop is
    image = case.image.float()
    probabilities = torch.stack([-image - 0.5, torch.zeros_like(image), image - 0.5]).softmax(0)
    winner = probabilities.argmax(0).numpy()
    for organ in (1, 2):
        pool = pools[organ][0]
        voxels = torch.from_numpy(class_mask(winner, organ))
        for offset in ([0.0, 0.0, 0.0], [2.0, -2.0, 1.5], [-2.0, 1.0, -2.0]):
            start = pool.crop_start(np.array(offset))
            guide, near = pool.scan_guide(start)
            assert torch.allclose(guide, crop_padded(probabilities[organ], start, pool.shape, 0.0), atol=1e-3)
            assert torch.equal(near, crop_padded(voxels, start, pool.shape, False))
    with pytest.raises(ValueError, match="leaves the scan guide"):
        pools[1][0].scan_guide(tuple(a + 5 for a in pools[1][0].start))
    # read back from the cache as made; made anew for another U-Net
    again = make_organ_pools({1: [case], 2: [case]}, [[8, 8, 8], [8, 8, 16]], UDFPointConfig(count=400), 0, False)
    add_scan_guides(again, [_ImageLogits()], jitter=2.0, device="cpu", cache=cache)
    assert all(
        torch.equal(a.guide, b.guide) and torch.equal(a.guide_mask, b.guide_mask) for a, b in zip(again[2], pools[2])
    )
    add_scan_guides(again, [_ImageLogits(2.0)], jitter=2.0, device="cpu", cache=cache)
    assert not torch.equal(again[2][0].guide, pools[2][0].guide)
    # augmented with its image: a guide equal to the image (above its lowest value) stays equal to it
    train = get_nudf_config("headneck-ct-cpu-scan-guided")
    train.augment = AugmentConfig(flip=0, rotate_deg=20, scale=0.2, intensity_scale=0, intensity_shift=0, noise=0)
    pool = pools[1][0]
    crop, crop_label, points = pool.crop()
    generator = torch.Generator().manual_seed(3)
    moved, _, _, guide = augmented_points(crop, crop_label, points, pool.distances, train, generator, crop - crop.min())
    assert not torch.allclose(moved, crop)  # the augmentation moved the image
    assert torch.allclose(guide, moved - crop.min(), atol=1e-5)
    # and a batch of scan-guided pools carries their guides, one per crop
    train.batch_size, train.points_per_case, train.crop_jitter = 2, 50, 2.0
    organ, images, _, _, guides = organ_training_batch(pools, train, generator)
    assert guides.shape == (2, *pools[organ][0].shape) and float(guides.max()) <= 1.0


def test_scan_guides_of_several_unets_are_their_mean_probabilities_as_segment_averages_an_ensemble(tmp_path):
    from imagetomesh.scan import class_mask, crop_padded
    from imagetomesh.training.tasks.nudf import add_scan_guides

    label = np.zeros((16, 12, 12), np.uint8)
    label[4:8, 4:8, 4:8] = 1
    label[9:12, 2:5, 2:5] = 2
    case = prepared_case(label)
    crops, points = [[8, 8, 8], [8, 8, 16]], UDFPointConfig(count=400)
    pools = make_organ_pools({1: [case], 2: [case]}, crops, points, 0, False)
    cache = tmp_path / "guides.pt"
    add_scan_guides(pools, [_ImageLogits(0.5), _ImageLogits(4.0)], jitter=1.0, device="cpu", cache=cache)
    image = case.image.float()
    mean = sum(torch.stack([-s * image - 0.5, torch.zeros_like(image), s * image - 0.5]).softmax(0) for s in (0.5, 4.0))
    mean = mean / 2
    winner = mean.argmax(0).numpy()
    for organ in (1, 2):
        pool = pools[organ][0]
        guide, near = pool.scan_guide(pool.crop_start())
        assert torch.allclose(guide, crop_padded(mean[organ], pool.crop_start(), pool.shape, 0.0), atol=1e-3)
        assert torch.equal(
            near, crop_padded(torch.from_numpy(class_mask(winner, organ)), pool.crop_start(), pool.shape, False)
        )
    # under bf16 autocast (as segment runs where the CPU has bf16): close to float32, and cached apart from it
    bf16 = make_organ_pools({1: [case], 2: [case]}, crops, points, 0, False)
    add_scan_guides(bf16, [_ImageLogits(0.5), _ImageLogits(4.0)], jitter=1.0, device="cpu", cache=cache, bf16=True)
    assert torch.load(cache, weights_only=True)["key"].endswith('"bf16": true}')
    for organ in (1, 2):
        assert (bf16[organ][0].guide.float() - pools[organ][0].guide.float()).abs().max() < 0.02
    # one member fewer: another set of guides
    single = make_organ_pools({1: [case], 2: [case]}, crops, points, 0, False)
    add_scan_guides(single, [_ImageLogits(0.5)], jitter=1.0, device="cpu", cache=cache)
    assert not torch.equal(single[1][0].guide, pools[1][0].guide)


def test_pools_are_cached_read_back_as_made_and_remade_when_their_inputs_change(tmp_path):
    label = np.zeros((16, 12, 12), np.uint8)
    label[4:8, 4:8, 4:8] = 1
    label[9:12, 2:5, 2:5] = 2
    case = prepared_case(label)
    cases, crops, path = {1: [case], 2: [case]}, [[8, 8, 8], [8, 8, 16]], tmp_path / "pools.pt"
    made = make_organ_pools(cases, crops, UDFPointConfig(count=400), seed=0, progress=False, cache=path)
    assert path.exists()
    again = make_organ_pools(cases, crops, UDFPointConfig(count=400), seed=0, progress=False, cache=path)
    direct = make_organ_pools(cases, crops, UDFPointConfig(count=400), seed=0, progress=False)
    for k in (1, 2):
        for a, b in zip(again[k], direct[k]):
            assert a.case is case and (a.organ, a.shape, a.start) == (b.organ, b.shape, b.start)
            assert torch.equal(a.points, b.points) and torch.equal(a.distances, b.distances)
    assert torch.equal(made[2][0].points, again[2][0].points)
    other = make_organ_pools(cases, crops, UDFPointConfig(count=300), seed=0, progress=False, cache=path)
    assert other[1][0].points.shape == (300, 3)  # another point config: sampled anew, and saved
    assert torch.load(path, weights_only=True)["pools"]["1"][0][2].shape == (300, 3)


@pytest.fixture(scope="module")
def organ_nudf_model(organ_model, tmp_path_factory):
    """A small organ NUDF trained here on the synthetic CTs, its organs found by ``organ_model``'s U-Net."""
    from imagetomesh.training.tasks.nudf import NUDFTrainConfig

    unet_folder, unet_card = organ_model
    model = _organ_config(channels=(8, 16), hidden=64, unet=unet_card["config"]["unet"], organ_crops=[[8, 8, 8]] * 2)
    config = NUDFTrainConfig(
        model.to_dict(),
        grid=GridSpec.from_dict(unet_card["grid"]),
        steps=300,
        lr=3e-3,
        val_every=300,
        points_per_case=1000,
        val_points=1000,
        points=UDFPointConfig(count=3000),
        augment=NO_AUGMENT,
        threads=1,
        organs=unet_card["organs"],
        crop_jitter=1.0,  # of 8-voxel crops around 4-voxel organs
        val_mesh_cases=2,
    )
    return train_on_synthetic_cts(config, tmp_path_factory.mktemp("organ_nudf"), unet_folder, unet_card["input"])


def test_organ_nudf_learns_each_organ_on_the_unet_it_carries(organ_model, organ_nudf_model):
    from imagetomesh.weights import load_state

    folder, card, log = organ_nudf_model
    assert any("cases teaching each organ's mesh: bright 3, brighter" in line for line in log), log
    assert card["organs"] == organ_model[1]["organs"]
    metrics = card["metrics"]
    assert {"val_l1_brighter", "val_l1_near_brighter"} <= set(metrics)  # "bright": scored where contoured
    assert metrics["val_l1"] < 0.02, metrics  # clamp 0.1: the fields are learned
    # and meshed as segment meshes them, in the validation crops: the mesh Dice that selects the checkpoint
    per_organ = [v for k, v in metrics.items() if k.startswith("val_mesh_dice_")]
    assert "val_mesh_dice_brighter" in metrics and metrics["val_mesh_dice"] == pytest.approx(np.mean(per_organ))
    assert metrics["val_mesh_dice"] > 0.6, metrics
    unet = load_state(organ_model[0], organ_model[1])
    state = load_state(folder, card)
    assert all(torch.equal(state[k], v) for k, v in unet.items()), "the localising U-Net changed"


def test_mesh_dice_validation_scores_an_organ_the_localiser_misses_as_zero(organ_nudf_model, tmp_path):
    from imagetomesh.training.data import prepare_split
    from imagetomesh.training.organ_crops import organ_cases
    from imagetomesh.training.tasks.nudf import NUDFTask, make_organ_pools, organ_mesh_dice
    from imagetomesh.zoo import load_model

    folder, card, _ = organ_nudf_model
    model = load_model(folder, "cpu").module
    msd = write_ct_msd(tmp_path / "msd", 4)
    _, train_cases, val_cases = prepare_split(
        msd, tmp_path / "run", GridSpec.from_dict(card["grid"]), 0, progress=False, organs=[1, 2]
    )
    cases = organ_cases(train_cases + val_cases, 2)
    pools = make_organ_pools(cases, [[8, 8, 8]] * 2, UDFPointConfig(count=500), seed=0, progress=False)
    names = ["bright", "brighter"]
    found = organ_mesh_dice(model, pools, 2, "cpu", names)
    assert found["val_mesh_dice_bright"] > 0.6 and found["val_mesh_dice_brighter"] > 0.6, found
    with torch.no_grad():  # the localiser now sees background everywhere
        last = [m for m in model.unet.modules() if isinstance(m, torch.nn.Conv3d)][-1]
        last.bias[0] += 1e4
    missed = organ_mesh_dice(model, pools, 2, "cpu", names)
    assert missed == {"val_mesh_dice_bright": 0.0, "val_mesh_dice_brighter": 0.0, "val_mesh_dice": 0.0}
    # the mesh Dice, when measured, is what selects (the higher the better); otherwise the clamped L1
    assert NUDFTask.score(None, {"val_l1": 0.01, "val_mesh_dice": 0.8}) == -0.8
    assert NUDFTask.score(None, {"val_l1": 0.01}) == 0.01
    selected = get_nudf_config("headneck-ct-cpu-guided-meshsel")
    assert selected.val_mesh_cases == 4 and selected.model["meshing"]["initial_points"] == 1500


def test_a_scan_guided_field_trains_on_the_whole_case_probabilities(organ_model, tmp_path):
    from dataclasses import replace

    from imagetomesh.errors import InputError
    from imagetomesh.training.tasks.nudf import NUDFTrainConfig

    unet_folder, unet_card = organ_model
    model = _organ_config(
        channels=(8, 16), hidden=32, unet=unet_card["config"]["unet"], organ_crops=[[8, 8, 8]] * 2, localiser_input=True
    )
    config = NUDFTrainConfig(
        model.to_dict(),
        grid=GridSpec.from_dict(unet_card["grid"]),
        steps=10,
        val_every=10,
        points_per_case=200,
        val_points=200,
        points=UDFPointConfig(count=1000),
        augment=AugmentConfig(flip=0, rotate_deg=10, scale=0.1, intensity_scale=0, intensity_shift=0, noise=0),
        threads=1,
        organs=unet_card["organs"],
        crop_jitter=1.0,
        val_mesh_cases=1,
        guide="scan",
    )
    folder, card, log = train_on_synthetic_cts(config, tmp_path / "guided", unet_folder, unet_card["input"])
    assert any(line.startswith("scan guides:") for line in log), log
    assert {"val_l1", "val_mesh_dice"} <= set(card["metrics"]) and card["config"]["localiser_input"]
    assert "ensemble" not in card
    # with the U-Net averaged with another's (here the same model's, named by its folder): guides and card name it
    ensembled = replace(config, guide_ensemble=[str(unet_folder)])
    folder, card, log = train_on_synthetic_cts(ensembled, tmp_path / "ensembled", unet_folder, unet_card["input"])
    assert any(line.startswith("scan guides: the mean probabilities of 2 U-Net(s)") for line in log), log
    assert card["ensemble"] == [str(unet_folder)]
    with pytest.raises(InputError, match="guide_ensemble averages the scan guides: it needs guide 'scan'"):
        train_on_synthetic_cts(replace(ensembled, guide="crop"), tmp_path / "crop", unet_folder)
    unguided = replace(config, model={**config.model, "localiser_input": False})
    with pytest.raises(InputError, match="'scan' needs a model with localiser_input"):
        train_on_synthetic_cts(unguided, tmp_path / "unguided", unet_folder)


def test_organ_nudf_needs_a_unet_of_its_organs(organ_model, tmp_path):
    from imagetomesh.errors import InputError
    from imagetomesh.training.engine import train

    config = get_nudf_config("headneck-ct-cpu")
    with pytest.raises(InputError, match="--init-from a unet model"):
        train(config, tmp_path / "msd", tmp_path / "run")
    msd = write_ct_msd(tmp_path / "msd", 2)
    with pytest.raises(InputError, match="has the classes \\['bright', 'brighter'\\]"):
        train(config, msd, tmp_path / "run", init_from=organ_model[0], log=lambda m: None)


def test_segment_meshes_each_organ_with_its_field_where_the_unet_found_it(organ_nudf_model, tmp_path):
    from imagetomesh.geometry.quality import check_mesh
    from imagetomesh.io.meshes import read_mesh

    folder, _, _ = organ_nudf_model
    out, _, _ = segment_synthetic_scan(folder, tmp_path)
    for organ, centre in ORGAN_CENTRES.items():
        mesh = read_mesh(out / f"scan_007_{organ}.stl")
        assert check_mesh(mesh, self_intersections=False).watertight
        assert holds_only_its_organ(mesh, organ), organ
        assert np.abs(mesh.vertices.mean(0) - centre).max() < 4.0, organ  # centred within a voxel


def test_a_guided_field_reads_the_localisers_probabilities_over_the_whole_scan(organ_nudf_model):
    """segment gives a guided NUDF (``localiser_input``) the U-Net's probabilities of the whole scan cropped to the
    organ's crop, not those of the U-Net run on the crop alone (which loses the organ's surroundings)."""
    from dataclasses import replace

    from synthetic_ct import whole_scan_crops, whole_scan_volume

    from imagetomesh.core.mesh import Mesh
    from imagetomesh.inference import Segmenter
    from imagetomesh.zoo import load_model

    folder, _, _ = organ_nudf_model
    loaded = load_model(folder, "cpu")
    unet = loaded.module.unet
    guided = NUDF(replace(loaded.module.config, localiser_input=True)).eval()
    guided.unet.load_state_dict(unet.state_dict())
    given = {}

    def predict_meshes(images, open_surface=False, organ=None, near=None, probabilities=None):
        given[organ] = (images, near, probabilities)
        cube = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], np.float32)
        faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                          [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
        return [Mesh(cube, faces)]

    guided.predict_meshes = predict_meshes
    segmenter = Segmenter(replace(loaded, module=guided))
    volume = whole_scan_volume()
    meshes = segmenter.segment_organs(volume)
    assert all(m is not None for m in meshes.values()) and set(given) == {1, 2}
    for organ, expected in whole_scan_crops(segmenter, volume).items():
        images, near, guide = given[organ]
        assert guide.shape == (1, *expected.shape) and torch.allclose(guide[0], expected)
        on_the_crop = unet(images)[0].softmax(1)
        assert not torch.allclose(guide, on_the_crop, atol=1e-3)  # the crop alone would have given another guide


def test_surface_offsets_move_each_organs_mesh_along_its_normals():
    from imagetomesh.core.mesh import Mesh
    from imagetomesh.core.volume import Volume
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.models.nudf import moved_along_normals

    with pytest.raises(ValueError, match="one per organ"):
        _organ_config(surface_offsets=[0.1])
    with pytest.raises(ValueError, match="finite"):
        _organ_config(surface_offsets=[0.1, float("nan")])
    assert _organ_config(surface_offsets=[-0.4, 1]).surface_offsets == [-0.4, 1.0]
    # a sphere of radius 10 moved by -1 is the sphere of radius 9 (parallel surface), whichever way its faces wound
    grid = np.stack(np.meshgrid(*[np.arange(-14, 15)] * 3, indexing="ij"), -1)
    ball = Volume((np.linalg.norm(grid, axis=-1) <= 10).astype(np.uint8), (1.0, 1.0, 1.0))
    sphere = labelmap_to_mesh(ball, smoothing=0.0)
    centre = sphere.vertices.mean(0)
    radius = np.linalg.norm(sphere.vertices - centre, axis=1)
    for mesh in (sphere, Mesh(sphere.vertices, sphere.faces[:, ::-1])):
        shrunk = moved_along_normals(mesh, -1.0)
        moved = np.linalg.norm(shrunk.vertices - centre, axis=1) - radius
        assert np.allclose(np.linalg.norm(shrunk.vertices - mesh.vertices, axis=1), 1.0, atol=1e-4)
        assert np.abs(moved + 1.0).mean() < 0.05 and shrunk.signed_volume() < sphere.signed_volume()


def test_segment_moves_each_organs_surface_by_its_offset(organ_nudf_model):
    from dataclasses import replace

    from synthetic_ct import ct_case

    from imagetomesh.core.volume import Volume
    from imagetomesh.inference import Segmenter
    from imagetomesh.metrics import point_to_mesh_distance
    from imagetomesh.zoo import load_model

    folder, card, _ = organ_nudf_model
    image, _ = ct_case(shape=(32, 24, 40), seed=9)
    volume = Volume(image, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0]))
    loaded = load_model(folder, "cpu")
    plain = Segmenter(loaded).segment_organs(volume)
    moved_model = replace(loaded.module.config, surface_offsets=[0.5, -0.25])
    loaded.module.config = moved_model
    moved = Segmenter(loaded).segment_organs(volume)
    voxel_mm = np.asarray(card["grid"]["spacing"], dtype=np.float64)
    assert np.allclose(voxel_mm, voxel_mm[0])  # an isotropic grid: the offsets are the same in mm in every direction
    for organ, offset in zip(ORGAN_CENTRES, (0.5, -0.25)):
        before, after = plain[organ], moved[organ]
        shift = point_to_mesh_distance(after.vertices, before)  # a parallel surface |offset| voxels away
        assert np.median(shift) == pytest.approx(abs(offset) * voxel_mm[0], rel=0.1), organ
        assert (after.signed_volume() > before.signed_volume()) == (offset > 0), organ


def test_segment_gives_each_organ_points_for_the_surface_its_localiser_voxels_show(organ_nudf_model, monkeypatch):
    from synthetic_ct import ct_case

    import imagetomesh.geometry.udf_meshing as udf_meshing
    from imagetomesh.core.volume import Volume
    from imagetomesh.inference import Segmenter
    from imagetomesh.models.nudf import VoxelGuide
    from imagetomesh.zoo import load_model

    folder, _, _ = organ_nudf_model
    loaded = load_model(folder, "cpu")
    loaded.module.config.meshing["reference_area_voxels"] = 20.0  # below both organs' areas: every count grows
    base = udf_meshing.UDFMeshingConfig(**loaded.module.config.meshing)
    areas, configs = [], []
    area_of, mesh_udf = VoxelGuide.surface_area, udf_meshing.mesh_udf
    monkeypatch.setattr(VoxelGuide, "surface_area", lambda guide: areas.append(area_of(guide)) or areas[-1])
    monkeypatch.setattr(udf_meshing, "mesh_udf", lambda *a, **kw: configs.append(a[4]) or mesh_udf(*a, **kw))
    image, _ = ct_case(shape=(32, 24, 40), seed=9)
    Segmenter(loaded).segment_organs(Volume(image, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0])))
    assert len(configs) == len(areas) == len(ORGAN_CENTRES) and min(areas) > 20
    for area, config in zip(areas, configs):
        assert config == base.for_area(area)
        assert config.dense_points == round(base.dense_points * area / 20.0)


def test_a_new_ct_field_is_meshed_as_the_bundled_one():
    """The meshing a head-and-neck NUDF training run writes into its card is the bundled card's, every choice made
    on validation since included (a rerun of the training command must not mesh with older settings)."""
    import json
    from pathlib import Path

    from imagetomesh.training.tasks.nudf import HEADNECK_CT_MESHING

    repo = Path(__file__).resolve().parents[2]
    card = json.loads((repo / "Resources" / "Models" / "nudf-headneck-ct" / "card.json").read_text())
    assert card["config"]["meshing"] == HEADNECK_CT_MESHING
