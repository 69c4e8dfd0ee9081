"""Version-dependent torch calls (``dmf_fusion._compat``): each branch, and the layering rules.

Each call of ``_compat`` is decided once at import; the tests force the other branch with
``monkeypatch`` and check it against the branch this torch takes. The layering tests check that the
modules and benchmarks reach the kernels only through the public functional API.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from dmf_fusion import _compat, _cpu, _cuda
from dmf_fusion import functional as DF

from reference import rand, rand_mask

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.filterwarnings("ignore:torch.is_autocast_cpu_enabled:DeprecationWarning")  # the torch 2.3 branch
@pytest.mark.parametrize("takes_device", [True, False])
def test_is_autocast_enabled_both_branches(monkeypatch, takes_device):
    if takes_device and not _compat._autocast_takes_device():
        pytest.skip("this torch has no is_autocast_enabled(device_type)")
    monkeypatch.setattr(_compat, "AUTOCAST_TAKES_DEVICE", takes_device)
    assert not _compat.is_autocast_enabled("cpu")
    assert not _compat.is_autocast_enabled("cuda")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _compat.is_autocast_enabled("cpu")
        assert not _compat.is_autocast_enabled("cuda")


def test_autocast_probe_sees_an_old_signature(monkeypatch):
    def old_is_autocast_enabled():  # torch 2.3: no device argument
        return False

    monkeypatch.setattr(torch, "is_autocast_enabled", old_is_autocast_enabled)
    assert _compat._autocast_takes_device() is False


def test_softmax_backward_probe_falls_back(monkeypatch):
    monkeypatch.delattr(torch, "_softmax_backward_data")
    assert _compat._has_softmax_backward() is False
    monkeypatch.setattr(torch, "_softmax_backward_data", lambda *args: (_ for _ in ()).throw(TypeError("new signature")), raising=False)
    assert _compat._has_softmax_backward() is False


@pytest.mark.parametrize("fused_kernel", [True, False])
def test_softmax_backward_both_branches(monkeypatch, fused_kernel):
    if fused_kernel and not _compat._has_softmax_backward():
        pytest.skip("this torch has no usable torch._softmax_backward_data")
    monkeypatch.setattr(_compat, "FUSED_SOFTMAX_BACKWARD", fused_kernel)
    x = rand(1, 4, 9).requires_grad_(True)
    grad = rand(2, 4, 9)
    probs = torch.softmax(x, -1)
    (want,) = torch.autograd.grad(probs, x, grad)
    torch.testing.assert_close(_compat.softmax_backward(grad, probs.detach(), -1), want)


@pytest.mark.parametrize("fused_kernel", [True, False])
def test_blocked_attention_backward_on_both_branches(monkeypatch, fused_kernel):
    """The CPU attention's backward (the one user of the softmax backward) on either branch."""
    if fused_kernel and not _compat._has_softmax_backward():
        pytest.skip("this torch has no usable torch._softmax_backward_data")
    monkeypatch.setattr(_compat, "FUSED_SOFTMAX_BACKWARD", fused_kernel)
    monkeypatch.setattr(_cpu, "ATTENTION_TILE", 24)
    q, k, v = (x.requires_grad_(True) for x in (rand(3, 2, 9, 4), rand(4, 2, 9, 4), rand(5, 2, 9, 6)))
    mask = rand_mask(6, 2, 9)
    assert torch.autograd.gradcheck(lambda a, b, c: DF.attend_temporal(a, b, c, mask), (q, k, v))


# --------------------------------------------------------------------------------------------------
# layering: modules -> public functional ops -> kernels


def test_library_calls_no_private_torch_api_outside_compat():
    for path in (ROOT / "dmf_fusion").glob("*.py"):
        if path.name == "_compat.py":
            continue
        uses = re.findall(r"torch\._[a-z]\w*", path.read_text())
        assert not uses, f"{path.name} calls {uses}: put it in _compat.py with a public fallback"


def test_modules_and_benchmarks_use_public_names_only():
    """fusion.py and losses.py call functional's public API only; the benchmarks import public names."""
    for path in [ROOT / "dmf_fusion" / "fusion.py", ROOT / "dmf_fusion" / "losses.py", *(ROOT / "benchmarks").glob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "DF":
                assert not node.attr.startswith("_") or node.attr.startswith("__"), f"{path.name}: DF.{node.attr}"
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("dmf_fusion")):
                parts = [*(node.module or "").split("."), *(a.name for a in node.names)]
                private = {p for p in parts if p.startswith("_") and not p.startswith("__")} - {"_checks"}
                assert not private, f"{path.name} imports {sorted(private)}"


def test_kernel_modules_offer_one_interface():
    interface = {"attend", "channel_enhance_dot", "enhance_dot", "gate", "linear", "linear_sum", "temporal_conv"}
    assert set(_cuda.__all__) == interface
    assert set(_cpu.__all__) - {"ATTENTION_TILE"} == interface
    for name in interface:
        assert callable(getattr(_cpu, name)) and callable(getattr(_cuda, name))


@pytest.mark.parametrize("public", [True, False], ids=["torch.compiler", "torch._dynamo"])
def test_is_compiling_both_branches(monkeypatch, public):
    if public and not _compat._has_compiler_is_compiling():
        pytest.skip("this torch has no torch.compiler.is_compiling")
    monkeypatch.setattr(_compat, "COMPILER_IS_COMPILING", public)
    assert _compat.is_compiling() is False

    def step(x):
        return x + 1 if _compat.is_compiling() else x - 1

    assert torch.compile(step, backend="eager", fullgraph=True)(torch.zeros(1)).item() == 1
    assert step(torch.zeros(1)).item() == -1


def test_mask_rules_live_in_one_module():
    """Zero padding and the key mask are written once, in _formulas.py; everything else calls them."""
    for path in (ROOT / "dmf_fusion").glob("*.py"):
        if path.name == "_formulas.py":
            continue
        text = path.read_text()
        for rule in ("torch.where(mask", "mask.any(", '"-inf"'):
            assert rule not in text, f"{path.name} spells out a mask rule ({rule}): use dmf_fusion._formulas"
