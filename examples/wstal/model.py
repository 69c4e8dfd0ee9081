"""Networks of the reference two-stage WSTAL detector (Temporal RPN learning for WSTAL, ACML 2023).

* :class:`FusionStrategy` / :class:`FusionEmbed`: the per-stage choice ``rgb | flow | concat | mutual``,
  each optionally preceded by DMF (``+``), built on :mod:`dmf_fusion`.
* :class:`MILBaseModel`: the conventional snippet-level MIL model (class activation sequence with a
  background class, class-agnostic attention) that produces the pseudo action segments.
* :class:`TemporalRPN`: Stage 1, per-snippet objectness and anchor-free boundary offsets.
* :class:`ProposalClassifier`: Stage 2, 1-D RoI pooling with inner/outer context, ``k + 1`` class logits.

The losses are pure functions next to the networks (``base_losses``, ``rpn_losses``,
``proposal_mil_losses``) so a training loop calls ``model(...)`` (the ``forward`` that DDP wraps)
and then the loss on its output.

Axis legend: b batch, t time (snippets), c channels, k classes (``k + 1`` with background),
n proposals or segments, r RoI bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmf_fusion import ConcatFusion, DualModalityFusion, MutualFusion, MutualLoss

__all__ = [
    "STRATEGIES",
    "BaseOutput",
    "FusionEmbed",
    "FusionOutput",
    "FusionStrategy",
    "MILBaseModel",
    "ProposalClassifier",
    "RPNOutput",
    "TemporalRPN",
    "base_losses",
    "masked_topk_mean",
    "proposal_mil_losses",
    "roi_features",
    "rpn_losses",
    "segment_iou",
]

STRATEGIES = ("rgb", "flow", "concat", "mutual")
"""Fusion strategies; a trailing ``+`` applies :class:`~dmf_fusion.DualModalityFusion` first."""


# --------------------------------------------------------------------------------------------------
# fusion strategy
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionStrategy:
    """A stage's fusion strategy, e.g. ``mutual+`` = DMF, then mutual fusion (with the mutual loss).

    ``rgb+`` and ``flow+`` are rejected: DMF enhances each modality with attention computed from the
    *other* one, so a "single-modality" run with DMF would silently use both modalities.

    Example:
        >>> FusionStrategy.parse("mutual+")
        FusionStrategy(name='mutual', dmf=True)
        >>> str(FusionStrategy.parse("concat")), FusionStrategy.parse("rgb").modalities
        ('concat', ('rgb',))
    """

    name: str
    dmf: bool = False

    @classmethod
    def parse(cls, text: str) -> FusionStrategy:
        """Parse ``name`` or ``name+``; raises ``ValueError`` naming the received value."""
        if not isinstance(text, str):
            raise TypeError(f"a fusion strategy must be a str, got {type(text).__name__}")
        name, dmf = (text[:-1], True) if text.endswith("+") else (text, False)
        if name not in STRATEGIES:
            valid = ", ".join([*STRATEGIES, *(f"{s}+" for s in STRATEGIES[2:])])
            raise ValueError(f"unknown fusion strategy {text!r}; expected one of {valid}")
        if dmf and name in ("rgb", "flow"):
            raise ValueError(
                f"fusion strategy {text!r} is not defined: DMF enhances each modality with attention from the "
                f"other one, so it needs both; use {name!r} (single modality) or concat+ / mutual+"
            )
        return cls(name, dmf)

    def __str__(self) -> str:
        return self.name + ("+" if self.dmf else "")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The input modalities the strategy reads."""
        return (self.name,) if self.name in ("rgb", "flow") else ("rgb", "flow")


class FusionOutput(NamedTuple):
    """Fused snippet features and the strategy's auxiliary loss (the mutual loss, else 0)."""

    features: Tensor
    aux_loss: Tensor


class FusionEmbed(nn.Module):
    """Fuse RGB and Flow snippet features into one ``dim``-wide sequence with a :class:`FusionStrategy`.

    ``rgb`` / ``flow``: a linear embedding of that modality alone; ``concat``:
    :class:`~dmf_fusion.ConcatFusion`; ``mutual``: :class:`~dmf_fusion.MutualFusion` whose
    :class:`~dmf_fusion.MutualLoss` is returned as ``aux_loss``. With ``+``,
    :class:`~dmf_fusion.DualModalityFusion` enhances both inputs first.

    Args:
        strategy: the strategy (or its text form).
        dim_rgb, dim_flow: input widths.
        dim: output width.
        alpha: DMF strength.
        attention: DMF attention form, ``"gate"`` or ``"dot"``.

    Shape:
        rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t). Returns features (b, t, dim), zero at
        padded snippets, and a scalar ``aux_loss``.

    Example:
        >>> embed = FusionEmbed("mutual+", 8, 8, 4)
        >>> out = embed(torch.randn(2, 5, 8), torch.randn(2, 5, 8))
        >>> out.features.shape, out.aux_loss.shape
        (torch.Size([2, 5, 4]), torch.Size([]))
    """

    def __init__(
        self,
        strategy: FusionStrategy | str,
        dim_rgb: int,
        dim_flow: int,
        dim: int,
        *,
        alpha: float = 0.5,
        attention: str = "gate",
    ) -> None:
        super().__init__()
        self.strategy = FusionStrategy.parse(strategy) if isinstance(strategy, str) else strategy
        self.dim = dim
        name = self.strategy.name
        self.dmf = (
            DualModalityFusion(dim_rgb, dim_flow, alpha=alpha, attention=attention)
            if self.strategy.dmf
            else None
        )
        self.mutual_loss: Optional[MutualLoss] = None
        if name == "rgb":
            self.fuse: nn.Module = nn.Linear(dim_rgb, dim)
        elif name == "flow":
            self.fuse = nn.Linear(dim_flow, dim)
        elif name == "concat":
            self.fuse = ConcatFusion(dim_rgb, dim_flow, dim)
        else:
            self.fuse = MutualFusion(dim_rgb, dim_flow, dim)
            self.mutual_loss = MutualLoss()

    def extra_repr(self) -> str:
        return f"strategy={str(self.strategy)!r}, dim={self.dim}"

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> FusionOutput:
        zero = rgb.new_zeros(())
        if self.dmf is not None:
            rgb, flow = self.dmf(rgb, flow, mask)
        name = self.strategy.name
        if name in ("rgb", "flow"):
            x = self.fuse(rgb if name == "rgb" else flow)
            return FusionOutput(_zero_pad(x, mask), zero)
        if name == "concat":
            return FusionOutput(self.fuse(rgb, flow, mask), zero)
        fused, rgb_embed, flow_embed = self.fuse(rgb, flow, mask)
        assert self.mutual_loss is not None  # set together with MutualFusion in __init__
        return FusionOutput(fused, self.mutual_loss(rgb_embed, flow_embed, mask))


# --------------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------------


def _zero_pad(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


class TemporalConv(nn.Module):
    """Channel-last 1-D convolution over time that reads padded snippets as zeros and writes zeros there.

    Shape:
        x: (b, t, dim_in); mask: (b, t). Returns (b, t, dim_out).
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int = 3, *, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            dim_in, dim_out, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation
        )

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        x = _zero_pad(x, mask)
        return _zero_pad(self.conv(x.transpose(1, 2)).transpose(1, 2), mask)


def masked_topk_mean(x: Tensor, mask: Optional[Tensor], k: Tensor, *, key: Optional[Tensor] = None) -> Tensor:
    """Mean of ``x`` over the ``k[b]`` valid snippets with the largest values (top-k MIL pooling), per channel;
    with ``key``, over the ``k[b]`` valid snippets with the largest ``key`` (the same snippets for every
    channel).

    Args:
        x: scores.
        mask: True = valid snippet (None = all valid).
        k: per-sample number of snippets to average, ``1 <= k[b] <= valid length``.
        key: optional ranking of the snippets.

    Shape:
        x: (b, t, c); mask: (b, t); k: (b,); key: (b, t). Returns (b, c).

    Example:
        >>> x = torch.tensor([[[1.0], [5.0], [3.0], [9.0]]])
        >>> masked_topk_mean(x, torch.tensor([[True, True, True, False]]), torch.tensor([2]))
        tensor([[4.]])
        >>> masked_topk_mean(x, None, torch.tensor([1]), key=-x[..., 0])
        tensor([[1.]])
    """
    keep = torch.arange(x.shape[1], device=x.device) < k.unsqueeze(1)  # (b, t) in rank order
    if key is None:
        if mask is not None:
            x = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        ranked = x.sort(dim=1, descending=True).values  # (b, t, c)
    else:
        if mask is not None:
            key = key.masked_fill(~mask, float("-inf"))
        order = key.argsort(dim=1, descending=True, stable=True)
        ranked = x.gather(1, order.unsqueeze(-1).expand_as(x))
    ranked = ranked.masked_fill(~keep.unsqueeze(-1), 0.0)
    return ranked.sum(1) / k.unsqueeze(1).to(x.dtype)


def _topk_count(lengths: Tensor, ratio: float) -> Tensor:
    return torch.clamp(torch.div(lengths, ratio, rounding_mode="floor"), min=1).long()


def _mil_cross_entropy(video_logits: Tensor, target: Tensor) -> Tensor:
    """Softmax cross-entropy against a multi-hot target normalised to a distribution, mean over videos."""
    target = target / target.sum(-1, keepdim=True).clamp_min(1e-8)
    return -(target * F.log_softmax(video_logits, dim=-1)).sum(-1).mean()


def segment_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise 1-D IoU of segments ``[start, end]``.

    Shape:
        a, b: (..., 2). Returns (...).

    Example:
        >>> segment_iou(torch.tensor([[0.0, 4.0]]), torch.tensor([[2.0, 6.0]]))
        tensor([0.3333])
    """
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return inter / union.clamp_min(1e-6)


# --------------------------------------------------------------------------------------------------
# base model: snippet-level MIL
# --------------------------------------------------------------------------------------------------


class BaseOutput(NamedTuple):
    """``cas``: class activation logits with background last; ``attention``: class-agnostic foreground."""

    cas: Tensor
    attention: Tensor
    aux_loss: Tensor


class MILBaseModel(nn.Module):
    """Snippet-level MIL model: class activation sequence (``k`` classes + background) and a class-agnostic
    attention, in the BaS-Net / CO2-Net lineage.

    Args:
        fusion: the input fusion.
        num_classes: ``k`` action classes (the background logit is added).
        hidden: width of the temporal embedding.
        dropout: dropout on the embedding (training only).

    Shape:
        rgb, flow: (b, t, c); mask: (b, t). Returns ``cas`` (b, t, k + 1) logits and ``attention`` (b, t).
    """

    def __init__(
        self, fusion: FusionEmbed, num_classes: int, *, hidden: int = 256, dropout: float = 0.5, center: str = "all"
    ) -> None:
        super().__init__()
        self.fusion = fusion
        self.num_classes = num_classes
        self.center = center
        self.embed = TemporalConv(fusion.dim, hidden, 3)
        self.attention_conv = TemporalConv(hidden, hidden // 2, 3)
        self.attention_out = nn.Linear(hidden // 2, 1)
        self.classifier = nn.Linear(hidden, num_classes + 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> BaseOutput:
        fused = self.fusion(rgb, flow, mask)
        features = fused.features
        if self.center == "input":
            features = _zero_pad(features - _masked_time_mean(features, mask), mask)
        x = self.dropout(F.relu(self.embed(features, mask)))
        xc = _zero_pad(x - _masked_time_mean(x, mask), mask) if self.center in ("attention", "all") else x
        attention = torch.sigmoid(self.attention_out(F.relu(self.attention_conv(xc, mask)))).squeeze(-1)
        cas = self.classifier(xc if self.center == "all" else x)
        if mask is not None:
            attention = attention * mask.to(attention.dtype)
        return BaseOutput(cas, attention, fused.aux_loss)


def _masked_time_mean(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean over valid snippets, kept as a length-1 time axis. Shape: x (b, t, c) -> (b, 1, c)."""
    if mask is None:
        return x.mean(1, keepdim=True)
    weight = mask.to(x.dtype).unsqueeze(-1)
    return (x * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1)


def _masked_weighted_mean(x: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """``sum_t w x / sum_t w`` over valid snippets. Shape: x (b, t, c); weight, mask (b, t). Returns (b, c)."""
    weight = weight * mask.to(weight.dtype)
    return (x * weight.unsqueeze(-1)).sum(1) / weight.sum(1, keepdim=True).clamp_min(1e-6)


def base_losses(
    out: BaseOutput,
    labels: Tensor,
    mask: Tensor,
    *,
    topk_ratio: float = 8.0,
    bottomk_ratio: float = 3.0,
    suppression_weight: float = 1.0,
    guide_weight: float = 1.0,
    mutual_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Losses of :class:`MILBaseModel`.

    * ``mil``: top-k MIL. Per labelled class, the mean CAS of its ``t / topk_ratio`` highest-scoring snippets
      must name that class (softmax over ``k + 1`` against ``y``), and the mean CAS of the ``t / bottomk_ratio``
      snippets *least* like any labelled class must name background: every untrimmed video has background,
      and its easiest background snippets ground the background class (without them a constant
      background logit satisfies the video-level loss);
    * ``fg`` / ``bg``: attention-based background suppression: the attention-weighted mean CAS must name
      ``[y, 0]`` and the ``(1 - attention)``-weighted mean background ``[0, 1]``;
    * ``guide``: the attention agrees with ``1 - p(background)`` of the CAS (detached), per snippet;
    * ``mutual``: the fusion's auxiliary loss.

    Shape:
        labels: (b, k) multi-hot; mask: (b, t). Returns named scalars and ``total``.
    """
    k = _topk_count(mask.sum(1), topk_ratio)
    ones, zeros = labels.new_ones(labels.shape[0], 1), labels.new_zeros(labels.shape[0], 1)
    target = torch.cat([labels, zeros], -1)
    background = torch.cat([torch.zeros_like(labels), ones], -1)
    top = masked_topk_mean(out.cas, mask, k)
    labelled = out.cas[..., :-1].detach().masked_fill(labels.unsqueeze(1) == 0, float("-inf")).amax(-1)
    bottom = masked_topk_mean(out.cas, mask, _topk_count(mask.sum(1), bottomk_ratio), key=-labelled)
    mil = _mil_cross_entropy(top, target) + _mil_cross_entropy(bottom, background)
    fg = _mil_cross_entropy(_masked_weighted_mean(out.cas, out.attention, mask), target)
    bg = _mil_cross_entropy(_masked_weighted_mean(out.cas, 1 - out.attention, mask), background)
    valid = mask.to(out.attention.dtype)
    foreground = 1 - F.softmax(out.cas, -1)[..., -1].detach()
    guide = ((out.attention - foreground).abs() * valid).sum() / valid.sum().clamp_min(1)
    total = mil + suppression_weight * (fg + bg) + guide_weight * guide + mutual_weight * out.aux_loss
    return {"total": total, "mil": mil, "fg": fg, "bg": bg, "guide": guide, "mutual": out.aux_loss}


# --------------------------------------------------------------------------------------------------
# Stage 1: temporal region proposal network
# --------------------------------------------------------------------------------------------------


class RPNOutput(NamedTuple):
    """Per snippet: ``objectness`` logits and ``offsets`` (distance from the snippet centre to the start and
    to the end, in snippets, positive)."""

    objectness: Tensor
    offsets: Tensor
    aux_loss: Tensor


class _ResidualBlock(nn.Module):
    def __init__(self, dim: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = TemporalConv(dim, dim, 3, dilation=dilation)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        return _zero_pad(x + self.dropout(F.relu(self.conv(self.norm(x), mask))), mask)


class TemporalRPN(nn.Module):
    """Stage 1: a temporal region proposal network, anchor-free.

    A stack of residual dilated temporal convolutions (dilations ``1, 2, 4, ...``, so the receptive
    field covers short and long actions at one temporal resolution) feeds two heads: an objectness logit
    per snippet ("this snippet lies inside an action") and the log-distances from the snippet centre to
    the action's start and end. Proposals are ``[t + 0.5 - d_start, t + 0.5 + d_end]``.

    Args:
        fusion: the input fusion (default ``mutual+``).
        hidden: width of the temporal backbone.
        dilations: one residual block per dilation.
        dropout: dropout in the backbone (training only).
        max_log_offset: clamp of the log-distance (``exp(6) = 403`` snippets, about 4 minutes).

    Shape:
        rgb, flow: (b, t, c); mask: (b, t). Returns objectness (b, t) logits and offsets (b, t, 2).
    """

    def __init__(
        self,
        fusion: FusionEmbed,
        *,
        hidden: int = 128,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
        dropout: float = 0.3,
        max_log_offset: float = 6.0,
    ) -> None:
        super().__init__()
        self.fusion = fusion
        self.max_log_offset = max_log_offset
        self.stem = nn.Linear(fusion.dim, hidden)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden, d, dropout) for d in dilations)
        self.norm = nn.LayerNorm(hidden)
        self.objectness_head = TemporalConv(hidden, 1, 3)
        self.offset_head = TemporalConv(hidden, 2, 3)
        nn.init.constant_(self.offset_head.conv.bias, math.log(4.0))
        nn.init.constant_(self.objectness_head.conv.bias, -2.0)

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> RPNOutput:
        fused = self.fusion(rgb, flow, mask)
        x = _zero_pad(self.input_dropout(F.relu(self.stem(fused.features))), mask)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        objectness = self.objectness_head(x, mask).squeeze(-1)
        offsets = torch.exp(self.offset_head(x, mask).clamp(max=self.max_log_offset))
        return RPNOutput(objectness, _zero_pad(offsets, mask), fused.aux_loss)


def rpn_losses(
    out: RPNOutput,
    objectness_target: Tensor,
    segment_target: Tensor,
    mask: Tensor,
    *,
    regression_weight: float = 1.0,
    mutual_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Losses of :class:`TemporalRPN` against pseudo segments.

    * ``obj``: binary cross-entropy of the objectness against the snippet's pseudo-segment membership
      (soft targets allowed), over valid snippets;
    * ``reg``: ``1 - IoU`` between the predicted and the assigned pseudo segment, over positive snippets;
    * ``mutual``: the fusion's auxiliary loss.

    Shape:
        objectness_target: (b, t) in [0, 1]; segment_target: (b, t, 2) ``[start, end]`` of the assigned
        segment in snippets relative to the sequence start (only read where the target is > 0.5);
        mask: (b, t).
    """
    valid = mask.to(out.objectness.dtype)
    n_valid = valid.sum().clamp_min(1)
    bce = F.binary_cross_entropy_with_logits(out.objectness, objectness_target, reduction="none")
    obj = (bce * valid).sum() / n_valid
    positive = (objectness_target > 0.5) & mask
    centres = torch.arange(out.offsets.shape[1], device=mask.device, dtype=out.offsets.dtype) + 0.5
    predicted = torch.stack([centres - out.offsets[..., 0], centres + out.offsets[..., 1]], -1)
    iou = segment_iou(predicted[positive], segment_target[positive])
    reg = (1 - iou).mean() if iou.numel() else out.offsets.sum() * 0
    total = obj + regression_weight * reg + mutual_weight * out.aux_loss
    return {"total": total, "obj": obj, "reg": reg, "mutual": out.aux_loss}


# --------------------------------------------------------------------------------------------------
# Stage 2: proposal classifier
# --------------------------------------------------------------------------------------------------


def roi_features(
    features: Tensor, proposals: Tensor, *, bins: int = 4, context_ratio: float = 0.25
) -> Tensor:
    """Inner and outer-context features of 1-D proposals, by linear interpolation (RoI align in time).

    The inner region ``[s, e]`` is pooled into ``bins`` mean bins plus its max; the outer context is the
    mean of ``[s - r L, s]`` and ``[e, e + r L]`` (``L = e - s``, ``r = context_ratio``, clipped to the
    video). Returns ``cat(inner bins, inner max, inner mean - outer mean)``, so a classifier sees the
    content, its peak and its contrast with the surroundings.

    Shape:
        features: (t, c); proposals: (n, 2) ``[start, end]`` in snippets. Returns (n, (bins + 2) * c).
    """
    t = features.shape[0]
    n = proposals.shape[0]
    samples_per_bin = 2
    start, end = proposals[:, 0:1], proposals[:, 1:2].maximum(proposals[:, 0:1] + 1e-3)
    length = end - start

    def sample(lo: Tensor, hi: Tensor, count: int) -> Tensor:  # (n, count, c) at evenly spaced points
        frac = (torch.arange(count, device=features.device, dtype=features.dtype) + 0.5) / count
        pos = (lo + (hi - lo) * frac).clamp(0, t) - 0.5  # snippet i is centred at i + 0.5
        pos = pos.clamp(0, t - 1)
        left = pos.floor().long().clamp(max=t - 1)
        right = (left + 1).clamp(max=t - 1)
        w = (pos - left.to(pos.dtype)).unsqueeze(-1)
        return features[left] * (1 - w) + features[right] * w

    inner = sample(start, end, bins * samples_per_bin).view(n, bins, samples_per_bin, -1)
    inner_bins = inner.mean(2)  # (n, r, c)
    inner_mean = inner_bins.mean(1)
    inner_max = inner.flatten(1, 2).amax(1)
    outer_len = context_ratio * length
    left_ctx = sample((start - outer_len).clamp_min(0), start, samples_per_bin * 2).mean(1)
    right_ctx = sample(end, (end + outer_len).clamp_max(t), samples_per_bin * 2).mean(1)
    outer_mean = 0.5 * (left_ctx + right_ctx)
    return torch.cat([inner_bins.flatten(1), inner_max, inner_mean - outer_mean], -1)


class ProposalClassifier(nn.Module):
    """Stage 2: classify each proposal into ``k`` classes + background from RoI-pooled inner/outer features.

    Args:
        fusion: the input fusion (default ``concat``).
        num_classes: ``k``.
        hidden: width of the snippet embedding and of the classifier MLP.
        bins: inner RoI bins (see :func:`roi_features`).
        context_ratio: outer context length relative to the proposal.
        dropout: dropout (training only).

    Shape:
        rgb, flow: (b, t, c); mask: (b, t); proposals: list of b tensors (n_i, 2) in snippets.
        Returns a list of b logits tensors (n_i, k + 1) and the fusion's auxiliary loss.
    """

    def __init__(
        self,
        fusion: FusionEmbed,
        num_classes: int,
        *,
        hidden: int = 128,
        bins: int = 4,
        context_ratio: float = 0.25,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.fusion = fusion
        self.num_classes = num_classes
        self.bins = bins
        self.context_ratio = context_ratio
        self.embed = TemporalConv(fusion.dim, hidden, 3)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear((bins + 2) * hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes + 1),
        )

    def forward(
        self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor], proposals: list[Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        fused = self.fusion(rgb, flow, mask)
        x = self.dropout(F.relu(self.embed(fused.features, mask)))
        lengths = [x.shape[1]] * x.shape[0] if mask is None else mask.sum(1).tolist()
        logits = []
        for i, props in enumerate(proposals):
            feats = roi_features(
                x[i, : int(lengths[i])], props, bins=self.bins, context_ratio=self.context_ratio
            )
            logits.append(self.mlp(feats))
        return logits, fused.aux_loss


def proposal_mil_losses(
    logits: list[Tensor],
    objectness: list[Tensor],
    labels: Tensor,
    aux_loss: Tensor,
    *,
    topk_ratio: float = 4.0,
    mutual_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Proposal-level MIL from video labels.

    * ``mil``: top-k mean of the proposal logits per class against ``[y, 1]`` (background in every video);
    * ``supp``: top-k mean of objectness-weighted logits against ``[y, 0]``: once the proposals the
      T-RPN trusts are weighted up, the video must look like its actions only (background suppression
      at the proposal level, the Stage-2 counterpart of the base model's ``supp``);
    * ``mutual``: the fusion's auxiliary loss.

    Shape:
        logits: b tensors (n_i, k + 1); objectness: b tensors (n_i,) in [0, 1]; labels: (b, k).
    """
    video, supp = [], []
    for lg, obj in zip(logits, objectness):
        n = lg.shape[0]
        k = max(1, math.ceil(n / topk_ratio))
        video.append(lg.topk(k, dim=0).values.mean(0))
        supp.append((lg * obj.unsqueeze(-1)).topk(k, dim=0).values.mean(0))
    ones = labels.new_ones(labels.shape[0], 1)
    mil = _mil_cross_entropy(torch.stack(video), torch.cat([labels, ones], -1))
    supp_loss = _mil_cross_entropy(torch.stack(supp), torch.cat([labels, 0 * ones], -1))
    total = mil + supp_loss + mutual_weight * aux_loss
    return {"total": total, "mil": mil, "supp": supp_loss, "mutual": aux_loss}
