"""The four public blocks against the float64 references in ``reference.py``, plus their properties."""

from __future__ import annotations

import inspect
import io
import pydoc
from typing import Optional

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dmf_fusion import ConcatFusion, DMFDot, DMFGate, DualModalityFusion, MutualFusion, MutualLoss

import reference as ref

# atol/rtol per input dtype, against the float64 reference (xformers-style table)
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (1.5e-2, 1.5e-2),
    torch.bfloat16: (8e-2, 8e-2),
}
DTYPES = list(TOL)
ATTENTIONS = ["gate", "dot"]
FORM_OPTIONS = {"gate": {"reduction": 2}, "dot": {"attn_dim": 4}}


def make_inputs(
    seed: int, b: int, t: int, c_rgb: int, c_flow: int, dtype=torch.float32, masked: bool = True, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randn(b, t, c_rgb, generator=g, dtype=torch.float64)
    flow = torch.randn(b, t, c_flow, generator=g, dtype=torch.float64)
    mask = None
    if masked:
        mask = torch.rand(b, t, generator=g) < 0.7
        mask[0, 0] = True  # at least one valid snippet somewhere
    return rgb.to(device, dtype), flow.to(device, dtype), None if mask is None else mask.to(device)


def make_module(kind: str, c_rgb: int, c_flow: int, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    if kind in ATTENTIONS:
        module = DualModalityFusion(c_rgb, c_flow, attention=kind, alpha=0.7, **FORM_OPTIONS[kind], **kwargs)
    elif kind == "concat":
        module = ConcatFusion(c_rgb, c_flow, 5, **kwargs)
    else:
        module = MutualFusion(c_rgb, c_flow, 6, **kwargs)
    # non-trivial biases, so "padded outputs are zero" is tested, not given for free
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    return module


def reference_outputs(kind: str, module, rgb, flow, mask) -> list[torch.Tensor]:
    if kind == "gate":
        return list(ref.dmf_gate(module, rgb, flow, mask))
    if kind == "dot":
        return list(ref.dmf_dot(module, rgb, flow, mask))
    if kind == "concat":
        return [ref.concat(module, rgb, flow, mask)]
    return list(ref.mutual(module, rgb, flow, mask))


def outputs(kind: str, module, rgb, flow, mask) -> list[torch.Tensor]:
    if kind in ATTENTIONS:
        return list(module(rgb, flow, mask, return_attention=True))
    out = module(rgb, flow, mask)
    return [out] if kind == "concat" else list(out)


KINDS = ["gate", "dot", "concat", "mutual"]
shapes = st.tuples(
    st.integers(0, 2**16),  # seed
    st.integers(1, 3),  # batch
    st.integers(1, 9),  # time
    st.sampled_from([(4, 4), (6, 4), (8, 8)]),  # (c_rgb, c_flow)
    st.booleans(),  # masked
)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("kind", KINDS)
@given(case=shapes)
def test_matches_float64_reference(kind, fused, case):
    seed, b, t, (c_rgb, c_flow), masked = case
    module = make_module(kind, c_rgb, c_flow, seed, fused=fused)
    rgb, flow, mask = make_inputs(seed, b, t, c_rgb, c_flow, masked=masked)
    got = outputs(kind, module, rgb, flow, mask)
    want = reference_outputs(kind, module, rgb, flow, mask)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, atol=TOL[torch.float32][0], rtol=TOL[torch.float32][1])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("kind", KINDS)
def test_dtypes_match_reference_and_are_preserved(kind, fused, dtype, device):
    module = make_module(kind, 8, 8, fused=fused).to(device)
    rgb, flow, mask = make_inputs(3, 2, 7, 8, 8, dtype=dtype, device=device)
    got = outputs(kind, module, rgb, flow, mask)
    want = reference_outputs(kind, module, rgb, flow, mask)
    atol, rtol = TOL[dtype]
    for g, w in zip(got, want):
        assert g.dtype == dtype
        assert g.device.type == device
        torch.testing.assert_close(g.double().cpu(), w, atol=atol, rtol=rtol)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_equals_plain(kind):
    module = make_module(kind, 8, 8)
    rgb, flow, mask = make_inputs(11, 3, 13, 8, 8)
    fused = outputs(kind, module, rgb, flow, mask)
    module.fused = False
    plain = outputs(kind, module, rgb, flow, mask)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("masked", [True, False], ids=["mask", "nomask"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, fused, masked):
    module = make_module(kind, 4, 4, fused=fused).double()
    rgb, flow, mask = make_inputs(5, 2, 5, 4, 4, dtype=torch.float64, masked=masked)
    rgb.requires_grad_(True)
    flow.requires_grad_(True)

    def fn(r, f):
        return tuple(outputs(kind, module, r, f, mask))

    assert torch.autograd.gradcheck(fn, (rgb, flow), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_invariance(kind):
    module = make_module(kind, 8, 8)
    rgb, flow, mask = make_inputs(2, 4, 10, 8, 8)
    batched = outputs(kind, module, rgb, flow, mask)
    for i in range(4):
        alone = outputs(kind, module, rgb[i : i + 1], flow[i : i + 1], mask[i : i + 1])
        for a, b in zip(alone, batched):
            torch.testing.assert_close(a[0], b[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("kind", KINDS)
def test_padding_invariance_with_nan_in_padding(kind, fused):
    """Appending padded snippets full of NaN changes no valid output and leaves zeros there."""
    module = make_module(kind, 8, 8, fused=fused)
    rgb, flow, _ = make_inputs(4, 2, 9, 8, 8, masked=False)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    short = outputs(kind, module, rgb, flow, mask)
    pad = torch.full((2, 5, 8), float("nan"))
    long_rgb, long_flow = torch.cat([rgb, pad], 1), torch.cat([flow, pad], 1)
    rgb_nan, flow_nan = long_rgb.clone(), long_flow.clone()
    rgb_nan[1, 6:9] = float("nan")
    flow_nan[1, 6:9] = float("inf")
    long_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], 1)
    long = outputs(kind, module, rgb_nan, flow_nan, long_mask)
    for s, lo in zip(short, long):
        assert torch.isfinite(lo).all()
        if kind == "dot" and lo.dim() == 3 and lo.shape[1] == lo.shape[2] == 14:  # (b, t, s) map
            torch.testing.assert_close(lo[:, :9, :9], s, atol=1e-6, rtol=1e-5)
            assert lo[:, 9:].eq(0).all() and lo[:, :, 9:].eq(0).all()
        elif lo.dim() == 3 and lo.shape[1] == 14:  # (b, t, c) features
            torch.testing.assert_close(lo[:, :9][mask], s[mask], atol=1e-6, rtol=1e-5)
            assert lo[~long_mask].eq(0).all()
        elif lo.dim() == 2 and lo.shape[1] == 14:  # gate temporal attention (b, t)
            torch.testing.assert_close(lo[:, :9], s)
        else:  # channel attention does not depend on time length
            torch.testing.assert_close(lo, s, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_fully_padded_row_gives_zeros_and_finite_gradients(kind):
    module = make_module(kind, 8, 8)
    rgb, flow, _ = make_inputs(6, 2, 5, 8, 8, masked=False)
    rgb.requires_grad_(True)
    flow.requires_grad_(True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1] = False
    outs = outputs(kind, module, rgb, flow, mask)
    sum(o.sum() for o in outs).backward()
    assert outs[0][1].eq(0).all()
    assert outs[0][0].ne(0).any()
    for t in (rgb.grad, flow.grad, *[p.grad for p in module.parameters() if p.grad is not None]):
        assert torch.isfinite(t).all()
    assert rgb.grad[1].eq(0).all()


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_alpha_zero_is_exact_identity(attention, fused):
    module = DualModalityFusion(8, 8, attention=attention, alpha=0.0, fused=fused)
    rgb, flow, mask = make_inputs(7, 3, 11, 8, 8)
    out = module(rgb, flow)
    assert torch.equal(out.rgb, rgb) and torch.equal(out.flow, flow)
    out = module(rgb, flow, mask)
    assert torch.equal(out.rgb[mask], rgb[mask]) and torch.equal(out.flow[mask], flow[mask])
    assert out.rgb[~mask].eq(0).all()
    # and a non-zero alpha really changes the features
    module.alpha = 0.5
    assert not torch.equal(module(rgb, flow).rgb, rgb)


@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous_inputs(kind):
    module = make_module(kind, 8, 8)
    rgb, flow, mask = make_inputs(8, 3, 10, 8, 8)
    rgb_nc = rgb.transpose(1, 2).contiguous().transpose(1, 2)  # channel-first storage
    flow_nc = torch.randn(3, 10, 16)[..., ::2]
    flow_nc.copy_(flow)
    assert not rgb_nc.is_contiguous() and not flow_nc.is_contiguous()
    for a, b in zip(outputs(kind, module, rgb_nc, flow_nc, mask), outputs(kind, module, rgb, flow, mask)):
        torch.testing.assert_close(a, b)


def test_time_permutation_equivariance_of_dot_form():
    """Without temporal convolutions, the dot form commutes with shuffling the snippets."""
    module = make_module("dot", 8, 8)
    rgb, flow, mask = make_inputs(9, 2, 12, 8, 8)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    out = module(rgb, flow, mask)
    out_p = module(rgb[:, perm], flow[:, perm], mask[:, perm])
    torch.testing.assert_close(out_p.rgb, out.rgb[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_p.flow, out.flow[:, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_torch_compile_fullgraph(kind):
    module = make_module(kind, 8, 8)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    rgb, flow, mask = make_inputs(10, 2, 6, 8, 8)
    for a, b in zip(outputs(kind, compiled, rgb, flow, mask), outputs(kind, module, rgb, flow, mask)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_and_determinism(kind):
    module = make_module(kind, 8, 8, seed=1)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    other = make_module(kind, 8, 8, seed=2)
    rgb, flow, mask = make_inputs(12, 2, 6, 8, 8)
    assert not torch.equal(outputs(kind, other, rgb, flow, mask)[0], outputs(kind, module, rgb, flow, mask)[0])
    other.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(outputs(kind, other, rgb, flow, mask), outputs(kind, module, rgb, flow, mask)):
        assert torch.equal(a, b)


def test_dot_with_different_widths_projects_rgb():
    module = make_module("dot", 6, 4)
    assert module.rgb_to_flow is not None
    rgb, flow, mask = make_inputs(13, 2, 5, 6, 4)
    out = module(rgb, flow, mask, return_attention=True)
    assert out.channel_attention.shape == (2, 4, 4) and out.temporal_attention.shape == (2, 5, 5)
    torch.testing.assert_close(out.channel_attention.sum(-1), torch.ones(2, 4))


def test_mutual_dropout_only_in_training():
    module = MutualFusion(8, 8, 16, dropout=0.5)
    rgb, flow, _ = make_inputs(14, 2, 6, 8, 8, masked=False)
    module.eval()
    assert torch.equal(module(rgb, flow).fused, module(rgb, flow).fused)
    module.train()
    assert not torch.equal(module(rgb, flow).fused, module(rgb, flow).fused)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@given(case=shapes)
def test_mutual_embed_matches_reference_and_forward(fused, case):
    seed, b, t, (c_rgb, c_flow), masked = case
    module = make_module("mutual", c_rgb, c_flow, seed, fused=fused, dropout=0.5).train()
    rgb, flow, mask = make_inputs(seed, b, t, c_rgb, c_flow, masked=masked)
    rgb_embed, flow_embed = module.embed(rgb, flow, mask)
    _, want_rgb, want_flow = ref.mutual(module, rgb, flow, mask)
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(rgb_embed.double(), want_rgb, atol=atol, rtol=rtol)
    torch.testing.assert_close(flow_embed.double(), want_flow, atol=atol, rtol=rtol)
    # the embeddings the forward pass gives MutualLoss, dropout (after them) notwithstanding
    out = module(rgb, flow, mask)
    assert torch.equal(out.rgb_embed, rgb_embed) and torch.equal(out.flow_embed, flow_embed)


def test_reset_parameters_and_repr():
    for module in (DualModalityFusion(8, 8), DualModalityFusion(8, 8, attention="dot"), ConcatFusion(8, 8), MutualFusion(8, 8, 4)):
        before = [p.clone() for p in module.parameters()]
        module.reset_parameters()
        assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
        assert "fused=True" in repr(module)


# --------------------------------------------------------------------------------------------------
# MutualLoss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(case=shapes)
def test_mutual_loss_matches_reference(reduction, case):
    seed, b, t, (c, _), masked = case
    a, e, mask = make_inputs(seed, b, t, c, c, masked=masked)
    for stop_gradient in (False, True):
        got = MutualLoss(stop_gradient=stop_gradient, reduction=reduction)(a, e, mask)
        torch.testing.assert_close(got.double(), ref.mutual_loss(a, e, mask, reduction), atol=1e-5, rtol=1e-5)


def test_mutual_loss_zero_iff_embeddings_agree():
    a, e, mask = make_inputs(15, 2, 6, 8, 8)
    loss = MutualLoss()
    assert loss(a, a.clone(), mask) == 0
    assert loss(a, e, mask) > 0
    # differences only at padded snippets do not count
    b = a.clone()
    b[~mask] += 100.0
    assert loss(a, b, mask) == 0
    assert loss(a, b) > 0


def test_mutual_loss_stop_gradient_splits_the_pull():
    a, e, mask = make_inputs(16, 2, 6, 8, 8)
    grads = {}
    for sg in (False, True):
        x, y = a.clone().requires_grad_(True), e.clone().requires_grad_(True)
        MutualLoss(stop_gradient=sg)(x, y, mask).backward()
        grads[sg] = (x.grad, y.grad)
    torch.testing.assert_close(grads[True][0], 0.5 * grads[False][0])
    torch.testing.assert_close(grads[True][1], 0.5 * grads[False][1])
    assert grads[False][0].abs().sum() > 0


def test_mutual_loss_fully_masked_is_zero_not_nan():
    a, e, _ = make_inputs(17, 2, 4, 8, 8, masked=False)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    assert MutualLoss()(a, e, mask) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_runs_under_autocast(kind, device):
    """Under autocast the blocks run (GEMMs in bfloat16) and stay close to the float32 result."""
    module = make_module(kind, 8, 8).to(device)
    rgb, flow, mask = make_inputs(18, 2, 9, 8, 8, device=device)
    want = outputs(kind, module, rgb, flow, mask)
    with torch.autocast(device, dtype=torch.bfloat16):
        got = outputs(kind, module, rgb, flow, mask)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g.float(), w, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("kind", KINDS)
def test_float16_stays_finite_on_large_features(kind, device):
    """Features of magnitude ~1000 in float16: scores that would overflow 65504 are formed in float32."""
    module = make_module(kind, 64, 64).to(device)
    rgb, flow, mask = make_inputs(19, 2, 40, 64, 64, device=device)
    rgb, flow = (1000 * rgb).half(), (1000 * flow).half()
    for out in outputs(kind, module, rgb, flow, mask):
        assert out.dtype == torch.float16
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_dot_float16_long_video_matches_float64(fused):
    """8,192 snippets of I3D-like features (non-negative, mean 2.4, as after I3D's ReLU and pooling) in
    float16: an entry of the channel Gram matrix sums 8,192 products near 6, far past float16's 65504.
    Both paths stay finite and match the float64 formulas on the same float16 inputs."""
    t, c = 8192, 32
    module = make_module("dot", c, c, fused=fused)
    rgb, flow = (3 * ref.rand(40 + i, 1, t, c).abs() for i in range(2))
    mask = torch.ones(1, t, dtype=torch.bool)
    mask[0, 8000:] = False
    rgb, flow = rgb.half(), flow.half()
    want = ref.dmf_dot_dense(module, rgb, flow, mask)
    atol, rtol = TOL[torch.float16]
    for got, w in zip(module(rgb, flow, mask), want):
        assert got.dtype == torch.float16 and torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), w, atol=atol, rtol=rtol)


def test_dmf_outputs_keep_the_input_dtype_under_autocast():
    """Both DMF outputs keep the input dtype under autocast, so the next block accepts the pair."""
    for attention in ATTENTIONS:
        module = make_module(attention, 8, 8)
        rgb, flow, mask = make_inputs(20, 2, 9, 8, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(rgb, flow, mask)
            assert out.rgb.dtype == out.flow.dtype == torch.float32
            MutualFusion(8, 8, 4)(out.rgb, out.flow, mask)


@pytest.mark.parametrize(
    ("cls", "names"),
    [
        (DualModalityFusion, ["dim_rgb", "dim_flow", "alpha", "attention", "fused", "options"]),
        (DMFGate, ["dim_rgb", "dim_flow", "alpha", "reduction", "kernel_size", "fused", "device", "dtype"]),
        (DMFDot, ["dim_rgb", "dim_flow", "alpha", "attn_dim", "temperature", "fused", "device", "dtype"]),
    ],
)
def test_constructor_signatures_name_the_real_parameters(cls, names):
    """``inspect.signature`` and ``help()`` show each class's parameters, not the metaclass's
    ``(*args, **kwargs)``; every named parameter is accepted by the constructor."""
    signature = inspect.signature(cls)
    assert list(signature.parameters) == names
    assert signature.parameters["alpha"].default == 0.5
    assert "dim_rgb" in pydoc.render_doc(cls)
    options = {"attention": "dot"} if cls is DualModalityFusion else {}
    assert isinstance(cls(8, 8, alpha=0.25, fused=False, **options), DualModalityFusion)


def test_instance_signature_is_not_the_constructor():
    """The metaclass's ``__signature__`` answers for the class only: an instance is called as a module."""
    module = DualModalityFusion(8, 8)
    assert "dim_rgb" not in inspect.signature(module).parameters
    assert "rgb" in inspect.signature(module.forward).parameters
