"""Losses for dual-modality fusion.

:class:`MutualLoss` is the mutual loss of Temporal RPN learning for WSTAL (ACML 2023),
``L_ml = MSE(C_r(rgb), C_f(flow))`` over valid snippets, which pulls the shared parts of the two
modalities together; ``stop_gradient=True`` gives CO2-Net's symmetric stop-gradient form
(Hong et al., "Cross-modal Consensus Network for Weakly Supervised Temporal Action Localization",
ACM MM 2021).

Axis legend: b batch, t time (snippets), c channels.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from . import functional as DF
from ._checks import check_choice, check_features, check_mask, check_pair

__all__ = ["MutualLoss"]


class MutualLoss(nn.Module):
    """Masked mean squared error between the RGB and Flow embeddings of :class:`~dmf_fusion.MutualFusion`.

    Args:
        stop_gradient: use ``1/2 MSE(a, sg(b)) + 1/2 MSE(sg(a), b)``: same value, each side is pulled
            towards a frozen copy of the other.
        reduction: ``"mean"`` over valid snippets and channels, ``"sum"`` of the per-snippet channel
            means over valid snippets, or ``"none"`` for the per-snippet channel means ``(b, t)``
            (zero at padded snippets).

    Shape:
        rgb_embed, flow_embed: (b, t, c); mask: (b, t) bool, True = valid. Returns a scalar, or
        (b, t) for ``reduction="none"``. A batch without valid snippets gives 0.

    Example:
        >>> loss = MutualLoss()
        >>> a = torch.ones(1, 3, 2)
        >>> float(loss(a, a)), float(loss(a, 3 * a))
        (0.0, 4.0)
    """

    def __init__(self, *, stop_gradient: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        self.stop_gradient = stop_gradient
        self.reduction = check_choice("reduction", reduction, ("mean", "sum", "none"))

    def extra_repr(self) -> str:
        return f"stop_gradient={self.stop_gradient}, reduction={self.reduction!r}"

    def forward(self, rgb_embed: Tensor, flow_embed: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        check_features("rgb_embed", rgb_embed)
        check_features("flow_embed", flow_embed, rgb_embed.shape[-1])
        check_pair(rgb_embed, flow_embed, names=("rgb_embed", "flow_embed"))
        mask = check_mask(mask, rgb_embed.shape[0], rgb_embed.shape[1])
        return DF.mutual_loss(
            rgb_embed, flow_embed, mask, stop_gradient=self.stop_gradient, reduction=self.reduction
        )
