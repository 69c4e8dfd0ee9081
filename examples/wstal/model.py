"""Networks of the reference two-stage WSTAL detector (Temporal RPN learning for WSTAL, ACML 2023).

* :class:`FusionStrategy` / :class:`FusionEmbed`: the per-stage choice ``rgb | flow | concat | mutual``,
  each optionally preceded by DMF (``+``), built on :mod:`dmf_fusion`.
* :class:`MILBaseModel`: the conventional snippet-level MIL model (class activation sequence with a
  background class, class-agnostic attention) that produces the pseudo action segments.
* :class:`TemporalRPN`: Stage 1, per-snippet objectness and anchor-free boundary offsets.
* :class:`ProposalClassifier`: Stage 2, 1-D RoI pooling with inner/outer context, ``k + 1`` class logits.

The losses are pure functions next to the networks (``base_losses``, ``rpn_losses``,
``proposal_mil_losses``) so a training loop calls ``model(...)`` (the ``forward`` that DDP wraps)
and then the loss on its output. Their batch means go through :mod:`.distributed`'s ``global_*``
helpers: plain means in one process, means over the *global* batch in a distributed training step
(so DDP's gradient average equals the single-process gradient).

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
from dmf_fusion.functional import temporal_conv1d, zero_padding

from .distributed import global_denominator, global_mean, global_rescale
from .proposals import roi_align_1d, segment_iou

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
    "proposal_video_logits",
    "residual_blocks",
    "roi_features",
    "rpn_losses",
    "snippet_video_logits",
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
        alpha: DMF strength (0: no DMF, which would be the identity).
        attention: DMF attention form, ``"gate"`` or ``"dot"``.
        mutual_loss_through_dmf: with ``mutual+``, whether the mutual loss's gradient reaches DMF. False:
            the loss reads the mutual embeddings of DMF's output detached (a second pass of the
            embedding layers alone), so only the stage's task losses train DMF; the features are the same.

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
        mutual_loss_through_dmf: bool = True,
    ) -> None:
        super().__init__()
        self.strategy = FusionStrategy.parse(strategy) if isinstance(strategy, str) else strategy
        self.dim = dim
        self.mutual_loss_through_dmf = mutual_loss_through_dmf
        name = self.strategy.name
        # alpha = 0 makes DMF the identity: none is built, so no parameter sits unused (which DDP
        # would reject without find_unused_parameters)
        self.dmf = (
            DualModalityFusion(dim_rgb, dim_flow, alpha=alpha, attention=attention)
            if self.strategy.dmf and alpha != 0
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
        detached = "" if self.mutual_loss_through_dmf else ", mutual_loss_through_dmf=False"
        return f"strategy={str(self.strategy)!r}, dim={self.dim}{detached}"

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> FusionOutput:
        zero = rgb.new_zeros(())
        if self.dmf is not None:
            rgb, flow = self.dmf(rgb, flow, mask)
        name = self.strategy.name
        if name in ("rgb", "flow"):
            x = self.fuse(rgb if name == "rgb" else flow)
            return FusionOutput(zero_padding(x, mask), zero)
        if name == "concat":
            return FusionOutput(self.fuse(rgb, flow, mask), zero)
        fused, rgb_embed, flow_embed = self.fuse(rgb, flow, mask)
        assert self.mutual_loss is not None  # set together with MutualFusion in __init__
        if self.dmf is not None and not self.mutual_loss_through_dmf:
            rgb_embed, flow_embed = self.fuse.embed(rgb.detach(), flow.detach(), mask)
        return FusionOutput(fused, self.mutual_loss(rgb_embed, flow_embed, mask))


# --------------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------------


class TemporalConv(nn.Module):
    """Channel-last 1-D convolution over time that reads padded snippets as zeros and writes zeros there:
    an ``nn.Conv1d``'s parameters applied by :func:`dmf_fusion.functional.temporal_conv1d`.

    Shape:
        x: (b, t, dim_in); mask: (b, t). Returns (b, t, dim_out).
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int = 3, *, dilation: int = 1) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(
            dim_in, dim_out, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation
        )

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return temporal_conv1d(x, self.conv.weight, self.conv.bias, mask, dilation=self.dilation)


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


def snippet_video_logits(cas: Tensor, mask: Tensor, topk_ratio: float) -> Tensor:
    """Video-level action logits of a class activation sequence: per action class the mean of its
    ``t / topk_ratio`` highest valid logits (top-k MIL; the background logit, last, is dropped).

    Shape:
        cas: (b, t, k + 1); mask: (b, t). Returns (b, k).
    """
    return masked_topk_mean(cas[..., :-1], mask, _topk_count(mask.sum(1), topk_ratio))


def proposal_video_logits(logits: Tensor, topk_ratio: float) -> Tensor:
    """Video-level action logits of one video's proposals: per action class the mean of its
    ``ceil(n / topk_ratio)`` highest proposal logits (background, last, dropped).

    Shape:
        logits: (n, k + 1). Returns (k,).
    """
    k = max(1, math.ceil(logits.shape[0] / topk_ratio))
    return logits[:, :-1].topk(k, dim=0).values.mean(0)


def _mil_cross_entropy(video_logits: Tensor, target: Tensor) -> Tensor:
    """Softmax cross-entropy against a multi-hot target normalised to a distribution, mean over videos
    (over the global batch in a distributed step, see :mod:`.distributed`)."""
    target = target / target.sum(-1, keepdim=True).clamp_min(1e-8)
    return global_mean(-(target * F.log_softmax(video_logits, dim=-1)).sum(-1))


# --------------------------------------------------------------------------------------------------
# base model: snippet-level MIL
# --------------------------------------------------------------------------------------------------


class BaseOutput(NamedTuple):
    """``cas``: class activation logits, background last; ``attention``: class-agnostic foreground
    probability from temporally smoothed features; ``boundary``: the same from per-snippet features."""

    cas: Tensor
    attention: Tensor
    boundary: Tensor
    aux_loss: Tensor


class MILBaseModel(nn.Module):
    """Snippet-level MIL model: a class activation sequence (``k`` classes + background) and a
    class-agnostic attention, in the BaS-Net / CO2-Net lineage.

    The attention comes in two heads trained by the same losses. ``attention`` reads temporally
    convolved features (kernel 3): it is smooth and ranks segments well, but the convolution lets it
    spill about one snippet past each boundary. ``boundary`` reads each snippet alone (kernel 1): it is
    noisier but its edges sit where the action's edges are. Detections and completeness scores use the
    first; the pseudo segments that teach the T-RPN where actions *end* use the second (random label
    noise averages out in the T-RPN's training, a systematic outward bias would not).

    Args:
        fusion: the input fusion.
        num_classes: ``k`` action classes (the background logit is added).
        hidden: width of the temporal embedding.
        dropout: dropout on the embeddings (training only).

    Shape:
        rgb, flow: (b, t, c); mask: (b, t). Returns ``cas`` (b, t, k + 1) logits, ``attention`` and
        ``boundary`` (b, t) in [0, 1].
    """

    def __init__(
        self, fusion: FusionEmbed, num_classes: int, *, hidden: int = 256, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.fusion = fusion
        self.num_classes = num_classes
        self.embed = TemporalConv(fusion.dim, hidden, 3)
        self.classifier = nn.Linear(hidden, num_classes + 1)
        self.attention_head = nn.ModuleList(
            [TemporalConv(fusion.dim, hidden // 2, 3), nn.Linear(hidden // 2, 1)]
        )
        self.boundary_head = nn.ModuleList(
            [TemporalConv(fusion.dim, hidden // 2, 1), nn.Linear(hidden // 2, 1)]
        )
        self.dropout = nn.Dropout(dropout)

    def _head(self, head: nn.ModuleList, features: Tensor, mask: Optional[Tensor]) -> Tensor:
        conv, out = head
        score = torch.sigmoid(out(self.dropout(F.relu(conv(features, mask))))).squeeze(-1)
        return score if mask is None else score * mask.to(score.dtype)

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> BaseOutput:
        fused = self.fusion(rgb, flow, mask)
        x = self.dropout(F.relu(self.embed(fused.features, mask)))
        cas = self.classifier(x)
        attention = self._head(self.attention_head, fused.features, mask)
        boundary = self._head(self.boundary_head, fused.features, mask)
        return BaseOutput(cas, attention, boundary, fused.aux_loss)


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
    bottomk_ratio: float = 2.0,
    suppression_weight: float = 1.0,
    guide_weight: float = 1.0,
    rank_weight: float = 1.0,
    mutual_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Losses of :class:`MILBaseModel` (``t`` valid snippets, ``n_top = t / topk_ratio``,
    ``n_bottom = t / bottomk_ratio``).

    * ``mil``, three top-k MIL terms on the CAS:

      - classification (W-TALC): per action class the mean of its ``n_top`` highest logits, softmax over
        the ``k`` classes against the normalised label;
      - foreground: the ``n_top`` snippets most like a labelled class, pooled over all ``k + 1`` logits,
        must name the labelled classes, not background;
      - background: the ``n_bottom`` snippets *least* like any labelled class, pooled, must name
        background. Every untrimmed video has background, and its easiest snippets ground the background
        class (without them a constant background logit satisfies any video-level loss);

    then, for each attention head:

    * ``supp``, attention-based background suppression: the attention-weighted mean CAS must name the
      labelled classes and *not* background, so the attention has to drop the background snippets;
    * ``guide``: the attention agrees with ``1 - p(background)`` of the CAS (detached), per snippet;
    * ``rank``: binary cross-entropy of the attention against the same ranking: 1 on the ``n_top``
      snippets most like a labelled class, 0 on the ``n_bottom`` least like one. A rank is blind to
      the video-wide scene context that lifts every snippet's class logit, so it teaches the attention
      *where* the action is rather than *which video* it is in;
    * ``mutual``: the fusion's auxiliary loss.

    Shape:
        labels: (b, k) multi-hot; mask: (b, t). Returns named scalars and ``total``.
    """
    lengths = mask.sum(1)
    k_top, k_bottom = _topk_count(lengths, topk_ratio), _topk_count(lengths, bottomk_ratio)
    ones, zeros = labels.new_ones(labels.shape[0], 1), labels.new_zeros(labels.shape[0], 1)
    target = torch.cat([labels, zeros], -1)
    background = torch.cat([torch.zeros_like(labels), ones], -1)
    classify = _mil_cross_entropy(snippet_video_logits(out.cas, mask, topk_ratio), labels)
    labelled = out.cas[..., :-1].detach().masked_fill(labels.unsqueeze(1) == 0, float("-inf")).amax(-1)
    top = masked_topk_mean(out.cas, mask, k_top, key=labelled)
    bottom = masked_topk_mean(out.cas, mask, k_bottom, key=-labelled)
    mil = classify + _mil_cross_entropy(top, target) + _mil_cross_entropy(bottom, background)

    valid = mask.to(out.cas.dtype)
    foreground = 1 - F.softmax(out.cas, -1)[..., -1].detach()
    rank = (
        labelled.masked_fill(~mask, float("-inf")).argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    )
    positive = (rank < k_top.unsqueeze(1)) & mask
    negative = (rank >= (lengths - k_bottom).unsqueeze(1)) & mask
    # per-snippet means over the batch (over the global batch in a distributed step, see .distributed)
    n_valid = global_denominator(valid.sum(), at_least=1)
    n_positive = global_denominator(positive.sum(), at_least=1)
    n_negative = global_denominator(negative.sum(), at_least=1)
    supp = guide = rank_loss = out.cas.new_zeros(())
    for attention in (out.attention, out.boundary):
        supp = supp + _mil_cross_entropy(_masked_weighted_mean(out.cas, attention, mask), target)
        guide = guide + ((attention - foreground).abs() * valid).sum() / n_valid
        p = attention.clamp(1e-4, 1 - 1e-4)
        rank_loss = rank_loss - (torch.log(p) * positive).sum() / n_positive
        rank_loss = rank_loss - (torch.log1p(-p) * negative).sum() / n_negative
    mutual = global_rescale(out.aux_loss, lengths.sum())
    total = (
        mil
        + suppression_weight * supp
        + guide_weight * guide
        + rank_weight * rank_loss
        + mutual_weight * mutual
    )
    return {
        "total": total,
        "mil": mil,
        "supp": supp,
        "guide": guide,
        "rank": rank_loss,
        "mutual": mutual,
    }


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
        return zero_padding(x + self.dropout(F.relu(self.conv(self.norm(x), mask))), mask)


def residual_blocks(dim: int, dilations: tuple[int, ...], dropout: float) -> nn.ModuleList:
    """One pre-norm residual dilated temporal convolution per dilation (the T-RPN's backbone, the student's
    pyramid)."""
    return nn.ModuleList(_ResidualBlock(dim, d, dropout) for d in dilations)


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
        self.blocks = residual_blocks(hidden, dilations, dropout)
        self.norm = nn.LayerNorm(hidden)
        self.objectness_head = TemporalConv(hidden, 1, 3)
        self.offset_head = TemporalConv(hidden, 2, 3)
        nn.init.constant_(self.offset_head.conv.bias, math.log(4.0))
        nn.init.constant_(self.objectness_head.conv.bias, -2.0)

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> RPNOutput:
        fused = self.fusion(rgb, flow, mask)
        x = zero_padding(self.input_dropout(F.relu(self.stem(fused.features))), mask)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        objectness = self.objectness_head(x, mask).squeeze(-1)
        offsets = torch.exp(self.offset_head(x, mask).clamp(max=self.max_log_offset))
        return RPNOutput(objectness, zero_padding(offsets, mask), fused.aux_loss)


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
    n_valid = global_denominator(valid.sum(), at_least=1)  # over the global batch when distributed
    bce = F.binary_cross_entropy_with_logits(out.objectness, objectness_target, reduction="none")
    obj = (bce * valid).sum() / n_valid
    positive = (objectness_target > 0.5) & mask
    centres = torch.arange(out.offsets.shape[1], device=mask.device, dtype=out.offsets.dtype) + 0.5
    predicted = torch.stack([centres - out.offsets[..., 0], centres + out.offsets[..., 1]], -1)
    predicted, assigned = predicted[positive], segment_target[positive]
    iou = segment_iou(predicted[:, 0], predicted[:, 1], assigned[:, 0], assigned[:, 1])
    reg = global_mean(1 - iou)  # 0 without positives, still connected to the offset head (DDP needs it)
    mutual = global_rescale(out.aux_loss, mask.sum())
    total = obj + regression_weight * reg + mutual_weight * mutual
    return {"total": total, "obj": obj, "reg": reg, "mutual": mutual}


# --------------------------------------------------------------------------------------------------
# Stage 2: proposal classifier
# --------------------------------------------------------------------------------------------------


def roi_features(
    features: Tensor, proposals: Tensor, *, bins: int = 4, context_ratio: float = 0.25
) -> Tensor:
    """Inner and outer-context features of 1-D proposals (RoI align in time, :func:`~wstal.proposals.roi_align_1d`).

    The inner region ``[s, e]`` is pooled into ``bins`` mean bins; the context regions ``[s - r L, s]`` and
    ``[e, e + r L]`` (``L = e - s``, ``r = context_ratio``; outside the video counts as empty) into one mean
    each. Returns ``cat(inner bins, left, right, inner mean - left, inner mean - right)``: the content,
    its surroundings on each side and its contrast with them, so a classifier can tell a complete action
    from one cut short or one padded with background on either side.

    Shape:
        features: (t, c); proposals: (n, 2) ``[start, end]`` in snippets. Returns (n, (bins + 4) * c).

    Example:
        >>> roi_features(torch.randn(20, 3), torch.tensor([[2.0, 8.0]])).shape
        torch.Size([1, 24])
    """
    start, end = proposals[:, 0], torch.maximum(proposals[:, 1], proposals[:, 0] + 1e-3)
    margin = context_ratio * (end - start)
    inner = roi_align_1d(features, torch.stack([start, end], -1), bins)  # (n, r, c)
    left = roi_align_1d(features, torch.stack([start - margin, start], -1), 1)[:, 0]
    right = roi_align_1d(features, torch.stack([end, end + margin], -1), 1)[:, 0]
    mean = inner.mean(1)
    return torch.cat([inner.flatten(1), left, right, mean - left, mean - right], -1)


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
            nn.Linear((bins + 4) * hidden, hidden),
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
                x[i, : int(lengths[i])],
                props,
                bins=self.bins,
                context_ratio=self.context_ratio,
            )
            logits.append(self.mlp(feats))
        return logits, fused.aux_loss


def proposal_mil_losses(
    logits: list[Tensor],
    labels: Tensor,
    aux_loss: Tensor,
    *,
    mask: Optional[Tensor] = None,
    completeness: Optional[list[Tensor]] = None,
    proposal_classes: Optional[list[Tensor]] = None,
    topk_ratio: float = 4.0,
    completeness_weight: float = 1.0,
    mutual_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Stage-2 losses: proposal-level MIL from the video labels, plus pseudo completeness.

    * ``mil``: per action class the mean of its ``n / topk_ratio`` highest proposal logits, softmax over
      the ``k`` classes against the normalised video label (which classes the video contains);
    * ``complete``: each proposal's ``k + 1``-way softmax against ``q * onehot(c) + (1 - q) * onehot(bg)``,
      where ``q`` in [0, 1] is the proposal's pseudo completeness (how well it matches the base model's
      attention, see :func:`~wstal.stages.proposal_targets`) and ``c`` its pseudo class: the
      classifier learns to reject background and incomplete proposals, which a video-level loss cannot
      teach (P-MIL's completeness idea);
    * ``mutual``: the fusion's auxiliary loss (a mean over the valid snippets of ``mask``; pass the
      batch's ``mask`` so that a distributed step weighs it over the global batch).

    Shape:
        logits: b tensors (n_i, k + 1); labels: (b, k); mask: (b, t); completeness: b tensors (n_i,);
        proposal_classes: b int64 tensors (n_i,).
    """
    video = torch.stack([proposal_video_logits(lg, topk_ratio) for lg in logits])
    mil = _mil_cross_entropy(video, labels)
    complete = aux_loss.new_zeros(())
    if completeness is not None and proposal_classes is not None:
        terms = []
        for lg, q, c in zip(logits, completeness, proposal_classes):
            target = torch.zeros_like(lg)
            target[torch.arange(lg.shape[0]), c] = q
            target[:, -1] = 1 - q
            terms.append(-(target * F.log_softmax(lg, -1)).sum(-1))
        complete = global_mean(torch.cat(terms))
    if mask is not None:  # the mutual loss is a mean over the batch's valid snippets
        aux_loss = global_rescale(aux_loss, mask.sum())
    total = mil + completeness_weight * complete + mutual_weight * aux_loss
    return {"total": total, "mil": mil, "complete": complete, "mutual": aux_loss}
