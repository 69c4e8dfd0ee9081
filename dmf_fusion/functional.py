"""The attention core of Dual-Modality Fusion as pure functions.

Temporal RPN learning for weakly-supervised temporal action localization (ACML 2023) fuses RGB and
optical-flow snippet features with a Dual-Modality Fusion (DMF) block: RGB generates a *channel*
attention that enhances Flow, Flow generates a *temporal* attention that enhances RGB. This module
holds that math, in two attention forms (``gate`` and ``dot``), plus the split-weight linear map
behind concat and mutual fusion and the mutual loss.

Every function with a ``fused`` argument has two paths that compute the same thing:

* ``fused=True``: the fast path (one GEMM per shifted convolution, fused add-multiply epilogues,
  scaled-dot-product attention kernels that never build a ``(t, s)`` matrix);
* ``fused=False``: the plain path, written the obvious way. It is the in-package reference.

Conventions (see docs/conventions.md): channel-last tensors, ``mask`` is bool ``(b, t)`` with
True = valid snippet, padded snippets never influence valid outputs and come out as zeros, a fully
padded row gives zeros (never NaN). Parameters are cast to the input dtype, so float16, bfloat16,
float32 and float64 inputs all work and the output dtype equals the input dtype.

Axis legend: b batch, t time (query snippets), s key time, c channels (``e`` a second channel
axis of the same size), d attention dim, h heads, k kernel tap, o output channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = [
    "attend_temporal",
    "channel_attention_dot",
    "channel_attention_gate",
    "channel_enhance_dot",
    "concat_linear",
    "masked_mean",
    "mutual_loss",
    "temporal_attention_dot",
    "temporal_attention_gate",
    "temporal_conv1d",
    "zero_padding",
]


# --------------------------------------------------------------------------------------------------
# masks and pooling


def zero_padding(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Write zeros into the padded snippets of ``x`` (NaN and inf there are removed too).

    Shape:
        x: (b, t, c); mask: (b, t) bool or None; returns (b, t, c).
    """
    if mask is None:
        return x
    return torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))


def _valid_counts(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Number of valid snippets per sample, as ``(b, 1)`` in ``x``'s dtype (at least 1)."""
    if mask is None:
        return x.new_full((x.shape[0], 1), x.shape[1])
    return mask.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)


def _upcast(x: Tensor) -> Tensor:
    """Half-precision scores go to float32 for softmax/sigmoid; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _key_mask(mask: Tensor) -> Tensor:
    """Key-padding mask in which a fully padded row attends everywhere (its keys are all zero),
    so softmax never sees an all ``-inf`` row and no NaN appears, forward or backward."""
    return mask | ~mask.any(-1, keepdim=True)


def masked_mean(x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Mean over the valid snippets of each sample; zeros for a fully padded sample.

    Args:
        x: snippet features.
        mask: True = valid snippet; None means every snippet is valid.

    Shape:
        x: (b, t, c); mask: (b, t); returns (b, c).

    Example:
        >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
        >>> masked_mean(x, torch.tensor([[True, True, False]]))
        tensor([[2.]])
    """
    return zero_padding(x, mask).sum(1) / _valid_counts(x, mask)


# --------------------------------------------------------------------------------------------------
# temporal convolution and the split-weight linear map


def temporal_conv1d(
    x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, mask: Optional[Tensor] = None, *, fused: bool = True
) -> Tensor:
    """Same-length temporal convolution (odd kernel, zero padding) on channel-last features.

    Padded snippets act exactly like the zero padding at the sequence ends, so appending masked
    snippets never changes a valid output. Outputs at padded snippets are zero.

    The fused path runs the convolution as one GEMM of ``x`` against all kernel taps at once
    (``(b t) c @ c (k o)``) and adds the shifted tap outputs, so ``x`` is read once and never
    transposed; the plain path is ``torch.nn.functional.conv1d``.

    Args:
        x: input features.
        weight: ``torch.nn.Conv1d`` weight.
        bias: optional bias.
        mask: True = valid snippet.
        fused: fast path (True) or plain reference path (False).

    Shape:
        x: (b, t, c); weight: (o, c, k) with odd k; bias: (o,); returns (b, t, o).
    """
    weight = weight.to(x.dtype)
    bias = None if bias is None else bias.to(x.dtype)
    x = zero_padding(x, mask)
    taps = weight.shape[-1]
    if taps % 2 != 1:
        raise ValueError(f"weight must have an odd kernel size, got shape {tuple(weight.shape)}")
    if fused:
        y = x @ rearrange(weight, "o c k -> c (k o)")
        y = rearrange(y, "b t (k o) -> b t k o", k=taps)
        half = taps // 2
        out = y[:, :, half]
        if bias is not None:
            out = out + bias
        time = x.shape[1]
        for tap in range(taps):
            shift = tap - half  # out[t] += y[t + shift, tap]
            if tap == half or abs(shift) >= time:
                continue
            if shift < 0:
                out = out + F.pad(y[:, : time + shift, tap], (0, 0, -shift, 0))
            else:
                out = out + F.pad(y[:, shift:, tap], (0, 0, 0, shift))
    else:
        out = F.conv1d(x.transpose(1, 2), weight, bias, padding=taps // 2).transpose(1, 2)
    return zero_padding(out, mask)


def concat_linear(
    rgb: Tensor, flow: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, fused: bool = True
) -> Tensor:
    """``cat(rgb, flow) @ weight.T + bias``, a 1x1 convolution over the concatenated channels.

    The fused path splits the weight instead of concatenating the inputs: two GEMMs accumulate
    into one output buffer (``rgb @ W_r.T + flow @ W_f.T + b``) and the ``(b, t, c_rgb + c_flow)``
    concatenation never exists.

    Shape:
        rgb: (b, t, c_rgb); flow: (b, t, c_flow); weight: (o, c_rgb + c_flow); bias: (o,);
        returns (b, t, o).
    """
    weight = weight.to(rgb.dtype)
    bias = None if bias is None else bias.to(rgb.dtype)
    if not fused:
        return F.linear(torch.cat([rgb, flow], dim=-1), weight, bias)
    c_rgb = rgb.shape[-1]
    w_rgb, w_flow = weight[:, :c_rgb], weight[:, c_rgb:]
    rows = rgb.shape[0] * rgb.shape[1]
    rgb2, flow2 = rgb.reshape(rows, c_rgb), flow.reshape(rows, -1)
    if bias is None:
        out = rgb2 @ w_rgb.t()
    else:
        out = torch.addmm(bias, rgb2, w_rgb.t())
    out = torch.addmm(out, flow2, w_flow.t())  # out of place: in-place ops skip autocast
    return out.view(rgb.shape[0], rgb.shape[1], -1)


# --------------------------------------------------------------------------------------------------
# gate form: squeeze-excitation channel gate from RGB, convolutional temporal gate from Flow


def channel_attention_gate(
    rgb: Tensor,
    mask: Optional[Tensor],
    weight1: Tensor,
    bias1: Optional[Tensor],
    weight2: Tensor,
    bias2: Optional[Tensor],
) -> Tensor:
    """Channel attention from RGB: ``sigmoid(W2 relu(W1 masked_mean_t(rgb) + b1) + b2)``.

    Shape:
        rgb: (b, t, c); weight1: (r, c); weight2: (e, r); returns (b, e) in (0, 1).
    """
    dtype = rgb.dtype
    pooled = masked_mean(rgb, mask)
    hidden = F.relu(F.linear(pooled, weight1.to(dtype), None if bias1 is None else bias1.to(dtype)))
    logits = F.linear(hidden, weight2.to(dtype), None if bias2 is None else bias2.to(dtype))
    return torch.sigmoid(_upcast(logits)).to(dtype)


def temporal_attention_gate(
    flow: Tensor,
    mask: Optional[Tensor],
    weights: Sequence[Tensor],
    biases: Sequence[Optional[Tensor]],
    *,
    fused: bool = True,
) -> Tensor:
    """Temporal attention from Flow: a stack of masked temporal convolutions, ReLU between them,
    then a sigmoid. The last convolution has one output channel. Zero at padded snippets.

    Shape:
        flow: (b, t, c); weights[i]: (o_i, o_{i-1}, k) with o_last = 1; returns (b, t) in (0, 1).
    """
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(f"weights and biases must be non-empty and of equal length, got {len(weights)}, {len(biases)}")
    h = flow
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = temporal_conv1d(h, w, b, mask, fused=fused)
        if i < len(weights) - 1:
            h = F.relu(h)
    att = torch.sigmoid(_upcast(h.squeeze(-1))).to(flow.dtype)
    return att if mask is None else att * mask


# --------------------------------------------------------------------------------------------------
# dot form: Gram-matrix channel attention, scaled-dot-product temporal attention


def channel_attention_dot(rgb: Tensor, mask: Optional[Tensor] = None, *, temperature: float = 1.0) -> Tensor:
    """Channel-to-channel attention from RGB: ``A_c = softmax_e(<rgb_c, rgb_e>_t / n_valid / temperature)``.

    Shape:
        rgb: (b, t, c); mask: (b, t); returns (b, c, e) with rows summing to 1.
    """
    rgb = zero_padding(rgb, mask)
    n = _valid_counts(rgb, mask)
    # scaling rgb by (n * temperature) ** -1/2 before the Gram GEMM keeps the scores at the magnitude
    # of a mean, so long float16 videos do not overflow; the softmax runs in float32
    scaled = rgb * (n * temperature).rsqrt().unsqueeze(-1)
    scores = scaled.transpose(1, 2) @ scaled
    return torch.softmax(_upcast(scores), dim=-1).to(rgb.dtype)


def channel_enhance_dot(
    rgb: Tensor,
    flow: Tensor,
    mask: Optional[Tensor] = None,
    *,
    alpha: float,
    temperature: float = 1.0,
    fused: bool = True,
) -> Tensor:
    """The channel half of DMF, dot form: ``flow + alpha * flow @ A_c.T`` with ``A_c`` from RGB.

    The fused path applies the attention and the residual in one batched GEMM epilogue
    (``baddbmm``); the plain path builds the Gram matrix with einsum, normalises, and adds.

    Shape:
        rgb: (b, t, c); flow: (b, t, c) (same channels; project first otherwise); returns (b, t, c),
        zero at padded snippets.
    """
    if rgb.shape[-1] != flow.shape[-1]:
        raise ValueError(
            f"rgb and flow must have the same channels for the dot channel attention, got "
            f"{rgb.shape[-1]} and {flow.shape[-1]} (project rgb to the flow width first)"
        )
    flow = zero_padding(flow, mask)
    if fused:
        attn = channel_attention_dot(rgb, mask, temperature=temperature)
        return torch.baddbmm(flow, flow, attn.transpose(1, 2), alpha=alpha)
    rgb = zero_padding(rgb, mask)
    n = _valid_counts(rgb, mask).unsqueeze(-1)
    gram = torch.einsum("btc,bte->bce", rgb, rgb) / n / temperature
    attn = torch.softmax(_upcast(gram), dim=-1).to(rgb.dtype)
    enhance = torch.einsum("bce,bte->btc", attn, flow)
    return flow + alpha * enhance


def temporal_attention_dot(q: Tensor, k: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Snippet-to-snippet attention ``A_t = softmax_s(q_t . k_s / sqrt(d))`` over valid keys ``s``.

    This materialises the ``(b, t, s)`` matrix: it is the plain path and what
    ``return_attention=True`` returns. Rows of padded queries are zero.

    Shape:
        q, k: (b, t, d); mask: (b, t); returns (b, t, s).
    """
    scores = _upcast(torch.einsum("btd,bsd->bts", q, k)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~_key_mask(mask).unsqueeze(1), float("-inf"))
    attn = torch.softmax(scores, dim=-1).to(q.dtype)
    return attn if mask is None else attn * mask.unsqueeze(-1)


def attend_temporal(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, *, fused: bool = True) -> Tensor:
    """``A_t @ v`` for the temporal attention of :func:`temporal_attention_dot`, zero at padded queries.

    The fused path calls ``scaled_dot_product_attention`` and never builds the ``(t, s)`` matrix, so
    memory grows linearly with time. Flash kernels need the value head size to equal the query/key
    size ``d``, so ``v``'s ``c`` channels are split into ``h = ceil(c / d)`` heads of ``d`` channels
    (zero-padded to a multiple of ``d`` when needed) and the single query/key head is broadcast to
    all of them: every head sees the same attention weights, which is exactly ``A_t @ v``.

    Shape:
        q, k: (b, t, d); v: (b, t, c); mask: (b, t); returns (b, t, c).
    """
    if not fused:
        return temporal_attention_dot(q, k, mask) @ v
    batch, time, dim = q.shape
    channels = v.shape[-1]
    heads = -(-channels // dim)
    if heads * dim != channels:
        v = F.pad(v, (0, heads * dim - channels))
    v = rearrange(v, "b s (h d) -> b h s d", d=dim)
    q = q.unsqueeze(1).expand(batch, heads, time, dim)
    k = k.unsqueeze(1).expand(batch, heads, time, dim)
    attn_mask = None if mask is None else _key_mask(mask)[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=1.0 / math.sqrt(dim))
    out = rearrange(out, "b h t d -> b t (h d)")[..., :channels]
    return zero_padding(out, mask)


# --------------------------------------------------------------------------------------------------
# mutual loss


def mutual_loss(
    rgb_embed: Tensor,
    flow_embed: Tensor,
    mask: Optional[Tensor] = None,
    *,
    stop_gradient: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Mean squared error between the two modality embeddings over valid snippets.

    ``stop_gradient=True`` gives the symmetric form ``1/2 MSE(a, sg(b)) + 1/2 MSE(sg(a), b)``: each
    embedding is pulled towards a frozen copy of the other (CO2-Net's mutual learning loss). Its value
    equals the plain MSE; only the gradients differ (each side gets half).

    Args:
        rgb_embed: ``C_r(rgb)``.
        flow_embed: ``C_f(flow)``.
        mask: True = valid snippet.
        stop_gradient: symmetric stop-gradient form.
        reduction: ``"mean"`` (over valid snippets and channels), ``"sum"`` (per-snippet channel mean,
            summed over valid snippets) or ``"none"`` (per-snippet channel mean, zero at padding).

    Shape:
        rgb_embed, flow_embed: (b, t, c); mask: (b, t); returns () or (b, t) for ``"none"``.
    """
    a = zero_padding(rgb_embed, mask)
    b = zero_padding(flow_embed, mask)
    if stop_gradient:
        per_snippet = 0.5 * (a - b.detach()).pow(2).mean(-1) + 0.5 * (a.detach() - b).pow(2).mean(-1)
    else:
        per_snippet = (a - b).pow(2).mean(-1)
    if reduction == "none":
        return per_snippet
    total = per_snippet.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        count = per_snippet.new_tensor(per_snippet.numel()) if mask is None else mask.sum().clamp(min=1)
        return total / count
    raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
