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
  The kernels' docstrings say what each does and why; layouts are their private choice.

Each formula is written once. The plain path of a block is built from the public ops of its halves;
the mask rules and the precision of scores (:mod:`dmf_fusion._formulas`) are shared with the kernels.

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

from . import _cpu, _cuda, _formulas
from ._formulas import channel_softmax, gram_operand, input_precision, key_bias, upcast, valid_counts

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


def _cast(p: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return None if p is None else p.to(dtype)


# --------------------------------------------------------------------------------------------------
# masks and pooling


def zero_padding(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Write zeros into the padded snippets of ``x`` (NaN and inf there are removed too).

    Shape:
        x: (b, t, c); mask: (b, t) bool or None; returns (b, t, c).
    """
    return _formulas.zero_padding(x, mask)


def _masked_mean(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """:func:`masked_mean` of an ``x`` that is already zero at padded snippets; half precision sums
    in float32 (a float16 sum over a long video overflows)."""
    return (upcast(x).sum(1) / valid_counts(x, mask)[:, None]).to(x.dtype)


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
    return _masked_mean(zero_padding(x, mask), mask)


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
    pooled = _masked_mean(rgb, mask)
    hidden = F.relu(F.linear(pooled, weight1.to(dtype), _cast(bias1, dtype)))
    logits = F.linear(hidden, weight2.to(dtype), _cast(bias2, dtype))
    return torch.sigmoid(upcast(logits)).to(dtype)


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
    att = torch.sigmoid(upcast(h.squeeze(-1))).to(flow.dtype)
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


def _channel_attention_dot(rgb: Tensor, mask: Optional[Tensor], temperature: float) -> Tensor:
    """:func:`channel_attention_dot` of an ``rgb`` that is already zero at padded snippets."""
    x = gram_operand(rgb)
    gram = torch.einsum("btc,bte->bce", x, x)
    return channel_softmax(gram, valid_counts(rgb, mask), temperature).to(rgb.dtype)


def channel_attention_dot(rgb: Tensor, mask: Optional[Tensor] = None, *, temperature: float = 1.0) -> Tensor:
    """Channel-to-channel attention from RGB: ``A_c = softmax_e(<rgb_c, rgb_e>_t / n_valid / temperature)``.

    The Gram matrix of float16 features is formed in float32 (an entry sums ``t`` products, and
    float16 ends at 65504), and the scores are scaled and normalised in float32 for half precision.

    Shape:
        rgb: (b, t, c); mask: (b, t); returns (b, c, e) with rows summing to 1.
    """
    return _channel_attention_dot(zero_padding(rgb, mask), mask, temperature)


def _channel_enhance_dot(
    rgb: Tensor, flow: Tensor, mask: Optional[Tensor], alpha: float, temperature: float, fused: bool
) -> Tensor:
    """:func:`channel_enhance_dot` on ``rgb`` and ``flow`` of one dtype that are already zero at
    padded snippets, under :func:`~dmf_fusion._formulas.input_precision`."""
    if not fused:
        attn = _channel_attention_dot(rgb, mask, temperature)
        return flow + alpha * torch.einsum("bce,bte->btc", attn, flow)
    if alpha == 0:
        return flow  # exact identity, and no GEMM whose 0 * x terms could turn -0.0 or inf around
    return _kernels(rgb).channel_enhance_dot(rgb, flow, mask, alpha=alpha, temperature=temperature)


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

    It runs with autocast off, in the dtype of ``rgb`` (``flow`` is cast to it): the Gram matrix sums
    ``t`` products per entry. The plain path is :func:`channel_attention_dot` and an einsum; the fused
    path folds the residual into the GEMM (``flow @ (I + alpha * A_c).T``).

    Shape:
        rgb: (b, t, c); flow: (b, t, c) (same channels; project first otherwise); returns (b, t, c)
        in the dtype of ``rgb``, zero at padded snippets.
    """
    if rgb.shape[-1] != flow.shape[-1]:
        raise ValueError(
            f"rgb and flow must have the same channels for the dot channel attention, got "
            f"{rgb.shape[-1]} and {flow.shape[-1]} (project rgb to the flow width first)"
        )
    rgb, flow = zero_padding(rgb, mask), zero_padding(flow, mask)
    with input_precision(rgb):
        return _channel_enhance_dot(rgb, flow.to(rgb.dtype), mask, alpha, temperature, fused)


def temporal_attention_dot(q: Tensor, k: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Snippet-to-snippet attention ``A_t = softmax_s(q_t . k_s / sqrt(d))`` over valid keys ``s``.

    This materialises the ``(b, t, s)`` matrix: it is the plain path and what
    ``return_attention=True`` returns. Rows of padded queries are zero.

    Shape:
        q, k: (b, t, d); mask: (b, t); returns (b, t, s).
    """
    scores = torch.einsum("btd,bsd->bts", upcast(q), upcast(k)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + key_bias(mask, scores.dtype).unsqueeze(1)
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


def _temporal_enhance_dot(rgb: Tensor, q: Tensor, k: Tensor, mask: Optional[Tensor], alpha: float, fused: bool) -> Tensor:
    """``rgb + alpha * A_t @ rgb`` for an ``rgb`` already zero at padded snippets; the fused path
    writes the residual in the attention's output pass."""
    if not fused:
        return rgb + alpha * attend_temporal(q, k, rgb, mask, fused=False)
    if alpha == 0:
        return rgb  # exact identity
    return _kernels(q).attend(q, k, rgb, mask, alpha=alpha, residual=True)


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

    The plain path is :func:`attend_temporal` on :func:`temporal_attention_dot`; the fused path never
    builds the ``(t, s)`` matrix (see :func:`attend_temporal`).

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

    The plain path is those ops, one after the other. The fused path hands both halves to one call of
    the device's kernels, which may share work between them (on CPU, one channel-first copy of
    ``rgb`` serves the GEMMs of both). The channel half runs with autocast off, in the input dtype (see
    :func:`channel_enhance_dot`).

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
    rgb_c = rgb if weight_proj is None else linear(rgb, weight_proj.to(rgb.dtype), fused=fused)
    q, k = _project_qk(flow, weight_q, weight_k, fused)
    if not fused:
        with input_precision(rgb_c):
            flow_plus = _channel_enhance_dot(rgb_c, flow.to(rgb_c.dtype), mask, alpha, temperature, False)
        rgb_plus = _temporal_enhance_dot(rgb, q, k, mask, alpha, False)
    elif alpha == 0:
        rgb_plus, flow_plus = rgb, flow  # exact identity
    else:
        rgb_plus, flow_plus = _kernels(rgb).enhance_dot(
            rgb, rgb_c, flow, q, k, mask, alpha=alpha, temperature=temperature
        )
    # under autocast the GEMM epilogues come back in the autocast dtype: keep the input dtype on both
    rgb_plus, flow_plus = rgb_plus.to(rgb.dtype), flow_plus.to(flow.dtype)
    if return_attention:
        with input_precision(rgb_c):
            a_c = _channel_attention_dot(rgb_c, mask, temperature)
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
