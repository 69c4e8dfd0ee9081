"""The torch calls whose form depends on the torch version, each with a public fallback.

The library's torch floor is chosen by the public APIs it uses (docs/conventions.md lists them);
the calls below are newer or private, so each is decided once, at import, and the fallback is the
public form that every supported torch has. Branching on a module constant (not on try/except per
call) keeps ``torch.compile(fullgraph=True)`` free of graph breaks.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["is_autocast_enabled", "is_compiling", "softmax_backward"]


def _autocast_takes_device() -> bool:
    """``torch.is_autocast_enabled(device_type)`` exists from torch 2.4; 2.3 has only the no-argument
    (CUDA) form and ``torch.is_autocast_cpu_enabled()``."""
    try:
        torch.is_autocast_enabled("cpu")
    except TypeError:
        return False
    return True


def _has_softmax_backward() -> bool:
    """The private fused softmax backward with its torch >= 1.11 signature ``(grad, output, dim,
    input_dtype)``, checked on a tiny tensor; False if it is gone or its signature changed."""
    fn = getattr(torch, "_softmax_backward_data", None)
    if fn is None:
        return False
    p = torch.full((1, 2), 0.5)
    try:
        got = fn(torch.tensor([[1.0, 0.0]]), p, -1, p.dtype)
    except (TypeError, RuntimeError):
        return False
    return isinstance(got, Tensor) and torch.allclose(got, torch.tensor([[0.25, -0.25]]))


def _has_compiler_is_compiling() -> bool:
    """``torch.compiler.is_compiling()`` exists from torch 2.3; before, the same answer comes from
    ``torch._dynamo.is_compiling()``."""
    return callable(getattr(getattr(torch, "compiler", None), "is_compiling", None))


AUTOCAST_TAKES_DEVICE = _autocast_takes_device()
FUSED_SOFTMAX_BACKWARD = _has_softmax_backward()
COMPILER_IS_COMPILING = _has_compiler_is_compiling()
if not COMPILER_IS_COMPILING:
    import torch._dynamo  # the fallback of is_compiling: loaded here, not while tracing


def is_autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``"cpu"``, ``"cuda"``, ...)."""
    if AUTOCAST_TAKES_DEVICE:
        return torch.is_autocast_enabled(device_type)
    if device_type == "cpu":
        return torch.is_autocast_cpu_enabled()
    return torch.is_autocast_enabled()


def is_compiling() -> bool:
    """Whether ``torch.compile`` is tracing the caller (the kernels then take plain forms of copies
    and writes that the tracer handles)."""
    if COMPILER_IS_COMPILING:
        return torch.compiler.is_compiling()
    return torch._dynamo.is_compiling()


def softmax_backward(grad: Tensor, probs: Tensor, dim: int = -1) -> Tensor:
    """The gradient of softmax's input from ``grad`` of its output ``probs``:
    ``probs * (grad - sum(grad * probs, dim))``, in one fused kernel where torch has it."""
    if FUSED_SOFTMAX_BACKWARD:
        return torch._softmax_backward_data(grad, probs, dim, probs.dtype)
    return probs * (grad - (grad * probs).sum(dim, keepdim=True))
