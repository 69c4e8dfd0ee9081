"""From snippet scores to segments: the base model's pseudo action segments and the dense Stage-1 targets.

A score sequence (the base model's class-agnostic attention, or a class's activation) becomes segments
in three steps, as in the WSTAL literature (W-TALC, CO2-Net):

1. **multi-threshold grouping**: at each threshold, every maximal run of snippets at or above it is a
   candidate (low thresholds give long segments, high thresholds short, confident ones);
2. **outer-inner contrast**: a candidate's score is its mean inside minus the mean of a margin of
   ``outer_ratio`` of its length on both sides, so a segment that cuts an action in half scores low;
3. **NMS** among the candidates (each threshold re-finds most segments, NMS keeps the best-bounded one).

:func:`dense_targets` turns pseudo segments into per-snippet objectness and the assigned segment, which
is what the anchor-free T-RPN regresses.

Axis legend: t snippets, n segments.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .config import GroupingSettings
from .proposals import group_segments, nms_1d, outer_inner_contrast

__all__ = ["Segments", "dense_targets", "median_filter", "segments_from_scores"]


class Segments(NamedTuple):
    """Segments ``[start, end)`` in snippets (float) and their scores, best first."""

    segments: Tensor
    scores: Tensor


def segments_from_scores(
    scores: Tensor,
    grouping: GroupingSettings,
    *,
    min_length: int = 1,
    max_segments: int | None = None,
    median: int = 1,
) -> Segments:
    """Group a score sequence into scored segments (multi-threshold grouping, contrast, NMS).

    Args:
        scores: per-snippet scores in [0, 1].
        grouping: the thresholds, the contrast's outer margin, the NMS tIoU and the score floor (one
            definition, :class:`~wstal.config.GroupingSettings`).
        min_length: shortest segment in snippets.
        max_segments: keep at most this many (best first).
        median: odd width of a temporal median filter applied before grouping (1: none). A median removes
            isolated spikes and one-snippet holes but, unlike a mean, keeps every edge where it is.

    Shape:
        scores: (t,). Returns segments (n, 2) float32 and scores (n,).

    Example:
        >>> s = torch.tensor([0.0, 0.1, 0.9, 0.95, 0.9, 0.1, 0.0, 0.0])
        >>> segments_from_scores(s, GroupingSettings(thresholds=(0.5,))).segments.tolist()
        [[2.0, 5.0]]
    """
    scores = median_filter(scores.detach().float().cpu(), median)
    candidates = group_segments(scores, list(grouping.thresholds), min_length=min_length)
    if candidates.shape[0] == 0:
        return Segments(torch.zeros(0, 2), torch.zeros(0))
    contrast = outer_inner_contrast(scores, candidates, outer_ratio=grouping.outer_ratio).float()
    keep = contrast >= grouping.min_score
    candidates, contrast = candidates[keep].float(), contrast[keep]
    if candidates.shape[0] == 0:
        return Segments(torch.zeros(0, 2), torch.zeros(0))
    keep = nms_1d(candidates, contrast, grouping.nms_iou)
    keep = keep[contrast[keep].argsort(descending=True, stable=True)]
    if max_segments is not None:
        keep = keep[:max_segments]
    return Segments(candidates[keep], contrast[keep])


def median_filter(scores: Tensor, width: int) -> Tensor:
    """Temporal median of odd ``width`` (edges replicated); ``width = 1`` returns the input.

    Example:
        >>> median_filter(torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]), 3).tolist()
        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    if width < 1 or width % 2 == 0:
        raise ValueError(f"median width must be a positive odd int, got {width!r}")
    if width == 1 or scores.numel() == 0:
        return scores
    pad = width // 2
    padded = torch.cat([scores[:1].expand(pad), scores, scores[-1:].expand(pad)])
    return padded.unfold(0, width, 1).median(dim=1).values


def dense_targets(segments: Tensor, num_snippets: int) -> tuple[Tensor, Tensor]:
    """Per-snippet Stage-1 targets from pseudo segments.

    Snippet ``i`` (centre ``i + 0.5``) is positive when the centre lies inside a segment; it is assigned
    the shortest such segment (the usual anchor-free rule for nested segments).

    Shape:
        segments: (n, 2) ``[start, end)`` in snippets. Returns objectness (t,) in {0, 1} and the assigned
        ``[start, end]`` (t, 2) (zeros where negative).

    Example:
        >>> obj, seg = dense_targets(torch.tensor([[1.0, 3.0]]), 5)
        >>> obj.tolist(), seg[2].tolist()
        ([0.0, 1.0, 1.0, 0.0, 0.0], [1.0, 3.0])
    """
    objectness = torch.zeros(num_snippets)
    assigned = torch.zeros(num_snippets, 2)
    if segments.shape[0] == 0:
        return objectness, assigned
    centres = torch.arange(num_snippets, dtype=torch.float32) + 0.5
    inside = (centres[:, None] >= segments[None, :, 0]) & (centres[:, None] < segments[None, :, 1])  # (t, n)
    length = (segments[:, 1] - segments[:, 0]).expand(num_snippets, -1).masked_fill(~inside, float("inf"))
    best = length.argmin(1)
    positive = inside.any(1)
    objectness[positive] = 1.0
    assigned[positive] = segments[best[positive]].float()
    return objectness, assigned
