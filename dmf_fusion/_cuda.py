"""CUDA kernels of the fused paths (and of every other non-CPU device): torch's own fused kernels.

Private: :mod:`dmf_fusion.functional` is the only caller. The interface is the one of
:mod:`dmf_fusion._cpu`: ``linear``, ``linear_sum``, ``temporal_conv``, ``gate``,
``channel_enhance_dot``, ``attend`` and ``enhance_dot`` (both halves of the dot form). GEMMs go to cuBLAS through ``F.linear`` / ``addmm`` /
``baddbmm`` (residuals in their epilogues); the temporal attention runs on the flash /
memory-efficient kernels of ``scaled_dot_product_attention``. Inputs arrive validated, cast to one
dtype and zero at padded snippets.

Axis legend: b batch, t time (query snippets), s key time, c channels, d attention dim, h heads.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ._formulas import input_precision, key_mask, zero_padding
from ._generic import channel_enhance_dot, gate, linear, linear_sum, temporal_conv

__all__ = [
    "attend",
    "channel_enhance_dot",
    "enhance_dot",
    "gate",
    "linear",
    "linear_sum",
    "temporal_conv",
]


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor],
    *,
    alpha: float,
    residual: bool,
) -> Tensor:
    """``residual * v + alpha * A_t @ v``, zero at padded queries, by ``scaled_dot_product_attention``.

    Flash kernels need the value head size to equal the query/key size ``d``, so ``v``'s ``c``
    channels are split into ``h = ceil(c / d)`` heads of ``d`` channels (zero-padded to a multiple of
    ``d``) and the single query/key head is broadcast to all of them: every head sees the same
    attention weights, which is exactly ``A_t @ v``. With a mask the memory-efficient kernel runs
    (flash takes no mask); both run under autocast bfloat16 / float16. The cost of the split is ``h``
    recomputations of ``q k.T`` (``2 t s c`` FLOPs instead of ``2 t s d``); on a GPU the flash
    kernel's memory traffic, not its FLOPs, decides. ``residual`` needs ``v`` zero at padded snippets.

    Shape:
        q, k: (b, t, d); v: (b, t, c); mask: (b, t); returns (b, t, c).
    """
    batch, time, dim = q.shape
    channels = v.shape[-1]
    heads = -(-channels // dim)
    values = v if heads * dim == channels else F.pad(v, (0, heads * dim - channels))
    values = rearrange(values, "b s (h d) -> b h s d", d=dim)
    q = q.unsqueeze(1).expand(batch, heads, time, dim)
    k = k.unsqueeze(1).expand(batch, heads, time, dim)
    attn_mask = None if mask is None else key_mask(mask)[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, values, attn_mask=attn_mask, scale=1.0 / math.sqrt(dim))
    out = zero_padding(rearrange(out, "b h t d -> b t (h d)")[..., :channels], mask)
    if residual:
        return torch.add(v, out, alpha=alpha)
    return out if alpha == 1 else out * alpha


def enhance_dot(
    rgb: Tensor,
    rgb_c: Tensor,
    flow: Tensor,
    q: Tensor,
    k: Tensor,
    mask: Optional[Tensor],
    *,
    alpha: float,
    temperature: float,
) -> tuple[Tensor, Tensor]:
    """Both halves of the dot form: ``(rgb + alpha * A_t @ rgb, flow + alpha * flow @ A_c.T)``, ``A_c``
    from ``rgb_c`` (``rgb`` or its projection to the Flow width), ``A_t`` from ``q`` and ``k``; the
    halves share nothing here.

    Shape:
        rgb: (b, t, c); rgb_c, flow: (b, t, e); q, k: (b, t, d); mask: (b, t); returns
        ((b, t, c), (b, t, e)).
    """
    with input_precision(rgb_c):
        flow_plus = channel_enhance_dot(rgb_c, flow.to(rgb_c.dtype), mask, alpha=alpha, temperature=temperature)
    return attend(q, k, rgb, mask, alpha=alpha, residual=True), flow_plus
