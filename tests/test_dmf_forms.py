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


def test_each_class_has_its_own_parameters_and_repr():
    gate = DualModalityFusion(8, 8, attention="gate", reduction=2, kernel_size=5, attn_dim=4, temperature=2.0)
    dot = DualModalityFusion(8, 8, attention="dot", reduction=2, kernel_size=5, attn_dim=4, temperature=2.0)
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
        DualModalityFusion(8, 6, attention=kind, reduction=2, attn_dim=4, alpha=0.7),
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
    module = DualModalityFusion(8, 6, attention=kind, reduction=2, attn_dim=4)
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
    module = DualModalityFusion(8, 6, attention=op.split("_")[1], reduction=2, attn_dim=4)
    rgb, flow = rand(33, 2, 5, 8, dtype=torch.float32), rand(34, 2, 5, 6, dtype=torch.float32)
    assert len(module._fuse(rgb, flow, None, False)) == 2
    assert len(module._fuse(rgb, flow, None, True)) == 4
