"""DALS fitting: a tiny prior learned from ellipsoids recovers an ellipsoid; every task's bad input."""

import json
import math

import numpy as np
import pytest
import torch

from imagetomesh.core import Volume
from imagetomesh.errors import InputError
from imagetomesh.fitting import Prior, fit_curves, fit_points, load_prior, refine_labelmap
from imagetomesh.fitting.optimise import Adam
from imagetomesh.geometry.quality import check_mesh
from imagetomesh.geometry.topology import icosphere
from imagetomesh.metrics import mesh_dice_iou, point_to_mesh_distance
from imagetomesh.models.dals import DALSConfig, DALSDecoder
from imagetomesh.training.dals_augment import WolfConfig
from imagetomesh.training.tasks.dals import DALSTrainConfig, autodecoder_loss, normalise_shapes
from imagetomesh.weights import save_weights

AXES = np.array([30.0, 20.0, 15.0])
CENTRE = np.array([10.0, 20.0, 30.0])


def ellipsoid_points(axes, n, rng):
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p * axes


@pytest.fixture(scope="module")
def tiny_prior():
    """A small auto-decoder trained for 100 steps on six ellipsoids (a few seconds)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shapes = [np.array([1.0, a, b]) for a in (0.5, 0.75, 1.0) for b in (0.4, 0.7)]
    normalised, _, _ = normalise_shapes(np.stack([ellipsoid_points(a, 600, rng) for a in shapes]))
    targets = torch.tensor(normalised, dtype=torch.float32)
    config = DALSTrainConfig(
        model=DALSConfig(latent_dim=4, hidden=(32, 32, 16), train_template_level=2, fit_template_level=3),
        batch_size=6,
        target_points=200,
        surface_samples=100,
        augment=WolfConfig(probability=0.0),
        lambda_reg=1e-3,
    )
    torch.manual_seed(0)
    decoder = DALSDecoder(config.model)
    latents = torch.nn.Parameter(torch.randn(len(shapes), 4) * 0.01)
    optimiser = Adam([(p, 1e-2) for p in decoder.parameters()] + [(latents, 1e-2)])
    template, faces = icosphere(2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        loss, _ = autodecoder_loss(
            decoder, latents, targets, torch.arange(len(shapes)), template, faces, config, generator
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return Prior("tiny", decoder, latents.detach().mean(0), card={"latent_std": float(latents.detach().std())})


@pytest.fixture(scope="module")
def target_points():
    return ellipsoid_points(AXES, 1500, np.random.default_rng(1)) + CENTRE


def assert_good_mesh(mesh):
    check = check_mesh(mesh, self_intersections=False)
    assert check.watertight and check.outward and check.components == 1


def test_fit_points_recovers_an_ellipsoid(tiny_prior, target_points):
    mesh = fit_points(target_points, tiny_prior, iterations=150)
    assert_good_mesh(mesh)
    assert point_to_mesh_distance(target_points, mesh).mean() < 0.6  # mm, on a 60 x 40 x 30 mm ellipsoid
    lo, hi = mesh.bounds()
    assert np.allclose(lo, CENTRE - AXES, atol=2.0) and np.allclose(hi, CENTRE + AXES, atol=2.0)


def test_fit_points_shared_latent_progress_and_remesh(tiny_prior, target_points):
    seen = []
    mesh = fit_points(target_points, tiny_prior, lambda_dir=math.inf, iterations=40, remesh=True, progress=seen.append)
    assert_good_mesh(mesh)
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen) and seen == sorted(seen)


def test_progress_can_cancel(tiny_prior, target_points):
    def cancel(fraction):
        if fraction > 0.1:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        fit_points(target_points, tiny_prior, iterations=50, progress=cancel)


def test_fit_curves_on_three_orthogonal_ellipses(tiny_prior, target_points):
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    a, b, c = AXES
    curves = [
        np.stack([a * np.cos(t), b * np.sin(t), 0 * t], 1) + CENTRE,
        np.stack([a * np.cos(t), 0 * t, c * np.sin(t)], 1) + CENTRE,
        np.stack([0 * t, b * np.cos(t), c * np.sin(t)], 1) + CENTRE,
    ]
    mesh = fit_curves(curves, tiny_prior, iterations=100)
    assert_good_mesh(mesh)
    assert point_to_mesh_distance(target_points, mesh).mean() < 1.5


def test_refine_labelmap_of_an_ellipsoid(tiny_prior):
    k, j, i = np.mgrid[:40, :50, :70]
    inside = ((i - 35) / 30.0) ** 2 + ((j - 25) / 20.0) ** 2 + ((k - 20) / 15.0) ** 2 <= 1
    mask = Volume(inside.astype(np.uint8), [1.0, 1.0, 1.0], [-5.0, 2.0, 7.0])
    mesh = refine_labelmap(mask, tiny_prior, iterations=100)
    assert_good_mesh(mesh)
    assert mesh_dice_iou(mesh, mask)[0] > 0.9


def test_coverage_loss_matches_brute_force_and_ignores_far_points():
    from imagetomesh.fitting.tasks import SURFACE_SAMPLES, coverage_loss
    from imagetomesh.geometry.sampling import sample_points_on_mesh

    verts, faces = icosphere(2)
    verts = verts.double().requires_grad_(True)
    boundary = torch.randn(300, 3, dtype=torch.float64) * 0.7
    scale = 0.2
    fast = coverage_loss(verts, faces, boundary, scale=scale, generator=torch.Generator().manual_seed(3))
    samples = sample_points_on_mesh(verts, faces, SURFACE_SAMPLES, generator=torch.Generator().manual_seed(3))
    surface = torch.cat([verts, samples])
    d2 = torch.stack([((surface - b) ** 2).sum(1).min() for b in boundary])  # every pair, one point at a time
    slow = scale * (d2 / (d2 + scale**2)).mean()
    torch.testing.assert_close(fast, slow)
    (grad_fast,) = torch.autograd.grad(fast, verts)
    (grad_slow,) = torch.autograd.grad(slow, verts)
    torch.testing.assert_close(grad_fast, grad_slow)

    # a point far off the surface adds at most scale / M and pulls (almost) nothing
    on_sphere = verts.detach()[:50].clone()
    far = torch.tensor([[0.0, 0.0, 30.0]], dtype=torch.float64)
    moving = verts.detach().clone().requires_grad_(True)
    near_only = coverage_loss(moving, faces, on_sphere * 1.05, scale=scale, generator=torch.Generator().manual_seed(0))
    with_far = coverage_loss(
        moving, faces, torch.cat([on_sphere * 1.05, far]), scale=scale, generator=torch.Generator().manual_seed(0)
    )
    assert float(with_far) * 51 - float(near_only) * 50 <= scale + 1e-9
    (g,) = torch.autograd.grad(with_far * 51 - near_only * 50, moving)
    assert float(g.norm()) < 1e-3


def test_refine_coverage_weight_is_checked(tiny_prior):
    mask = Volume(np.pad(np.ones((6, 6, 6), np.uint8), 4), [1.0, 1.0, 1.0])
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(InputError, match="coverage"):
            refine_labelmap(mask, tiny_prior, iterations=1, coverage=bad)
    assert_good_mesh(refine_labelmap(mask, tiny_prior, iterations=2, coverage=0.0))


def test_saved_prior_loads_by_folder(tiny_prior, tmp_path):
    card = {
        "kind": "dals",
        "config": tiny_prior.config.to_dict(),
        "mean_latent": tiny_prior.mean_latent.tolist(),
        "paired": True,
        "latent_std": 0.1,
    }
    save_weights(tiny_prior.decoder, tmp_path / "dals-tiny", card)
    prior = load_prior(str(tmp_path / "dals-tiny"))
    assert prior.paired and prior.decoder.latent_dim == 4
    x = torch.randn(10, 3)
    assert torch.allclose(prior.decoder(x, prior.mean_latent), tiny_prior.decoder(x, tiny_prior.mean_latent))


# --- bad input ----------------------------------------------------------------------------------
def test_unknown_prior_lists_available():
    with pytest.raises(InputError, match="unknown prior 'no-such-prior'; available DALS priors"):
        load_prior("no-such-prior")


def test_non_dals_model_is_refused(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"kind": "unet", "config": {}, "grid": {}, "sha256": "0"}))
    with pytest.raises(InputError, match="not a DALS prior"):
        load_prior(str(folder))


@pytest.mark.parametrize(
    "points, message",
    [
        (np.zeros((3, 3)), "at least 4 points"),
        (np.zeros((5, 2)), r"\(N, 3\)"),
        (np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3.0]]), "one line"),
        (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [np.nan, 0, 1]]), "NaN"),
    ],
)
def test_fit_points_bad_points(tiny_prior, points, message):
    with pytest.raises(InputError, match=message):
        fit_points(points, tiny_prior, iterations=1)


def test_points_in_one_plane_warn_under_constrained(tiny_prior):
    rng = np.random.default_rng(0)
    flat = np.c_[rng.normal(size=(200, 2)) * 10, np.zeros(200)]
    with pytest.warns(UserWarning, match="under-constrained"):
        fit_points(flat, tiny_prior, iterations=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lambda_dir": -1.0}, "lambda_dir must be >= 0"),
        ({"lambda_reg": float("nan")}, "lambda_reg must be >= 0"),
        ({"iterations": 0}, "iterations must be"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_settings(tiny_prior, target_points, kwargs, message):
    with pytest.raises(InputError, match=message):
        fit_points(target_points, tiny_prior, **kwargs)


def circle(normal_axis=2, offset=0.0, radius=10.0, n=30):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.zeros((n, 3))
    a, b = [ax for ax in range(3) if ax != normal_axis]
    pts[:, a], pts[:, b], pts[:, normal_axis] = radius * np.cos(t), radius * np.sin(t), offset
    return pts


def test_curve_with_too_few_points(tiny_prior):
    with pytest.raises(InputError, match="curve 2 has 2 point"):
        fit_curves([circle(), circle(0)[:2]], tiny_prior, iterations=1)


def test_two_identical_planes(tiny_prior):
    with pytest.raises(InputError, match="curves 1 and 2 lie in the same plane"):
        fit_curves([circle(2, 1.0), circle(2, 1.0, radius=5.0)[::-1]], tiny_prior, iterations=1)


def test_collinear_curve(tiny_prior):
    line = np.c_[np.arange(5.0), np.zeros(5), np.zeros(5)]
    with pytest.raises(InputError, match="one line"):
        fit_curves([line], tiny_prior, iterations=1)


def test_no_curves(tiny_prior):
    with pytest.raises(InputError, match="no curves"):
        fit_curves([], tiny_prior, iterations=1)


def test_non_planar_curve_is_projected_with_a_warning(tiny_prior):
    bent = circle(2)
    bent[::2, 2] += 2.0
    with pytest.warns(UserWarning, match="not planar"):
        mesh = fit_curves([bent, circle(0)], tiny_prior, iterations=3)
    assert_good_mesh(mesh)


def test_empty_labelmap(tiny_prior):
    with pytest.raises(InputError, match="empty"):
        refine_labelmap(Volume(np.zeros((8, 8, 8), np.uint8)), tiny_prior, iterations=1)
    with pytest.raises(InputError, match="Volume"):
        refine_labelmap(np.ones((8, 8, 8)), tiny_prior, iterations=1)


def test_prolonged_values_follow_the_icosphere_nesting(tiny_prior):
    from imagetomesh.fitting.optimise import prolong

    coarse, _ = tiny_prior.template(2)
    fine, _ = tiny_prior.template(3)
    grown = prolong(coarse.double(), tiny_prior.parent_edges(3))
    assert grown.shape == fine.shape
    assert torch.allclose(grown / grown.norm(dim=1, keepdim=True), fine.double(), atol=1e-6)


def test_coarse_to_fine_fit_is_as_good_as_the_full_template_fit(tiny_prior, target_points):
    from imagetomesh.fitting.optimise import FitSettings, chamfer, run_fit

    target = torch.tensor((target_points - CENTRE) / AXES.max(), dtype=torch.float32)
    losses = {}
    for fraction in (0.0, 0.8):
        settings = FitSettings(lambda_dir=0.2, lambda_reg=1e-3, iterations=120, coarse_fraction=fraction, bf16=False)
        result = run_fit(tiny_prior, lambda v, f: chamfer(v, target), settings)
        assert result.verts.shape[0] == tiny_prior.template()[0].shape[0]
        losses[fraction] = result.task_loss
    assert losses[0.8] < 1.25 * losses[0.0]


@pytest.mark.parametrize("iterations", [1, 2, 3, 10])
def test_short_coarse_to_fine_fits_end_on_the_full_template(tiny_prior, target_points, iterations):
    from imagetomesh.fitting.optimise import FitSettings, chamfer, run_fit

    target = torch.tensor((target_points - CENTRE) / AXES.max(), dtype=torch.float32)
    settings = FitSettings(lambda_dir=0.2, lambda_reg=1e-3, iterations=iterations, coarse_fraction=0.9, bf16=False)
    result = run_fit(tiny_prior, lambda v, f: chamfer(v, target), settings)
    verts, faces = tiny_prior.template()
    assert result.verts.shape == tuple(verts.shape) and result.faces.shape == tuple(faces.shape)
