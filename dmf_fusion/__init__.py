"""dmf-fusion: RGB + optical-flow fusion layers for weakly-supervised temporal action localization.

Implements the fusion blocks of "Temporal RPN learning for weakly-supervised temporal action
localization" (ACML 2023): :class:`DualModalityFusion` (its two forms :class:`DMFGate` and
:class:`DMFDot`), :class:`ConcatFusion`, :class:`MutualFusion` and :class:`MutualLoss`, on the
attention core in :mod:`dmf_fusion.functional`.
"""

from . import functional
from .fusion import (
    ConcatFusion,
    DMFAttentionOutput,
    DMFDot,
    DMFGate,
    DMFOutput,
    DualModalityFusion,
    MutualFusion,
    MutualOutput,
)
from .losses import MutualLoss

__version__ = "0.1.0"

__all__ = [
    "ConcatFusion",
    "DMFAttentionOutput",
    "DMFDot",
    "DMFGate",
    "DMFOutput",
    "DualModalityFusion",
    "MutualFusion",
    "MutualLoss",
    "MutualOutput",
    "__version__",
    "functional",
]
