"""Argument validation shared by every public module and function.

Each check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong shape or value) with a
message that names the argument, what was expected and what was received. Checks only look at
shapes, dtypes and Python values, never at tensor contents, so they cost nothing at run time and
``torch.compile(fullgraph=True)`` turns them into guards.

Axis legend: b batch, t time (snippets), c channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_features(name: str, x: object, channels: Optional[int] = None) -> Tensor:
    """A ``(b, t, c)`` floating tensor with ``t > 0`` and, if given, ``c == channels``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, time, channels), got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got dtype {x.dtype}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (batch, time, channels), got {x.dim()}-d shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has an empty time axis: shape {tuple(x.shape)}; need at least one snippet")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(f"{name} must have {channels} channels (last axis), got shape {tuple(x.shape)}")
    return x


def check_pair(rgb: Tensor, flow: Tensor, names: Sequence[str] = ("rgb", "flow")) -> None:
    """Two feature tensors that share batch, time and dtype."""
    a, b = names
    if rgb.shape[:2] != flow.shape[:2]:
        raise ValueError(
            f"{a} and {b} must share (batch, time), got {a} {tuple(rgb.shape)} and {b} {tuple(flow.shape)}"
        )
    if rgb.dtype != flow.dtype:
        raise TypeError(f"{a} and {b} must have the same dtype, got {rgb.dtype} and {flow.dtype}")


def check_mask(mask: object, batch: int, time: int) -> Optional[Tensor]:
    """``None`` or a bool ``(b, t)`` tensor (True = valid snippet)."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool torch.Tensor of shape (batch, time) or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool (True = valid snippet), got {mask.dtype}")
    if tuple(mask.shape) != (batch, time):
        raise ValueError(f"mask must have shape (batch, time) = {(batch, time)}, got {tuple(mask.shape)}")
    return mask


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]
