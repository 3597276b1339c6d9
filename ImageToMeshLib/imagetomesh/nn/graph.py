"""Graph convolutions on sparse ``edge_index`` graphs (no dense N x N adjacency), on torch-geometric.

``edge_index`` is ``(2, E)`` long with both directions of every mesh edge; messages flow
from ``edge_index[0]`` (source j) to ``edge_index[1]`` (target i). Features are ``(N, C)``
for a single mesh (:class:`ChebConv` also takes ``(N, B, C)``: a batch sharing one graph).

The layers are torch-geometric's (``torch_geometric.nn.GraphConv`` with mean aggregation,
``torch_geometric.nn.ChebConv`` with the symmetric Laplacian and ``lambda_max = 2``); what
this module adds is the options that reproduce the project's earlier hand-written layers
exactly (same function, same initialisation, same random-number use), Voxel2Mesh's Gaussian
edge weights, the batch layout, and two CPU speed-ups that keep the function: the mean
convolutions pass the narrower of ``x`` and ``W_rel x`` along the edges, and the Chebyshev one
applies torch-geometric's scaled Laplacian as one sparse matrix product. Parameter layout (old name -> torch-geometric name):

- mean graph convolutions: ``self_weight.weight -> lin_root.weight``,
  ``self_weight.bias -> lin_rel.bias``, ``neighbour_weight.weight -> lin_rel.weight``;
- Chebyshev: ``weights.k.weight -> lins.k.weight``, ``weights.0.bias -> bias``.

:func:`imagetomesh.weights.upgrade_state` renames old checkpoints on load.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import tempfile
import types

import torch
from torch import nn


class _DynamoUntilUsed(types.ModuleType):
    """Stands for ``torch._dynamo`` while torch-geometric imports: any use imports the real module in its place."""

    def __getattr__(self, name: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def _import_torch_geometric():
    """``torch_geometric.nn``, imported without importing ``torch._dynamo``.

    torch-geometric's package import runs ``import torch._dynamo`` (for ``is_torch_instance``, which only
    unwraps ``torch.compile``'d modules): 1.1 s of its 1.3 s import on the reference machine, which put a
    whole ``segment`` call of the graph models over 4 s. The import binds only the name ``torch``, so a
    stand-in takes ``torch._dynamo``'s place in ``sys.modules`` for the import and leaves it afterwards;
    ``torch._dynamo`` then imports on first use, as torch itself imports it lazily (``torch.compile``,
    ``torch._dynamo``, ``is_torch_instance`` all work), and a stand-in that is used imports the real module."""
    name = "torch._dynamo"
    stand_in = None
    if name not in sys.modules and "torch_geometric" not in sys.modules:
        stand_in = _DynamoUntilUsed(name)
        stand_in.__spec__ = importlib.util.find_spec(name)
        sys.modules[name] = stand_in
    try:
        import torch_geometric.nn
    finally:
        if stand_in is not None and sys.modules.get(name) is stand_in:
            del sys.modules[name]
    return torch_geometric.nn


pyg_nn = _import_torch_geometric()
from torch_geometric.typing import OptPairTensor, OptTensor  # noqa: E402  (after the import above)

__all__ = ["GraphConv", "DistanceWeightedGraphConv", "ChebConv"]


def _torch_linear_init(weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """``torch.nn.Linear``'s default initialisation of ``weight (out, in)`` and ``bias (out,)``:
    Kaiming-uniform with ``a = sqrt(5)``, bias ``U(-1/sqrt(in), 1/sqrt(in))``."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(weight.shape[1]) if weight.shape[1] > 0 else 0.0
        nn.init.uniform_(bias, -bound, bound)


def _remove_generated_sources(layer: pyg_nn.MessagePassing) -> None:
    """Delete the temporary ``.py`` files torch-geometric wrote for ``layer``'s class.

    On a class's first instance in a process, torch-geometric renders ``propagate`` (and
    ``edge_updater``) from a jinja template into a file in the temporary folder, imports it and
    never deletes it: two files per ``segment`` call and per Slicer worker, forever. The imported
    module no longer needs its file (only a traceback through it would show its lines)."""
    temp = os.path.realpath(tempfile.gettempdir())
    for method in ("propagate", "edge_updater"):
        module = sys.modules.get(getattr(type(layer), method).__module__)
        path = getattr(module, "__file__", None)
        if (
            path
            and module.__name__.startswith(f"{layer.__module__}_{type(layer).__name__}_")
            and os.path.dirname(os.path.realpath(path)) == temp
        ):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


class GraphConv(pyg_nn.GraphConv):
    """Mean-aggregation graph convolution (Pixel2Mesh): ``torch_geometric.nn.GraphConv(aggr="mean")``,

    ``f'_i = W_root f_i + W_rel (1/|N(i)| sum_{j in N(i)} e_ji f_j) + b``

    with optional edge weights ``e_ji`` (``(E,)``, default 1) and ``1/|N(i)|`` taken as 0 for an
    isolated vertex. ``x (N, C_in)`` -> ``(N, C_out)``. The parameters are initialised (and
    drawn from the global generator in the same order) as the project's earlier
    ``self_weight = Linear(C_in, C_out)``, ``neighbour_weight = Linear(C_in, C_out, bias=False)``,
    so seeded training is unchanged.
    """

    # torch-geometric reads ``propagate``'s arguments from the ``propagate_type`` comment in its
    # class source, looked up by class *name*; this class shares its parent's name, so say them here.
    propagate_type = {"x": OptPairTensor, "edge_weight": OptTensor}

    def __init__(self, cin: int, cout: int) -> None:
        with torch.random.fork_rng(devices=[]):  # torch-geometric's own initialisation is redone below
            super().__init__(cin, cout, aggr="mean")
        _remove_generated_sources(self)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _torch_linear_init(self.lin_root.weight, self.lin_rel.bias)
        _torch_linear_init(self.lin_rel.weight)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x (N, C_in)``, ``edge_index (2, E)``, ``edge_weight (E,)`` or None -> ``(N, C_out)``.

        ``W_rel`` commutes with the weighted mean, so when ``C_out < C_in`` the features are
        transformed first and the narrower ``W_rel x`` is passed along the edges (as the earlier
        layers did); otherwise torch-geometric's order (aggregate, then transform)."""
        if self.out_channels >= self.in_channels:
            return super().forward(x, edge_index, edge_weight)
        rel = nn.functional.linear(x, self.lin_rel.weight)
        return self.propagate(edge_index, x=(rel, rel), edge_weight=edge_weight) + self.lin_rel.bias + self.lin_root(x)


class DistanceWeightedGraphConv(GraphConv):
    """Voxel2Mesh's graph convolution: :class:`GraphConv` with Gaussian edge weights,

    ``f'_v = W_root f_v + W_rel (1/|N(v)| sum_i exp(-d_vi^2 / sigma^2) f_i) + b``

    where ``d_vi = |p_v - p_i|`` is the edge length at the vertex ``positions`` ``p (N, 3)`` and
    ``sigma`` is learned (stored as ``log_sigma``). Only the edge weights are computed here;
    torch-geometric's ``GraphConv`` does the message passing (it has no built-in
    distance-weighted layer). ``x (N, C_in)`` -> ``(N, C_out)``.
    """

    def __init__(self, cin: int, cout: int, sigma: float = 0.1) -> None:
        super().__init__(cin, cout)
        self.log_sigma = nn.Parameter(torch.tensor(float(sigma)).log())

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index
        d2 = (positions[src] - positions[dst]).pow(2).sum(-1)
        return super().forward(x, edge_index, edge_weight=torch.exp(-d2 / torch.exp(2 * self.log_sigma)))


class ChebConv(pyg_nn.ChebConv):
    """Chebyshev spectral graph convolution of order ``k``: ``torch_geometric.nn.ChebConv`` with
    ``normalization="sym"`` and ``lambda_max = 2``.

    ``L = I - D^{-1/2} A D^{-1/2}`` (degrees counted over ``edge_index``), scaled
    ``L~ = 2 L / lambda_max - I = -D^{-1/2} A D^{-1/2}``; ``T0 = x``, ``T1 = L~ x``,
    ``Tk = 2 L~ T(k-1) - T(k-2)``; output ``sum_k Tk Wk + b``. An isolated vertex has
    ``L~`` row 0.

    Features ``(N, C_in)`` -> ``(N, C_out)``, or ``(N, B, C_in)`` -> ``(N, B, C_out)`` for a batch
    of meshes sharing one graph. Initialised like the project's earlier
    ``Linear(C_in, C_out, bias=(k == 0))`` per order, in the same order.
    """

    propagate_type = {"x": torch.Tensor, "norm": torch.Tensor}  # see GraphConv.propagate_type

    def __init__(self, cin: int, cout: int, k: int = 2) -> None:
        if k < 1:
            raise ValueError(f"ChebConv order must be >= 1, got {k}")
        with torch.random.fork_rng(devices=[]):  # torch-geometric's own initialisation is redone below
            super().__init__(cin, cout, K=k, normalization="sym")
        _remove_generated_sources(self)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for i, lin in enumerate(self.lins):
            _torch_linear_init(lin.weight, self.bias if i == 0 else None)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """``x (N, C_in)`` or ``(N, B, C_in)``, ``edge_index (2, E)`` -> ``(N, C_out)`` / ``(N, B, C_out)``.

        torch-geometric's ``ChebConv.forward`` with one change: ``L~`` (torch-geometric's
        ``get_laplacian``, scaled by its ``__norm__``) is applied as one sparse ``(N, N)`` matrix
        product (``torch.sparse.mm``) on ``x`` viewed as ``(N, B * C)`` instead of
        ``propagate``'s gather/scatter per edge, which was twice as slow on CPU for mesh-sized
        graphs and cannot carry a batch dimension after the node one."""
        n = x.shape[0]
        index, weight = self.__norm__(edge_index, n, None, self.normalization, lambda_max=2.0, dtype=x.dtype)
        # row: target, column: source; indices come from edge_index, so torch's invariant checks are skipped
        laplacian = torch.sparse_coo_tensor(index.flip(0), weight, (n, n), check_invariants=False).coalesce()

        def apply(t: torch.Tensor) -> torch.Tensor:
            return torch.sparse.mm(laplacian, t.reshape(n, -1)).view(t.shape)

        out = self.lins[0](x)
        t_prev, t_cur = x, x
        for i, lin in enumerate(self.lins[1:]):
            t_next = apply(t_cur) if i == 0 else 2 * apply(t_cur) - t_prev
            t_prev, t_cur = t_cur, t_next
            out = out + lin(t_cur)
        return out + self.bias
