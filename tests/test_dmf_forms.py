"""The two DMF forms as two classes behind one constructor, old checkpoints, and the public ops they call.

``DualModalityFusion(dim_rgb, dim_flow, attention=...)`` hands out a :class:`DMFGate` or a
:class:`DMFDot`, both subclasses of ``DualModalityFusion``. Checkpoints written before the split (one
class, keys below, recorded from that code) load into both, and the loaded module matches the
float64 reference.
"""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from dmf_fusion import DMFDot, DMFGate, DualModalityFusion
from dmf_fusion import functional as DF

import reference as ref
from reference import rand, rand_mask

# state_dict keys and shapes of DualModalityFusion(8, 6, reduction=2, attn_dim=4, attention=...) as the
# single-class code (before DMFGate / DMFDot) wrote them
OLD_CHECKPOINTS = {
    "gate": {
        "channel_fc1.weight": (4, 8),
        "channel_fc1.bias": (4,),
        "channel_fc2.weight": (6, 4),
        "channel_fc2.bias": (6,),
        "temporal_conv1.weight": (3, 6, 3),
        "temporal_conv1.bias": (3,),
        "temporal_conv2.weight": (1, 3, 3),
        "temporal_conv2.bias": (1,),
    },
    "dot": {
        "rgb_to_flow.weight": (6, 8),
        "to_q.weight": (4, 6),
        "to_k.weight": (4, 6),
    },
}
REFERENCE = {"gate": ref.dmf_gate, "dot": ref.dmf_dot}


def test_constructor_hands_out_the_form():
    gate, dot = DualModalityFusion(8, 8), DualModalityFusion(8, 8, attention="dot")
    assert type(gate) is DMFGate and type(dot) is DMFDot
    for m, kind in ((gate, "gate"), (dot, "dot")):
        assert isinstance(m, DualModalityFusion) and m.attention == kind
    assert isinstance(DMFGate(8, 8), DualModalityFusion) and type(DMFGate(8, 8)) is DMFGate


FORM_OPTIONS = {"gate": {"reduction": 2}, "dot": {"attn_dim": 4}}


def test_each_class_has_its_own_parameters_and_repr():
    gate = DualModalityFusion(8, 8, attention="gate", reduction=2, kernel_size=5)
    dot = DualModalityFusion(8, 8, attention="dot", attn_dim=4, temperature=2.0)
    assert (gate.reduction, gate.kernel_size) == (2, 5) and not hasattr(gate, "attn_dim")
    assert (dot.attn_dim, dot.temperature) == (4, 2.0) and not hasattr(dot, "reduction")
    assert repr(gate).startswith("DMFGate(") and repr(dot).startswith("DMFDot(")
    assert gate.extra_repr() == "8, 8, alpha=0.5, reduction=2, kernel_size=5, fused=True"
    assert dot.extra_repr() == "8, 8, alpha=0.5, attn_dim=4, temperature=2.0, fused=True"
    assert DMFGate.__doc__ != DMFDot.__doc__
    with pytest.raises(TypeError, match="attn_dim"):
        DMFGate(8, 8, attn_dim=4)  # the classes themselves take only their own options
    with pytest.raises(TypeError, match="reduction"):
        DMFDot(8, 8, reduction=2)


@pytest.mark.parametrize(
    "attention, option, value, other",
    [
        ("gate", "temperature", 2.0, "dot"),
        ("gate", "attn_dim", 4, "dot"),
        ("dot", "reduction", 2, "gate"),
        ("dot", "kernel_size", 5, "gate"),
    ],
)
def test_constructor_refuses_the_other_forms_option(attention, option, value, other):
    """An option of the form not chosen would have no effect: refused, naming it and both forms."""
    with pytest.raises(TypeError) as info:
        DualModalityFusion(8, 8, attention=attention, **{option: value})
    message = str(info.value)
    for word in (f"{option}={value!r}", f"attention={other!r}", f"attention={attention!r}"):
        assert word in message, (word, message)
    if attention == "gate":  # the default form refuses it too
        with pytest.raises(TypeError, match=option):
            DualModalityFusion(8, 8, **{option: value})
    # the form that has the option takes it
    assert getattr(DualModalityFusion(8, 8, attention=other, **{option: value}), option) == value


def test_forms_equal_the_constructor_with_the_same_seed():
    rgb, flow, mask = rand(1, 2, 7, 8), rand(2, 2, 7, 6), rand_mask(3, 2, 7)
    for kind, cls, opts in (("gate", DMFGate, {"reduction": 2}), ("dot", DMFDot, {"attn_dim": 4})):
        torch.manual_seed(0)
        a = DualModalityFusion(8, 6, attention=kind, dtype=torch.float64, **opts)
        torch.manual_seed(0)
        b = cls(8, 6, dtype=torch.float64, **opts)
        for x, y in zip(a(rgb, flow, mask, return_attention=True), b(rgb, flow, mask, return_attention=True)):
            assert torch.equal(x, y)


@pytest.mark.parametrize("kind", ["gate", "dot"])
def test_old_checkpoint_loads(kind):
    """A state_dict with the key set of the single-class code loads strictly and gives the reference."""
    g = torch.Generator().manual_seed(7)
    old = {name: torch.randn(shape, generator=g) for name, shape in OLD_CHECKPOINTS[kind].items()}
    buffer = io.BytesIO()
    torch.save(old, buffer)
    buffer.seek(0)
    for module in (
        DualModalityFusion(8, 6, attention=kind, alpha=0.7, **FORM_OPTIONS[kind]),
        (DMFGate(8, 6, reduction=2, alpha=0.7) if kind == "gate" else DMFDot(8, 6, attn_dim=4, alpha=0.7)),
    ):
        assert list(module.state_dict()) == list(OLD_CHECKPOINTS[kind])
        buffer.seek(0)
        module.load_state_dict(torch.load(buffer, weights_only=True))  # strict
        rgb, flow, mask = rand(8, 2, 9, 8, dtype=torch.float32), rand(9, 2, 9, 6, dtype=torch.float32), rand_mask(10, 2, 9)
        got = module(rgb, flow, mask, return_attention=True)
        for a, b in zip(got, REFERENCE[kind](module, rgb, flow, mask)):
            torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("kind", ["gate", "dot"])
def test_whole_module_pickles(kind):
    module = DualModalityFusion(8, 6, attention=kind, **FORM_OPTIONS[kind])
    other = pickle.loads(pickle.dumps(module))
    assert type(other) is type(module)
    rgb, flow = rand(11, 1, 5, 8, dtype=torch.float32), rand(12, 1, 5, 6, dtype=torch.float32)
    assert torch.equal(other(rgb, flow).rgb, module(rgb, flow).rgb)


@pytest.mark.parametrize("cls", [DMFGate, DMFDot])
def test_form_classes_compile_fullgraph(cls):
    module = cls(8, 8, alpha=0.7)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    rgb, flow, mask = rand(13, 2, 6, 8, dtype=torch.float32), rand(14, 2, 6, 8, dtype=torch.float32), rand_mask(15, 2, 6)
    for a, b in zip(compiled(rgb, flow, mask), module(rgb, flow, mask)):
        torch.testing.assert_close(a, b)


# the public ops the two classes call


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("masked", [True, False], ids=["mask", "nomask"])
def test_temporal_enhance_dot_matches_reference(fused, masked):
    """``rgb + alpha * A_t @ rgb`` against the float64 reference of the dot form's temporal half."""
    module = DMFDot(6, 6, attn_dim=4, alpha=0.6, dtype=torch.float64)
    rgb, flow = rand(20, 3, 8, 6), rand(21, 3, 8, 6)
    mask = rand_mask(22, 3, 8) if masked else None
    want = ref.dmf_dot(module, rgb, flow, mask)[0]
    got = DF.temporal_enhance_dot(rgb, flow, module.to_q.weight, module.to_k.weight, mask, alpha=0.6, fused=fused)
    torch.testing.assert_close(got, want)
    got32 = DF.temporal_enhance_dot(rgb.float(), flow.float(), module.to_q.weight, module.to_k.weight, mask, alpha=0.6, fused=fused)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("shape", [(3, 7, 5), (7, 5)])
def test_linear_fused_equals_plain(shape):
    x, w, b = rand(30, *shape, dtype=torch.float32), rand(31, 6, 5, dtype=torch.float32), rand(32, 6, dtype=torch.float32)
    torch.testing.assert_close(DF.linear(x, w, b), DF.linear(x, w, b, fused=False))


@pytest.mark.parametrize("op", ["dmf_gate", "dmf_dot"])
def test_block_ops_return_attention_only_when_asked(op):
    kind = op.split("_")[1]
    module = DualModalityFusion(8, 6, attention=kind, **FORM_OPTIONS[kind])
    rgb, flow = rand(33, 2, 5, 8, dtype=torch.float32), rand(34, 2, 5, 6, dtype=torch.float32)
    assert len(module._fuse(rgb, flow, None, False)) == 2
    assert len(module._fuse(rgb, flow, None, True)) == 4


# both forms accept the same inputs

SHAPES = {  # (batch, time, c_rgb, c_flow)
    "batch 1": (1, 6, 4, 4),
    "batch 3": (3, 6, 4, 4),
    "empty batch": (0, 6, 4, 4),
    "time 1": (2, 1, 4, 4),
    "one channel": (2, 5, 1, 1),
    "different widths": (2, 5, 3, 5),
}
MASKS = ["no mask", "all valid", "all padded", "one sample padded", "random"]


def edge_mask(kind: str, b: int, t: int):
    if kind == "no mask":
        return None
    mask = torch.ones(b, t, dtype=torch.bool)
    if kind == "all padded":
        mask[:] = False
    elif kind == "one sample padded" and b > 1:
        mask[-1] = False
    elif kind == "random" and b > 0:
        mask = rand_mask(5, b, t)
    return mask


def run_form(kind, fused, dtype, rgb, flow, mask, return_attention=True):
    """The outcome of one form on the inputs: its outputs, or the type of what it raised."""
    torch.manual_seed(0)
    module = DualModalityFusion(rgb.shape[-1], flow.shape[-1], attention=kind, fused=fused, **FORM_OPTIONS[kind])
    try:
        return module.to(dtype)(rgb, flow, mask, return_attention=return_attention)
    except (TypeError, ValueError, RuntimeError) as err:
        return type(err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_both_forms_accept_the_same_inputs(shape, mask_kind, fused, dtype):
    """Every shape and mask edge case that one form accepts, the other accepts too, with outputs of the
    input shapes and dtype, finite, and zero at padded snippets."""
    b, t, c_rgb, c_flow = SHAPES[shape]
    rgb, flow = rand(50, b, t, c_rgb, dtype=dtype), rand(51, b, t, c_flow, dtype=dtype)
    mask = edge_mask(mask_kind, b, t)
    outcomes = {kind: run_form(kind, fused, dtype, rgb, flow, mask) for kind in ("gate", "dot")}
    assert not any(isinstance(o, type) for o in outcomes.values()), outcomes
    for kind, out in outcomes.items():
        assert out.rgb.shape == rgb.shape and out.flow.shape == flow.shape, kind
        assert out.rgb.dtype == out.flow.dtype == dtype, kind
        assert all(torch.isfinite(x).all() for x in out), kind
        if mask is not None:
            assert out.rgb[~mask].eq(0).all() and out.flow[~mask].eq(0).all(), kind


BAD = {
    "empty time": (rand(52, 2, 0, 4), rand(53, 2, 0, 4), None),
    "batches differ": (rand(52, 2, 5, 4), rand(53, 3, 5, 4), None),
    "times differ": (rand(52, 2, 5, 4), rand(53, 2, 4, 4), None),
    "mask too short": (rand(52, 2, 5, 4), rand(53, 2, 5, 4), torch.ones(2, 4, dtype=torch.bool)),
    "float mask": (rand(52, 2, 5, 4), rand(53, 2, 5, 4), torch.ones(2, 5)),
    "integer features": (torch.ones(2, 5, 4, dtype=torch.int64), rand(53, 2, 5, 4), None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_both_forms_refuse_the_same_inputs(case):
    """What one form refuses, the other refuses with the same exception type, before any math runs."""
    rgb, flow, mask = BAD[case]
    outcomes = {kind: run_form(kind, True, torch.float64, rgb, flow, mask) for kind in ("gate", "dot")}
    assert isinstance(outcomes["gate"], type) and outcomes["gate"] is outcomes["dot"], outcomes
    assert outcomes["gate"] in (TypeError, ValueError)


def test_both_forms_take_non_contiguous_inputs():
    rgb = rand(54, 2, 4, 7).transpose(1, 2)  # (2, 7, 4), channel-first storage
    flow = rand(55, 2, 7, 8)[..., ::2]
    assert not rgb.is_contiguous() and not flow.is_contiguous()
    for kind in ("gate", "dot"):
        for fused in (True, False):
            out = run_form(kind, fused, torch.float64, rgb, flow, rand_mask(56, 2, 7))
            want = run_form(kind, fused, torch.float64, rgb.contiguous(), flow.contiguous(), rand_mask(56, 2, 7))
            for a, w in zip(out, want):
                torch.testing.assert_close(a, w)
