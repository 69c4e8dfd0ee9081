"""Kernels of the fused paths that serve every device: torch's own ops, arranged for fewer passes.

Private: :mod:`dmf_fusion.functional` is the only caller, through the kernel modules of each device
(:mod:`dmf_fusion._cpu`, :mod:`dmf_fusion._cuda`), which use these where they have nothing faster.
Inputs arrive validated, cast to one dtype and zero at padded snippets.

Axis legend: b batch, t time (query snippets), c channels (``e`` a second channel axis of the same
size), k kernel tap, o output channels.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _compat

__all__ = ["channel_enhance_dot", "gate", "linear", "linear_sum", "temporal_conv", "upcast", "zero_padded"]

linear = F.linear


def upcast(x: Tensor) -> Tensor:
    """Half-precision scores go to float32 for softmax/sigmoid; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def zero_padded(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """``x`` with zeros at the padded snippets of a ``(b, t)`` mask (None: ``x`` itself)."""
    return x if mask is None else torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))


def linear_sum(a: Tensor, weight_a: Tensor, b: Tensor, weight_b: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``a @ weight_a.T + b @ weight_b.T + bias``: two GEMMs accumulating into one output buffer.

    Shape:
        a: (b, t, c_a); b: (b, t, c_b); weight_a: (o, c_a); weight_b: (o, c_b); returns (b, t, o).
    """
    rows = a.shape[0] * a.shape[1]
    a2, b2 = a.reshape(rows, a.shape[-1]), b.reshape(rows, -1)
    out = a2 @ weight_a.t() if bias is None else torch.addmm(bias, a2, weight_a.t())
    out = torch.addmm(out, b2, weight_b.t())  # out of place: in-place ops skip autocast
    return out.view(a.shape[0], a.shape[1], -1)


def temporal_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], dilation: int = 1) -> Tensor:
    """Same-length temporal convolution of channel-last ``x``: ``conv2d`` on its ``(b, c, 1, t)`` view,
    a channel-last (NHWC) image, so ``x`` is never transposed and the output comes back channel-last.

    Shape:
        x: (b, t, c); weight: (o, c, k) with odd k; returns (b, t, o).
    """
    pad = dilation * (weight.shape[-1] // 2)
    view = x.transpose(1, 2).unsqueeze(2)
    out = F.conv2d(view, weight.unsqueeze(2), bias, padding=(0, pad), dilation=(1, dilation))
    return out.squeeze(2).transpose(1, 2)


class Gate(torch.autograd.Function):
    """``x * (1 + alpha * a)`` for a gate ``a`` broadcast over time or channels, with a backward of
    one pass for ``dx`` and one fused reduction for ``da`` (autograd's ``addcmul`` backward spends
    four full-size passes and a temporary on them)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, a: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, a)
        ctx.alpha = alpha
        return torch.addcmul(x, x, a, value=alpha)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        x, a = ctx.saved_tensors
        dx = torch.addcmul(grad, grad, a, value=ctx.alpha) if ctx.needs_input_grad[0] else None
        da = None
        if ctx.needs_input_grad[1]:
            if a.shape[-1] == 1:  # a temporal gate (b, t, 1): a batched dot product over channels
                da = torch.einsum("btc,btc->bt", grad, x).unsqueeze(-1)
            else:  # a channel gate (b, 1, c)
                da = (grad * x).sum(1, keepdim=True)
            da = da * ctx.alpha
        return dx, da, None


def gate(x: Tensor, a: Tensor, alpha: float) -> Tensor:
    """``x + alpha * a * x``; ``a`` is (b, t, 1) or (b, 1, c). Under autocast plain ``addcmul``
    (a custom Function would bypass autocast's casts)."""
    if _compat.is_autocast_enabled(x.device.type):
        return torch.addcmul(x, x, a, value=alpha)
    return Gate.apply(x, a.to(x.dtype), alpha)


def channel_enhance_dot(
    rgb: Tensor,
    flow: Tensor,
    counts: Tensor,
    *,
    alpha: float,
    temperature: float,
    rgb_t: Optional[Tensor] = None,
) -> Tensor:
    """``flow + alpha * flow @ A_c.T`` with the residual in ``baddbmm``'s epilogue; ``A_c`` as
    :func:`dmf_fusion.functional.channel_attention_dot` forms it. ``counts`` is the number of valid
    snippets per sample, ``(b, 1)``; ``rgb_t`` is unused here.

    Shape:
        rgb, flow: (b, t, c); counts: (b, 1); returns (b, t, c).
    """
    dtype = rgb.dtype
    if rgb.dtype == torch.float16:  # the Gram of float16 features overflows 65504: form it in float32
        rgb = rgb.float()
    scaled = rgb * (counts.to(rgb.dtype) * temperature).rsqrt().unsqueeze(-1)
    attn = torch.softmax(upcast(scaled.transpose(1, 2) @ scaled), dim=-1).to(dtype)
    return torch.baddbmm(flow, flow, attn.transpose(1, 2), alpha=alpha)
