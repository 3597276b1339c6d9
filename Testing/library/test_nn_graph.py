"""Graph convolutions and feature sampling against slow, obviously correct references."""
import numpy as np
import pytest
import torch

from imagetomesh.geometry.topology import edge_index_from_faces, icosphere
from imagetomesh.nn.feature_sampling import sample_features
from imagetomesh.nn.graph import ChebConv, DistanceWeightedGraphConv, GraphConv, neighbour_mean


def _mesh():
    verts, faces = icosphere(1)
    return verts.double(), edge_index_from_faces(faces)


def _neighbours(edge_index, n):
    nbrs = [[] for _ in range(n)]
    for s, d in edge_index.t().tolist():
        nbrs[d].append(s)
    return nbrs


def test_distance_weighted_conv_matches_loop():
    torch.manual_seed(0)
    verts, ei = _mesh()
    conv = DistanceWeightedGraphConv(5, 4, sigma=0.3).double()
    x = torch.randn(len(verts), 5, dtype=torch.float64)
    out = conv(x, ei, verts)
    sigma2 = torch.exp(conv.log_sigma).item() ** 2
    for v, nbrs in enumerate(_neighbours(ei, len(verts))):
        acc = sum(conv.neighbour_weight(x[i]) * np.exp(-float((verts[v] - verts[i]).pow(2).sum()) / sigma2) for i in nbrs)
        expected = conv.self_weight(x[v]) + acc / len(nbrs)
        torch.testing.assert_close(out[v], expected)


def test_graph_conv_matches_loop():
    torch.manual_seed(1)
    verts, ei = _mesh()
    conv = GraphConv(3, 2).double()
    x = torch.randn(len(verts), 3, dtype=torch.float64)
    out = conv(x, ei)
    for v, nbrs in enumerate(_neighbours(ei, len(verts))):
        expected = conv.self_weight(x[v]) + conv.neighbour_weight(torch.stack([x[i] for i in nbrs]).mean(0))
        torch.testing.assert_close(out[v], expected)


def test_cheb_conv_matches_dense_polynomial():
    torch.manual_seed(2)
    verts, ei = _mesh()
    n = len(verts)
    conv = ChebConv(3, 2, k=3).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    adjacency = torch.zeros(n, n, dtype=torch.float64)  # dense only in this tiny reference
    adjacency[ei[1], ei[0]] = 1.0
    d = adjacency.sum(1).rsqrt()
    scaled = -(d[:, None] * adjacency * d[None, :])  # L - I with lambda_max = 2
    t0, t1 = x, scaled @ x
    t2 = 2 * scaled @ t1 - t0
    expected = conv.weights[0](t0) + conv.weights[1](t1) + conv.weights[2](t2)
    torch.testing.assert_close(conv(x, ei), expected)


def test_neighbour_mean_isolated_vertex_is_zero():
    x = torch.ones(3, 2)
    ei = torch.tensor([[0], [1]])
    out = neighbour_mean(x, ei)
    assert out[2].abs().sum() == 0 and out[1].tolist() == [1.0, 1.0]


def test_sample_features_reads_voxels_in_xyz_order():
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(1, 2, 3, 4, 5)  # (B, C, D, H, W)
    # voxel (i, j, k) = (4, 1, 2) in grid coordinates
    point = torch.tensor([[[4 / 4 * 2 - 1, 1 / 3 * 2 - 1, 2 / 2 * 2 - 1]]])
    sampled = sample_features(features, point)
    assert sampled.shape == (1, 1, 2)
    assert sampled[0, 0].tolist() == features[0, :, 2, 1, 4].tolist()
