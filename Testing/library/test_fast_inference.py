"""A U-Net's fast inference copy (batch norms folded, convolutions on oneDNN, channels-last) computes what the U-Net
computes, layer by layer as one after the other."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imagetomesh.nn.fast_inference import OneDNNConv3d, fast_inference_copy, onednn_conv
from imagetomesh.nn.unet import UNet3D, UNetConfig


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with every batch norm's running statistics and affine parameters set to random values (a fresh
    norm is the identity in eval mode, which would fold trivially)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in model.modules():
            if isinstance(norm, nn.BatchNorm3d):
                c = norm.num_features
                norm.running_mean.copy_(torch.randn(c, generator=generator))
                norm.running_var.copy_(torch.rand(c, generator=generator) * 2 + 0.1)
                norm.weight.copy_(torch.randn(c, generator=generator))
                norm.bias.copy_(torch.randn(c, generator=generator))
    return model


CONV_CASES = [(1, 1, False, 1), (2, 0, True, 1), (1, (1, 0, 2), True, 2), (1, 1, True, 4)]


@pytest.mark.parametrize("stride, padding, bias, groups", CONV_CASES)
def test_folded_conv_is_the_conv_then_the_norm(stride, padding, bias, groups):
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 8, 3, stride=stride, padding=padding, bias=bias, groups=groups)
    norm = _randomise_norms(nn.BatchNorm3d(8, eps=1e-3)).eval()
    x = torch.randn(2, 4, 7, 9, 8)
    weight = conv.weight.clone()
    with torch.no_grad():
        expected = norm(conv(x))
        got = onednn_conv(conv, norm)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(conv.weight, weight)  # the input is left as it was


@pytest.mark.parametrize("stride, padding, bias, groups", CONV_CASES)
def test_onednn_conv_is_the_conv(stride, padding, bias, groups):
    """Also on the inputs PyTorch would run with its own loops (one image, ``C * D * H`` small), on a window cut
    from a larger image (not contiguous, as ``scan.windowed_logits`` cuts them), channels-last, and with gradients
    (through ``nn.Conv3d``)."""
    torch.manual_seed(1)
    conv = nn.Conv3d(4, 8, 3, stride=stride, padding=padding, bias=bias, groups=groups)
    fast = onednn_conv(conv)
    assert isinstance(fast, OneDNNConv3d) and (fast.bias is not None) == bias
    window = torch.randn(1, 4, 9, 10, 12)[:, :, 1:8, 2:9, 3:11]
    channels_last = torch.randn(3, 4, 6, 5, 7).contiguous(memory_format=torch.channels_last_3d)
    for x in (torch.randn(1, 4, 5, 6, 30), window, channels_last):
        with torch.no_grad():
            torch.testing.assert_close(fast(x), conv(x), rtol=1e-5, atol=1e-5)
    x = torch.randn(1, 4, 5, 6, 7, requires_grad=True)
    (gradient,) = torch.autograd.grad(fast(x).square().sum(), x)
    (expected,) = torch.autograd.grad(conv(x).square().sum(), x)
    torch.testing.assert_close(gradient, expected)


def test_onednn_conv_under_autocast_computes_in_bf16():
    torch.manual_seed(2)
    conv = nn.Conv3d(2, 4, 3, padding=1)
    fast = onednn_conv(conv)
    x = torch.randn(1, 2, 6, 6, 6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = fast(x), conv(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("block", ["double", "residual"])
def test_fast_unet_gives_the_unets_outputs(block):
    torch.manual_seed(0)
    net = _randomise_norms(UNet3D(UNetConfig(in_channels=1, num_classes=3, base=4, depth=3, block=block)))
    net.train()  # what the copy must not inherit: batch statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = fast_inference_copy(net)
    assert net.training and not fast.training
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fast.modules())
    assert all(isinstance(m, OneDNNConv3d) for m in fast.modules() if isinstance(m, nn.Conv3d))
    assert all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in fast.parameters() if w.dim() == 5)
    assert any(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    x = torch.randn(2, 1, 8, 12, 16)
    net.eval()
    with torch.no_grad():
        logits, decoder, encoder = net(x, return_encoder=True)
        f_logits, f_decoder, f_encoder = fast(x, return_encoder=True)
    torch.testing.assert_close(f_logits, logits, rtol=1e-4, atol=1e-4)
    for a, b in zip([*f_decoder, *f_encoder], [*decoder, *encoder], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_instance_norms_stay():
    torch.manual_seed(0)
    net = UNet3D(UNetConfig(in_channels=1, num_classes=2, base=4, depth=2, norm="instance")).eval()
    fast = fast_inference_copy(net)
    count = sum(isinstance(m, nn.InstanceNorm3d) for m in net.modules())
    assert count == 6 and sum(isinstance(m, nn.InstanceNorm3d) for m in fast.modules()) == count
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x)[0], net(x)[0])


def test_a_scan_sized_input_takes_onednn_where_pytorch_would_not():
    """The reason for :class:`OneDNNConv3d`: a one-image input with few channels times slices, which PyTorch's
    ``conv3d`` sends to its own direct convolution; the fast copy's convolution is oneDNN's and equal to it."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch has no oneDNN")
    torch.manual_seed(3)
    conv = nn.Conv3d(1, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 1, 6, 8, 40)
    with torch.no_grad(), torch.profiler.profile() as profile:
        fast = onednn_conv(conv)(x)
    names = {event.name for event in profile.events()}
    assert "aten::mkldnn_convolution" in names and "aten::slow_conv3d_forward" not in names
    torch.testing.assert_close(fast, F.conv3d(x, conv.weight, padding=1), rtol=1e-5, atol=1e-5)


class _UNetWithHead(nn.Module):
    """A U-Net beside a part with no convolution (as a mesh model's graph decoders are) and one in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = _randomise_norms(UNet3D(UNetConfig(in_channels=1, num_classes=2, base=4, depth=2)))
        self.head = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
        self.training_part = nn.Linear(2, 2)


def test_parts_without_convolutions_are_shared_not_copied():
    torch.manual_seed(4)
    model = _UNetWithHead().eval()
    model.training_part.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = fast_inference_copy(model)
    assert fast.head is model.head  # in eval mode, nothing to fold: shared
    assert fast.training_part is not model.training_part and not fast.training_part.training
    assert model.training_part.training  # eval() on the copy did not reach the original
    assert fast.unet is not model.unet
    assert not any(isinstance(m, OneDNNConv3d) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.is_contiguous() for p in model.parameters())  # the originals' weights were not made channels-last
