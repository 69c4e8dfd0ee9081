"""ActivityNet-style temporal action detection mAP, vectorized, with the THUMOS14 community options.

The rules are those of the ActivityNet detection evaluator (``Evaluation/eval_detection.py`` of
activitynet/ActivityNet), which W-TALC, CO2-Net and P-MIL all reuse:

- per class, detections are sorted by score (descending); ties keep a fixed order: the order of ``videos``,
  then the order of each video's detection list (a stable sort, so results never depend on the sort
  algorithm);
- each detection is matched to the not-yet-matched ground truth of its class *in the same video* with the
  highest tIoU, provided that tIoU reaches the threshold (a tIoU equal to the threshold matches; ties in
  tIoU go to the ground truth listed first); each ground truth is matched at most once; everything else,
  including a detection in a video without ground truth of its class, is a false positive;
- AP is the area under the precision-recall curve with all-point interpolation (precision made
  monotonically non-increasing from the right, summed over the recall steps);
- classes without ground truth have no AP (``nan``) and are left out of the mean; a class with ground truth
  but no detections has AP 0.

The THUMOS option set (``snippet_units=True`` plus ``ambiguous=``) reproduces the CO2-Net / P-MIL
evaluation: ground truth is converted to snippets and rounded (``round(t * 25 / 16)``, half to even like
Python's ``round``), detections are divided by the snippet length without rounding, and detections that
overlap an ``Ambiguous_test.txt`` region of their video are dropped before matching. Ground truth is
evaluated as given: the THUMOS files already list every CliffDiving segment again as Diving.

Axis legend: d detections, g ground-truth instances, p (detection, ground truth) candidate pairs,
r tIoU thresholds, k classes.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import numpy as np
import numpy.typing as npt
import torch

from .data import SNIPPET_SECONDS, Video, snippet_clock
from .proposals import segment_iou

__all__ = [
    "AVERAGE_RANGES",
    "TIOU_THRESHOLDS",
    "Detection",
    "MAPResult",
    "evaluate_detections",
    "temporal_iou",
]

TIOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
AVERAGE_RANGES = {"0.1:0.5": (0.1, 0.5), "0.3:0.7": (0.3, 0.7), "0.1:0.7": (0.1, 0.7)}
"""The averages reported for THUMOS14: mean of mAP over the thresholds inside each closed range."""

_TIOU_TOLERANCE = 1e-9  # a tIoU equal to the threshold up to float rounding still matches


class Detection(NamedTuple):
    """One detected action instance.

    Attributes:
        label: class index.
        score: confidence; higher ranks first.
        start: start time in seconds.
        end: end time in seconds (``end >= start``).
    """

    label: int
    score: float
    start: float
    end: float


def _nan_to_none(values: np.ndarray) -> list[Any]:
    return [None if np.isnan(v) else float(v) for v in values]


@dataclass
class MAPResult:
    """Detection mAP at several tIoU thresholds.

    Attributes:
        tiou_thresholds: the thresholds, shape ``(r,)``.
        ap: per threshold and class AP, shape ``(r, k)``; ``nan`` for classes without ground truth.
        mean_ap: mean AP over the classes with ground truth, shape ``(r,)``.
        averages: mean of ``mean_ap`` over the thresholds in each of :data:`AVERAGE_RANGES` (a range with no
            threshold in it is left out).
        num_ground_truth: ground-truth instances per class that took part, shape ``(k,)``.
    """

    tiou_thresholds: np.ndarray
    ap: np.ndarray
    mean_ap: np.ndarray
    averages: dict[str, float]
    num_ground_truth: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def table(self) -> str:
        """The mAP row as a markdown table: one column per threshold, then the averages, in percent.

        Example:
            >>> r = MAPResult(np.array([0.3, 0.5]), np.array([[0.5, 1.0], [0.25, 0.5]]),
            ...               np.array([0.75, 0.375]), {"0.3:0.7": 0.5625})
            >>> print(r.table())
            | tIoU | 0.3 | 0.5 | AVG 0.3:0.7 |
            | --- | --- | --- | --- |
            | mAP (%) | 75.0 | 37.5 | 56.2 |
        """
        header = [f"{t:.1f}" for t in self.tiou_thresholds] + [f"AVG {name}" for name in self.averages]
        values = [*self.mean_ap.tolist(), *self.averages.values()]
        cells = ["n/a" if np.isnan(v) else f"{100 * v:.1f}" for v in values]
        return "\n".join(
            [
                "| tIoU | " + " | ".join(header) + " |",
                "| --- | " + " | ".join("---" for _ in header) + " |",
                "| mAP (%) | " + " | ".join(cells) + " |",
            ]
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (``nan`` becomes ``None``); AP values are fractions, not percent."""
        return {
            "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
            "mean_ap": _nan_to_none(self.mean_ap),
            "averages": {name: (None if np.isnan(v) else float(v)) for name, v in self.averages.items()},
            "ap": [_nan_to_none(row) for row in self.ap],
            "num_ground_truth": [int(n) for n in self.num_ground_truth],
        }


def _iou(start_a: np.ndarray, end_a: np.ndarray, start_b: np.ndarray, end_b: np.ndarray) -> np.ndarray:
    """The detector's one tIoU rule (:func:`wstal.proposals.segment_iou`) on float64 arrays, broadcasting."""
    tensors = (torch.from_numpy(np.asarray(x, dtype=np.float64)) for x in (start_a, end_a, start_b, end_b))
    return segment_iou(*tensors).numpy()


def temporal_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """Temporal intersection over union of every segment in ``a`` with every segment in ``b``.

    Args:
        a: segments ``[start, end]``.
        b: segments ``[start, end]``.

    Returns:
        The tIoU matrix (0 where the union is empty).

    Shape:
        - a: ``(n, 2)``
        - b: ``(m, 2)``
        - output: ``(n, m)`` float64

    Example:
        >>> temporal_iou([[0.0, 2.0]], [[1.0, 3.0], [0.0, 1.0], [5.0, 6.0]]).round(4).tolist()
        [[0.3333, 0.5, 0.0]]
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"{name} must have shape (N, 2), got {x.shape}")
    return _iou(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])


def _greedy_match(pair_det: np.ndarray, pair_gt: np.ndarray, num_det: int, num_gt: int) -> np.ndarray:
    """Which detections the sequential ActivityNet matching marks as true positives, computed in rounds.

    ``pair_det``/``pair_gt`` list the candidate pairs (tIoU above the threshold), sorted by detection rank and,
    within a detection, by preference (tIoU descending). Sequentially, each detection in rank order takes its
    most preferred still-free ground truth. A detection's outcome is already final when no earlier undecided
    detection competes for any of its free candidates; each round commits all such detections at once (the
    earliest undecided detection of every video and class always qualifies, so the loop ends after at most
    one round per ground truth of the fullest (video, class)) and removes the pairs that became impossible.
    """
    true_positive = np.zeros(num_det, dtype=bool)
    while pair_det.size:
        earliest = np.full(num_gt, num_det)
        np.minimum.at(earliest, pair_gt, pair_det)
        contested = np.zeros(num_det, dtype=bool)
        contested[pair_det[earliest[pair_gt] != pair_det]] = True
        preferred = np.ones(pair_det.size, dtype=bool)
        preferred[1:] = pair_det[1:] != pair_det[:-1]
        commit = preferred & ~contested[pair_det]
        true_positive[pair_det[commit]] = True
        matched_gt = np.zeros(num_gt, dtype=bool)
        matched_gt[pair_gt[commit]] = True
        alive = ~(true_positive[pair_det] | matched_gt[pair_gt])
        pair_det, pair_gt = pair_det[alive], pair_gt[alive]
    return true_positive


def _average_precision(true_positive: np.ndarray, num_positive: int) -> np.ndarray:
    """All-point interpolated AP per row of ``true_positive`` ``(r, d)`` (detections in rank order)."""
    if true_positive.shape[1] == 0:
        return np.zeros(true_positive.shape[0])
    precision = np.cumsum(true_positive, axis=1) / np.arange(1, true_positive.shape[1] + 1)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    # recall grows by 1 / num_positive exactly at each true positive
    return np.where(true_positive, envelope, 0.0).sum(axis=1) / num_positive


def _check_thresholds(tiou_thresholds: Sequence[float]) -> np.ndarray:
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or not np.all((thresholds > 0) & (thresholds <= 1)):
        raise ValueError(
            f"tiou_thresholds must be a non-empty sequence of values in (0, 1], got {tiou_thresholds!r}"
        )
    return thresholds


def _gather_rows(
    videos: Sequence[Video], items: Mapping[str, Sequence[Detection]], what: str, *, labels: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-video ``(label, score, start, end)`` rows as a ``(n, 4)`` float64 array in video order, and each
    row's video index; ``what`` names the rows in errors. Scores and times must be finite with
    ``end >= start``; with ``labels`` the labels must be finite too (the caller checks their range)."""
    unknown = sorted(set(items) - {video.name for video in videos})
    if unknown:
        raise ValueError(
            f"{what} name {len(unknown)} video(s) that are not among the evaluated videos, e.g. {unknown[:3]}"
        )
    per_video = [items.get(video.name, ()) for video in videos]
    counts = np.fromiter((len(d) for d in per_video), dtype=np.int64, count=len(per_video))
    rows = list(itertools.chain.from_iterable(per_video))
    try:
        table = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{what} must be (label, score, start, end) tuples such as Detection: {error}"
        ) from error
    if table.shape[0] != len(rows):
        raise TypeError(f"{what} must be (label, score, start, end) tuples such as Detection")
    if not np.all(np.isfinite(table if labels else table[:, 1:])):
        raise ValueError(f"{what} must have finite scores and times, found nan or inf")
    return table, np.repeat(np.arange(len(videos)), counts)


def _check_order(table: np.ndarray, what: str) -> None:
    start, end = table[:, 2], table[:, 3]
    if np.any(end < start):
        raise ValueError(f"{what} must have end >= start, got {table[end < start][:3, 2:].tolist()}")


def _gather_detections(
    videos: Sequence[Video], detections: Mapping[str, Sequence[Detection]], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Detections as a ``(d, 4)`` array ``[label, score, start, end]`` in video order, and their video index."""
    table, det_video = _gather_rows(videos, detections, "detections", labels=True)
    label = table[:, 0]
    bad = (label != np.round(label)) | (label < 0) | (label >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"detection labels must be class indices in [0, {num_classes}), got {label[bad][:5].tolist()}"
        )
    _check_order(table, "detections")
    return table, det_video


def _drop_ambiguous(
    table: np.ndarray, det_video: np.ndarray, videos: Sequence[Video], regions: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Remove detections that overlap (by a positive length) a region of their video."""
    keep = np.ones(len(table), dtype=bool)
    for index, video in enumerate(videos):
        spans = regions.get(video.name)
        if spans is None or spans.size == 0:
            continue
        rows = np.flatnonzero(det_video == index)
        overlap = np.minimum(table[rows, 3, None], spans[None, :, 1]) - np.maximum(
            table[rows, 2, None], spans[None, :, 0]
        )
        keep[rows[np.any(overlap > 0, axis=1)]] = False
    return table[keep], det_video[keep]


def _candidate_pairs(
    det_key: np.ndarray,
    det_segments: np.ndarray,
    gt_key: np.ndarray,
    gt_segments: np.ndarray,
    min_tiou: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (detection, ground truth) pair with the same key and tIoU >= ``min_tiou``, with its tIoU.

    ``gt_key`` must be sorted. Pairs come sorted by detection, then by preference: tIoU descending, then
    ground truth in order.
    """
    first = np.searchsorted(gt_key, det_key, side="left")
    count = np.searchsorted(gt_key, det_key, side="right") - first
    pair_det = np.repeat(np.arange(len(det_key)), count)
    pair_gt = first[pair_det] + np.arange(pair_det.size) - np.repeat(np.cumsum(count) - count, count)
    pair_iou = _iou(
        det_segments[pair_det, 0], det_segments[pair_det, 1], gt_segments[pair_gt, 0], gt_segments[pair_gt, 1]
    )
    reachable = pair_iou >= min_tiou
    pair_det, pair_gt, pair_iou = pair_det[reachable], pair_gt[reachable], pair_iou[reachable]
    preference = np.lexsort((pair_gt, -pair_iou, pair_det))
    return pair_det[preference], pair_gt[preference], pair_iou[preference]


def _apply_protocol(
    table: np.ndarray,
    row_video: np.ndarray,
    gt_segments: np.ndarray,
    gt_video: np.ndarray,
    videos: Sequence[Video],
    ambiguous: Optional[Mapping[str, Any]],
    snippet_units: bool,
    snippet_seconds: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The THUMOS options on gathered rows (``table[:, 2:]`` = start, end in seconds) and ground truth:
    snippet units (ground truth rounded to snippets, rows converted without rounding, each through its
    video's clock, :func:`~.data.snippet_clock`) and the ambiguous-region filter (rows overlapping an
    ambiguous region of their video dropped)."""
    if snippet_units:
        if not (
            isinstance(snippet_seconds, (int, float)) and np.isfinite(snippet_seconds) and snippet_seconds > 0
        ):
            raise ValueError(f"snippet_seconds must be positive, got {snippet_seconds!r}")
        clocks = {video.name: snippet_clock(video, snippet_seconds) for video in videos}
        scale, start = (np.array([clocks[v.name][i] for v in videos], dtype=np.float64) for i in (0, 1))
        gt_segments = np.round((gt_segments - start[gt_video, None]) / scale[gt_video, None])
        table[:, 2:] = (table[:, 2:] - start[row_video, None]) / scale[row_video, None]
    if ambiguous:
        regions = {
            name: np.asarray(spans, dtype=np.float64).reshape(-1, 2) for name, spans in ambiguous.items()
        }
        if snippet_units:
            default = (float(snippet_seconds), 0.0)
            regions = {
                name: np.round((spans - clocks.get(name, default)[1]) / clocks.get(name, default)[0])
                for name, spans in regions.items()
            }
        table, row_video = _drop_ambiguous(table, row_video, videos, regions)
    return table, row_video, gt_segments


def evaluate_detections(
    videos: Sequence[Video],
    detections: Mapping[str, Sequence[Detection]],
    num_classes: int,
    *,
    tiou_thresholds: Sequence[float] = TIOU_THRESHOLDS,
    ambiguous: Mapping[str, np.ndarray] | None = None,
    snippet_units: bool = False,
    snippet_seconds: float = SNIPPET_SECONDS,
) -> MAPResult:
    """Temporal detection mAP of ``detections`` against the ground truth of ``videos``.

    Args:
        videos: the evaluated videos; their ``segments``/``segment_classes`` are the ground truth, their order
            breaks score ties.
        detections: per video name the detections (seconds). Videos without an entry have no detections;
            names outside ``videos`` are an error.
        num_classes: number of classes ``k``.
        tiou_thresholds: the tIoU thresholds.
        ambiguous: per video name ``(M, 2)`` regions in seconds; detections overlapping one (by a positive
            length) are dropped before matching (THUMOS ``Ambiguous_test.txt`` convention).
        snippet_units: evaluate in snippets like CO2-Net / P-MIL: ground truth (and ambiguous regions)
            ``round(t / snippet_seconds)``, detections ``t / snippet_seconds``; a video with a
            :class:`~.data.FeatureTiming` uses its own clock, ``(t - start_seconds) / snippet_seconds``.
        snippet_seconds: snippet length in seconds, for ``snippet_units`` (videos without a timing).

    Returns:
        Per class AP, mAP per threshold and the averages of :data:`AVERAGE_RANGES`.

    Example:
        >>> v = Video("v", np.zeros((10, 2)), np.zeros((10, 2)), np.array([1.0]),
        ...           np.array([[1.0, 3.0]]), np.array([0]), duration=6.4)
        >>> dets = {"v": [Detection(0, 0.9, 1.0, 2.0), Detection(0, 0.8, 1.0, 3.0)]}
        >>> evaluate_detections([v], dets, 1, tiou_thresholds=(0.5, 0.7)).mean_ap.tolist()
        [1.0, 0.5]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    thresholds = _check_thresholds(tiou_thresholds)
    if len({video.name for video in videos}) != len(videos):
        raise ValueError("videos must have unique names")

    gt_segments = np.concatenate([v.segments for v in videos]) if videos else np.zeros((0, 2))
    gt_class = np.concatenate([v.segment_classes for v in videos]) if videos else np.zeros(0, np.int64)
    gt_video = np.repeat(np.arange(len(videos)), [len(v.segments) for v in videos])
    if np.any(gt_class >= num_classes):
        raise ValueError(f"ground truth uses class {int(gt_class.max())} but num_classes is {num_classes}")
    table, det_video = _gather_detections(videos, detections, num_classes)

    table, det_video, gt_segments = _apply_protocol(
        table, det_video, gt_segments, gt_video, videos, ambiguous, snippet_units, snippet_seconds
    )

    # rank: class, then score descending; a stable sort keeps video order, then list order, for ties
    order = np.lexsort((-table[:, 1], table[:, 0]))
    table, det_video = table[order], det_video[order]
    det_class = table[:, 0].astype(np.int64)

    gt_key = gt_video * num_classes + gt_class
    gt_order = np.argsort(gt_key, kind="stable")
    pair_det, pair_gt, pair_iou = _candidate_pairs(
        det_video * num_classes + det_class,
        table[:, 2:],
        gt_key[gt_order],
        gt_segments[gt_order],
        thresholds.min() - _TIOU_TOLERANCE,
    )
    true_positive = np.stack(
        [
            _greedy_match(pair_det[keep], pair_gt[keep], len(table), len(gt_key))
            for keep in (pair_iou[None, :] >= thresholds[:, None] - _TIOU_TOLERANCE)
        ]
    )

    num_ground_truth = np.bincount(gt_class, minlength=num_classes)
    class_bounds = np.searchsorted(det_class, np.arange(num_classes + 1))
    ap = np.full((len(thresholds), num_classes), np.nan)
    for c in np.flatnonzero(num_ground_truth):
        ap[:, c] = _average_precision(
            true_positive[:, class_bounds[c] : class_bounds[c + 1]], num_ground_truth[c]
        )

    has_gt = num_ground_truth > 0
    mean_ap = ap[:, has_gt].mean(axis=1) if has_gt.any() else np.full(len(thresholds), np.nan)
    averages = {}
    for name, (low, high) in AVERAGE_RANGES.items():
        inside = (thresholds >= low - _TIOU_TOLERANCE) & (thresholds <= high + _TIOU_TOLERANCE)
        if inside.any():
            averages[name] = float(mean_ap[inside].mean())
    return MAPResult(thresholds, ap, mean_ap, averages, num_ground_truth)
