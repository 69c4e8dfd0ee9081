"""The attention core in ``dmf_fusion.functional``: each function, fused and plain, against float64."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dmf_fusion import functional as DF

import reference as ref
from reference import rand, rand_mask

PATHS = pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])


def attention_reference(q, k, v, mask):
    """out[b, t] = sum over valid s of softmax(q_t . k_s / sqrt(d)) v_s; zero rows for padded t."""
    b, t, d = q.shape
    out = torch.zeros(b, t, v.shape[-1], dtype=torch.float64)
    for i in range(b):
        valid = [s for s in range(t) if mask[i, s]]
        for j in valid:
            scores = torch.stack([q[i, j].double() @ k[i, s].double() / math.sqrt(d) for s in valid])
            w = ref.softmax(scores)
            out[i, j] = sum(wi * v[i, s].double() for wi, s in zip(w, valid))
    return out


@given(seed=st.integers(0, 999), b=st.integers(1, 3), t=st.integers(1, 12), c=st.integers(1, 6))
def test_masked_mean(seed, b, t, c):
    x, mask = rand(seed, b, t, c), rand_mask(seed, b, t)
    torch.testing.assert_close(DF.masked_mean(x, mask), ref.masked_mean(x, mask))
    torch.testing.assert_close(DF.masked_mean(x), x.mean(1))


@PATHS
@given(
    seed=st.integers(0, 999),
    t=st.integers(1, 12),
    k=st.sampled_from([1, 3, 5]),
    bias=st.booleans(),
    dilation=st.sampled_from([1, 2, 4]),
)
def test_temporal_conv1d(fused, seed, t, k, bias, dilation):
    x, mask = rand(seed, 2, t, 3), rand_mask(seed, 2, t)
    w = rand(seed + 1, 4, 3, k)
    b = rand(seed + 2, 4) if bias else None
    torch.testing.assert_close(
        DF.temporal_conv1d(x, w, b, mask, dilation=dilation, fused=fused),
        ref.conv1d_same(x, w, b, mask, dilation),
    )


def test_temporal_conv1d_rejects_a_bad_dilation():
    with pytest.raises(ValueError, match="dilation must be a positive int, got 0"):
        DF.temporal_conv1d(rand(0, 1, 4, 3), rand(1, 2, 3, 3), dilation=0)


def test_temporal_conv1d_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd kernel size"):
        DF.temporal_conv1d(rand(0, 1, 4, 3), rand(1, 2, 3, 2))


@PATHS
@pytest.mark.parametrize("bias", [True, False])
def test_concat_linear(fused, bias):
    rgb, flow = rand(0, 2, 7, 5), rand(1, 2, 7, 3)
    w, b = rand(2, 4, 8), (rand(3, 4) if bias else None)
    want = torch.cat([rgb, flow], -1) @ w.T + (0 if b is None else b)
    torch.testing.assert_close(DF.concat_linear(rgb, flow, w, b, fused=fused), want)


@PATHS
@given(
    seed=st.integers(0, 999), t=st.integers(1, 10), d=st.sampled_from([2, 3, 4]), c=st.sampled_from([1, 4, 7])
)
def test_attend_temporal(fused, seed, t, d, c):
    """Value widths that are not a multiple of d exercise the head split with zero padding."""
    q, k, v = rand(seed, 2, t, d), rand(seed + 1, 2, t, d), rand(seed + 2, 2, t, c)
    mask = rand_mask(seed, 2, t)
    torch.testing.assert_close(
        DF.attend_temporal(q, k, v, mask, fused=fused), attention_reference(q, k, v, mask)
    )
    full = torch.ones(2, t, dtype=torch.bool)
    torch.testing.assert_close(
        DF.attend_temporal(q, k, v, None, fused=fused), attention_reference(q, k, v, full)
    )


@PATHS
def test_attend_temporal_gradcheck(fused):
    q, k, v = (rand(i, 2, 6, 3).requires_grad_(True) for i in range(3))
    mask = rand_mask(4, 2, 6)
    mask[1] = False  # a fully padded sample must have finite (zero) gradients
    assert torch.autograd.gradcheck(lambda a, b, c: DF.attend_temporal(a, b, c, mask, fused=fused), (q, k, v))


def test_temporal_attention_dot_rows():
    q, k = rand(0, 2, 6, 3), rand(1, 2, 6, 3)
    mask = rand_mask(2, 2, 6)
    attn = DF.temporal_attention_dot(q, k, mask)
    torch.testing.assert_close(attn.sum(-1), mask.double())
    assert attn.masked_select(~mask[:, None, :]).eq(0).all()


@PATHS
@given(seed=st.integers(0, 999), t=st.integers(1, 10), tau=st.sampled_from([0.5, 1.0, 3.0]))
def test_channel_enhance_dot(fused, seed, t, tau):
    rgb, flow, mask = rand(seed, 2, t, 4), rand(seed + 1, 2, t, 4), rand_mask(seed, 2, t)
    got = DF.channel_enhance_dot(rgb, flow, mask, alpha=0.3, temperature=tau, fused=fused)
    want = torch.zeros_like(flow)
    for i in range(2):
        valid = mask[i]
        r = rgb[i, valid]
        a = torch.softmax(r.T @ r / max(int(valid.sum()), 1) / tau, -1)
        want[i, valid] = flow[i, valid] + 0.3 * flow[i, valid] @ a.T
    torch.testing.assert_close(got, want)


def test_channel_attention_dot_long_float16_video_stays_finite():
    """Scaling before the Gram GEMM keeps float16 scores at mean magnitude on long videos."""
    rgb = (rand(0, 1, 4096, 8) * 30).half()
    attn = DF.channel_attention_dot(rgb)
    assert torch.isfinite(attn).all()
    torch.testing.assert_close(attn.double(), DF.channel_attention_dot(rgb.double()), atol=2e-2, rtol=0)


def test_gate_attentions_in_unit_interval():
    rgb, flow, mask = rand(0, 2, 9, 6), rand(1, 2, 9, 6), rand_mask(2, 2, 9)
    a_c = DF.channel_attention_gate(rgb, mask, rand(3, 3, 6), rand(4, 3), rand(5, 6, 3), None)
    a_t = DF.temporal_attention_gate(flow, mask, [rand(6, 3, 6, 3), rand(7, 1, 3, 3)], [None, rand(8, 1)])
    assert a_c.shape == (2, 6) and ((a_c > 0) & (a_c < 1)).all()
    assert a_t.shape == (2, 9) and ((a_t > 0) & (a_t < 1))[mask].all() and a_t[~mask].eq(0).all()
    with pytest.raises(ValueError, match="weights and biases"):
        DF.temporal_attention_gate(flow, mask, [rand(6, 3, 6, 3)], [])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mutual_loss_function(reduction):
    a, b, mask = rand(0, 2, 5, 3), rand(1, 2, 5, 3), rand_mask(2, 2, 5)
    torch.testing.assert_close(
        DF.mutual_loss(a, b, mask, reduction=reduction), ref.mutual_loss(a, b, mask, reduction)
    )
    with pytest.raises(ValueError, match="reduction must be one of"):
        DF.mutual_loss(a, b, reduction="max")
