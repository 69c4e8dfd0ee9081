"""Kernels of the fused paths that serve every device: torch's own ops, arranged for fewer passes.

Private: :mod:`dmf_fusion.functional` is the only caller, through the kernel modules of each device
(:mod:`dmf_fusion._cpu`, :mod:`dmf_fusion._cuda`), which use these where they have nothing faster.
Inputs arrive validated, cast to one dtype and zero at padded snippets.

Design: the gate form's temporal convolutions are ``conv2d`` on the channel-last (NHWC) view, oneDNN's
direct convolution on CPU, with no transpose (it replaced one GEMM against all kernel taps plus
shifted adds); each gate and its residual is one ``addcmul`` with a one-pass backward (:class:`Gate`);
split-weight GEMMs (:func:`linear_sum`) accumulate into one output, so the concatenation of concat and
mutual fusion never exists.

Axis legend: b batch, t time (query snippets), c channels (``e`` a second channel axis of the same
size), k kernel tap, o output channels.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _compat
from ._formulas import channel_softmax, gram_operand, valid_counts

__all__ = ["channel_enhance_dot", "gate", "linear", "linear_sum", "temporal_conv"]

linear = F.linear


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
    def forward(ctx: Any, x: Tensor, a: Tensor, alpha: float, grad_x: bool, grad_a: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, a)
        ctx.alpha, ctx.grad_x, ctx.grad_a = alpha, grad_x, grad_a
        return torch.addcmul(x, x, a, value=alpha)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        x, a = ctx.saved_tensors
        dx = torch.addcmul(grad, grad, a, value=ctx.alpha) if ctx.grad_x else None
        da = None
        if ctx.grad_a:
            if a.shape[-1] == 1:  # a temporal gate (b, t, 1): a batched dot product over channels
                da = torch.einsum("btc,btc->bt", grad, x).unsqueeze(-1)
            else:  # a channel gate (b, 1, c)
                da = (grad * x).sum(1, keepdim=True)
            da = da * ctx.alpha
        return dx, da, None, None, None


def gate(x: Tensor, a: Tensor, alpha: float) -> Tensor:
    """``x + alpha * a * x``; ``a`` is (b, t, 1) or (b, 1, c). Under autocast plain ``addcmul``
    (a custom Function would bypass autocast's casts)."""
    if _compat.is_autocast_enabled(x.device.type):
        return torch.addcmul(x, x, a, value=alpha)
    # which gradients backward needs, decided here: torch.compile before 2.4 cannot read
    # ctx.needs_input_grad in a backward it traces
    return Gate.apply(x, a.to(x.dtype), alpha, x.requires_grad, a.requires_grad)


def channel_enhance_dot(rgb: Tensor, flow: Tensor, mask: Optional[Tensor], *, alpha: float, temperature: float) -> Tensor:
    """``flow + alpha * flow @ A_c.T`` with the residual in ``baddbmm``'s epilogue; ``A_c`` from one
    batched Gram GEMM and the shared :func:`~dmf_fusion._formulas.channel_softmax`.

    Shape:
        rgb, flow: (b, t, c) of one dtype; mask: (b, t); returns (b, t, c).
    """
    x = gram_operand(rgb)
    attn = channel_softmax(x.transpose(1, 2) @ x, valid_counts(rgb, mask), temperature).to(flow.dtype)
    return torch.baddbmm(flow, flow, attn.transpose(1, 2), alpha=alpha)
