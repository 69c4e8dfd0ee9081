"""CUDA kernels of the fused paths (and of every other non-CPU device): torch's own fused kernels.

Private: :mod:`dmf_fusion.functional` is the only caller. The interface is the one of
:mod:`dmf_fusion._cpu`: ``linear``, ``linear_sum``, ``temporal_conv``, ``gate``, ``channel_first``,
``channel_enhance_dot`` and ``attend``. GEMMs go to cuBLAS through ``F.linear`` / ``addmm`` /
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

from ._generic import channel_enhance_dot, gate, linear, linear_sum, temporal_conv, zero_padded

__all__ = [
    "attend",
    "channel_enhance_dot",
    "channel_first",
    "gate",
    "linear",
    "linear_sum",
    "temporal_conv",
]


def channel_first(x: Tensor) -> Optional[Tensor]:
    """No kernel here takes a channel-first operand: None."""
    return None


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor],
    *,
    alpha: float,
    residual: bool,
    v_t: Optional[Tensor] = None,
) -> Tensor:
    """``residual * v + alpha * A_t @ v``, zero at padded queries, by ``scaled_dot_product_attention``.

    Flash kernels need the value head size to equal the query/key size ``d``, so ``v``'s ``c``
    channels are split into ``h = ceil(c / d)`` heads of ``d`` channels (zero-padded to a multiple of
    ``d``) and the single query/key head is broadcast to all of them: every head sees the same
    attention weights, which is exactly ``A_t @ v``. With a mask the memory-efficient kernel runs
    (flash takes no mask). ``residual`` needs ``v`` zero at padded snippets; ``v_t`` is unused.

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
    # a fully padded row attends everywhere (its keys are all zero): no all -inf softmax row
    attn_mask = None if mask is None else (mask | ~mask.any(-1, keepdim=True))[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, values, attn_mask=attn_mask, scale=1.0 / math.sqrt(dim))
    out = zero_padded(rearrange(out, "b h t d -> b t (h d)")[..., :channels], mask)
    if residual:
        return torch.add(v, out, alpha=alpha)
    return out if alpha == 1 else out * alpha
