"""The attention core of Dual-Modality Fusion as pure functions: the math, one block per screen.

Temporal RPN learning for weakly-supervised temporal action localization (ACML 2023) fuses RGB and
optical-flow snippet features with a Dual-Modality Fusion (DMF) block: RGB generates a *channel*
attention that enhances Flow, Flow generates a *temporal* attention that enhances RGB, and
``alpha`` sets how strongly::

    rgb_plus  = rgb  + alpha * enhance_rgb        enhance_rgb  = A_t(flow) applied to rgb
    flow_plus = flow + alpha * enhance_flow       enhance_flow = A_c(rgb) applied to flow

in two attention forms, ``gate`` (:func:`dmf_gate`) and ``dot`` (:func:`dmf_dot`), plus the
split-weight linear map behind concat and mutual fusion (:func:`concat_linear`) and the mutual loss.

Every function with a ``fused`` argument has two paths that compute the same thing:

* ``fused=False``: the plain path, written here the obvious way. It is the in-package reference.
* ``fused=True``: one call into the kernels of the input's device (:func:`_kernels`):
  :mod:`dmf_fusion._cpu` (oneDNN GEMMs, blocked attention that never builds a ``(t, s)`` matrix) or
  :mod:`dmf_fusion._cuda` (cuBLAS epilogues, flash / memory-efficient scaled-dot-product attention).
  docs/benchmarks.md says what each kernel does and what it gains.

Conventions (see docs/conventions.md): channel-last tensors, ``mask`` is bool ``(b, t)`` with
True = valid snippet, padded snippets never influence valid outputs and come out as zeros, a fully
padded row gives zeros (never NaN). Parameters are cast to the input dtype, so float16, bfloat16,
float32 and float64 inputs all work and the output dtype equals the input dtype.

Axis legend: b batch, t time (query snippets), s key time, c channels (``e`` a second channel
axis of the same size), d attention dim, k kernel tap, o output channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _cpu, _cuda

__all__ = [
    "attend_temporal",
    "channel_attention_dot",
    "channel_attention_gate",
    "channel_enhance_dot",
    "concat_linear",
    "dmf_dot",
    "dmf_gate",
    "linear",
    "masked_mean",
    "mutual_loss",
    "temporal_attention_dot",
    "temporal_attention_gate",
    "temporal_conv1d",
    "temporal_enhance_dot",
    "zero_padding",
]


def _kernels(x: Tensor) -> ModuleType:
    """The kernels of the fused paths for ``x``'s device: :mod:`dmf_fusion._cpu` on CPU,
    :mod:`dmf_fusion._cuda` on CUDA and every other device. Both offer the same functions."""
    return _cpu if x.device.type == "cpu" else _cuda


def _upcast(x: Tensor) -> Tensor:
    """Half-precision scores go to float32 for softmax/sigmoid; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _cast(p: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return None if p is None else p.to(dtype)


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
# channel-wise linear maps and the temporal convolution


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, fused: bool = True) -> Tensor:
    """``x @ weight.T + bias`` over the channels of channel-last features (a 1x1 convolution).

    The fused path runs the device's fastest GEMM (on CPU float32: oneDNN, by a 1x1 convolution of
    the channel-last view of ``x``); the plain path is ``torch.nn.functional.linear``.

    Shape:
        x: (b, t, c) or (t, c); weight: (o, c); bias: (o,); returns (b, t, o) or (t, o).
    """
    if fused:
        return _kernels(x).linear(x, weight, bias)
    return F.linear(x, weight, bias)


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
    weight, bias = weight.to(rgb.dtype), _cast(bias, rgb.dtype)
    if not fused:
        return F.linear(torch.cat([rgb, flow], dim=-1), weight, bias)
    c_rgb = rgb.shape[-1]
    return _kernels(rgb).linear_sum(rgb, weight[:, :c_rgb], flow, weight[:, c_rgb:], bias)


def _temporal_conv1d(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor], fused: bool, dilation: int = 1
) -> Tensor:
    """:func:`temporal_conv1d` on an ``x`` that is already zero at padded snippets."""
    weight, bias = weight.to(x.dtype), _cast(bias, x.dtype)
    taps = weight.shape[-1]
    if taps % 2 != 1:
        raise ValueError(f"weight must have an odd kernel size, got shape {tuple(weight.shape)}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be a positive int, got {dilation!r}")
    if fused:
        out = _kernels(x).temporal_conv(x, weight, bias, dilation)
    else:
        pad = dilation * (taps // 2)
        out = F.conv1d(x.transpose(1, 2), weight, bias, padding=pad, dilation=dilation).transpose(1, 2)
    return zero_padding(out, mask)


def temporal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    *,
    dilation: int = 1,
    fused: bool = True,
) -> Tensor:
    """Same-length temporal convolution (odd kernel, zero padding) on channel-last features.

    Padded snippets act exactly like the zero padding at the sequence ends, so appending masked
    snippets never changes a valid output. Outputs at padded snippets are zero.

    The fused path convolves the ``(b, c, 1, t)`` view of ``x``, a channel-last (NHWC) image, so ``x``
    is read in place, never transposed; the plain path is ``torch.nn.functional.conv1d`` on the
    channel-first transpose.

    Args:
        x: input features.
        weight: ``torch.nn.Conv1d`` weight.
        bias: optional bias.
        mask: True = valid snippet.
        dilation: spacing of the taps (padding ``dilation * (k // 2)`` keeps the length).
        fused: fast path (True) or plain reference path (False).

    Shape:
        x: (b, t, c); weight: (o, c, k) with odd k; bias: (o,); returns (b, t, o).
    """
    return _temporal_conv1d(zero_padding(x, mask), weight, bias, mask, fused, dilation)


# --------------------------------------------------------------------------------------------------
# DMF, gate form: a squeeze-excitation channel gate from RGB, a convolutional temporal gate from Flow


def _channel_attention_gate(
    rgb: Tensor,
    mask: Optional[Tensor],
    weight1: Tensor,
    bias1: Optional[Tensor],
    weight2: Tensor,
    bias2: Optional[Tensor],
) -> Tensor:
    """:func:`channel_attention_gate` on an ``rgb`` that is already zero at padded snippets."""
    dtype = rgb.dtype
    pooled = rgb.sum(1) / _valid_counts(rgb, mask)
    hidden = F.relu(F.linear(pooled, weight1.to(dtype), _cast(bias1, dtype)))
    logits = F.linear(hidden, weight2.to(dtype), _cast(bias2, dtype))
    return torch.sigmoid(_upcast(logits)).to(dtype)


def channel_attention_gate(
    rgb: Tensor,
    mask: Optional[Tensor],
    weight1: Tensor,
    bias1: Optional[Tensor],
    weight2: Tensor,
    bias2: Optional[Tensor],
) -> Tensor:
    """Channel attention from RGB: ``a_c = sigmoid(W2 relu(W1 masked_mean_t(rgb) + b1) + b2)``.

    Shape:
        rgb: (b, t, c); weight1: (r, c); weight2: (e, r); returns (b, e) in (0, 1).
    """
    return _channel_attention_gate(zero_padding(rgb, mask), mask, weight1, bias1, weight2, bias2)


def _temporal_attention_gate(
    flow: Tensor,
    mask: Optional[Tensor],
    weights: Sequence[Tensor],
    biases: Sequence[Optional[Tensor]],
    fused: bool,
) -> Tensor:
    """:func:`temporal_attention_gate` on a ``flow`` that is already zero at padded snippets."""
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(
            f"weights and biases must be non-empty and of equal length, got {len(weights)}, {len(biases)}"
        )
    h = flow
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = _temporal_conv1d(h, w, b, mask, fused)  # zero at padded snippets, as the next layer needs
        if i < len(weights) - 1:
            h = F.relu(h)
    att = torch.sigmoid(_upcast(h.squeeze(-1))).to(flow.dtype)
    return att if mask is None else att * mask


def temporal_attention_gate(
    flow: Tensor,
    mask: Optional[Tensor],
    weights: Sequence[Tensor],
    biases: Sequence[Optional[Tensor]],
    *,
    fused: bool = True,
) -> Tensor:
    """Temporal attention from Flow: ``a_t = sigmoid(conv_n(... relu(conv_1(flow))))``, a stack of
    masked temporal convolutions whose last one has one output channel. Zero at padded snippets.

    Shape:
        flow: (b, t, c); weights[i]: (o_i, o_{i-1}, k) with o_last = 1; returns (b, t) in (0, 1).
    """
    return _temporal_attention_gate(zero_padding(flow, mask), mask, weights, biases, fused)


def dmf_gate(
    rgb: Tensor,
    flow: Tensor,
    mask: Optional[Tensor] = None,
    *,
    weight1: Tensor,
    bias1: Optional[Tensor],
    weight2: Tensor,
    bias2: Optional[Tensor],
    conv_weights: Sequence[Tensor],
    conv_biases: Sequence[Optional[Tensor]],
    alpha: float,
    fused: bool = True,
    return_attention: bool = False,
) -> Union[tuple[Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]:
    """DMF, gate form (:class:`dmf_fusion.DMFGate`)::

        a_c = channel_attention_gate(rgb)        (b, c_flow)   flow_plus = flow + alpha * a_c * flow
        a_t = temporal_attention_gate(flow)      (b, t)        rgb_plus  = rgb  + alpha * a_t * rgb

    The fused path applies each gate in one pass with a one-pass backward.

    Args:
        rgb: RGB snippet features.
        flow: Flow snippet features.
        mask: True = valid snippet.
        weight1: first layer of the channel MLP (see :func:`channel_attention_gate`).
        bias1: its bias, or None.
        weight2: second layer of the channel MLP.
        bias2: its bias, or None.
        conv_weights: the temporal convolutions (see :func:`temporal_attention_gate`).
        conv_biases: their biases (None for none), one per convolution.
        alpha: enhancement strength; 0 returns every valid snippet unchanged.
        fused: fast path (True) or plain reference path (False).
        return_attention: also return ``a_c`` and ``a_t``.

    Shape:
        rgb: (b, t, c_rgb); flow: (b, t, c_flow); returns ``(rgb_plus, flow_plus)`` of the input
        shapes, zero at padded snippets, then ``a_c (b, c_flow)`` and ``a_t (b, t)`` if asked.
    """
    rgb, flow = zero_padding(rgb, mask), zero_padding(flow, mask)
    a_c = _channel_attention_gate(rgb, mask, weight1, bias1, weight2, bias2)
    a_t = _temporal_attention_gate(flow, mask, conv_weights, conv_biases, fused)
    if fused:
        kernels = _kernels(rgb)
        rgb_plus = kernels.gate(rgb, a_t.unsqueeze(-1), alpha)
        flow_plus = kernels.gate(flow, a_c.unsqueeze(1), alpha)
    else:
        rgb_plus = rgb + alpha * (a_t.unsqueeze(-1) * rgb)
        flow_plus = flow + alpha * (a_c.unsqueeze(1) * flow)
    if return_attention:
        return rgb_plus, flow_plus, a_c, a_t
    return rgb_plus, flow_plus


# --------------------------------------------------------------------------------------------------
# DMF, dot form: Gram-matrix channel attention from RGB, scaled-dot-product temporal attention from Flow


def channel_attention_dot(rgb: Tensor, mask: Optional[Tensor] = None, *, temperature: float = 1.0) -> Tensor:
    """Channel-to-channel attention from RGB: ``A_c = softmax_e(<rgb_c, rgb_e>_t / n_valid / temperature)``.

    Shape:
        rgb: (b, t, c); mask: (b, t); returns (b, c, e) with rows summing to 1.
    """
    dtype = rgb.dtype
    rgb = zero_padding(rgb, mask)
    n = _valid_counts(rgb, mask)
    # scaling rgb by (n * temperature) ** -1/2 before the Gram GEMM keeps the scores at the magnitude
    # of a mean, so long videos do not overflow; float16 (whose range ends at 65504) forms the Gram
    # in float32, since a mean of products of features near 300 already overflows it
    if rgb.dtype == torch.float16:
        rgb = rgb.float()
    scaled = rgb * (n.to(rgb.dtype) * temperature).rsqrt().unsqueeze(-1)
    scores = scaled.transpose(1, 2) @ scaled
    return torch.softmax(_upcast(scores), dim=-1).to(dtype)


def _channel_enhance_dot(
    rgb: Tensor,
    flow: Tensor,
    mask: Optional[Tensor],
    alpha: float,
    temperature: float,
    fused: bool,
    rgb_t: Optional[Tensor] = None,
) -> Tensor:
    """:func:`channel_enhance_dot` on ``rgb`` and ``flow`` that are already zero at padded snippets;
    ``rgb_t`` optionally brings the kernels' channel-first copy of ``rgb``."""
    if not fused:
        n = _valid_counts(rgb, mask).unsqueeze(-1)
        gram = torch.einsum("btc,bte->bce", rgb, rgb) / n / temperature
        attn = torch.softmax(_upcast(gram), dim=-1).to(rgb.dtype)
        enhance = torch.einsum("bce,bte->btc", attn, flow)
        return flow + alpha * enhance
    if alpha == 0:
        return flow  # exact identity, and no GEMM whose 0 * x terms could turn -0.0 or inf around
    counts = _valid_counts(rgb, mask)
    return _kernels(rgb).channel_enhance_dot(
        rgb, flow, counts, alpha=alpha, temperature=temperature, rgb_t=rgb_t
    )


def channel_enhance_dot(
    rgb: Tensor,
    flow: Tensor,
    mask: Optional[Tensor] = None,
    *,
    alpha: float,
    temperature: float = 1.0,
    fused: bool = True,
) -> Tensor:
    """The channel half of DMF, dot form: ``flow + alpha * flow @ A_c.T`` with ``A_c`` from RGB
    (:func:`channel_attention_dot`).

    The fused path folds the residual into the GEMM (``flow @ (I + alpha * A_c).T``); the plain path
    builds the Gram matrix with einsum, normalises, and adds.

    Shape:
        rgb: (b, t, c); flow: (b, t, c) (same channels; project first otherwise); returns (b, t, c),
        zero at padded snippets.
    """
    if rgb.shape[-1] != flow.shape[-1]:
        raise ValueError(
            f"rgb and flow must have the same channels for the dot channel attention, got "
            f"{rgb.shape[-1]} and {flow.shape[-1]} (project rgb to the flow width first)"
        )
    return _channel_enhance_dot(
        zero_padding(rgb, mask), zero_padding(flow, mask), mask, alpha, temperature, fused
    )


def temporal_attention_dot(q: Tensor, k: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Snippet-to-snippet attention ``A_t = softmax_s(q_t . k_s / sqrt(d))`` over valid keys ``s``.

    This materialises the ``(b, t, s)`` matrix: it is the plain path and what
    ``return_attention=True`` returns. Rows of padded queries are zero.

    Shape:
        q, k: (b, t, d); mask: (b, t); returns (b, t, s).
    """
    scores = torch.einsum("btd,bsd->bts", _upcast(q), _upcast(k)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~_key_mask(mask).unsqueeze(1), float("-inf"))
    attn = torch.softmax(scores, dim=-1).to(q.dtype)
    return attn if mask is None else attn * mask.unsqueeze(-1)


def attend_temporal(
    q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, *, fused: bool = True
) -> Tensor:
    """``A_t @ v`` for the temporal attention of :func:`temporal_attention_dot`, zero at padded queries.

    The fused path never builds the ``(t, s)`` matrix, so memory grows linearly with time: on CPU a
    blocked (flash-style) attention whose extra memory is a few tiles of scores, probabilities
    recomputed in backward; on CUDA ``scaled_dot_product_attention`` (flash / memory-efficient
    kernels, ``v``'s channels split into heads of ``d`` that share the one query/key head).
    Under autocast the CPU path runs in float32 and returns float32 (like softmax under autocast).

    Shape:
        q, k: (b, t, d); v: (b, t, c); mask: (b, t); returns (b, t, c).
    """
    if not fused:
        return temporal_attention_dot(q, k, mask) @ v
    return _kernels(q).attend(q, k, v, mask, alpha=1.0, residual=False)


def _project_qk(flow: Tensor, weight_q: Tensor, weight_k: Tensor, fused: bool) -> tuple[Tensor, Tensor]:
    """``q = flow @ W_q.T`` and ``k = flow @ W_k.T``; the fused path runs them as one GEMM."""
    dtype = flow.dtype
    if fused:
        qk = linear(flow, torch.cat([weight_q, weight_k]).to(dtype))
        q, k = qk.split(weight_q.shape[0], dim=-1)
        return q, k
    return F.linear(flow, weight_q.to(dtype)), F.linear(flow, weight_k.to(dtype))


def _temporal_enhance_dot(
    rgb: Tensor,
    q: Tensor,
    k: Tensor,
    mask: Optional[Tensor],
    alpha: float,
    fused: bool,
    rgb_t: Optional[Tensor] = None,
) -> Tensor:
    """``rgb + alpha * A_t @ rgb`` for an ``rgb`` already zero at padded snippets; the fused path
    writes the residual in the attention's output pass."""
    if not fused:
        return rgb + alpha * attend_temporal(q, k, rgb, mask, fused=False)
    if alpha == 0:
        return rgb  # exact identity
    return _kernels(q).attend(q, k, rgb, mask, alpha=alpha, residual=True, v_t=rgb_t)


def temporal_enhance_dot(
    rgb: Tensor,
    flow: Tensor,
    weight_q: Tensor,
    weight_k: Tensor,
    mask: Optional[Tensor] = None,
    *,
    alpha: float,
    fused: bool = True,
) -> Tensor:
    """The temporal half of DMF, dot form: ``rgb + alpha * A_t @ rgb`` with ``A_t`` from Flow,
    ``A_t = softmax_s(q_t . k_s / sqrt(d))``, ``q = flow @ W_q.T``, ``k = flow @ W_k.T``.

    The fused path never builds the ``(t, s)`` matrix (see :func:`attend_temporal`).

    Shape:
        rgb: (b, t, c); flow: (b, t, c_flow); weight_q, weight_k: (d, c_flow); returns (b, t, c),
        zero at padded snippets.
    """
    rgb, flow = zero_padding(rgb, mask), zero_padding(flow, mask)
    q, k = _project_qk(flow, weight_q, weight_k, fused)
    return _temporal_enhance_dot(rgb, q, k, mask, alpha, fused).to(rgb.dtype)


def dmf_dot(
    rgb: Tensor,
    flow: Tensor,
    mask: Optional[Tensor] = None,
    *,
    weight_q: Tensor,
    weight_k: Tensor,
    weight_proj: Optional[Tensor] = None,
    alpha: float,
    temperature: float = 1.0,
    fused: bool = True,
    return_attention: bool = False,
) -> Union[tuple[Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]:
    """DMF, dot form (:class:`dmf_fusion.DMFDot`)::

        rgb_c = rgb @ W_proj.T (or rgb)                       A_c (b, c, e)  channel_attention_dot(rgb_c)
        flow_plus = flow + alpha * flow @ A_c.T               (channel_enhance_dot)
        q, k = flow @ W_q.T, flow @ W_k.T                     A_t (b, t, s)  temporal_attention_dot(q, k)
        rgb_plus  = rgb + alpha * A_t @ rgb                   (temporal_enhance_dot)

    The channel half runs with autocast off, in the input dtype: the Gram matrix sums ``t`` products
    per entry and overflows float16 on ordinary videos. On the fused path one channel-first copy of
    ``rgb`` serves both halves' GEMMs where the device's kernels take one.

    Args:
        rgb: RGB snippet features.
        flow: Flow snippet features.
        mask: True = valid snippet.
        weight_q: query projection of Flow.
        weight_k: key projection of Flow.
        weight_proj: projection of RGB to the Flow width (None when the widths are equal).
        alpha: enhancement strength; 0 returns every valid snippet unchanged.
        temperature: softmax temperature of the channel attention.
        fused: fast path (True) or plain reference path (False).
        return_attention: also return ``A_c`` and ``A_t`` (this builds the ``(b, t, s)`` matrix).

    Shape:
        rgb: (b, t, c_rgb); flow: (b, t, c_flow); weight_q, weight_k: (d, c_flow); weight_proj:
        (c_flow, c_rgb). Returns ``(rgb_plus, flow_plus)`` of the input shapes and dtypes, zero at
        padded snippets, then ``A_c (b, c_flow, c_flow)`` and ``A_t (b, t, s)`` if asked.
    """
    rgb, flow = zero_padding(rgb, mask), zero_padding(flow, mask)
    rgb_t = _kernels(rgb).channel_first(rgb) if fused else None
    if weight_proj is None:
        rgb_c, rgb_c_t = rgb, rgb_t
    else:
        rgb_c, rgb_c_t = linear(rgb, weight_proj.to(rgb.dtype), fused=fused), None
    with torch.autocast(rgb.device.type, enabled=False):
        flow_plus = _channel_enhance_dot(
            rgb_c, flow.to(rgb_c.dtype), mask, alpha, temperature, fused, rgb_c_t
        )
    q, k = _project_qk(flow, weight_q, weight_k, fused)
    rgb_plus = _temporal_enhance_dot(rgb, q, k, mask, alpha, fused, rgb_t)
    # under autocast the GEMM epilogues come back in the autocast dtype: keep the input dtype on both
    rgb_plus, flow_plus = rgb_plus.to(rgb.dtype), flow_plus.to(flow.dtype)
    if return_attention:
        a_c = channel_attention_dot(rgb_c, mask, temperature=temperature)
        return rgb_plus, flow_plus, a_c, temporal_attention_dot(q, k, mask)
    return rgb_plus, flow_plus


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
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    a = zero_padding(rgb_embed, mask)
    b = zero_padding(flow_embed, mask)
    if stop_gradient:
        per_snippet = 0.5 * (
            F.mse_loss(a, b.detach(), reduction="none").mean(-1)
            + F.mse_loss(a.detach(), b, reduction="none").mean(-1)
        )
    else:
        per_snippet = F.mse_loss(a, b, reduction="none").mean(-1)  # one fused (a - b)^2 kernel
    if reduction == "none":
        return per_snippet
    total = per_snippet.sum()
    if reduction == "sum":
        return total
    count = per_snippet.new_tensor(per_snippet.numel()) if mask is None else mask.sum().clamp(min=1)
    return total / count
