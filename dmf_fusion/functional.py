"""The attention core of Dual-Modality Fusion as pure functions.

Temporal RPN learning for weakly-supervised temporal action localization (ACML 2023) fuses RGB and
optical-flow snippet features with a Dual-Modality Fusion (DMF) block: RGB generates a *channel*
attention that enhances Flow, Flow generates a *temporal* attention that enhances RGB. This module
holds that math, in two attention forms (``gate`` and ``dot``), plus the split-weight linear map
behind concat and mutual fusion and the mutual loss.

Every function with a ``fused`` argument has two paths that compute the same thing:

* ``fused=True``: the fast path (GEMMs on the device's fastest engine, residuals folded into GEMM
  epilogues, temporal attention that never builds a ``(t, s)`` matrix: blocked attention on CPU,
  flash / memory-efficient scaled-dot-product attention on CUDA);
* ``fused=False``: the plain path, written the obvious way. It is the in-package reference.

Why the fused path on CPU runs its float32 GEMMs as 1x1 convolutions: ``torch.matmul`` on CPU calls
the BLAS (MKL), whose float32 GEMM runs on AVX2 on AMD CPUs, while ``conv2d`` on channel-last input
calls oneDNN's brgemm kernels, which use AVX-512 where the CPU has it. A 1x1 convolution over a
channel-last ``(b, c, 1, t)`` view of a ``(b, t, c)`` tensor *is* the GEMM ``x @ w.T``, without a copy
of ``x`` and with its output already channel-last (docs/benchmarks.md has the measured rates).

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
from typing import Any, Optional

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

_HAS_ONEDNN = torch.backends.mkldnn.is_available()

# Query rows of one attention tile are chosen so that a (rows, b, s) score tile holds at most this
# many elements (64 MiB in float32): the blocked CPU attention's extra memory is a few such tiles,
# whatever the video length, and a tile is big enough for full-rate GEMMs and few enough per video
# that oneDNN's per-call weight reorders stay cheap. (Tiles under glibc's 32 MiB mmap threshold
# would be recycled by malloc instead of faulted in anew, but the heap then keeps them: on a
# 32k-snippet video the resident set grew by 1.3 GiB for a few percent of time.)
ATTENTION_TILE = 1 << 24


# --------------------------------------------------------------------------------------------------
# GEMMs


def _upcast(x: Tensor) -> Tensor:
    """Half-precision scores go to float32 for softmax/sigmoid; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _onednn(x: Tensor) -> bool:
    """True where the fused path runs GEMMs as oneDNN 1x1 convolutions: float32 on CPU."""
    return _HAS_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32


def _linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``x @ weight.T + bias`` for channel-last ``x``, on the device's fastest GEMM.

    float32 on CPU: a 1x1 ``conv2d`` on the ``(b, c, 1, t)`` channel-last view of ``x`` (oneDNN,
    see the module docstring); anything else: ``F.linear``. Same math, autograd and autocast.

    Shape:
        x: (b, t, c) or (t, c); weight: (o, c); bias: (o,); returns (b, t, o) or (t, o).
    """
    if not _onednn(x):
        return F.linear(x, weight, bias)
    if x.dim() == 2:
        return _linear(x.unsqueeze(0), weight, bias).squeeze(0)
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), weight[:, :, None, None], bias)
    return y.squeeze(2).transpose(1, 2)


def _transpose_tiles(x: Tensor) -> Tensor:
    """``x.transpose(1, 2).contiguous()`` copied in tiles of rows that stay in cache: one strided
    copy of a (b, t, c) tensor walks memory with a stride of ``c`` elements and runs 2-4x slower."""
    batch, rows, cols = x.shape
    tile = max(8, (128 << 10) // max(cols * x.element_size(), 1))  # a tile of x is ~128 KiB
    if tile >= rows or torch.compiler.is_compiling():
        return x.transpose(1, 2).contiguous()
    out = x.new_empty(batch, cols, rows)
    for start in range(0, rows, tile):
        out[:, :, start : start + tile].copy_(x[:, start : start + tile].transpose(1, 2))
    return out


def _to_last(x: Tensor, dims: tuple[int, int, int]) -> Tensor:
    """``x.permute(dims).contiguous()`` for a 3-d ``x`` whose first axis becomes the last
    (``dims[2] == 0``), copied in slabs of 16 along that axis: every slab is read contiguously and
    written in cache-line runs, where one strided copy would write single elements."""
    if torch.compiler.is_compiling() or x.shape[0] <= 16:
        return x.permute(dims).contiguous()
    out = x.new_empty([x.shape[d] for d in dims])
    for start in range(0, x.shape[0], 16):
        out[..., start : start + 16].copy_(x[start : start + 16].permute(dims))
    return out


class _Gram(torch.autograd.Function):
    """The Gram matrix ``x.T @ x`` of one sample with the symmetric backward ``dx = x @ (dG + dG.T)``:
    one GEMM where autograd through a product of ``x`` with itself runs two (``2 t c^2`` FLOPs saved,
    a ninth of DMF dot's forward+backward). Forward on the channel-first copy ``x_t`` (both GEMM
    operands), backward in ``x``'s own layout, so no gradient is ever transposed.

    Shape:
        x: (t, c); x_t: (c, t) contiguous; returns (c, c).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, x_t: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return _linear(x_t, x_t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return _linear(x, grad + grad.t()), None


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
# temporal convolution and the split-weight linear map


def _temporal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor], fused: bool) -> Tensor:
    """:func:`temporal_conv1d` on an ``x`` that is already zero at padded snippets."""
    weight = weight.to(x.dtype)
    bias = None if bias is None else bias.to(x.dtype)
    taps = weight.shape[-1]
    if taps % 2 != 1:
        raise ValueError(f"weight must have an odd kernel size, got shape {tuple(weight.shape)}")
    if fused:
        # the (b, c, 1, t) view of channel-last x is a channel-last image: no transpose copy, and
        # oneDNN / cuDNN run their NHWC direct convolution; the output comes back channel-last
        out = F.conv2d(x.transpose(1, 2).unsqueeze(2), weight.unsqueeze(2), bias, padding=(0, taps // 2))
        out = out.squeeze(2).transpose(1, 2)
    else:
        out = F.conv1d(x.transpose(1, 2), weight, bias, padding=taps // 2).transpose(1, 2)
    return zero_padding(out, mask)


def temporal_conv1d(
    x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, mask: Optional[Tensor] = None, *, fused: bool = True
) -> Tensor:
    """Same-length temporal convolution (odd kernel, zero padding) on channel-last features.

    Padded snippets act exactly like the zero padding at the sequence ends, so appending masked
    snippets never changes a valid output. Outputs at padded snippets are zero.

    The fused path convolves the ``(b, c, 1, t)`` view of ``x``, which is a channel-last (NHWC)
    image, so ``x`` is read in place, never transposed, and the direct NHWC convolution kernels of
    oneDNN (CPU) and cuDNN (CUDA) run; the plain path is ``torch.nn.functional.conv1d`` on the
    channel-first transpose.

    Args:
        x: input features.
        weight: ``torch.nn.Conv1d`` weight.
        bias: optional bias.
        mask: True = valid snippet.
        fused: fast path (True) or plain reference path (False).

    Shape:
        x: (b, t, c); weight: (o, c, k) with odd k; bias: (o,); returns (b, t, o).
    """
    return _temporal_conv1d(zero_padding(x, mask), weight, bias, mask, fused)


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
    if _onednn(rgb):
        # two oneDNN GEMMs and one in-place add (the GEMM does not keep its output for backward)
        return _linear(rgb, w_rgb, bias).add_(_linear(flow, w_flow))
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
    hidden = F.relu(F.linear(pooled, weight1.to(dtype), None if bias1 is None else bias1.to(dtype)))
    logits = F.linear(hidden, weight2.to(dtype), None if bias2 is None else bias2.to(dtype))
    return torch.sigmoid(_upcast(logits)).to(dtype)


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
    return _channel_attention_gate(zero_padding(rgb, mask), mask, weight1, bias1, weight2, bias2)


def _temporal_attention_gate(
    flow: Tensor, mask: Optional[Tensor], weights: Sequence[Tensor], biases: Sequence[Optional[Tensor]], fused: bool
) -> Tensor:
    """:func:`temporal_attention_gate` on a ``flow`` that is already zero at padded snippets."""
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(f"weights and biases must be non-empty and of equal length, got {len(weights)}, {len(biases)}")
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
    """Temporal attention from Flow: a stack of masked temporal convolutions, ReLU between them,
    then a sigmoid. The last convolution has one output channel. Zero at padded snippets.

    Shape:
        flow: (b, t, c); weights[i]: (o_i, o_{i-1}, k) with o_last = 1; returns (b, t) in (0, 1).
    """
    return _temporal_attention_gate(zero_padding(flow, mask), mask, weights, biases, fused)


class _Gate(torch.autograd.Function):
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


def _gate(x: Tensor, a: Tensor, alpha: float) -> Tensor:
    """``x + alpha * a * x`` (fused path of the gate form); ``a`` is (b, t, 1) or (b, 1, c)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.addcmul(x, x, a, value=alpha)
    return _Gate.apply(x, a.to(x.dtype), alpha)


# --------------------------------------------------------------------------------------------------
# dot form: Gram-matrix channel attention, scaled-dot-product temporal attention


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
    ``rgb_t`` optionally brings ``rgb.transpose(1, 2).contiguous()`` when the caller has it."""
    if not fused:
        n = _valid_counts(rgb, mask).unsqueeze(-1)
        gram = torch.einsum("btc,bte->bce", rgb, rgb) / n / temperature
        attn = torch.softmax(_upcast(gram), dim=-1).to(rgb.dtype)
        enhance = torch.einsum("bce,bte->btc", attn, flow)
        return flow + alpha * enhance
    if alpha == 0:
        return flow  # exact identity, and no GEMM whose 0 * x terms could turn -0.0 or inf around
    if not _onednn(rgb):
        attn = channel_attention_dot(rgb, mask, temperature=temperature)
        return torch.baddbmm(flow, flow, attn.transpose(1, 2), alpha=alpha)
    # float32 on CPU: per sample, the Gram matrix (symmetric backward, see _Gram) and the residual
    # apply are oneDNN GEMMs; the residual is folded into the weight,
    # flow + alpha * flow @ A.T = flow @ (I + alpha * A).T, so no (b, t, c) pass is spent on it
    channels = rgb.shape[-1]
    scale = 1.0 / (_valid_counts(rgb, mask) * temperature)
    if rgb_t is None:
        rgb_t = _transpose_tiles(rgb.detach())  # not differentiated: _Gram's backward works in rgb's layout
    eye = torch.eye(channels, dtype=rgb.dtype, device=rgb.device)
    out = []
    # per sample, so that the (c, c) temporaries stay small enough for malloc to recycle them
    # (a (b, c, c) batch is mapped, faulted in and unmapped anew by every call); unbind, not
    # indexing: the backward of b selects would zero-fill b full-size gradients
    for x, x_t, f, s in zip(rgb.unbind(0), rgb_t.unbind(0), flow.unbind(0), scale.unbind(0)):
        attn = torch.softmax(_Gram.apply(x, x_t) * s, dim=-1)
        out.append(_linear(f, torch.add(eye, attn, alpha=alpha)))
    return torch.stack(out)


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

    The fused path folds the residual into the GEMM: ``flow @ (I + alpha * A_c).T`` on CPU float32
    (per-sample oneDNN GEMMs), ``baddbmm`` elsewhere; the plain path builds the Gram matrix with
    einsum, normalises, and adds.

    Shape:
        rgb: (b, t, c); flow: (b, t, c) (same channels; project first otherwise); returns (b, t, c),
        zero at padded snippets.
    """
    if rgb.shape[-1] != flow.shape[-1]:
        raise ValueError(
            f"rgb and flow must have the same channels for the dot channel attention, got "
            f"{rgb.shape[-1]} and {flow.shape[-1]} (project rgb to the flow width first)"
        )
    return _channel_enhance_dot(zero_padding(rgb, mask), zero_padding(flow, mask), mask, alpha, temperature, fused)


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


def _attention_rows(t: int, s: int) -> int:
    """Query rows per tile of the blocked attention: ``rows * s <= ATTENTION_TILE`` (at least one
    row), a multiple of 64 when that many fit, all ``t`` when they fit. ``s`` counts the keys of
    all samples of the batch, which share a tile."""
    rows = ATTENTION_TILE // max(s, 1)
    if rows >= t:
        return t
    if rows >= 128:
        rows -= rows % 64
    return max(rows, 1)


def _gemm_nt(x: Tensor, w: Tensor, bias: Optional[Tensor] = None, groups: int = 1) -> Tensor:
    """Grouped ``x @ w.T (+ bias)``: group ``j`` maps ``x[:, j i:(j+1) i]`` by ``w[j o:(j+1) o]``.

    float32 on CPU: one grouped 1x1 oneDNN convolution over the channel-last view of ``x`` (the
    groups are the samples of a batch, so one call serves the whole batch); else a batched GEMM.

    Shape:
        x: (n, g i) row-major; w: (g o, i); bias: (g o,); returns (n, g o) row-major.
    """
    n = x.shape[0]
    if _onednn(x):
        y = F.conv2d(x.unsqueeze(0).transpose(1, 2).unsqueeze(2), w[:, :, None, None], bias, groups=groups)
        return y.squeeze(2).transpose(1, 2).squeeze(0)
    i, o = x.shape[1] // groups, w.shape[0] // groups
    xg, wg = x.view(n, groups, i).transpose(0, 1), w.view(groups, o, i).transpose(1, 2)
    y = torch.bmm(xg, wg) if bias is None else torch.baddbmm(bias.view(groups, 1, o), xg, wg)
    return y.transpose(0, 1).reshape(n, groups * o)


class _BlockedAttention(torch.autograd.Function):
    """Memory-efficient attention for CPU: ``residual * v + alpha * softmax(q k.T + key_bias) v``.

    FlashAttention's scheme in torch ops. The forward pass keeps one tile of scores at a time,
    ``(rows, b, s)`` for a block of query rows of *every* sample, and saves only its inputs; the
    backward pass recomputes each tile's probabilities and accumulates ``dk`` and ``dv``. Tiles are
    time-major so that each GEMM is one call for the whole batch: a grouped oneDNN convolution (the
    samples are the groups) where the operands are laid out for it (``q k.T``, ``p v``, ``dp``,
    ``dq``), a strided batched BLAS GEMM where they are not (``dv = p.T g``, ``dk = ds.T q``: the BLAS
    reads transposed tiles in place, oneDNN would need transposed copies). The softmax and its
    backward are one row-wise kernel each. ``q`` comes pre-scaled by ``1/sqrt(d)``; ``key_bias`` is
    0 / ``-inf`` per key (or None); ``query_mask`` zeroes the outputs and incoming gradients of
    padded queries; with ``residual`` (needs ``s == t``) ``v`` must be zero at padded snippets;
    ``v_t`` is ``v.transpose(1, 2)`` made contiguous, when the caller has it already (or None).

    FLOPs: ``2 t s (d + c)`` forward, ``2 t s (2 c + 3 d)`` backward (``q k.T`` recomputed once), the
    minimum for a method that does not store the ``(t, s)`` matrix.

    Shape:
        q, k: (b, t, d); v: (b, s, c); key_bias: (b, s); query_mask: (b, t); v_t: (b, c, s);
        returns (b, t, c).
    """

    @staticmethod
    def _probs(q_rows: Tensor, k_w: Tensor, bias: Optional[Tensor], batch: int) -> Tensor:
        """Softmax over keys of one tile: (rows, b d) -> (rows, b, s); the key bias rides in the GEMM."""
        scores = _gemm_nt(q_rows, k_w, bias, batch)
        return torch.softmax(scores.view(q_rows.shape[0], batch, -1), dim=-1)

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_bias: Optional[Tensor],
        query_mask: Optional[Tensor],
        alpha: float,
        residual: bool,
        v_t: Optional[Tensor],
    ) -> Tensor:
        batch, time, dim = q.shape
        keys, channels = k.shape[1], v.shape[-1]
        rows = _attention_rows(time, batch * keys)
        q_tm = q.transpose(0, 1).reshape(time, batch * dim)  # time-major queries (a small copy)
        k_w = k.reshape(batch * keys, dim)
        if _onednn(v) and v_t is None:
            v_t = _transpose_tiles(v)
        v_w = None if v_t is None else v_t.view(batch * channels, keys)  # (b c, s): the weight of p @ v
        bias = None if key_bias is None else key_bias.reshape(batch * keys)
        out = v.new_empty(batch, time, channels)
        for start in range(0, time, rows):
            stop = min(start + rows, time)
            p = _BlockedAttention._probs(q_tm[start:stop], k_w, bias, batch)
            if v_w is not None:
                o = _gemm_nt(p.view(stop - start, -1), v_w, None, batch).view(stop - start, batch, channels)
                o = o.transpose(0, 1)
            else:
                o = torch.bmm(p.transpose(0, 1), v)
            dst = out[:, start:stop]
            if residual:
                torch.add(v[:, start:stop], o, alpha=alpha, out=dst)
            elif alpha != 1:
                torch.mul(o, alpha, out=dst)
            else:
                dst.copy_(o)
            if query_mask is not None:
                dst.masked_fill_(~query_mask[:, start:stop, None], 0)
        ctx.save_for_backward(q_tm, k, v, key_bias, query_mask)
        ctx.alpha, ctx.residual = alpha, residual
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        q_tm, k, v, key_bias, query_mask = ctx.saved_tensors
        batch, keys, dim = k.shape
        time, channels = q_tm.shape[0], v.shape[-1]
        rows = _attention_rows(time, batch * keys)
        # time-major incoming gradient of the attention term, padded queries zeroed, alpha folded in
        g_tm = grad.transpose(0, 1).contiguous()  # (no out= here: compile's functionalization keeps its strides)
        if query_mask is not None:
            g_tm.masked_fill_(~query_mask.t()[..., None], 0)
        if ctx.alpha != 1:
            g_tm.mul_(ctx.alpha)
        g_rows = g_tm.view(time, batch * channels)
        k_w, v_w = k.reshape(batch * keys, dim), v.reshape(batch * keys, channels)
        k_t = k.transpose(1, 2).reshape(batch * dim, keys)  # (b d, s): the weight of ds @ k
        bias = None if key_bias is None else key_bias.reshape(batch * keys)
        dq_tm = q_tm.new_empty(time, batch, dim)
        dk: Optional[Tensor] = None
        dv: Optional[Tensor] = None  # (b, s, c) on the BLAS route, key-major (s, b, c) on oneDNN's
        onednn = _onednn(v)
        for start in range(0, time, rows):
            stop = min(start + rows, time)
            n = stop - start
            p = _BlockedAttention._probs(q_tm[start:stop], k_w, bias, batch)  # (n, b, s)
            dp = _gemm_nt(g_rows[start:stop], v_w, None, batch).view(n, batch, keys)
            ds = torch._softmax_backward_data(dp, p, -1, p.dtype)  # p * (dp - rowsum(dp * p))
            dq_tm[start:stop] = _gemm_nt(ds.view(n, -1), k_t, None, batch).view(n, batch, dim)
            # dv += p.T @ g per sample: oneDNN on key-major copies of the tiles (2 t s c FLOPs, worth
            # the copies), else the BLAS on the transposed tiles as they lie
            if onednn:
                p_t = _to_last(p, (2, 1, 0)).view(keys, batch * n)
                g_t = _to_last(g_tm[start:stop], (1, 2, 0)).view(batch * channels, n)
                dv_tile = _gemm_nt(p_t, g_t, None, batch).view(keys, batch, channels)
            else:
                dv_tile = torch.bmm(p.permute(1, 2, 0), g_tm[start:stop].transpose(0, 1))
            dv = dv_tile if dv is None else dv.add_(dv_tile)
            # dk += ds.T @ q per sample (2 t s d FLOPs): the BLAS reads the transposed tiles as they lie
            ds_t, q_blk = ds.permute(1, 2, 0), q_tm[start:stop].view(n, batch, dim).transpose(0, 1)
            dk = torch.bmm(ds_t, q_blk) if dk is None else dk.baddbmm_(ds_t, q_blk)
        assert dv is not None  # time >= 1
        if onednn:
            dv = dv.transpose(0, 1)
        if ctx.residual:  # the residual's gradient, added in the pass that lays dv out (b, s, c)
            dv = torch.add(grad if query_mask is None else zero_padding(grad, query_mask), dv)
        dq = dq_tm.transpose(0, 1).contiguous()
        return dq, dk, dv.contiguous(), None, None, None, None, None


def _attend_fused(
    q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], alpha: float, residual: bool, v_t: Optional[Tensor] = None
) -> Tensor:
    """``residual * v + alpha * A_t @ v`` on the fused path, zero at padded queries (see
    :func:`attend_temporal`); ``residual`` needs ``v`` zero at padded snippets; ``v_t`` optionally
    brings ``v.transpose(1, 2).contiguous()`` when the caller has made it already."""
    batch, time, dim = q.shape
    if q.device.type == "cpu":
        dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.float32
        # float32 compute for half inputs (CPU half GEMMs are slow and the softmax wants float32)
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        q = q.to(compute) * (1.0 / math.sqrt(dim))
        k, v = k.to(compute).contiguous(), v.to(compute).contiguous()
        if v_t is not None and (v_t.dtype != compute or not v_t.is_contiguous()):
            v_t = None
        key_bias = None
        if mask is not None:
            key_bias = torch.zeros(mask.shape, dtype=compute, device=q.device)
            key_bias.masked_fill_(~_key_mask(mask), float("-inf"))
        with torch.autocast("cpu", enabled=False):
            out = _BlockedAttention.apply(q, k, v, key_bias, mask, alpha, residual, v_t)
        return out.to(dtype)
    channels = v.shape[-1]
    heads = -(-channels // dim)
    values = v if heads * dim == channels else F.pad(v, (0, heads * dim - channels))
    values = rearrange(values, "b s (h d) -> b h s d", d=dim)
    q = q.unsqueeze(1).expand(batch, heads, time, dim)
    k = k.unsqueeze(1).expand(batch, heads, time, dim)
    attn_mask = None if mask is None else _key_mask(mask)[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, values, attn_mask=attn_mask, scale=1.0 / math.sqrt(dim))
    out = zero_padding(rearrange(out, "b h t d -> b t (h d)")[..., :channels], mask)
    if residual:
        return torch.add(v, out, alpha=alpha)
    return out if alpha == 1 else out * alpha


def attend_temporal(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, *, fused: bool = True) -> Tensor:
    """``A_t @ v`` for the temporal attention of :func:`temporal_attention_dot`, zero at padded queries.

    The fused path never builds the ``(t, s)`` matrix, so memory grows linearly with time. It picks
    its kernel per call from the device:

    * CPU: blocked attention (``_BlockedAttention``): tiles of query rows of every sample, at most
      ``ATTENTION_TILE`` scores each, probabilities recomputed in backward, ``2 t s (d + c)`` FLOPs
      forward, GEMMs as grouped oneDNN convolutions in float32. (CPU ``scaled_dot_product_attention``
      has a flash kernel only for equal q/k/v widths; otherwise it runs the math kernel, which
      materializes the ``(t, s)`` matrix.)
    * CUDA and other devices: ``scaled_dot_product_attention``. Flash kernels need the value head
      size to equal the query/key size ``d``, so ``v``'s ``c`` channels are split into
      ``h = ceil(c / d)`` heads of ``d`` channels (zero-padded to a multiple of ``d`` when needed) and
      the single query/key head is broadcast to all of them: every head sees the same attention
      weights, which is exactly ``A_t @ v``. With a mask the memory-efficient kernel runs (flash
      takes no mask).

    Under autocast the CPU path runs in float32 and returns float32 (like softmax under autocast).

    Shape:
        q, k: (b, t, d); v: (b, t, c); mask: (b, t); returns (b, t, c).
    """
    if not fused:
        return temporal_attention_dot(q, k, mask) @ v
    return _attend_fused(q, k, v, mask, 1.0, False)


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
            F.mse_loss(a, b.detach(), reduction="none").mean(-1) + F.mse_loss(a.detach(), b, reduction="none").mean(-1)
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
