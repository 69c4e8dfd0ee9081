"""The fused path's internals: blocked CPU attention, the oneDNN GEMM route, the CUDA SDPA kernels.

``attend_temporal(fused=True)`` on CPU runs ``dmf_fusion._cpu.BlockedAttention`` (query tiles,
probabilities recomputed in backward); float32 GEMMs on CPU run as oneDNN 1x1 convolutions
(``dmf_fusion._cpu.linear``). Each is
checked against a float64 reference, with tiles forced small so that several tiles, partial last
tiles and accumulation across tiles are exercised.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from dmf_fusion import _cpu
from dmf_fusion import functional as DF

from reference import rand, rand_mask

TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def reference(q, k, v, mask):
    """float64, the obvious way: softmax over valid keys (all keys for a fully padded sample), zero
    rows at padded queries."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    if mask is not None:
        keys = mask | ~mask.any(-1, keepdim=True)
        scores = scores.masked_fill(~keys[:, None, :], float("-inf"))
    out = torch.softmax(scores, -1) @ v
    return out if mask is None else out * mask[..., None]


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of a handful of scores, so every test crosses tile borders."""
    monkeypatch.setattr(_cpu, "ATTENTION_TILE", 24)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@given(
    seed=st.integers(0, 999),
    b=st.integers(1, 3),
    t=st.integers(1, 17),
    d=st.sampled_from([1, 3, 8]),
    c=st.sampled_from([1, 5, 16]),
    masked=st.booleans(),
)
def test_matches_float64_reference(dtype, seed, b, t, d, c, masked):
    torch.manual_seed(0)
    q, k, v = rand(seed, b, t, d, dtype=dtype), rand(seed + 1, b, t, d, dtype=dtype), rand(seed + 2, b, t, c, dtype=dtype)
    mask = rand_mask(seed, b, t) if masked else None
    old = _cpu.ATTENTION_TILE
    try:
        for tile in (24, old):  # several tiles, then one
            _cpu.ATTENTION_TILE = tile
            got = DF.attend_temporal(q, k, v, mask)
            assert got.dtype == dtype
            torch.testing.assert_close(got.double(), reference(q, k, v, mask), atol=TOL[dtype], rtol=TOL[dtype])
    finally:
        _cpu.ATTENTION_TILE = old


def test_tile_rows():
    """A tile never holds more than ATTENTION_TILE scores unless a single query row needs more."""
    for t, s in [(750, 750), (32768, 32768), (100, 1 << 20), (10, 3)]:
        rows = _cpu.attention_rows(t, s)
        assert 1 <= rows <= t
        assert rows == t or rows * s <= _cpu.ATTENTION_TILE or rows == 1
    assert _cpu.attention_rows(750, 750) == 750  # short videos: one tile per sample
    assert _cpu.attention_rows(32768, 32768) == 512


@pytest.mark.parametrize("masked", [True, False], ids=["mask", "nomask"])
def test_gradcheck_across_tiles(small_tiles, masked):
    q, k = rand(0, 2, 7, 3), rand(1, 2, 7, 3)
    v = rand(2, 2, 7, 4)
    mask = None
    if masked:
        mask = rand_mask(3, 2, 7)
        mask[1] = False  # a fully padded sample: zeros out, finite (zero) gradients
    inputs = tuple(x.requires_grad_(True) for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: DF.attend_temporal(a, b, c, mask), inputs)


def assert_float32_grads_match_float64_plain(q, k, v, mask, grad) -> None:
    """Gradients of the fused float32 attention against float64 autograd of the plain path."""
    leaves64 = [x.clone().requires_grad_(True) for x in (q, k, v)]
    want = torch.autograd.grad(DF.attend_temporal(*leaves64, mask, fused=False), leaves64, grad)
    leaves32 = [x.float().requires_grad_(True) for x in (q, k, v)]
    got = torch.autograd.grad(DF.attend_temporal(*leaves32, mask), leaves32, grad.float())
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and torch.isfinite(g).all()
        torch.testing.assert_close(g.double(), w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("masked", [True, False], ids=["mask", "nomask"])
def test_float32_gradients_match_float64_plain(small_tiles, masked):
    """The float32 path (oneDNN GEMMs, softmax backward kernel) against float64 autograd of the plain path."""
    q, k, v = rand(4, 3, 11, 8), rand(5, 3, 11, 8), rand(6, 3, 11, 16)
    mask = rand_mask(7, 3, 11) if masked else None
    if masked:
        mask[2] = False
    grad = rand(8, 3, 11, 16)
    assert_float32_grads_match_float64_plain(q, k, v, mask, grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_inputs_keep_their_dtype(dtype):
    q, k, v = rand(9, 2, 9, 4, dtype=dtype), rand(10, 2, 9, 4, dtype=dtype), rand(11, 2, 9, 6, dtype=dtype)
    mask = rand_mask(12, 2, 9)
    got = DF.attend_temporal(q, k, v, mask)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), reference(q, k, v, mask), atol=TOL[dtype], rtol=TOL[dtype])


def test_non_contiguous_inputs(small_tiles):
    q, k = rand(13, 2, 10, 8)[..., ::2], rand(14, 2, 10, 8)[..., 1::2]
    v = rand(15, 2, 6, 10).transpose(1, 2)  # channel-first storage
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    mask = rand_mask(16, 2, 10)
    for dtype in (torch.float64, torch.float32):
        got = DF.attend_temporal(q.to(dtype), k.to(dtype), v.to(dtype), mask)
        torch.testing.assert_close(got.double(), reference(q, k, v, mask), atol=TOL[dtype], rtol=TOL[dtype])


def test_padded_snippets_change_nothing(small_tiles):
    """Garbage in padded snippets (queries, keys, values) leaves valid outputs unchanged; padded
    outputs and every gradient at padded snippets are zero. (The modules also zero padded snippets
    before attending, which removes NaN there.)"""
    q, k, v = (rand(17 + i, 2, 9, 4, dtype=torch.float32) for i in range(3))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    want = DF.attend_temporal(q, k, v, mask)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[1, 5:], k2[1, 5:], v2[1, 5:] = 1e4, -1e4, 1e6
    leaves = [x.requires_grad_(True) for x in (q2, k2, v2)]
    got = DF.attend_temporal(*leaves, mask)
    torch.testing.assert_close(got, want)
    assert got[1, 5:].eq(0).all()
    for g in torch.autograd.grad(got.sum(), leaves):
        assert torch.isfinite(g).all() and g[1, 5:].eq(0).all()


def test_memory_stays_in_tiles(monkeypatch):
    """Forward and backward never allocate a (t, s) matrix: the largest single allocation is a tile."""
    monkeypatch.setattr(_cpu, "ATTENTION_TILE", 64 * 256)
    t, d, c = 1024, 8, 16
    leaves = [rand(20 + i, 1, t, n, dtype=torch.float32).requires_grad_(True) for i, n in enumerate((d, d, c))]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = DF.attend_temporal(*leaves)
        torch.autograd.grad(out.sum(), leaves)
    largest = max(e.self_cpu_memory_usage for e in prof.events())
    assert 0 < largest < t * t * 4 // 8  # a (t, s) float32 matrix would be 4 MiB; tiles are 64 KiB


def test_autocast_cpu_runs_in_float32():
    q, k, v = (rand(30 + i, 2, 8, 4, dtype=torch.float32) for i in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = DF.attend_temporal(q.bfloat16(), k.bfloat16(), v)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference(q.bfloat16(), k.bfloat16(), v, None), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph(small_tiles, backend):
    q, k, v = (rand(40 + i, 2, 9, 4, dtype=torch.float32) for i in range(3))
    mask = rand_mask(43, 2, 9)
    compiled = torch.compile(DF.attend_temporal, fullgraph=True, backend=backend)
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    got = compiled(*leaves, mask)
    torch.testing.assert_close(got, DF.attend_temporal(q, k, v, mask))
    grads = torch.autograd.grad(got.sum(), leaves)
    leaves_eager = [x.clone().requires_grad_(True) for x in (q, k, v)]
    want = torch.autograd.grad(DF.attend_temporal(*leaves_eager, mask).sum(), leaves_eager)
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w)


# --------------------------------------------------------------------------------------------------
# the oneDNN GEMM route


@pytest.mark.parametrize("shape", [(7, 5), (3, 7, 5), (1, 1, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_route_matches_f_linear(shape, bias):
    x = rand(50, *shape, dtype=torch.float32).requires_grad_(True)
    w = rand(51, 6, 5, dtype=torch.float32).requires_grad_(True)
    b = rand(52, 6, dtype=torch.float32).requires_grad_(True) if bias else None
    got, want = _cpu.linear(x, w, b), F.linear(x, w, b)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want)
    leaves = [t for t in (x, w, b) if t is not None]
    g = rand(53, *want.shape, dtype=torch.float32)
    for a, e in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(want, leaves, g)):
        torch.testing.assert_close(a, e)


def test_linear_route_non_contiguous_input():
    x = rand(54, 4, 9, 10, dtype=torch.float32)[..., ::2]
    w = rand(55, 3, 5, dtype=torch.float32)
    torch.testing.assert_close(_cpu.linear(x, w), F.linear(x, w))


# --------------------------------------------------------------------------------------------------
# CUDA: scaled-dot-product attention kernels


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_cuda_uses_flash_or_efficient_kernels(dtype, masked):
    """With the math kernel disabled, the fused path still runs: flash without a mask, the
    memory-efficient kernel with one (value channels split into heads of width d)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k = (rand(60 + i, 2, 256, 64, dtype=dtype).cuda() for i in range(2))
    v = rand(62, 2, 256, 1000, dtype=dtype).cuda()  # not a multiple of d: zero-padded heads
    mask = rand_mask(63, 2, 256).cuda() if masked else None
    backends = [SDPBackend.EFFICIENT_ATTENTION] if masked else [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    with sdpa_kernel(backends):
        got = DF.attend_temporal(q, k, v, mask)
    assert got.dtype == dtype
    want = reference(q.cpu(), k.cpu(), v.cpu(), None if mask is None else mask.cpu())
    torch.testing.assert_close(got.double().cpu(), want, atol=TOL[dtype] * 3, rtol=TOL[dtype] * 3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_cuda_autocast_backward_runs_on_fused_kernels(dtype):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k = (rand(70 + i, 2, 128, 64, dtype=torch.float32).cuda().requires_grad_(True) for i in range(2))
    v = rand(72, 2, 128, 256, dtype=torch.float32).cuda().requires_grad_(True)
    mask = rand_mask(73, 2, 128).cuda()
    with torch.autocast("cuda", dtype=dtype), sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        out = DF.attend_temporal(q, k, v, mask)
        grads = torch.autograd.grad(out.float().sum(), [q, k, v])
    assert out.dtype == dtype
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_residual_form_across_tiles(small_tiles, dtype):
    """The modules' form ``v + alpha * A_t v`` (residual in the output pass), values and gradients."""
    q, k, v = rand(80, 3, 10, 4), rand(81, 3, 10, 4), rand(82, 3, 10, 6)
    mask = rand_mask(83, 3, 10)
    mask[2] = False
    v = DF.zero_padding(v, mask)  # the residual form expects zero padding, as the modules provide
    grad = rand(84, 3, 10, 6)
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    want = leaves[2] * mask[..., None] + 0.7 * DF.attend_temporal(*leaves, mask, fused=False)
    want_grads = torch.autograd.grad(want, leaves, grad)
    leaves_d = [x.to(dtype).requires_grad_(True) for x in (q, k, v)]
    got = _cpu.attend(*leaves_d, mask, alpha=0.7, residual=True)
    tol = TOL[dtype] * 10
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)
    for g, w in zip(torch.autograd.grad(got, leaves_d, grad.to(dtype)), want_grads):
        torch.testing.assert_close(g.double(), w, atol=tol * 10, rtol=tol * 10)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(lambda a, b, c: _cpu.attend(a, b, c, mask, alpha=0.7, residual=True), tuple(leaves_d))


def test_tiled_transpose():
    """The cache-tiled (b, t, c) -> (b, c, t) copy, with several tiles and a partial last one."""
    x = rand(90, 2, 21, 4096, dtype=torch.float32)  # tiles of 8 rows
    y = _cpu.transpose_tiles(x)
    assert y.is_contiguous()
    torch.testing.assert_close(y, x.transpose(1, 2), rtol=0, atol=0)


@pytest.mark.parametrize("masked", [True, False], ids=["mask", "nomask"])
def test_channel_half_float32_gradients(masked):
    """The float32 channel half (oneDNN GEMMs, the Gram's symmetric backward, the residual folded into
    the apply weight) against float64 autograd of the plain path."""
    rgb, flow = rand(98, 3, 9, 6), rand(99, 3, 9, 6)
    mask = rand_mask(100, 3, 9) if masked else None
    grad = rand(101, 3, 9, 6)
    leaves64 = [x.clone().requires_grad_(True) for x in (rgb, flow)]
    want_out = DF.channel_enhance_dot(*leaves64, mask, alpha=0.7, temperature=2.0, fused=False)
    want = torch.autograd.grad(want_out, leaves64, grad)
    leaves32 = [x.float().requires_grad_(True) for x in (rgb, flow)]
    got_out = DF.channel_enhance_dot(*leaves32, mask, alpha=0.7, temperature=2.0)
    torch.testing.assert_close(got_out.double(), want_out, atol=1e-5, rtol=1e-5)
    for g, w in zip(torch.autograd.grad(got_out, leaves32, grad.float()), want):
        torch.testing.assert_close(g.double(), w, atol=1e-5, rtol=1e-4)


def test_slab_permute_copies():
    x = rand(92, 37, 3, 5, dtype=torch.float32)  # 3 slabs of 16 rows, the last one partial
    for dims in [(2, 1, 0), (1, 2, 0)]:
        torch.testing.assert_close(_cpu.to_last(x, dims), x.permute(dims), rtol=0, atol=0)


@pytest.mark.parametrize("masked", [True, False], ids=["mask", "nomask"])
def test_float32_one_long_tile(masked):
    """One tile of 40 query rows: the key-major slab copies of the dv GEMM on the oneDNN route."""
    q, k, v = rand(93, 2, 40, 8), rand(94, 2, 40, 8), rand(95, 2, 40, 12)
    mask = rand_mask(96, 2, 40) if masked else None
    grad = rand(97, 2, 40, 12)
    assert_float32_grads_match_float64_plain(q, k, v, mask, grad)

