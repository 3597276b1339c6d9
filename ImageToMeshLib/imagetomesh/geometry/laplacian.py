"""Graph Laplacians of a mesh as sparse ``(N, N)`` matrices, and Laplacian coordinates.

``edge_index`` is a ``(2, E)`` int64 tensor of directed edges ``i -> j`` (row 0 = i). For the
symmetric Laplacians it must be symmetric (every edge in both directions, as from
:func:`imagetomesh.geometry.topology.edge_index_from_faces`) and hold each directed edge once;
duplicates would count as weight 2. With ``A`` the 0/1 adjacency (``A_ij = 1`` for an edge
``i -> j``) and ``D = diag(deg)``, ``deg_i = sum_j A_ij``:

- uniform (random-walk)      ``L = I - D^{-1} A``            (``(L v)_i = v_i - mean_{j~i} v_j``)
- symmetric normalised       ``L = I - D^{-1/2} A D^{-1/2}`` (symmetric PSD, eigenvalues in [0, 2])
- combinatorial              ``L = D - A``                    (symmetric PSD, ``x^T L x = sum_edges (x_i - x_j)^2``)

Isolated vertices (``deg = 0``) get an all-zero row and column in every variant (``D^{-1}``
taken as 0 there), so they neither move nor contribute to smoothing losses.

The matrices are coalesced ``torch.sparse_coo_tensor``; use ``torch.sparse.mm(L, X)`` to apply
them. No ``N x N`` dense matrix is ever built.
"""

from __future__ import annotations

import torch

__all__ = [
    "uniform_laplacian",
    "sym_norm_laplacian",
    "combinatorial_laplacian",
    "laplacian_coordinates",
    "taubin_smooth",
]


def _check_edge_index(edge_index: torch.Tensor, num_vertices: int) -> torch.Tensor:
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    edge_index = edge_index.long()
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_vertices):
        raise ValueError(f"edge_index refers to vertices outside 0..{num_vertices - 1}")
    return edge_index


def _assemble(edge_index, off_diag, diag, num_vertices, dtype) -> torch.Tensor:
    """Sparse matrix with ``off_diag`` at ``edge_index`` and ``diag`` on the diagonal."""
    device = edge_index.device
    ar = torch.arange(num_vertices, device=device)
    idx = torch.cat([edge_index, torch.stack([ar, ar])], dim=1)
    val = torch.cat([off_diag, diag]).to(dtype)
    # Indices were range-checked in _check_edge_index; no need for torch's invariant checks.
    mat = torch.sparse_coo_tensor(
        idx, val, (num_vertices, num_vertices), dtype=dtype, device=device, check_invariants=False
    )
    return mat.coalesce()


def _degrees(edge_index: torch.Tensor, num_vertices: int, dtype) -> torch.Tensor:
    return torch.bincount(edge_index[0], minlength=num_vertices).to(dtype)


def uniform_laplacian(edge_index: torch.Tensor, num_vertices: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sparse ``(N, N)`` ``L = I - D^{-1} A``: ``L_ii = 1``, ``L_ij = -1/deg_i`` for ``i -> j``.

    Rows sum to zero; not symmetric unless the mesh is regular.
    """
    edge_index = _check_edge_index(edge_index, num_vertices)
    deg = _degrees(edge_index, num_vertices, dtype)
    inv = torch.where(deg > 0, 1.0 / deg.clamp_min(1), torch.zeros_like(deg))
    return _assemble(edge_index, -inv[edge_index[0]], (deg > 0).to(dtype), num_vertices, dtype)


def sym_norm_laplacian(edge_index: torch.Tensor, num_vertices: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sparse ``(N, N)`` ``L = I - D^{-1/2} A D^{-1/2}``: ``L_ij = -1/sqrt(deg_i deg_j)`` for ``i -> j``."""
    edge_index = _check_edge_index(edge_index, num_vertices)
    deg = _degrees(edge_index, num_vertices, dtype)
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1).rsqrt(), torch.zeros_like(deg))
    off = -inv_sqrt[edge_index[0]] * inv_sqrt[edge_index[1]]
    return _assemble(edge_index, off, (deg > 0).to(dtype), num_vertices, dtype)


def combinatorial_laplacian(
    edge_index: torch.Tensor, num_vertices: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sparse ``(N, N)`` ``L = D - A``: ``L_ii = deg_i``, ``L_ij = -1`` for ``i -> j``."""
    edge_index = _check_edge_index(edge_index, num_vertices)
    deg = _degrees(edge_index, num_vertices, dtype)
    off = -torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
    return _assemble(edge_index, off, deg, num_vertices, dtype)


def laplacian_coordinates(verts: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` uniform Laplacian coordinates ``delta_i = x_i - (1/deg_i) sum_{j: i->j} x_j``.

    Equals ``uniform_laplacian(edge_index, N) @ verts`` but is computed with ``index_add`` and
    is differentiable in ``verts`` (any ``(N, C)`` tensor; ``C = 3`` for positions). Isolated
    vertices get ``0``.
    """
    if verts.dim() != 2:
        raise ValueError(f"verts must have shape (N, C), got {tuple(verts.shape)}")
    n = verts.shape[0]
    edge_index = _check_edge_index(edge_index, n).to(verts.device)
    src, dst = edge_index[0], edge_index[1]
    sums = torch.zeros_like(verts).index_add(0, src, verts[dst])
    deg = torch.bincount(src, minlength=n).to(verts.dtype).unsqueeze(1)
    delta = verts - sums / deg.clamp_min(1)
    return torch.where(deg > 0, delta, torch.zeros_like(delta))


def taubin_smooth(
    verts: torch.Tensor, edge_index: torch.Tensor, iterations: int, lam: float = 0.5, mu: float = -0.53
) -> torch.Tensor:
    """Taubin's lambda|mu smoothing (1995): ``iterations`` pairs of ``v <- v - lam * delta(v)`` and
    ``v <- v - mu * delta(v)`` with the uniform Laplacian coordinates ``delta``
    (:func:`laplacian_coordinates`). Removes high-frequency wrinkles without shrinking the
    surface the way plain Laplacian smoothing does; ``(N, 3)`` -> ``(N, 3)``, topology unchanged."""
    for _ in range(int(iterations)):
        verts = verts - lam * laplacian_coordinates(verts, edge_index)
        verts = verts - mu * laplacian_coordinates(verts, edge_index)
    return verts
