"""Graph convolutions (torch-geometric) against slow, obviously correct references: loops, a dense
polynomial, and the project's earlier hand-written layers (kept below as test code) with the same
weights; the bundled weights load into them and compute what the earlier layers computed."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from imagetomesh.geometry.topology import edge_index_from_faces, icosphere
from imagetomesh.models.registry import build_model
from imagetomesh.nn.feature_sampling import sample_features
from imagetomesh.nn.graph import ChebConv, DistanceWeightedGraphConv, GraphConv
from imagetomesh.weights import build_from_card, read_card, upgrade_state

RESOURCES = Path(__file__).resolve().parents[2] / "Resources"
BUNDLED = sorted(p.parent for p in [*RESOURCES.glob("Models/*/card.json"), *RESOURCES.glob("Ablations/*/card.json")])


# --- the hand-written layers as they were before torch-geometric (reference only) ---------------
def legacy_neighbour_mean(x, edge_index, weights=None):
    src, dst = edge_index
    messages = x[src] if weights is None else x[src] * weights[:, None]
    out = torch.zeros_like(x).index_add_(0, dst, messages)
    degree = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(
        0, dst, torch.ones_like(dst, dtype=x.dtype)
    )
    return out / degree.clamp(min=1.0)[:, None]


class LegacyDistanceWeightedGraphConv(nn.Module):
    def __init__(self, cin, cout, sigma=0.1):
        super().__init__()
        self.self_weight = nn.Linear(cin, cout)
        self.neighbour_weight = nn.Linear(cin, cout, bias=False)
        self.log_sigma = nn.Parameter(torch.tensor(float(sigma)).log())

    def forward(self, x, edge_index, positions):
        src, dst = edge_index
        d2 = (positions[src] - positions[dst]).pow(2).sum(-1)
        weights = torch.exp(-d2 / torch.exp(2 * self.log_sigma))
        return self.self_weight(x) + legacy_neighbour_mean(self.neighbour_weight(x), edge_index, weights)


class LegacyGraphConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.self_weight = nn.Linear(cin, cout)
        self.neighbour_weight = nn.Linear(cin, cout, bias=False)

    def forward(self, x, edge_index, positions=None):
        return self.self_weight(x) + legacy_neighbour_mean(self.neighbour_weight(x), edge_index)


class LegacyChebConv(nn.Module):
    def __init__(self, cin, cout, k=2):
        super().__init__()
        self.weights = nn.ModuleList(nn.Linear(cin, cout, bias=(i == 0)) for i in range(k))

    @staticmethod
    def _scaled_laplacian_apply(x, edge_index):
        src, dst = edge_index
        n = x.shape[0]
        degree = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, dst, torch.ones_like(dst, dtype=x.dtype))
        inv_sqrt = degree.clamp(min=1.0).rsqrt()
        matrix = torch.sparse_coo_tensor(
            torch.stack([dst, src]), -inv_sqrt[src] * inv_sqrt[dst], (n, n), check_invariants=False
        )
        return torch.sparse.mm(matrix.coalesce(), x.reshape(n, -1)).view(x.shape)

    def forward(self, x, edge_index, positions=None):
        t_prev, t_cur = x, None
        out = self.weights[0](x)
        for i in range(1, len(self.weights)):
            t_next = self._scaled_laplacian_apply(t_prev if t_cur is None else t_cur, edge_index)
            if t_cur is not None:
                t_next = 2 * t_next - t_prev
                t_prev = t_cur
            t_cur = t_next
            out = out + self.weights[i](t_cur)
        return out


# kind whose renames apply, new class, legacy class, extra constructor arguments
LAYERS = {
    "distance": ("voxel2mesh", DistanceWeightedGraphConv, LegacyDistanceWeightedGraphConv, ()),
    "mean": ("pixel2mesh3d", GraphConv, LegacyGraphConv, ()),
    "cheb2": ("implicitmeshnet", ChebConv, LegacyChebConv, (2,)),
    "cheb3": ("implicitmeshnet", ChebConv, LegacyChebConv, (3,)),
    "cheb1": ("implicitmeshnet", ChebConv, LegacyChebConv, (1,)),
}


def _icosphere_graph(level=2):
    verts, faces = icosphere(level)
    return verts, edge_index_from_faces(faces)


def _random_graph(n=40, edges=90, seed=0):
    """A random symmetric graph without self-loops, with vertices 0 and n-1 isolated."""
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randint(1, n - 1, (edges, 2), generator=g)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = torch.unique(torch.sort(pairs, dim=1).values, dim=0)
    edge_index = torch.cat([pairs.t(), pairs.t().flip(0)], dim=1)
    return torch.randn(n, 3, generator=g) * 0.2, edge_index


GRAPHS = {"icosphere": _icosphere_graph, "random": _random_graph}


def _pair(name, cin, cout, dtype=torch.float64, seed=0):
    """(new layer, legacy layer) with the legacy weights loaded into the new one by ``upgrade_state``."""
    kind, new_cls, old_cls, extra = LAYERS[name]
    torch.manual_seed(seed)
    old = old_cls(cin, cout, *extra).to(dtype)
    with torch.no_grad():  # a sigma that makes the edge weights matter on both graphs
        if hasattr(old, "log_sigma"):
            old.log_sigma.fill_(math.log(0.3))
    new = new_cls(cin, cout, *extra).to(dtype)
    new.load_state_dict(upgrade_state(kind, old.state_dict()))
    return new, old


def _run(layer, x, edge_index, positions):
    if isinstance(layer, (DistanceWeightedGraphConv, LegacyDistanceWeightedGraphConv)):
        return layer(x, edge_index, positions)
    return layer(x, edge_index)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_equals_legacy_layer_forward_and_gradients(name, graph, dtype, tol):
    positions, edge_index = GRAPHS[graph]()
    positions = positions.to(dtype).requires_grad_(name == "distance")
    new, old = _pair(name, 7, 5, dtype)
    x = torch.randn(len(positions), 7, dtype=dtype, requires_grad=True)
    outs, grads = [], []
    for layer in (new, old):
        out = _run(layer, x, edge_index, positions)
        inputs = [x] + ([positions] if positions.requires_grad else []) + list(layer.parameters())
        grads.append(
            dict(
                zip(
                    ["x", "positions"][: 1 + positions.requires_grad] + [n for n, _ in layer.named_parameters()],
                    torch.autograd.grad(
                        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum(), inputs
                    ),
                )
            )
        )
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], atol=tol, rtol=tol)
    kind = LAYERS[name][0]
    new_grads, old_grads = grads[0], upgrade_state(kind, grads[1])
    assert set(new_grads) == set(old_grads)
    for key in new_grads:
        torch.testing.assert_close(new_grads[key], old_grads[key], atol=tol, rtol=tol, msg=f"gradient of {key}")


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cheb_conv_batch_of_meshes_on_one_graph_equals_legacy(k):
    positions, edge_index = _icosphere_graph(1)
    new, old = _pair(f"cheb{k}", 4, 3)
    x = torch.randn(len(positions), 2, 4, dtype=torch.float64)  # (N, B, C)
    out = new(x, edge_index)
    assert out.shape == (len(positions), 2, 3)
    torch.testing.assert_close(out, old(x, edge_index))
    torch.testing.assert_close(out[:, 1], new(x[:, 1], edge_index))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_initialisation_and_random_stream_equal_legacy(name):
    """Seeded training starts from the same weights and draws the same numbers afterwards."""
    kind, new_cls, old_cls, extra = LAYERS[name]
    torch.manual_seed(3)
    old = old_cls(6, 4, *extra)
    after_old = torch.rand(3)
    torch.manual_seed(3)
    new = new_cls(6, 4, *extra)
    after_new = torch.rand(3)
    assert torch.equal(after_old, after_new)
    expected = upgrade_state(kind, old.state_dict())
    assert set(new.state_dict()) == set(expected)
    for key, value in new.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_cheb_conv_rejects_order_zero():
    with pytest.raises(ValueError, match="order must be >= 1"):
        ChebConv(3, 2, k=0)


def _neighbours(edge_index, n):
    nbrs = [[] for _ in range(n)]
    for s, d in edge_index.t().tolist():
        nbrs[d].append(s)
    return nbrs


def test_distance_weighted_conv_matches_loop():
    torch.manual_seed(0)
    verts, ei = _icosphere_graph(1)
    verts = verts.double()
    conv = DistanceWeightedGraphConv(5, 4, sigma=0.3).double()
    x = torch.randn(len(verts), 5, dtype=torch.float64)
    out = conv(x, ei, verts)
    sigma2 = torch.exp(conv.log_sigma).item() ** 2
    for v, nbrs in enumerate(_neighbours(ei, len(verts))):
        acc = sum(x[i] * np.exp(-float((verts[v] - verts[i]).pow(2).sum()) / sigma2) for i in nbrs)
        expected = conv.lin_root(x[v]) + conv.lin_rel(acc / len(nbrs))
        torch.testing.assert_close(out[v], expected)


def test_graph_conv_matches_loop_and_isolated_vertex_keeps_only_itself():
    torch.manual_seed(1)
    verts, ei = _random_graph()
    conv = GraphConv(3, 2).double()
    x = torch.randn(len(verts), 3, dtype=torch.float64)
    out = conv(x, ei)
    for v, nbrs in enumerate(_neighbours(ei, len(verts))):
        mean = torch.stack([x[i] for i in nbrs]).mean(0) if nbrs else torch.zeros(3, dtype=torch.float64)
        torch.testing.assert_close(out[v], conv.lin_root(x[v]) + conv.lin_rel(mean))
    torch.testing.assert_close(out[0], conv.lin_root(x[0]) + conv.lin_rel.bias)


def test_cheb_conv_matches_dense_polynomial():
    torch.manual_seed(2)
    verts, ei = _icosphere_graph(1)
    n = len(verts)
    conv = ChebConv(3, 2, k=3).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    adjacency = torch.zeros(n, n, dtype=torch.float64)  # dense only in this tiny reference
    adjacency[ei[1], ei[0]] = 1.0
    d = adjacency.sum(1).rsqrt()
    scaled = -(d[:, None] * adjacency * d[None, :])  # L - I with lambda_max = 2
    t0, t1 = x, scaled @ x
    t2 = 2 * scaled @ t1 - t0
    expected = conv.lins[0](t0) + conv.lins[1](t1) + conv.lins[2](t2) + conv.bias
    torch.testing.assert_close(conv(x, ei), expected)


# --- weights ---------------------------------------------------------------------------------------
def test_upgrade_state_renames_old_graph_parameters_by_kind_only():
    value = torch.zeros(1)
    old_mean = {
        "stages.0.h.layers.1.self_weight.weight": value,
        "stages.0.h.layers.1.self_weight.bias": value,
        "stages.0.h.layers.1.neighbour_weight.weight": value,
        "stages.0.h.layers.1.log_sigma": value,
    }
    assert list(upgrade_state("voxel2mesh", old_mean)) == [
        "stages.0.h.layers.1.lin_root.weight",
        "stages.0.h.layers.1.lin_rel.bias",
        "stages.0.h.layers.1.lin_rel.weight",
        "stages.0.h.layers.1.log_sigma",
    ]
    old_cheb = {
        "encode_in.weights.0.weight": value,
        "encode_in.weights.0.bias": value,
        "encode_in.weights.1.weight": value,
        "unet.down.0.weight": value,
    }
    assert list(upgrade_state("implicitmeshnet", old_cheb)) == [
        "encode_in.lins.0.weight",
        "encode_in.bias",
        "encode_in.lins.1.weight",
        "unet.down.0.weight",
    ]
    assert list(upgrade_state("unet", old_mean)) == list(old_mean)  # other kinds are left alone
    current = upgrade_state("voxel2mesh", old_mean)
    assert upgrade_state("voxel2mesh", current) == current  # current names pass through


def _legacy_twin(layer):
    """The earlier hand-written layer with the shape of ``layer``."""
    if isinstance(layer, DistanceWeightedGraphConv):
        return LegacyDistanceWeightedGraphConv(layer.in_channels, layer.out_channels)
    if isinstance(layer, GraphConv):
        return LegacyGraphConv(layer.in_channels, layer.out_channels)
    return LegacyChebConv(layer.in_channels, layer.out_channels, len(layer.lins))


@pytest.mark.parametrize("folder", BUNDLED, ids=[f"{p.parent.name}/{p.name}" for p in BUNDLED])
def test_bundled_weights_load_unchanged_and_graph_layers_compute_what_the_legacy_layers_did(folder):
    """Every bundled model loads (strictly: no missing or unexpected keys, checksum checked) with
    parameter tensors equal to the file's; where the file holds the old names, each graph layer, given
    the file's tensors under them, equals the earlier hand-written layer on a real icosphere graph."""
    card = read_card(folder)
    if card["kind"] == "dals":
        from imagetomesh.fitting.prior import load_prior

        load_prior(folder)
        return
    model = build_from_card(folder, card, lambda c: build_model(c["kind"], c["config"]), required=("kind", "config"))
    raw = load_file(str(folder / "model.safetensors"))
    upgraded = upgrade_state(card["kind"], raw)
    state = model.state_dict()
    assert set(state) == set(upgraded)
    for key, value in state.items():
        assert torch.equal(value, upgraded[key]), key
    positions, edge_index = _icosphere_graph(1)
    torch.manual_seed(0)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (GraphConv, ChebConv))]
    assert bool(layers) == (card["kind"] in ("voxel2mesh", "pixel2mesh3d", "implicitmeshnet"))
    if set(upgraded) == set(raw):
        return  # saved after the move to torch-geometric: no old names, nothing legacy to compare with
    for name, layer in layers:
        legacy = _legacy_twin(layer)
        legacy.load_state_dict({k[len(name) + 1 :]: v for k, v in raw.items() if k.startswith(name + ".")})
        x = torch.randn(len(positions), layer.in_channels)
        with torch.no_grad():
            torch.testing.assert_close(
                _run(layer, x, edge_index, positions),
                _run(legacy, x, edge_index, positions),
                atol=1e-5,
                rtol=1e-5,
                msg=name,
            )


def test_only_the_graph_models_import_torch_geometric():
    """A U-Net, NUDF or DALS run does not pay torch-geometric's start-up; a graph model imports it."""
    code = (
        "import sys\n"
        "from imagetomesh.zoo import load_model\n"
        "from imagetomesh.fitting import load_prior\n"
        "load_model('unet-hippocampus', 'cpu'); load_model('nudf-hippocampus', 'cpu'); load_prior('dals-hippocampus')\n"
        "before = 'torch_geometric' in sys.modules\n"
        "load_model('voxel2mesh-hippocampus', 'cpu')\n"
        "print(before, 'torch_geometric' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_graph_layers_leave_no_files_in_the_temporary_folder(tmp_path):
    """torch-geometric writes each layer class's generated ``propagate`` to a temporary file and
    keeps it; a fresh process that builds every layer (and the bundled Voxel2Mesh and Pixel2Mesh)
    and runs them leaves the temporary folder as it found it."""
    code = (
        "import torch\n"
        "from imagetomesh.nn.graph import ChebConv, DistanceWeightedGraphConv, GraphConv\n"
        "from imagetomesh.zoo import load_model\n"
        "x, pos = torch.randn(4, 3), torch.randn(4, 3)\n"
        "edges = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])\n"
        "for layer in (GraphConv(3, 2), GraphConv(3, 5), ChebConv(3, 2)):\n"
        "    assert layer(x, edges).isfinite().all()\n"
        "assert DistanceWeightedGraphConv(3, 2)(x, edges, pos).isfinite().all()\n"
        "load_model('voxel2mesh-hippocampus', 'cpu'); load_model('pixel2mesh3d-hippocampus', 'cpu')\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_graph_models_run_without_importing_torch_dynamo_which_still_works_when_used():
    """torch-geometric's import would import ``torch._dynamo`` (most of a graph model's start-up); a fresh
    process builds and runs Voxel2Mesh without it, and ``torch.compile`` and torch-geometric's
    ``is_torch_instance`` (the reason it imports it) still work afterwards, on the real module."""
    code = (
        "import sys, types, torch\n"
        "from imagetomesh.inference import Segmenter\n"
        "from imagetomesh.io.images import read_image\n"
        "mesh = Segmenter('voxel2mesh-hippocampus', 'cpu').segment(read_image(sys.argv[1]))\n"
        "assert mesh.num_faces > 0\n"
        "print('dynamo imported:', 'torch._dynamo' in sys.modules, 'torch._dynamo.convert_frame' in sys.modules)\n"
        "import torch_geometric\n"
        "compiled = torch.compile(torch.nn.Linear(2, 2))\n"
        "print('is_torch_instance:', torch_geometric.is_torch_instance(compiled, torch.nn.Linear))\n"
        "print('real module:', type(sys.modules['torch._dynamo']) is types.ModuleType, torch._dynamo.OptimizedModule is type(compiled))\n"
    )
    sample = RESOURCES / "SampleData" / "hippocampus" / "hippocampus_024.nii.gz"
    result = subprocess.run([sys.executable, "-c", code, str(sample)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "dynamo imported: False False",
        "is_torch_instance: True",
        "real module: True True",
    ]


def test_sample_features_reads_voxels_in_xyz_order():
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(1, 2, 3, 4, 5)  # (B, C, D, H, W)
    # voxel (i, j, k) = (4, 1, 2) in grid coordinates
    point = torch.tensor([[[4 / 4 * 2 - 1, 1 / 3 * 2 - 1, 2 / 2 * 2 - 1]]])
    sampled = sample_features(features, point)
    assert sampled.shape == (1, 1, 2)
    assert sampled[0, 0].tolist() == features[0, :, 2, 1, 4].tolist()
