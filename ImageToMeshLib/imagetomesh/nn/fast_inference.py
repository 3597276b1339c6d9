"""A faster copy of a U-Net for inference: batch norms folded into convolutions, convolutions on oneDNN.

Three changes, each computing the same values up to float rounding:

- *Batch norms folded.* In eval mode a batch norm is an affine map per channel,
  ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so a convolution followed by one is a single convolution with
  weights ``W * s`` and bias ``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)`` per output channel: no pass
  of the norm over every feature map.
- *Every convolution on oneDNN* (:class:`OneDNNConv3d`). On a CPU PyTorch runs a 3D convolution of one image whose
  channels times slices (``C * D * H``) are at most 20,480 with its own direct loops, 1.5-4x slower than oneDNN's:
  a U-Net's first convolution, its coarsest levels and its 1x1x1 head over a whole scan.
- *Channels-last weights on a CPU* (``torch.channels_last_3d``), which oneDNN follows: without the norms' passes,
  the convolutions are faster in that order.

``Testing/benchmarks/fast_inference.py`` times the head-and-neck CT U-Nets with and without it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from imagetomesh.nn.unet import DoubleConv, ResidualConv


def _autocast_on() -> bool:
    """Whether CPU autocast is on (which a direct oneDNN call would bypass)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch before 2.4
        return torch.is_autocast_cpu_enabled()


class OneDNNConv3d(nn.Conv3d):
    """An ``nn.Conv3d`` whose float32 CPU inference always runs oneDNN's convolution, which PyTorch itself skips
    for small inputs; everything else (gradients, autocast, other devices and dtypes, padding modes, no oneDNN)
    goes through ``nn.Conv3d``. The same values up to float rounding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        direct = (
            x.device.type == "cpu"
            and x.dtype == self.weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and hasattr(torch.ops.aten, "mkldnn_convolution")
            and not _autocast_on()
        )
        if not direct:
            return super().forward(x)
        return torch.ops.aten.mkldnn_convolution(
            x, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups
        )


def onednn_conv(conv: nn.Conv3d, norm: nn.BatchNorm3d | None = None) -> OneDNNConv3d:
    """A :class:`OneDNNConv3d` computing ``conv(x)``, or ``norm(conv(x))`` with ``norm``'s running statistics
    (eval mode) when a batch norm is given: ``conv``'s shape, padding, stride, dilation and groups (a bias where
    ``conv`` or ``norm`` has one), on their device and dtype. Neither input changes."""
    with torch.no_grad():
        if norm is None:
            weight, bias = conv.weight, conv.bias
        else:
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (C_out,)
            weight = conv.weight * scale.reshape(-1, 1, 1, 1, 1)
            own = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
            bias = (own - norm.running_mean) * scale + norm.bias
        fast = OneDNNConv3d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fast.weight.copy_(weight)
        if bias is not None:
            fast.bias.copy_(bias)
    return fast


def _foldable(norm: nn.Module) -> bool:
    """Whether ``norm`` is a batch norm that normalises with running statistics in eval mode."""
    return isinstance(norm, nn.BatchNorm3d) and norm.affine and norm.track_running_stats


def _fold_block(block: nn.Module) -> None:
    """Fold, in place, the batch norms of a U-Net block (:class:`~imagetomesh.nn.unet.DoubleConv`,
    :class:`~imagetomesh.nn.unet.ResidualConv`) into the convolutions before them; the norms become ``nn.Identity``."""
    if isinstance(block, DoubleConv):
        for i in (0, 3):
            if _foldable(block[i + 1]):
                block[i] = onednn_conv(block[i], block[i + 1])
                block[i + 1] = nn.Identity()
    elif isinstance(block, ResidualConv):
        for conv, norm in (("conv1", "norm1"), ("conv2", "norm2")):
            if _foldable(getattr(block, norm)):
                setattr(block, conv, onednn_conv(getattr(block, conv), getattr(block, norm)))
                setattr(block, norm, nn.Identity())


def _unchanged_by_folding(module: nn.Module) -> bool:
    """Whether :func:`fast_inference_copy` leaves ``module`` as it is: no convolution in it (nothing to fold), no 5-D
    tensor (nothing to make channels-last: a transposed convolution's weights) and all of it in eval mode already."""
    if any(isinstance(m, nn.Conv3d) or m.training for m in module.modules()):
        return False
    return not any(t.dim() == 5 for t in [*module.parameters(), *module.buffers()])


def fast_inference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (a U-Net, or any module holding U-Net blocks) in eval mode for inference: every U-Net
    block's batch norms folded into the convolutions before them, every ``nn.Conv3d`` a :class:`OneDNNConv3d`, and
    on a CPU its weights channels-last. Its ``forward`` returns what ``model``'s does in eval mode, up to float
    rounding (outputs may come channels-last); instance and group norms, which normalise by each input's own
    statistics, stay. Not a checkpoint of ``model`` (its state dict has no batch-norm entries), and not for
    training. ``model`` itself is not changed; its parts that hold no convolution and are already in eval mode (a
    mesh model's graph decoders) are shared, not copied (copying Voxel2Mesh's took longer than folding its U-Net), so
    a later change to those parts of ``model`` shows in the copy too."""
    shared = {id(m): m for m in model.modules() if _unchanged_by_folding(m)}
    fast = copy.deepcopy(model, memo=shared).eval()
    for block in list(fast.modules()):
        _fold_block(block)
    for parent in list(fast.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Conv3d:
                setattr(parent, name, onednn_conv(child))
    parameter = next(fast.parameters(), None)
    if parameter is not None and parameter.device.type == "cpu":
        fast = fast.to(memory_format=torch.channels_last_3d)
    return fast
