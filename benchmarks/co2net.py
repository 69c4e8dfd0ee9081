"""A CO2-Net-style cross-modal gating block, the block a user would otherwise pick.

Re-implemented from the published description of CO2-Net's cross-modal attention (Hong et al.,
"Cross-modal Consensus Network for Weakly Supervised Temporal Action Localization", ACM MM 2021),
not from its code: for the modality being enhanced (``main``), a *channel* gate comes from a
temporal average pool of ``main`` followed by a convolution, a *local* gate from a kernel-3 temporal
convolution of the other modality, and their product through a sigmoid gates ``main``:

    g = conv(avgpool_t(main))                    (b, c, 1)
    l = leaky_relu(conv_k3(other))               (b, c, t)
    main' = sigmoid(g * l) * main

Run in both directions (RGB gated with Flow's help and Flow with RGB's), so it takes and returns the
same tensors as :class:`dmf_fusion.DualModalityFusion`. Written the way CO2-Net is written:
channel-first ``nn.Conv1d`` on transposed channel-last features, dropout left out (eval mode), no
masks (CO2-Net pads and ignores padding).

Axis legend: b batch, t time, c channels.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class _Gate(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channel_conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.local_conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, main: Tensor, other: Tensor) -> Tensor:  # channel-first (b, c, t)
        g = F.leaky_relu(self.channel_conv(main.mean(-1, keepdim=True)), 0.2)
        local = F.leaky_relu(self.local_conv(other), 0.2)
        return main * (g * local).sigmoid()


class CrossModalGating(nn.Module):
    """Both directions of the CO2-Net-style gate: ``(rgb, flow) -> (rgb', flow')``, channel-last.

    Shape:
        rgb, flow: (b, t, c); returns two (b, t, c).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.rgb_gate = _Gate(channels, kernel_size)
        self.flow_gate = _Gate(channels, kernel_size)

    def forward(self, rgb: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        r, f = rgb.transpose(1, 2), flow.transpose(1, 2)
        return self.rgb_gate(r, f).transpose(1, 2), self.flow_gate(f, r).transpose(1, 2)
