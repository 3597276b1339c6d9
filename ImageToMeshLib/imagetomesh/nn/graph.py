"""Graph convolutions on sparse ``edge_index`` graphs (no dense N x N adjacency).

``edge_index`` is ``(2, E)`` long with both directions of every mesh edge; messages flow
from ``edge_index[0]`` (source) to ``edge_index[1]`` (target). Features are ``(N, C)``
for a single mesh.
"""
from __future__ import annotations

import torch
from torch import nn


def neighbour_mean(x: torch.Tensor, edge_index: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``out_i = 1/|N(i)| sum_{j in N(i)} w_ij x_j``; ``x`` ``(N, C)``, ``weights`` ``(E,)`` or None."""
    src, dst = edge_index
    messages = x[src] if weights is None else x[src] * weights[:, None]
    out = torch.zeros_like(x).index_add_(0, dst, messages)
    degree = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(0, dst, torch.ones_like(dst, dtype=x.dtype))
    return out / degree.clamp(min=1.0)[:, None]


class DistanceWeightedGraphConv(nn.Module):
    """Voxel2Mesh's graph convolution: ``f'_v = W1 f_v + 1/|N(v)| sum_i W2 f_i exp(-d_i^2 / sigma^2)``.

    ``d_i`` is the distance between vertex v and neighbour i; ``sigma`` is learned (stored as log).
    """

    def __init__(self, cin: int, cout: int, sigma: float = 0.1) -> None:
        super().__init__()
        self.self_weight = nn.Linear(cin, cout)
        self.neighbour_weight = nn.Linear(cin, cout, bias=False)
        self.log_sigma = nn.Parameter(torch.tensor(float(sigma)).log())

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index
        d2 = (positions[src] - positions[dst]).pow(2).sum(-1)
        weights = torch.exp(-d2 / torch.exp(2 * self.log_sigma))
        return self.self_weight(x) + neighbour_mean(self.neighbour_weight(x), edge_index, weights)


class GraphConv(nn.Module):
    """Plain mean-aggregation graph convolution (Pixel2Mesh): ``f'_v = W0 f_v + W1 mean_{i in N(v)} f_i``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.self_weight = nn.Linear(cin, cout)
        self.neighbour_weight = nn.Linear(cin, cout, bias=False)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.self_weight(x) + neighbour_mean(self.neighbour_weight(x), edge_index)


class ChebConv(nn.Module):
    """Chebyshev spectral graph convolution of order K with the scaled sym-normalised Laplacian.

    Features ``(N, C)`` or ``(N, B, C)`` (a batch of meshes sharing one graph).

    With ``lambda_max = 2``: ``L~ = L - I = -D^{-1/2} A D^{-1/2}``; ``T0 = x``, ``T1 = L~ x``,
    ``Tk = 2 L~ T(k-1) - T(k-2)``; output ``sum_k Tk Wk``.
    """

    def __init__(self, cin: int, cout: int, k: int = 2) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"ChebConv order must be >= 1, got {k}")
        self.weights = nn.ModuleList(nn.Linear(cin, cout, bias=(i == 0)) for i in range(k))

    @staticmethod
    def _scaled_laplacian_apply(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """``L~ x`` for ``x`` ``(N, ...)`` (trailing dims, e.g. a batch, are carried along) as one
        sparse matrix product (much faster on CPU than gather + ``index_add_`` for wide ``x``)."""
        src, dst = edge_index
        n = x.shape[0]
        degree = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, dst, torch.ones_like(dst, dtype=x.dtype))
        inv_sqrt = degree.clamp(min=1.0).rsqrt()
        matrix = torch.sparse_coo_tensor(torch.stack([dst, src]), -inv_sqrt[src] * inv_sqrt[dst], (n, n), check_invariants=False)
        return torch.sparse.mm(matrix.coalesce(), x.reshape(n, -1)).view(x.shape)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
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
