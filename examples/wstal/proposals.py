"""Proposal utilities for 1-D temporal localization, in torch: grouping, contrast scoring, NMS, RoI align.

- :func:`group_segments` turns a per-snippet score (attention or class activation) into candidate
  segments by thresholding at several levels and taking the runs of consecutive snippets (W-TALC, CO2-Net).
- :func:`outer_inner_contrast` scores a segment by its mean inside minus the mean of a context band around
  it (the outer-inner contrast of AutoLoc, used by CO2-Net and P-MIL).
- :func:`nms_1d` and :func:`soft_nms_1d` remove duplicates (greedy NMS; Gaussian soft-NMS of Bodla et al.).
- :func:`roi_align_1d` pools a fixed number of bins from each proposal (the 1-D form of RoIAlign that
  P-MIL applies to I3D features).

Snippet ``i`` covers ``[i, i + 1)``; integer segments are half open ``[start, end)``. All functions work on
one video; loops run over *kept* proposals only, every step inside is a tensor operation.

Axis legend: t snippets (time), c channels, n segments / proposals, b bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "group_segments",
    "nms_1d",
    "outer_inner_contrast",
    "roi_align_1d",
    "segment_iou",
    "soft_nms_1d",
    "whole_snippets",
]

_LOG2_E = math.log2(math.e)
_TIE_ULPS = 4  # soft-NMS: scores this close (in units of the dtype's epsilon, relative) count as tied
_ROI_CHUNK_ELEMENTS = 1 << 22  # bound the float64 temporaries of roi_align_1d to about 32 MiB each


def _check_scores(scores: Tensor) -> None:
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a Tensor, got {type(scores).__name__}")
    if scores.ndim != 1:
        raise ValueError(f"scores must have shape (T,), got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")


def _check_segments(segments: Tensor, name: str = "segments") -> None:
    if not isinstance(segments, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(segments).__name__}")
    if segments.ndim != 2 or segments.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {tuple(segments.shape)}")


def group_segments(scores: Tensor, thresholds: Sequence[float], *, min_length: int = 1) -> Tensor:
    """Runs of consecutive snippets whose score exceeds each threshold, pooled over all thresholds.

    Args:
        scores: per-snippet score.
        thresholds: the levels; a snippet belongs to a run at level ``h`` when ``score > h``.
        min_length: shortest run kept, in snippets.

    Returns:
        Unique segments ``[start, end)`` (end exclusive), sorted by start then end.

    Shape:
        - scores: ``(t,)``
        - output: ``(n, 2)`` int64

    Example:
        >>> group_segments(torch.tensor([0.1, 0.6, 0.9, 0.6, 0.2, 0.7]), [0.5, 0.8]).tolist()
        [[1, 4], [2, 3], [5, 6]]
    """
    _check_scores(scores)
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
        raise ValueError(f"min_length must be a positive int, got {min_length!r}")
    levels = torch.as_tensor(list(thresholds), dtype=scores.dtype, device=scores.device)
    if levels.ndim != 1 or levels.numel() == 0:
        raise ValueError(f"thresholds must be a non-empty sequence of numbers, got {thresholds!r}")
    above = (scores[None, :] > levels[:, None]).to(torch.int8)  # (levels, t)
    edges = torch.diff(F.pad(above, (1, 1)), dim=1)  # +1 where a run starts, -1 one past where it ends
    starts = torch.nonzero(edges == 1)[:, 1]  # row-major: runs of each level in time order
    ends = torch.nonzero(edges == -1)[:, 1]
    segments = torch.stack([starts, ends], dim=1)
    segments = segments[(ends - starts) >= min_length]
    return torch.unique(segments, dim=0) if segments.numel() else segments.reshape(0, 2)


def outer_inner_contrast(scores: Tensor, segments: Tensor, *, outer_ratio: float = 0.25) -> Tensor:
    """Mean score inside each segment minus the mean score of its outer context.

    The context is ``ceil(outer_ratio * length)`` snippets on each side, clipped to the video; a segment
    without any context (it spans the video, or ``outer_ratio == 0``) has context mean 0.

    Args:
        scores: per-snippet score.
        segments: integer segments ``[start, end)`` with ``0 <= start < end <= t``.
        outer_ratio: context width on each side as a fraction of the segment length.

    Returns:
        The contrast of each segment, in the dtype of ``scores``.

    Shape:
        - scores: ``(t,)``
        - segments: ``(n, 2)``
        - output: ``(n,)``

    Example:
        >>> scores = torch.tensor([0.0, 0.2, 1.0, 1.0, 1.0, 1.0, 0.4, 0.0])
        >>> outer_inner_contrast(scores, torch.tensor([[2, 6]]))  # inside 1.0, context [0.2, 0.4]
        tensor([0.7000])
    """
    _check_scores(scores)
    _check_segments(segments)
    if segments.is_floating_point() or segments.dtype == torch.bool:
        raise TypeError(f"segments must be an integer tensor, got {segments.dtype}")
    if not (outer_ratio >= 0):
        raise ValueError(f"outer_ratio must be >= 0, got {outer_ratio!r}")
    num_snippets = scores.shape[0]
    start, end = segments[:, 0].long(), segments[:, 1].long()
    bad = (start < 0) | (end > num_snippets) | (end <= start)
    if bool(bad.any()):
        raise ValueError(
            f"segments must satisfy 0 <= start < end <= {num_snippets}, got e.g. {segments[bad][:3].tolist()}"
        )
    prefix = F.pad(torch.cumsum(scores.double(), dim=0), (1, 0))  # prefix[i] = sum of scores[:i]
    width = torch.ceil((end - start).double() * outer_ratio).long()
    left, right = (start - width).clamp(min=0), (end + width).clamp(max=num_snippets)
    inner = (prefix[end] - prefix[start]) / (end - start)
    outer_sum = prefix[start] - prefix[left] + prefix[right] - prefix[end]
    outer_count = (start - left) + (right - end)
    outer = torch.where(outer_count > 0, outer_sum / outer_count.clamp(min=1), torch.zeros_like(outer_sum))
    return (inner - outer).to(scores.dtype)


def whole_snippets(segments: Tensor, num_snippets: int) -> Tensor:
    """Segments rounded to whole snippets ``[start, end)`` inside ``[0, num_snippets]``, at least one long.

    Example:
        >>> whole_snippets(torch.tensor([[-0.4, 2.6], [9.2, 9.3]]), 10).tolist()
        [[0, 3], [9, 10]]
    """
    whole = segments.round().long()
    whole[:, 0] = whole[:, 0].clamp(0, num_snippets - 1)
    whole[:, 1] = torch.maximum(whole[:, 1].clamp(max=num_snippets), whole[:, 0] + 1)
    return whole


def segment_iou(start_a: Tensor, end_a: Tensor, start_b: Tensor, end_b: Tensor) -> Tensor:
    """Temporal IoU of segments ``[start_a, end_a]`` and ``[start_b, end_b]``, broadcasting; 0 where the
    union is empty. The one tIoU of the detector: training targets, NMS and evaluation all use it.

    Example:
        >>> segment_iou(torch.tensor(0.0), torch.tensor(4.0), torch.tensor([2.0, 4.0]), torch.tensor([6.0, 4.0]))
        tensor([0.3333, 0.0000])
    """
    intersection = (torch.minimum(end_a, end_b) - torch.maximum(start_a, start_b)).clamp(min=0)
    union = (end_a - start_a) + (end_b - start_b) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def _check_nms_inputs(segments: Tensor, scores: Tensor) -> None:
    _check_segments(segments)
    _check_scores(scores)
    if not segments.is_floating_point():
        raise TypeError(f"segments must be a floating-point tensor, got {segments.dtype}")
    if scores.shape[0] != segments.shape[0]:
        raise ValueError(
            f"scores must have one entry per segment: {segments.shape[0]} segments, got {tuple(scores.shape)}"
        )


# The NMS loops keep 1-D tensors and shrink them with boolean masks, and soft-NMS computes exp(-x) as
# exp2(-x log2 e) (equal up to rounding): on some CPU builds row gathers and torch.exp of even a few
# elements go through a thread pool, whose start-up on a busy machine costs milliseconds per call.


def nms_1d(segments: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression of 1-D segments.

    Segments are visited by descending score (ties: lower index first); each kept segment removes every
    remaining one whose tIoU with it is greater than ``iou_threshold``.

    Args:
        segments: ``[start, end]`` segments.
        scores: their scores.
        iou_threshold: suppress overlaps with tIoU ``> iou_threshold``.

    Returns:
        Indices of the kept segments, by descending score.

    Shape:
        - segments: ``(n, 2)`` float
        - scores: ``(n,)``
        - output: ``(n_kept,)`` int64

    Example:
        >>> nms_1d(torch.tensor([[0.0, 4.0], [1.0, 4.0], [5.0, 6.0]]), torch.tensor([0.9, 0.8, 0.7]), 0.5)
        tensor([0, 2])
    """
    _check_nms_inputs(segments, scores)
    order = torch.sort(scores, descending=True, stable=True).indices
    start, end = segments[:, 0].index_select(0, order), segments[:, 1].index_select(0, order)
    keep = []
    while order.numel():
        keep.append(order[0])
        survivors = segment_iou(start[0], end[0], start[1:], end[1:]) <= iou_threshold
        order, start, end = order[1:][survivors], start[1:][survivors], end[1:][survivors]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long, device=segments.device)


def soft_nms_1d(
    segments: Tensor,
    scores: Tensor,
    *,
    sigma: float = 0.5,
    score_threshold: float = 1e-3,
    max_keep: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Gaussian soft-NMS of 1-D segments (Bodla et al., 2017).

    Repeatedly takes the remaining segment with the highest (decayed) score (ties, up to a few ulps: lower
    index first) and multiplies every other remaining score by ``exp(-tIoU^2 / sigma)``; segments whose
    score falls below ``score_threshold`` are dropped.

    Args:
        segments: ``[start, end]`` segments.
        scores: their scores.
        sigma: width of the Gaussian decay.
        score_threshold: drop segments whose decayed score is below this.
        max_keep: stop after this many segments (``None``: no limit).

    Returns:
        ``(indices, decayed_scores)``: the kept segments in selection order and their scores after decay.

    Shape:
        - segments: ``(n, 2)`` float
        - scores: ``(n,)``
        - output: ``(n_kept,)`` int64 and ``(n_kept,)`` in the dtype of ``scores``

    Example:
        >>> idx, s = soft_nms_1d(torch.tensor([[0.0, 4.0], [0.0, 2.0]]), torch.tensor([0.9, 0.8]))
        >>> idx.tolist(), round(s[1].item(), 4)  # tIoU 0.5: 0.8 * exp(-0.25 / 0.5)
        ([0, 1], 0.4852)
    """
    _check_nms_inputs(segments, scores)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if max_keep is not None and (isinstance(max_keep, bool) or not isinstance(max_keep, int) or max_keep < 0):
        raise ValueError(f"max_keep must be a non-negative int or None, got {max_keep!r}")
    limit = segments.shape[0] if max_keep is None else min(max_keep, segments.shape[0])
    alive = scores >= score_threshold
    remaining = torch.arange(segments.shape[0], device=segments.device)[alive]
    current, start, end = scores[alive], segments[:, 0][alive], segments[:, 1][alive]
    keep, kept_scores = [], []
    tie = _TIE_ULPS * torch.finfo(scores.dtype).eps
    while remaining.numel() and len(keep) < limit:
        # the lowest index among the maxima; "equal" allows a few ulps, since exp of equal inputs can differ
        # in the last bit between vectorized and scalar code paths
        peak = current.max()
        top = int(torch.argmax((current >= peak - tie * peak.abs()).byte()))
        keep.append(remaining[top])
        kept_scores.append(current[top])
        decay = torch.exp2(segment_iou(start[top], end[top], start, end).square() * (-_LOG2_E / sigma))
        current = current * decay
        alive = (current >= score_threshold) & (torch.arange(current.numel(), device=current.device) != top)
        remaining, current, start, end = remaining[alive], current[alive], start[alive], end[alive]
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=segments.device), scores.new_zeros(0)
    return torch.stack(keep), torch.stack(kept_scores)


def roi_align_1d(features: Tensor, rois: Tensor, output_size: int) -> Tensor:
    """Pool ``output_size`` equal bins from each region of interest of a feature sequence.

    The sequence is read as a continuous signal: snippet ``i`` sits at its centre ``i + 0.5``, values in
    between are linearly interpolated, and beyond the video it falls linearly to zero half a snippet past
    the edge and stays zero (P-MIL pads zero snippets the same way, so context outside the video counts as
    empty). Each bin is the exact mean of that signal over the bin -- RoIAlign with infinitely many sampling
    points, so a long proposal is not summarized by a few samples. Differentiable in ``features``.

    Args:
        features: the sequence.
        rois: regions ``[start, end)`` in snippet units (fractional, may extend outside ``[0, t]``),
            ``end > start``.
        output_size: number of bins ``b``.

    Returns:
        The pooled features, in the dtype of ``features``.

    Shape:
        - features: ``(t, c)``
        - rois: ``(n, 2)`` float
        - output: ``(n, b, c)``

    Example:
        >>> feats = torch.arange(4.0)[:, None]  # snippet i has value i, centred at i + 0.5
        >>> roi_align_1d(feats, torch.tensor([[0.5, 2.5]]), 2)[..., 0]
        tensor([[0.5000, 1.5000]])
    """
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a Tensor, got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(f"features must have shape (T, C), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got {features.dtype}")
    _check_segments(rois, "rois")
    if not rois.is_floating_point():
        raise TypeError(f"rois must be a floating-point tensor, got {rois.dtype}")
    if isinstance(output_size, bool) or not isinstance(output_size, int) or output_size < 1:
        raise ValueError(f"output_size must be a positive int, got {output_size!r}")
    bad = ~(torch.isfinite(rois).all(dim=1) & (rois[:, 1] > rois[:, 0]))
    if bool(bad.any()):
        raise ValueError(f"rois must be finite with end > start, got e.g. {rois[bad][:3].tolist()}")
    # knots: a zero row, the snippets, a zero row; knot j sits at x = j - 0.5. float64 keeps the differences
    # of running integrals exact enough for narrow bins in long videos.
    values = F.pad(features.double(), (0, 0, 1, 1))
    trapezoids = (values[1:] + values[:-1]) / 2  # integral between consecutive knots
    integral_at_knot = F.pad(torch.cumsum(trapezoids, dim=0), (0, 0, 1, 0))  # (t + 2, c)
    fractions = torch.linspace(0, 1, output_size + 1, dtype=torch.float64, device=rois.device)
    chunk = max(1, _ROI_CHUNK_ELEMENTS // ((output_size + 1) * max(1, features.shape[1])))
    pooled = [
        _roi_bin_means(values, integral_at_knot, part.double(), fractions).to(features.dtype)
        for part in rois.split(chunk)
    ]
    return torch.cat(pooled) if pooled else features.new_zeros(0, output_size, features.shape[1])


def _rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for an integer ``index`` of any shape, as one ``index_select`` (the faster kernel)."""
    return table.index_select(0, index.flatten()).view(*index.shape, table.shape[1])


def _roi_bin_means(values: Tensor, integral_at_knot: Tensor, rois: Tensor, fractions: Tensor) -> Tensor:
    edges = rois[:, :1] + (rois[:, 1:] - rois[:, :1]) * fractions  # (n, b + 1) bin edges in x
    last_knot = values.shape[0] - 1
    position = (edges + 0.5).clamp(0, last_knot)  # knot coordinate; the signal is 0 outside the knots
    knot = position.floor().long().clamp(max=last_knot - 1)  # left knot of the interval holding the edge
    offset = (position - knot)[..., None]
    left, right, whole = _rows(values, knot), _rows(values, knot + 1), _rows(integral_at_knot, knot)
    # integral from the first knot to the edge: whole intervals, then the partial trapezoid
    integral = whole + offset * left + offset**2 / 2 * (right - left)
    widths = (edges[:, 1:] - edges[:, :-1])[..., None]
    return (integral[:, 1:] - integral[:, :-1]) / widths
