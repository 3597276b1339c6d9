"""``nn.linear.relu_linear_of_concat``: the ReLU of a linear layer of two concatenated parts, computed without the
concatenation at inference, against the concatenation itself."""

import pytest
import torch
from torch import nn

from imagetomesh.nn.linear import relu_linear_of_concat


def _case(bias: bool = True):
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(19, 11, bias=bias)
    with torch.no_grad():
        for parameter in linear.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    wide = torch.randn(16, 40, generator=generator).t()  # (40, 16), transposed: as sampled features are
    narrow = torch.randn(40, 3, generator=generator)
    return linear, wide, narrow


@pytest.mark.parametrize("bias", [True, False])
def test_inference_gives_the_relu_of_the_linear_layer_of_the_concatenation(bias):
    linear, wide, narrow = _case(bias)
    expected = torch.relu(linear(torch.cat([wide, narrow], dim=1)))
    with torch.no_grad():
        out = relu_linear_of_concat(linear, wide, narrow)
    assert out.shape == (40, 11)
    assert torch.allclose(out, expected, atol=1e-5)
    assert (out == 0).any() and (out > 0).any()  # the ReLU cut some, not all
    assert wide.shape == (40, 16) and not wide.is_contiguous()  # its input left as it was


def test_training_concatenates_and_keeps_the_gradient():
    linear, wide, narrow = _case()
    wide = wide.clone().requires_grad_(True)
    out = relu_linear_of_concat(linear, wide, narrow)
    expected = torch.relu(linear(torch.cat([wide, narrow], dim=1)))
    assert torch.equal(out, expected)
    out.sum().backward()
    assert linear.weight.grad is not None and wide.grad is not None


def test_parts_that_do_not_make_the_layer_s_inputs_are_refused():
    linear, wide, narrow = _case()
    with pytest.raises(ValueError, match="do not make the 19 inputs"):
        relu_linear_of_concat(linear, wide, narrow[:, :2])
