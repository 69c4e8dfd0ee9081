"""The rules that every path shares, each written once: masks, and the precision of attention scores.

Private, and the bottom of the package: :mod:`dmf_fusion.functional` (the ops and their plain paths)
and the kernels below it (:mod:`dmf_fusion._generic`, :mod:`dmf_fusion._cpu`, :mod:`dmf_fusion._cuda`)
import these; this module imports nothing of the package. docs/conventions.md states the rules.

Masks are ``None`` (every snippet valid) or bool ``(b, t)`` with True = valid snippet.

Axis legend: b batch, t time (snippets), s key time, c channels (``e`` a second channel axis of the
same size).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = [
    "channel_softmax",
    "gram_operand",
    "input_precision",
    "key_bias",
    "key_mask",
    "upcast",
    "valid_counts",
    "zero_padding",
]


# --------------------------------------------------------------------------------------------------
# masks


def zero_padding(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """``x`` with zeros at the padded snippets (NaN and inf there are removed too); ``x`` itself
    without a mask. Shape: x (b, t, c), mask (b, t)."""
    if mask is None:
        return x
    return torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))


def valid_counts(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Valid snippets per sample, at least 1 (a fully padded sample divides zeros by one), as ``(b,)``
    in the dtype that ``x``'s scores are normalised in (:func:`upcast`: float16 counts end at 65504)."""
    dtype = upcast(x).dtype
    if mask is None:
        return torch.full((x.shape[0],), x.shape[1], dtype=dtype, device=x.device)
    return mask.sum(-1).clamp(min=1).to(dtype)


def key_mask(mask: Tensor) -> Tensor:
    """The keys a query may attend to, ``(b, s)``: the valid snippets, and every snippet of a fully
    padded sample (whose keys are all zero), so softmax never sees an all ``-inf`` row and no NaN
    appears, forward or backward. Padded queries are zeroed afterwards by each path."""
    return mask | ~mask.any(-1, keepdim=True)


def key_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """:func:`key_mask` as an additive score bias ``(b, s)``: 0 for a key attended to, ``-inf`` else."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill_(~key_mask(mask), float("-inf"))


# --------------------------------------------------------------------------------------------------
# precision of scores


def upcast(x: Tensor) -> Tensor:
    """Half-precision scores go to float32 for softmax, sigmoid and normalisation; float32 and float64
    stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def gram_operand(x: Tensor) -> Tensor:
    """The operand of the channel Gram matrix: float16 goes to float32, since an entry sums ``t``
    products and float16 ends at 65504 (8,192 snippets of features near 3 already pass it);
    bfloat16 has float32's range and stays."""
    return x.float() if x.dtype == torch.float16 else x


def input_precision(x: Tensor) -> torch.autocast:
    """The context of the dot form's channel half: autocast off, so the Gram matrix runs in the
    input's dtype (:func:`gram_operand`), never in autocast's lower one."""
    return torch.autocast(x.device.type, enabled=False)


def channel_softmax(gram: Tensor, counts: Tensor, temperature: float) -> Tensor:
    """The dot form's channel attention from the Gram matrix of RGB:
    ``A_c = softmax_e(gram / (n_valid * temperature))``, scaled and normalised in float32 for half
    precision (and returned in it: the caller casts).

    Shape:
        gram: (..., c, e); counts: (...) valid snippets (:func:`valid_counts`); returns (..., c, e).
    """
    scores = upcast(gram)
    return torch.softmax(scores / (counts.to(scores.dtype) * temperature)[..., None, None], dim=-1)
