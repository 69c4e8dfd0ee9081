"""CPU kernels of the fused paths: oneDNN GEMM routes and blocked (flash-style) attention.

Private: :mod:`dmf_fusion.functional` is the only caller. The interface, shared with
:mod:`dmf_fusion._cuda`: ``linear``, ``linear_sum``, ``temporal_conv``, ``gate``,
``channel_enhance_dot``, ``attend`` and ``enhance_dot`` (both halves of the dot form); the layouts
of operands (channel-first copies, time-major tiles) are chosen here and nowhere above. Inputs arrive validated, cast to one dtype and zero at padded
snippets.

Design (the measurements behind each choice are in docs/benchmarks.md):

* **GEMMs on oneDNN, not the BLAS.** float32 GEMMs run as 1x1 convolutions: a 1x1 ``conv2d`` over the
  channel-last ``(b, c, 1, t)`` view of a ``(b, t, c)`` tensor *is* the GEMM ``x @ w.T``, without a copy
  of ``x`` and with its output channel-last, and it reaches oneDNN's JIT-compiled (AVX-512) GEMM
  kernels, which ``torch.matmul`` does not (MKL dispatches AVX2 code on AMD CPUs: half the rate);
  autograd, autocast and ``torch.compile`` treat it as any convolution. Grouped GEMMs
  (:func:`gemm_nt`) make the samples of a batch the groups, so one call serves the batch. Where an
  operand would first need a transposing copy, the copy is weighed against the 2x: the attention's
  ``dk`` (``2 t s d`` FLOPs) stays on the BLAS, which reads transposed tiles in place. On an Intel
  CPU, where MKL runs AVX-512 too, the route costs oneDNN's per-call weight reorder (~1 %). float64
  and half precision keep torch's own ops.
* **The temporal attention is blocked, not** ``scaled_dot_product_attention``: on CPU, SDPA has a
  flash kernel only for equal q/k/v widths; with ``d = 64`` and ``c = 1024`` it runs the math kernel,
  which materialises ``(t, s)``, and the head split that makes flash applicable (the CUDA route)
  recomputes ``q k.T`` once per head. :class:`BlockedAttention` is FlashAttention's scheme in torch
  ops: ``2 t s (d + c)`` FLOPs forward, ``2 t s (2 c + 3 d)`` backward, nothing but the inputs saved.
* **Tiles of at most** ``ATTENTION_TILE`` **scores** (64 MiB): the extra memory is a few tiles whatever
  the length of the video, and a tile lies above glibc's mmap threshold, so it is returned on free
  (tiles under it are recycled by malloc, but the heap then keeps them: more resident memory on long
  videos for a few percent of time).
* **The dot channel half runs per sample**, so its ``(c, c)`` temporaries stay small enough for malloc
  to recycle; the Gram's backward is one GEMM by symmetry (:class:`Gram`) and the residual is folded
  into the apply GEMM, so no ``(b, t, c)`` pass is spent on it.
* **Transposing copies** that remain (the channel-first copy of ``rgb``, one for both halves of the dot
  form through :func:`enhance_dot`; the key-major tiles of ``dv``) run in cache-sized slabs
  (:func:`transpose_tiles`, :func:`to_last`): one strided copy walks memory with a stride of ``c``.

Axis legend: b batch, t time (query snippets), s key time, c channels, d attention dim, o output
channels, g groups.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _compat, _formulas, _generic
from ._formulas import channel_softmax, input_precision, valid_counts, zero_padding
from ._generic import gate, temporal_conv

__all__ = [
    "ATTENTION_TILE",
    "attend",
    "channel_enhance_dot",
    "enhance_dot",
    "gate",
    "linear",
    "linear_sum",
    "temporal_conv",
]

_HAS_ONEDNN = torch.backends.mkldnn.is_available()

# A (rows, b, s) score tile of the blocked attention holds at most this many elements (64 MiB in
# float32): its extra memory is a few tiles whatever the video length, and tiles stay above glibc's
# mmap threshold so that they are returned on free (docs/benchmarks.md, "Page faults").
ATTENTION_TILE = 1 << 24


# --------------------------------------------------------------------------------------------------
# GEMMs and layouts


def onednn(x: Tensor) -> bool:
    """True where GEMMs run as oneDNN 1x1 convolutions: float32 on CPU."""
    return _HAS_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``x @ weight.T + bias`` for channel-last ``x``: a 1x1 ``conv2d`` on the ``(b, c, 1, t)`` view of
    ``x`` in float32, ``F.linear`` otherwise. Same math, autograd and autocast.

    Shape:
        x: (b, t, c) or (t, c); weight: (o, c); bias: (o,); returns (b, t, o) or (t, o).
    """
    if not onednn(x):
        return F.linear(x, weight, bias)
    if x.dim() == 2:
        return linear(x.unsqueeze(0), weight, bias).squeeze(0)
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), weight[:, :, None, None], bias)
    return y.squeeze(2).transpose(1, 2)


def linear_sum(a: Tensor, weight_a: Tensor, b: Tensor, weight_b: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``a @ weight_a.T + b @ weight_b.T + bias``: in float32 two oneDNN GEMMs and one in-place add
    (the GEMM does not keep its output for backward)."""
    if not onednn(a):
        return _generic.linear_sum(a, weight_a, b, weight_b, bias)
    return linear(a, weight_a, bias).add_(linear(b, weight_b))


def gemm_nt(x: Tensor, w: Tensor, bias: Optional[Tensor] = None, groups: int = 1) -> Tensor:
    """Grouped ``x @ w.T (+ bias)``: group ``j`` maps ``x[:, j i:(j+1) i]`` by ``w[j o:(j+1) o]``.

    float32: one grouped 1x1 oneDNN convolution over the channel-last view of ``x`` (the groups are
    the samples of a batch, so one call serves the whole batch); else a batched GEMM.

    Shape:
        x: (n, g i) row-major; w: (g o, i); bias: (g o,); returns (n, g o) row-major.
    """
    n = x.shape[0]
    if onednn(x):
        y = F.conv2d(x.unsqueeze(0).transpose(1, 2).unsqueeze(2), w[:, :, None, None], bias, groups=groups)
        return y.squeeze(2).transpose(1, 2).squeeze(0)
    i, o = x.shape[1] // groups, w.shape[0] // groups
    xg, wg = x.view(n, groups, i).transpose(0, 1), w.view(groups, o, i).transpose(1, 2)
    y = torch.bmm(xg, wg) if bias is None else torch.baddbmm(bias.view(groups, 1, o), xg, wg)
    return y.transpose(0, 1).reshape(n, groups * o)


def transpose_tiles(x: Tensor) -> Tensor:
    """``x.transpose(1, 2).contiguous()`` copied in tiles of rows that stay in cache (~128 KiB of
    ``x`` each): one strided copy of a (b, t, c) tensor walks memory with a stride of ``c``."""
    if _compat.is_compiling():  # one plain copy: torch.compile before 2.3 cannot trace element_size()
        return x.transpose(1, 2).contiguous()
    batch, rows, cols = x.shape
    tile = max(8, (128 << 10) // max(cols * x.element_size(), 1))
    if tile >= rows:
        return x.transpose(1, 2).contiguous()
    out = x.new_empty(batch, cols, rows)
    for start in range(0, rows, tile):
        out[:, :, start : start + tile].copy_(x[:, start : start + tile].transpose(1, 2))
    return out


def to_last(x: Tensor, dims: tuple[int, int, int]) -> Tensor:
    """``x.permute(dims).contiguous()`` for a 3-d ``x`` whose first axis becomes the last
    (``dims[2] == 0``), copied in slabs of 16 along that axis: every slab is read contiguously and
    written in cache-line runs, where one strided copy would write single elements."""
    if _compat.is_compiling() or x.shape[0] <= 16:
        return x.permute(dims).contiguous()
    out = x.new_empty([x.shape[d] for d in dims])
    for start in range(0, x.shape[0], 16):
        out[..., start : start + 16].copy_(x[start : start + 16].permute(dims))
    return out


def channel_first(x: Tensor) -> Optional[Tensor]:
    """The channel-first copy ``(b, c, t)`` of ``x`` that the float32 GEMMs of
    :func:`channel_enhance_dot` and :func:`attend` take as an operand, so that one copy can serve
    both (:func:`enhance_dot`); None where no kernel here wants one. Never differentiated."""
    return transpose_tiles(x.detach()) if onednn(x) else None


# --------------------------------------------------------------------------------------------------
# DMF dot, channel half


class Gram(torch.autograd.Function):
    """The Gram matrix ``x.T @ x`` of one sample with the symmetric backward ``dx = x @ (dG + dG.T)``:
    one GEMM where autograd through a product of ``x`` with itself runs two. Forward on the
    channel-first copy ``x_t`` (both GEMM operands), backward in ``x``'s own layout, so no gradient
    is ever transposed.

    Shape:
        x: (t, c); x_t: (c, t) contiguous; returns (c, c).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, x_t: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return linear(x_t, x_t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return linear(x, grad + grad.t()), None


def channel_enhance_dot(
    rgb: Tensor,
    flow: Tensor,
    mask: Optional[Tensor],
    *,
    alpha: float,
    temperature: float,
    rgb_t: Optional[Tensor] = None,
) -> Tensor:
    """``flow + alpha * flow @ A_c.T``. float32: per sample, the Gram matrix (:class:`Gram`) and the
    residual apply are oneDNN GEMMs, the residual folded into the weight,
    ``flow @ (I + alpha * A_c).T``, with ``A_c`` by the shared
    :func:`~dmf_fusion._formulas.channel_softmax`; else (and for an empty batch)
    :func:`dmf_fusion._generic.channel_enhance_dot`. ``rgb_t`` optionally brings
    :func:`channel_first` of ``rgb``.

    Shape:
        rgb, flow: (b, t, c) of one dtype; mask: (b, t); returns (b, t, c).
    """
    if not onednn(rgb) or rgb.shape[0] == 0:
        return _generic.channel_enhance_dot(rgb, flow, mask, alpha=alpha, temperature=temperature)
    if rgb_t is None:
        rgb_t = channel_first(rgb)
    eye = torch.eye(rgb.shape[-1], dtype=rgb.dtype, device=rgb.device)
    counts = valid_counts(rgb, mask)
    out = []
    # per sample, so that the (c, c) temporaries stay small enough for malloc to recycle; unbind, not
    # indexing: the backward of b selects would zero-fill b full-size gradients
    for x, x_t, f, n in zip(rgb.unbind(0), rgb_t.unbind(0), flow.unbind(0), counts.unbind(0)):
        attn = channel_softmax(Gram.apply(x, x_t), n, temperature)
        out.append(linear(f, torch.add(eye, attn, alpha=alpha)))
    return torch.stack(out)


# --------------------------------------------------------------------------------------------------
# DMF dot, temporal half: blocked attention


def attention_rows(t: int, s: int) -> int:
    """Query rows per tile of the blocked attention: ``rows * s <= ATTENTION_TILE`` (at least one
    row), a multiple of 64 when that many fit, all ``t`` when they fit. ``s`` counts the keys of
    all samples of the batch, which share a tile."""
    rows = ATTENTION_TILE // max(s, 1)
    if rows >= t:
        return t
    if rows >= 128:
        rows -= rows % 64
    return max(rows, 1)


def tile_probs(q_rows: Tensor, k_w: Tensor, bias: Optional[Tensor], batch: int) -> Tensor:
    """Softmax over keys of one tile of :class:`BlockedAttention`: (rows, b d) -> (rows, b, s); the key
    bias rides in the GEMM."""
    scores = gemm_nt(q_rows, k_w, bias, batch)
    return torch.softmax(scores.view(q_rows.shape[0], batch, -1), dim=-1)


def write_tile(dst: Tensor, o: Tensor, v_rows: Optional[Tensor], alpha: float) -> None:
    """``dst = v_rows + alpha * o`` (``v_rows`` None: ``alpha * o``) written into ``dst`` in one pass,
    by the ``out=`` form of the op; while tracing (``torch.compile``, which on torch 2.4 cannot trace an
    ``out=`` op inside an autograd Function), into a temporary that is then copied."""
    if _compat.is_compiling():
        dst.copy_(o * alpha if v_rows is None else torch.add(v_rows, o, alpha=alpha))
    elif v_rows is not None:
        torch.add(v_rows, o, alpha=alpha, out=dst)
    elif alpha != 1:
        torch.mul(o, alpha, out=dst)
    else:
        dst.copy_(o)


class BlockedAttention(torch.autograd.Function):
    """Memory-efficient attention: ``residual * v + alpha * softmax(q k.T + key_bias) v``.

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
        rows = attention_rows(time, batch * keys)
        q_tm = q.transpose(0, 1).reshape(time, batch * dim)  # time-major queries (a small copy)
        k_w = k.reshape(batch * keys, dim)
        if onednn(v) and v_t is None:
            v_t = transpose_tiles(v)
        v_w = None if v_t is None else v_t.view(batch * channels, keys)  # (b c, s): the weight of p @ v
        bias = None if key_bias is None else key_bias.reshape(batch * keys)
        out = v.new_empty(batch, time, channels)
        for start in range(0, time, rows):
            stop = min(start + rows, time)
            p = tile_probs(q_tm[start:stop], k_w, bias, batch)
            if v_w is not None:
                o = gemm_nt(p.view(stop - start, -1), v_w, None, batch).view(stop - start, batch, channels)
                o = o.transpose(0, 1)
            else:
                o = torch.bmm(p.transpose(0, 1), v)
            dst = out[:, start:stop]
            write_tile(dst, o, v[:, start:stop] if residual else None, alpha)
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
        rows = attention_rows(time, batch * keys)
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
        use_onednn = onednn(v)
        for start in range(0, time, rows):
            stop = min(start + rows, time)
            n = stop - start
            p = tile_probs(q_tm[start:stop], k_w, bias, batch)  # (n, b, s)
            dp = gemm_nt(g_rows[start:stop], v_w, None, batch).view(n, batch, keys)
            ds = _compat.softmax_backward(dp, p, -1)  # p * (dp - rowsum(dp * p))
            dq_tm[start:stop] = gemm_nt(ds.view(n, -1), k_t, None, batch).view(n, batch, dim)
            # dv += p.T @ g per sample: oneDNN on key-major copies of the tiles (2 t s c FLOPs, worth
            # the copies), else the BLAS on the transposed tiles as they lie
            if use_onednn:
                p_t = to_last(p, (2, 1, 0)).view(keys, batch * n)
                g_t = to_last(g_tm[start:stop], (1, 2, 0)).view(batch * channels, n)
                dv_tile = gemm_nt(p_t, g_t, None, batch).view(keys, batch, channels)
            else:
                dv_tile = torch.bmm(p.permute(1, 2, 0), g_tm[start:stop].transpose(0, 1))
            dv = dv_tile if dv is None else dv.add_(dv_tile)
            # dk += ds.T @ q per sample (2 t s d FLOPs): the BLAS reads the transposed tiles as they lie
            ds_t, q_blk = ds.permute(1, 2, 0), q_tm[start:stop].view(n, batch, dim).transpose(0, 1)
            dk = torch.bmm(ds_t, q_blk) if dk is None else dk.baddbmm_(ds_t, q_blk)
        assert dv is not None  # time >= 1
        if use_onednn:
            dv = dv.transpose(0, 1)
        if ctx.residual:  # the residual's gradient, added in the pass that lays dv out (b, s, c)
            dv = torch.add(zero_padding(grad, query_mask), dv)
        dq = dq_tm.transpose(0, 1).contiguous()
        return dq, dk, dv.contiguous(), None, None, None, None, None


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
    """``residual * v + alpha * A_t @ v``, zero at padded queries, by :class:`BlockedAttention`.

    Computes in float32 for half inputs (CPU half GEMMs are slow and the softmax wants float32) and
    returns the input dtype, or float32 under autocast (like softmax under autocast). ``residual``
    needs ``v`` zero at padded snippets; ``v_t`` optionally brings :func:`channel_first` of ``v``.

    Shape:
        q, k: (b, t, d); v: (b, t, c); mask: (b, t); v_t: (b, c, t); returns (b, t, c).
    """
    dim = q.shape[-1]
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    if _compat.is_autocast_enabled("cpu"):
        dtype = torch.float32
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    q = q.to(compute) * (1.0 / math.sqrt(dim))
    k, v = k.to(compute).contiguous(), v.to(compute).contiguous()
    if q.shape[0] == 0:  # an empty batch: no tiles (oneDNN takes no zero groups); the graph is kept
        out = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
        return (torch.add(v, out, alpha=alpha) if residual else out * alpha).to(dtype)
    if v_t is not None and (v_t.dtype != compute or not v_t.is_contiguous()):
        v_t = None
    bias = None if mask is None else _formulas.key_bias(mask, compute)
    with torch.autocast("cpu", enabled=False):
        out = BlockedAttention.apply(q, k, v, bias, mask, alpha, residual, v_t)
    return out.to(dtype)


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
    from ``rgb_c`` (``rgb`` or its projection to the Flow width), ``A_t`` from ``q`` and ``k``. One
    channel-first copy of ``rgb`` (:func:`channel_first`) serves the Gram GEMMs of the channel half
    (when ``rgb_c`` is ``rgb``) and the ``p v`` GEMMs of the temporal half.

    Shape:
        rgb: (b, t, c); rgb_c, flow: (b, t, e); q, k: (b, t, d); mask: (b, t); returns
        ((b, t, c), (b, t, e)).
    """
    rgb_t = channel_first(rgb)
    with input_precision(rgb_c):
        flow_plus = channel_enhance_dot(
            rgb_c, flow.to(rgb_c.dtype), mask, alpha=alpha, temperature=temperature,
            rgb_t=rgb_t if rgb_c is rgb else None,
        )
    return attend(q, k, rgb, mask, alpha=alpha, residual=True, v_t=rgb_t), flow_plus
