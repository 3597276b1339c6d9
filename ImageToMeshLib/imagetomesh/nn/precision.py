"""Mixed precision and memory order: whether the CPU computes bfloat16 natively, one bf16 autocast
switch, and channels-last 3D convolutions."""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager

import torch

#: oneDNN's instruction-set caps (``ONEDNN_MAX_CPU_ISA``) under which it still has native bfloat16 kernels: a lower
#: cap (AVX2, AVX512_CORE, ...) leaves bf16 convolutions to reference code, many times slower than float32.
BF16_ISA_CAPS = frozenset(
    {"ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16"}
    | {"AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2"}
)


def onednn_isa_allows_bf16() -> bool:
    """False when ``ONEDNN_MAX_CPU_ISA`` (or its old name ``DNNL_MAX_CPU_ISA``) caps oneDNN below native
    bfloat16, as when emulating an AVX2-only machine on a newer one (``Testing/benchmarks/ct_segment_benchmark.py
    --isa avx2``); True when unset."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap is None or cap.strip().upper() in BF16_ISA_CAPS


def cpu_has_bf16() -> bool:
    """True when this CPU has native bfloat16 instructions (AVX512-BF16 or AMX-BF16; Linux ``/proc/cpuinfo``)
    and oneDNN is allowed to use them (:func:`onednn_isa_allows_bf16`)."""
    if not onednn_isa_allows_bf16():
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast pays off on ``device``: a CUDA GPU that supports it, or a CPU with native bf16."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def bf16_autocast(enabled: bool, device: torch.device) -> AbstractContextManager:
    """``torch.autocast`` to bfloat16 on ``device`` (CPU or CUDA) when ``enabled``; else, or where bf16
    is not supported (:func:`bf16_supported`), a no-op context: the computation stays float32."""
    if enabled and device.type in ("cpu", "cuda") and bf16_supported(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def float32_region(device: torch.device) -> AbstractContextManager:
    """A block computed in float32 even inside :func:`bf16_autocast` (autocast off on ``device``):
    graph convolutions, feature sampling and splatting of vertex positions, whose precision bf16's
    8-bit mantissa would cut to ~0.4 % of a coordinate. Tensors made under autocast must be cast
    with ``.float()`` on entering it."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its 5-D parameters (3D convolution weights) in ``torch.channels_last_3d`` order, in place.

    Convolutions then compute in that order whatever the input's order (oneDNN follows the
    weight), so inputs need no conversion; values are unchanged and checkpoints load either way."""
    return model.to(memory_format=torch.channels_last_3d)
