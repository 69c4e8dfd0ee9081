"""Slow, obvious float64 references for every block, written sample by sample and snippet by snippet.

Nothing here shares code with ``dmf_fusion``: the formulas are re-derived from SPEC §3 so a mistake in
the library cannot hide in the reference. Inputs are cast to float64, masks are explicit index sets,
padded snippets are treated as zeros that are never read as keys or pooled.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

# seeded test inputs (shared by the test modules)


def rand(seed: int, *shape: int, dtype=torch.float64) -> Tensor:
    """Standard normal values drawn in float64 from ``seed``, then cast: equal for every dtype."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def rand_mask(seed: int, b: int, t: int) -> Tensor:
    """A random validity mask (about 60 % valid) whose first sample starts valid."""
    mask = torch.rand(b, t, generator=torch.Generator().manual_seed(seed)) < 0.6
    mask[0, 0] = True
    return mask


def _f64(*xs: Tensor) -> list[Tensor]:
    return [x.detach().to(torch.float64) for x in xs]


def _mask_or_all(mask: Optional[Tensor], b: int, t: int) -> Tensor:
    return torch.ones(b, t, dtype=torch.bool) if mask is None else mask.cpu()


def sigmoid(x: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def softmax(x: Tensor) -> Tensor:
    e = torch.exp(x - x.max())
    return e / e.sum()


def masked_mean(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    (x,) = _f64(x.cpu())
    b, t, c = x.shape
    mask = _mask_or_all(mask, b, t)
    out = torch.zeros(b, c, dtype=torch.float64)
    for i in range(b):
        rows = [x[i, j] for j in range(t) if mask[i, j]]
        if rows:
            out[i] = sum(rows) / len(rows)
    return out


def conv1d_same(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor], dilation: int = 1
) -> Tensor:
    """Cross-correlation with zero padding; padded snippets read as zeros; outputs zero there."""
    x, weight = _f64(x.cpu(), weight.cpu())
    b, t, _ = x.shape
    mask = _mask_or_all(mask, b, t)
    o, _, k = weight.shape
    half = k // 2
    out = torch.zeros(b, t, o, dtype=torch.float64)
    for i in range(b):
        for j in range(t):
            if not mask[i, j]:
                continue
            acc = (
                torch.zeros(o, dtype=torch.float64) if bias is None else bias.detach().cpu().double().clone()
            )
            for tap in range(k):
                src = j + (tap - half) * dilation
                if 0 <= src < t and mask[i, src]:
                    acc = acc + weight[:, :, tap] @ x[i, src]
            out[i, j] = acc
    return out


def dmf_gate(
    module, rgb: Tensor, flow: Tensor, mask: Optional[Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    rgb, flow = _f64(rgb.cpu(), flow.cpu())
    b, t, _ = rgb.shape
    m = _mask_or_all(mask, b, t)
    p = {k: v.detach().cpu().double() for k, v in module.state_dict().items()}
    alpha = module.alpha
    pooled = masked_mean(rgb, m)
    a_c = torch.stack(
        [
            sigmoid(
                p["channel_fc2.weight"]
                @ torch.relu(p["channel_fc1.weight"] @ pooled[i] + p["channel_fc1.bias"])
                + p["channel_fc2.bias"]
            )
            for i in range(b)
        ]
    )
    hidden = torch.relu(conv1d_same(flow, p["temporal_conv1.weight"], p["temporal_conv1.bias"], m))
    hidden = hidden * m[..., None]
    logits = conv1d_same(hidden, p["temporal_conv2.weight"], p["temporal_conv2.bias"], m)[..., 0]
    a_t = sigmoid(logits) * m
    rgb_plus = torch.zeros_like(rgb)
    flow_plus = torch.zeros_like(flow)
    for i in range(b):
        for j in range(t):
            if m[i, j]:
                rgb_plus[i, j] = rgb[i, j] + alpha * a_t[i, j] * rgb[i, j]
                flow_plus[i, j] = flow[i, j] + alpha * a_c[i] * flow[i, j]
    return rgb_plus, flow_plus, a_c, a_t


def dmf_dot(
    module, rgb: Tensor, flow: Tensor, mask: Optional[Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    rgb, flow = _f64(rgb.cpu(), flow.cpu())
    b, t, _ = rgb.shape
    m = _mask_or_all(mask, b, t)
    p = {k: v.detach().cpu().double() for k, v in module.state_dict().items()}
    alpha, tau = module.alpha, module.temperature
    rgb_c = rgb @ p["rgb_to_flow.weight"].T if "rgb_to_flow.weight" in p else rgb
    wq, wk = p["to_q.weight"], p["to_k.weight"]
    d = wq.shape[0]
    c = flow.shape[-1]
    rgb_plus = torch.zeros_like(rgb)
    flow_plus = torch.zeros_like(flow)
    a_c_all = torch.zeros(b, c, c, dtype=torch.float64)
    a_t_all = torch.zeros(b, t, t, dtype=torch.float64)
    for i in range(b):
        valid = [j for j in range(t) if m[i, j]]
        n = max(len(valid), 1)
        gram = torch.zeros(c, c, dtype=torch.float64)
        for j in valid:
            gram += torch.outer(rgb_c[i, j], rgb_c[i, j])
        a_c = torch.stack([softmax(row) for row in gram / n / tau])
        a_c_all[i] = a_c
        for j in valid:
            flow_plus[i, j] = flow[i, j] + alpha * (a_c @ flow[i, j])
            q = wq @ flow[i, j]
            scores = torch.stack([q @ (wk @ flow[i, s]) / math.sqrt(d) for s in valid])
            weights = softmax(scores)
            a_t_all[i, j, valid] = weights
            enhance = sum(w * rgb[i, s] for w, s in zip(weights, valid))
            rgb_plus[i, j] = rgb[i, j] + alpha * enhance
    return rgb_plus, flow_plus, a_c_all, a_t_all


def concat(module, rgb: Tensor, flow: Tensor, mask: Optional[Tensor]) -> Tensor:
    rgb, flow = _f64(rgb.cpu(), flow.cpu())
    b, t, _ = rgb.shape
    m = _mask_or_all(mask, b, t)
    w = module.proj.weight.detach().cpu().double()
    bias = module.proj.bias.detach().cpu().double()
    out = torch.zeros(b, t, w.shape[0], dtype=torch.float64)
    for i in range(b):
        for j in range(t):
            if m[i, j]:
                out[i, j] = w @ torch.cat([rgb[i, j], flow[i, j]]) + bias
    return out


def mutual(module, rgb: Tensor, flow: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    rgb, flow = _f64(rgb.cpu(), flow.cpu())
    b, t, _ = rgb.shape
    m = _mask_or_all(mask, b, t)
    p = {k: v.detach().cpu().double() for k, v in module.state_dict().items()}
    dim = p["head_rgb.weight"].shape[0]
    fused = torch.zeros(b, t, dim, dtype=torch.float64)
    e_r = torch.zeros(b, t, dim, dtype=torch.float64)
    e_f = torch.zeros(b, t, dim, dtype=torch.float64)
    for i in range(b):
        for j in range(t):
            if m[i, j]:
                e_r[i, j] = torch.relu(p["embed_rgb.weight"] @ rgb[i, j] + p["embed_rgb.bias"])
                e_f[i, j] = torch.relu(p["embed_flow.weight"] @ flow[i, j] + p["embed_flow.bias"])
                fused[i, j] = (
                    p["head_rgb.weight"] @ e_r[i, j] + p["head_rgb.bias"] + p["head_flow.weight"] @ e_f[i, j]
                )
    return fused, e_r, e_f


def mutual_loss(a: Tensor, b: Tensor, mask: Optional[Tensor], reduction: str) -> Tensor:
    a, b = _f64(a.cpu(), b.cpu())
    bs, t, c = a.shape
    m = _mask_or_all(mask, bs, t)
    per = torch.zeros(bs, t, dtype=torch.float64)
    for i in range(bs):
        for j in range(t):
            if m[i, j]:
                per[i, j] = sum((a[i, j, k] - b[i, j, k]) ** 2 for k in range(c)) / c
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / max(int(m.sum()), 1)


def dmf_dot_dense(
    module, rgb: Tensor, flow: Tensor, mask: Optional[Tensor]
) -> tuple[Tensor, Tensor]:
    """``(rgb_plus, flow_plus)`` of :func:`dmf_dot` for long videos: the same formulas, sample by sample,
    as dense float64 matrix products over the valid snippets (the loops above are O(t²) in Python)."""
    rgb, flow = _f64(rgb.cpu(), flow.cpu())
    b, t, _ = rgb.shape
    m = _mask_or_all(mask, b, t)
    p = {k: v.detach().cpu().double() for k, v in module.state_dict().items()}
    alpha, tau = module.alpha, module.temperature
    wq, wk = p["to_q.weight"], p["to_k.weight"]
    rgb_plus, flow_plus = torch.zeros_like(rgb), torch.zeros_like(flow)
    for i in range(b):
        r, f = rgb[i, m[i]], flow[i, m[i]]
        r_c = r @ p["rgb_to_flow.weight"].T if "rgb_to_flow.weight" in p else r
        a_c = torch.softmax(r_c.T @ r_c / max(len(r), 1) / tau, dim=-1)
        flow_plus[i, m[i]] = f + alpha * f @ a_c.T
        a_t = torch.softmax((f @ wq.T) @ (f @ wk.T).T / math.sqrt(wq.shape[0]), dim=-1)
        rgb_plus[i, m[i]] = r + alpha * a_t @ r
    return rgb_plus, flow_plus
