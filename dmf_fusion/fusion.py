"""Fusion blocks for RGB + optical-flow snippet features.

From "Temporal RPN learning for weakly-supervised temporal action localization" (ACML 2023):

* :class:`DualModalityFusion` (DMF): RGB generates a channel attention that enhances Flow, Flow
  generates a temporal attention that enhances RGB; ``alpha`` sets the strength.
* :class:`ConcatFusion`: ``C_con(cat(rgb, flow))``, a 1x1 convolution over the joint channels.
* :class:`MutualFusion`: ``h_r(C_r(rgb)) + h_f(C_f(flow))``, a shared space plus per-modality projectors
  (train it with :class:`~dmf_fusion.MutualLoss` on ``C_r(rgb)`` and ``C_f(flow)``).

The math lives in :mod:`dmf_fusion.functional`; these modules own the parameters, validate input and
pick the fused or the plain path per instance (``module.fused``).

Axis legend: b batch, t time (snippets), c channels.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional as DF
from ._checks import (
    check_choice,
    check_features,
    check_mask,
    check_non_negative,
    check_pair,
    check_positive,
    check_positive_int,
)

__all__ = [
    "ConcatFusion",
    "DMFAttentionOutput",
    "DMFOutput",
    "DualModalityFusion",
    "MutualFusion",
    "MutualOutput",
]


class DMFOutput(NamedTuple):
    """Enhanced features: ``rgb = rgb + alpha * enhance_rgb``, ``flow = flow + alpha * enhance_flow``."""

    rgb: Tensor
    flow: Tensor


class DMFAttentionOutput(NamedTuple):
    """Enhanced features plus the two attention maps.

    ``channel_attention`` is ``(b, c_flow)`` for ``gate`` and ``(b, c, c)`` for ``dot``;
    ``temporal_attention`` is ``(b, t)`` for ``gate`` and ``(b, t, s)`` for ``dot``.
    """

    rgb: Tensor
    flow: Tensor
    channel_attention: Tensor
    temporal_attention: Tensor


class MutualOutput(NamedTuple):
    """``fused = h_r(rgb_embed) + h_f(flow_embed)``, ``rgb_embed = C_r(rgb)``, ``flow_embed = C_f(flow)``."""

    fused: Tensor
    rgb_embed: Tensor
    flow_embed: Tensor


def _check_inputs(rgb: object, flow: object, mask: object, dim_rgb: int, dim_flow: int) -> Optional[Tensor]:
    rgb = check_features("rgb", rgb, dim_rgb)
    flow = check_features("flow", flow, dim_flow)
    check_pair(rgb, flow)
    return check_mask(mask, rgb.shape[0], rgb.shape[1])


class DualModalityFusion(nn.Module):
    """Dual-Modality Fusion: RGB-generated channel attention enhances Flow, Flow-generated temporal
    attention enhances RGB.

    ``rgb_plus = rgb + alpha * enhance_rgb`` and ``flow_plus = flow + alpha * enhance_flow``, so
    ``alpha = 0`` returns every valid snippet unchanged, bit for bit.

    ``attention="gate"`` (default):

    * ``a_c = sigmoid(MLP(masked_mean_t(rgb)))``, ``(b, c_flow)``, squeeze-excitation style with
      hidden width ``dim_rgb // reduction``; ``enhance_flow = a_c * flow``;
    * ``a_t = sigmoid(conv(relu(conv(flow))))``, ``(b, t)``, two masked temporal convolutions of
      ``kernel_size`` with hidden width ``dim_flow // reduction``; ``enhance_rgb = a_t * rgb``.

    ``attention="dot"``:

    * ``A_c = softmax_e(<rgb_c, rgb_e>_t / n_valid / temperature)``, ``(b, c, c)``;
      ``enhance_flow = flow @ A_c.T`` (RGB is first projected to ``dim_flow`` when the widths differ);
    * ``A_t = softmax_s(q_t . k_s / sqrt(attn_dim))`` over valid ``s``, ``q``/``k`` linear projections of
      flow; ``enhance_rgb = A_t @ rgb``. The fused path never builds the ``(t, s)`` matrix.

    Args:
        dim_rgb: RGB channels.
        dim_flow: Flow channels.
        alpha: enhancement strength, ``>= 0``.
        attention: ``"gate"`` or ``"dot"``.
        reduction: hidden-width divisor of the gate MLP and temporal convolutions.
        kernel_size: odd temporal kernel of the gate convolutions.
        attn_dim: query/key width ``d`` of the dot temporal attention.
        temperature: softmax temperature of the dot channel attention.
        fused: fast path (True) or the plain reference path (False); an attribute, change it any time.
        device: parameter device, a factory kwarg as in ``torch.nn``.
        dtype: parameter dtype, a factory kwarg as in ``torch.nn``.

    Shape:
        rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t) bool, True = valid.
        Returns ``DMFOutput(rgb, flow)`` of the input shapes and dtype, zero at padded snippets.

    Example:
        >>> dmf = DualModalityFusion(32, 32, alpha=0.5)
        >>> rgb, flow = torch.randn(2, 10, 32), torch.randn(2, 10, 32)
        >>> mask = torch.arange(10) < torch.tensor([[10], [6]])
        >>> out = dmf(rgb, flow, mask)
        >>> out.rgb.shape, out.flow.shape
        (torch.Size([2, 10, 32]), torch.Size([2, 10, 32]))
        >>> bool(out.rgb[1, 6:].eq(0).all())
        True
        >>> DualModalityFusion(32, 32, alpha=0.0)(rgb, flow).rgb.equal(rgb)
        True
    """

    def __init__(
        self,
        dim_rgb: int,
        dim_flow: int,
        *,
        alpha: float = 0.5,
        attention: str = "gate",
        reduction: int = 4,
        kernel_size: int = 3,
        attn_dim: int = 64,
        temperature: float = 1.0,
        fused: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim_rgb = check_positive_int("dim_rgb", dim_rgb)
        self.dim_flow = check_positive_int("dim_flow", dim_flow)
        self.alpha = check_non_negative("alpha", alpha)
        self.attention = check_choice("attention", attention, ("gate", "dot"))
        self.reduction = check_positive_int("reduction", reduction)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so the output keeps its length, got {kernel_size}")
        self.attn_dim = check_positive_int("attn_dim", attn_dim)
        self.temperature = check_positive("temperature", temperature)
        self.fused = fused
        if attention == "gate":
            hidden_rgb = max(dim_rgb // reduction, 1)
            hidden_flow = max(dim_flow // reduction, 1)
            self.channel_fc1 = nn.Linear(dim_rgb, hidden_rgb, **factory)
            self.channel_fc2 = nn.Linear(hidden_rgb, dim_flow, **factory)
            pad = kernel_size // 2
            self.temporal_conv1 = nn.Conv1d(dim_flow, hidden_flow, kernel_size, padding=pad, **factory)
            self.temporal_conv2 = nn.Conv1d(hidden_flow, 1, kernel_size, padding=pad, **factory)
        else:
            self.rgb_to_flow = (
                nn.Linear(dim_rgb, dim_flow, bias=False, **factory) if dim_rgb != dim_flow else None
            )
            self.to_q = nn.Linear(dim_flow, attn_dim, bias=False, **factory)
            self.to_k = nn.Linear(dim_flow, attn_dim, bias=False, **factory)

    def reset_parameters(self) -> None:
        for module in self.children():
            module.reset_parameters()

    def extra_repr(self) -> str:
        s = f"{self.dim_rgb}, {self.dim_flow}, alpha={self.alpha}, attention={self.attention!r}"
        if self.attention == "gate":
            s += f", reduction={self.reduction}, kernel_size={self.kernel_size}"
        else:
            s += f", attn_dim={self.attn_dim}, temperature={self.temperature}"
        return s + f", fused={self.fused}"

    def forward(
        self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None, *, return_attention: bool = False
    ) -> Union[DMFOutput, DMFAttentionOutput]:
        """Enhance both modalities.

        Args:
            rgb: RGB snippet features.
            flow: Flow snippet features.
            mask: True = valid snippet; None means all valid.
            return_attention: also return the two attention maps (for ``dot`` this builds the
                ``(b, t, s)`` temporal map).

        Shape:
            rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t).
        """
        mask = _check_inputs(rgb, flow, mask, self.dim_rgb, self.dim_flow)
        rgb, flow = DF.zero_padding(rgb, mask), DF.zero_padding(flow, mask)
        if self.attention == "gate":
            return self._gate(rgb, flow, mask, return_attention)
        return self._dot(rgb, flow, mask, return_attention)

    def _gate(
        self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor], return_attention: bool
    ) -> Union[DMFOutput, DMFAttentionOutput]:
        fc1, fc2 = self.channel_fc1, self.channel_fc2
        # rgb and flow are already zero at padded snippets: the private forms skip a second masking pass
        a_c = DF._channel_attention_gate(rgb, mask, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        convs = (self.temporal_conv1, self.temporal_conv2)
        a_t = DF._temporal_attention_gate(flow, mask, [c.weight for c in convs], [c.bias for c in convs], self.fused)
        if self.fused:
            rgb_plus = DF._gate(rgb, a_t.unsqueeze(-1), self.alpha)
            flow_plus = DF._gate(flow, a_c.unsqueeze(1), self.alpha)
        else:
            rgb_plus = rgb + self.alpha * (a_t.unsqueeze(-1) * rgb)
            flow_plus = flow + self.alpha * (a_c.unsqueeze(1) * flow)
        if return_attention:
            return DMFAttentionOutput(rgb_plus, flow_plus, a_c, a_t)
        return DMFOutput(rgb_plus, flow_plus)

    def _dot(
        self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor], return_attention: bool
    ) -> Union[DMFOutput, DMFAttentionOutput]:
        # one channel-first copy of rgb serves both halves' GEMMs on the oneDNN route
        rgb_t = DF._transpose_tiles(rgb.detach()) if self.fused and DF._onednn(rgb) else None  # never differentiated
        flow_plus, rgb_c = self._dot_channel(rgb, flow, mask, rgb_t)
        rgb_plus, q, k = self._dot_temporal(rgb, flow, mask, rgb_t)
        # under autocast the GEMM epilogues come back in the autocast dtype: keep the input dtype on both
        rgb_plus, flow_plus = rgb_plus.to(rgb.dtype), flow_plus.to(flow.dtype)
        if return_attention:
            a_c = DF.channel_attention_dot(rgb_c, mask, temperature=self.temperature)
            a_t = DF.temporal_attention_dot(q, k, mask)
            return DMFAttentionOutput(rgb_plus, flow_plus, a_c, a_t)
        return DMFOutput(rgb_plus, flow_plus)

    # the two halves of the dot form (separate so that benchmarks/ can time each); rgb and flow are
    # already zero at padded snippets

    def _dot_channel(
        self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor], rgb_t: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor]:
        linear = DF._linear if self.fused else F.linear
        if self.rgb_to_flow is None:
            rgb_c = rgb
        else:
            rgb_c, rgb_t = linear(rgb, self.rgb_to_flow.weight.to(rgb.dtype)), None
        # the channel Gram sums t products per entry: under float16 autocast it overflows 65504 on
        # ordinary videos, so this half runs in the input dtype (float16 inputs form it in float32)
        with torch.autocast(rgb.device.type, enabled=False):
            flow_plus = DF._channel_enhance_dot(
                rgb_c, flow.to(rgb_c.dtype), mask, self.alpha, self.temperature, self.fused, rgb_t
            )
        return flow_plus, rgb_c

    def _dot_temporal(
        self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor], rgb_t: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        dtype = flow.dtype
        if self.fused:  # q and k from one GEMM
            qk = DF._linear(flow, torch.cat([self.to_q.weight, self.to_k.weight]).to(dtype))
            q, k = qk.split(self.attn_dim, dim=-1)
        else:
            q = F.linear(flow, self.to_q.weight.to(dtype))
            k = F.linear(flow, self.to_k.weight.to(dtype))
        if not self.fused:
            return rgb + self.alpha * DF.attend_temporal(q, k, rgb, mask, fused=False), q, k
        if self.alpha == 0:
            return rgb, q, k  # exact identity
        # the residual rides in the attention's output pass: rgb + alpha * A_t @ rgb
        return DF._attend_fused(q, k, rgb, mask, self.alpha, True, rgb_t), q, k


class ConcatFusion(nn.Module):
    """Concat fusion ``C_con(cat(rgb, flow))``: a 1x1 convolution (channel-wise linear map) over the
    concatenated channels.

    The fused path never builds the concatenation: the weight is split by modality and two GEMMs
    accumulate into the output (``rgb @ W_r.T + flow @ W_f.T + b``).

    Args:
        dim_rgb: RGB channels.
        dim_flow: Flow channels.
        dim_out: output channels; default ``dim_rgb + dim_flow``.
        bias: learn an additive bias.
        fused: split-weight path (True) or the plain concatenate-then-project path (False).
        device: parameter device, a factory kwarg as in ``torch.nn``.
        dtype: parameter dtype, a factory kwarg as in ``torch.nn``.

    Shape:
        rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t); returns (b, t, dim_out), zero at
        padded snippets.

    Example:
        >>> concat = ConcatFusion(32, 16, 24)
        >>> concat(torch.randn(2, 10, 32), torch.randn(2, 10, 16)).shape
        torch.Size([2, 10, 24])
    """

    def __init__(
        self,
        dim_rgb: int,
        dim_flow: int,
        dim_out: Optional[int] = None,
        *,
        bias: bool = True,
        fused: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.dim_rgb = check_positive_int("dim_rgb", dim_rgb)
        self.dim_flow = check_positive_int("dim_flow", dim_flow)
        self.dim_out = dim_rgb + dim_flow if dim_out is None else check_positive_int("dim_out", dim_out)
        self.fused = fused
        self.proj = nn.Linear(dim_rgb + dim_flow, self.dim_out, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()

    def extra_repr(self) -> str:
        return f"{self.dim_rgb}, {self.dim_flow}, dim_out={self.dim_out}, fused={self.fused}"

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        mask = _check_inputs(rgb, flow, mask, self.dim_rgb, self.dim_flow)
        rgb, flow = DF.zero_padding(rgb, mask), DF.zero_padding(flow, mask)
        out = DF.concat_linear(rgb, flow, self.proj.weight, self.proj.bias, fused=self.fused)
        return DF.zero_padding(out, mask)


class MutualFusion(nn.Module):
    """Mutual fusion ``h_r(C_r(rgb)) + h_f(C_f(flow))``.

    ``C_r``/``C_f`` (linear + ReLU) map each modality into a shared ``dim``-wide space, where
    :class:`~dmf_fusion.MutualLoss` pulls them together; the projectors ``h_r``/``h_f`` (linear) keep the
    fused feature from collapsing onto one modality. The two projectors run as one split-weight
    GEMM pair on the fused path (see :func:`~dmf_fusion.functional.concat_linear`).

    Args:
        dim_rgb: RGB channels.
        dim_flow: Flow channels.
        dim: width of the shared space and of the output.
        dropout: dropout on the embeddings before the projectors (training only).
        fused: fast path (True) or plain path (False).
        device: parameter device, a factory kwarg as in ``torch.nn``.
        dtype: parameter dtype, a factory kwarg as in ``torch.nn``.

    Shape:
        rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t). Returns
        ``MutualOutput(fused, rgb_embed, flow_embed)``, each (b, t, dim), zero at padded snippets.

    Example:
        >>> mutual = MutualFusion(32, 16, 8)
        >>> fused, rgb_embed, flow_embed = mutual(torch.randn(2, 10, 32), torch.randn(2, 10, 16))
        >>> fused.shape, rgb_embed.shape
        (torch.Size([2, 10, 8]), torch.Size([2, 10, 8]))
    """

    def __init__(
        self,
        dim_rgb: int,
        dim_flow: int,
        dim: int,
        *,
        dropout: float = 0.0,
        fused: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim_rgb = check_positive_int("dim_rgb", dim_rgb)
        self.dim_flow = check_positive_int("dim_flow", dim_flow)
        self.dim = check_positive_int("dim", dim)
        self.dropout = check_non_negative("dropout", dropout)
        if dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.fused = fused
        self.embed_rgb = nn.Linear(dim_rgb, dim, **factory)
        self.embed_flow = nn.Linear(dim_flow, dim, **factory)
        self.head_rgb = nn.Linear(dim, dim, **factory)
        self.head_flow = nn.Linear(dim, dim, bias=False, **factory)

    def reset_parameters(self) -> None:
        for module in self.children():
            module.reset_parameters()

    def extra_repr(self) -> str:
        return f"{self.dim_rgb}, {self.dim_flow}, dim={self.dim}, dropout={self.dropout}, fused={self.fused}"

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> MutualOutput:
        mask = _check_inputs(rgb, flow, mask, self.dim_rgb, self.dim_flow)
        dtype = rgb.dtype
        linear = DF._linear if self.fused else F.linear
        rgb_embed = F.relu(linear(rgb, self.embed_rgb.weight.to(dtype), self.embed_rgb.bias.to(dtype)))
        flow_embed = F.relu(linear(flow, self.embed_flow.weight.to(dtype), self.embed_flow.bias.to(dtype)))
        rgb_embed, flow_embed = DF.zero_padding(rgb_embed, mask), DF.zero_padding(flow_embed, mask)
        a = F.dropout(rgb_embed, self.dropout, self.training) if self.dropout > 0 else rgb_embed
        b = F.dropout(flow_embed, self.dropout, self.training) if self.dropout > 0 else flow_embed
        if self.fused:  # the two projectors as split-weight GEMMs into one output, no concatenation
            h_r, h_f = self.head_rgb, self.head_flow
            fused = linear(a, h_r.weight.to(dtype), h_r.bias.to(dtype)).add_(linear(b, h_f.weight.to(dtype)))
        else:
            h_r, h_f = self.head_rgb, self.head_flow
            fused = F.linear(a, h_r.weight.to(dtype), h_r.bias.to(dtype)) + F.linear(b, h_f.weight.to(dtype))
        return MutualOutput(DF.zero_padding(fused, mask), rgb_embed, flow_embed)
