"""Proposal quality: average recall against the average number of proposals per video (AR@AN).

The measure of ActivityNet's proposal task (Heilbron et al., *ActivityNet: A Large-Scale Video Benchmark
for Human Activity Understanding*, CVPR 2015; ``Evaluation/eval_proposal.py`` of activitynet/ActivityNet)
that BSN and BMN report on THUMOS14 as AR@50 / AR@100 / ...:

- proposals are class-agnostic (a :class:`~.evaluation.Detection`'s label is ignored) and ranked per video
  by score, descending; ties keep the order of the video's list (a stable sort);
- **per-video cut**: at a budget ``AN`` each video keeps its top ``AN`` proposals, a video with fewer keeps
  all it has. ActivityNet's evaluator instead keeps the same *fraction* of every video's list, so that
  the total is ``AN`` times the number of videos; its curve then reports the nominal ``AN`` even where the
  lists ran out (a detector with 16 proposals per video gets an "AR@100"). The per-video cut needs no
  other video to define a video's budget, and the *actual* average number kept is reported next to every
  value (``kept_per_video``, ``proposals_per_video``), so a short list is visible, never hidden;
- a ground-truth instance is recalled at tIoU ``θ`` if any kept proposal of its video has tIoU ``>= θ``
  with it (equal counts, up to float rounding); recall = recalled / ground-truth instances of all videos;
  ``AR@AN`` is the mean of recall over ``θ`` in 0.5:0.05:0.95;
- ground truth is class-agnostic too: identical ``[start, end]`` segments of one video (the THUMOS files
  list every CliffDiving segment again as Diving) count **once**; segments that differ at all stay apart;
- the average number of proposals is taken over all evaluated ``videos``, those without ground truth
  included (ActivityNet averages over the videos with ground truth; on THUMOS14 every test video has some).

The unit option (``snippet_units``) and the ambiguous-region filter are those of
:func:`~.evaluation.evaluate_detections`; dropped proposals do not use the budget.

Axis legend: p proposals, g ground-truth instances, r tIoU thresholds of the average, q recall thresholds,
a budgets (``max_proposals``), m curve points (per-video cuts ``1..M``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy as np

from .data import SNIPPET_SECONDS, Video
from .evaluation import (
    _TIOU_TOLERANCE,
    Detection,
    _apply_protocol,
    _candidate_pairs,
    _check_order,
    _gather_rows,
)

__all__ = [
    "AR_TIOU_THRESHOLDS",
    "CURVE_COUNTS",
    "MAX_PROPOSALS",
    "RECALL_TIOU",
    "EqualBudget",
    "ProposalResult",
    "evaluate_proposals",
    "format_proposal_table",
    "format_recall_curve",
    "proposals_from_segments",
    "recall_at_equal_budget",
]

AR_TIOU_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
"""tIoU 0.5:0.05:0.95, the thresholds ActivityNet's AR averages over."""
MAX_PROPOSALS = (10, 50, 100)
RECALL_TIOU = (0.5, 0.7)
CURVE_COUNTS = (10, 20, 50, 100, 200)
"""Average numbers kept per video at which :func:`format_recall_curve` reads each set's recall."""

_NEVER = np.iinfo(np.int64).max  # first-hit rank of a ground truth that no proposal reaches


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _percent(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.1f}"


@dataclass(frozen=True, eq=False)
class ProposalResult:
    """Recall of a proposal set at several budgets and tIoU thresholds (see the module docstring).

    Attributes:
        max_proposals: the budgets ``AN`` (proposals kept per video), shape ``(a,)``.
        tiou_thresholds: thresholds of the average recall, shape ``(r,)``.
        recall_tiou: thresholds of the single-threshold recalls, shape ``(q,)``.
        average_recall: AR@AN, mean recall over ``tiou_thresholds``, shape ``(a,)``.
        recall: recall at each of ``recall_tiou`` and budget, shape ``(q, a)``.
        kept_per_video: actual average number of proposals kept per video at each budget, shape ``(a,)``.
        proposals_per_video: actual average number of proposals per video, all of them.
        curve_cut: every per-video cut ``1..M``, ``M`` the longest list (beyond it nothing changes), shape
            ``(m,)``.
        curve_kept: actual average number kept per video at each cut (the x axis of an AR-AN plot), ``(m,)``.
        curve_average_recall: AR at each cut, shape ``(m,)``.
        curve_recall: recall at each of ``recall_tiou`` and cut, shape ``(q, m)``.
        num_ground_truth: ground-truth instances after merging identical segments of a video.
        num_videos: evaluated videos.

    Recalls are fractions; ``nan`` when there is no ground truth.
    """

    max_proposals: np.ndarray
    tiou_thresholds: np.ndarray
    recall_tiou: np.ndarray
    average_recall: np.ndarray
    recall: np.ndarray
    kept_per_video: np.ndarray
    proposals_per_video: float
    curve_cut: np.ndarray
    curve_kept: np.ndarray
    curve_average_recall: np.ndarray
    curve_recall: np.ndarray
    num_ground_truth: int
    num_videos: int

    def recall_at_budget(self, budget: float, tiou: float = 0.5) -> float:
        """Recall at tIoU ``tiou`` with ``budget`` proposals per video on average.

        Per-video cuts are integers, so the actual average of most budgets lies between two cuts; recall is
        interpolated linearly in the actual average between them (from 0 at no proposals). A budget at or
        above ``proposals_per_video`` gives the recall of all proposals: a set cannot use more than it has.

        Args:
            budget: average number of proposals per video, ``>= 0``.
            tiou: one of ``recall_tiou``.

        Example:
            >>> from wstal.data import Video
            >>> v = Video("v", np.zeros((2, 1)), np.zeros((2, 1)), np.ones(1), np.array([[0.0, 4.0]]),
            ...           np.array([0]), duration=9.0)
            >>> r = evaluate_proposals([v], {"v": [Detection(0, 0.9, 6.0, 8.0), Detection(0, 0.5, 0.0, 4.0)]})
            >>> r.recall_at_budget(1.0), r.recall_at_budget(1.5), r.recall_at_budget(2.0)
            (0.0, 0.5, 1.0)
        """
        if not (isinstance(budget, (int, float, np.integer, np.floating)) and budget >= 0):
            raise ValueError(f"budget must be a number >= 0, got {budget!r}")
        near = np.flatnonzero(np.abs(self.recall_tiou - tiou) <= _TIOU_TOLERANCE)
        if near.size == 0:
            raise ValueError(f"tiou must be one of recall_tiou {self.recall_tiou.tolist()}, got {tiou!r}")
        kept = np.concatenate([[0.0], self.curve_kept])
        recall = np.concatenate([[0.0], self.curve_recall[near[0]]])
        if np.isnan(recall[-1]):
            return float("nan")
        return float(np.interp(budget, kept, recall))

    def table(self, name: str = "proposals") -> str:
        """This result as a one-row markdown table; see :func:`format_proposal_table`."""
        return format_proposal_table({name: self})

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (``nan`` becomes ``None``); recalls are fractions, not percent."""
        return {
            "max_proposals": [int(n) for n in self.max_proposals],
            "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
            "recall_tiou": [float(t) for t in self.recall_tiou],
            "average_recall": [_none_if_nan(v) for v in self.average_recall],
            "recall": [[_none_if_nan(v) for v in row] for row in self.recall],
            "kept_per_video": [float(v) for v in self.kept_per_video],
            "proposals_per_video": float(self.proposals_per_video),
            "curve": {
                "cut": [int(n) for n in self.curve_cut],
                "kept_per_video": [float(v) for v in self.curve_kept],
                "average_recall": [_none_if_nan(v) for v in self.curve_average_recall],
                "recall": [[_none_if_nan(v) for v in row] for row in self.curve_recall],
            },
            "num_ground_truth": int(self.num_ground_truth),
            "num_videos": int(self.num_videos),
        }


class EqualBudget(NamedTuple):
    """Recall of several proposal sets at one average number of proposals per video.

    Attributes:
        budget: the average number of proposals per video, the smallest of the sets' actual averages.
        tiou: the tIoU threshold.
        recall: per set name, its recall at ``budget`` (:meth:`ProposalResult.recall_at_budget`).
    """

    budget: float
    tiou: float
    recall: dict[str, float]


def _check_tiou(name: str, values: Sequence[float]) -> np.ndarray:
    thresholds = np.asarray(values, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or not np.all((thresholds > 0) & (thresholds <= 1)):
        raise ValueError(f"{name} must be a non-empty sequence of values in (0, 1], got {values!r}")
    return thresholds


def _check_budgets(max_proposals: Sequence[int]) -> np.ndarray:
    values = list(max_proposals) if isinstance(max_proposals, (list, tuple, np.ndarray)) else None
    if not values or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in values
    ):
        raise ValueError(
            f"max_proposals must be a non-empty sequence of positive ints, got {max_proposals!r}"
        )
    return np.asarray(values, dtype=np.int64)


def _gather_proposals(
    videos: Sequence[Video], proposals: Mapping[str, Sequence[Detection]]
) -> tuple[np.ndarray, np.ndarray]:
    """Proposals as a ``(p, 4)`` array ``[label, score, start, end]`` in video order, and their video index
    (labels are not read: proposals are class-agnostic)."""
    table, video_index = _gather_rows(videos, proposals, "proposals", labels=False)
    _check_order(table, "proposals")
    return table, video_index


def _ground_truth(videos: Sequence[Video]) -> tuple[np.ndarray, np.ndarray]:
    """Class-agnostic ground truth ``(g, 2)`` in video order, identical segments of a video merged."""
    segments = []
    for video in videos:
        _, first = np.unique(video.segments.reshape(-1, 2), axis=0, return_index=True)
        segments.append(video.segments.reshape(-1, 2)[np.sort(first)])
    counts = [len(s) for s in segments]
    return np.concatenate([np.zeros((0, 2)), *segments]), np.repeat(np.arange(len(videos)), counts)


def evaluate_proposals(
    videos: Sequence[Video],
    proposals: Mapping[str, Sequence[Detection]],
    *,
    max_proposals: Sequence[int] = MAX_PROPOSALS,
    tiou_thresholds: Sequence[float] = AR_TIOU_THRESHOLDS,
    recall_tiou: Sequence[float] = RECALL_TIOU,
    ambiguous: Mapping[str, np.ndarray] | None = None,
    snippet_units: bool = False,
    snippet_seconds: float = SNIPPET_SECONDS,
) -> ProposalResult:
    """AR@AN and recall at fixed tIoU of class-agnostic ``proposals`` against the ground truth of ``videos``.

    Args:
        videos: the evaluated videos; their ``segments`` are the ground truth (classes are ignored and
            identical segments of a video count once).
        proposals: per video name the scored proposals (seconds; labels ignored). Videos without an entry
            have none; names outside ``videos`` are an error.
        max_proposals: the budgets ``AN``: proposals kept per video, its best by score.
        tiou_thresholds: the thresholds AR averages over.
        recall_tiou: thresholds of the single-threshold recalls (and of the equal-budget comparison).
        ambiguous: per video name ``(M, 2)`` regions in seconds; proposals overlapping one are dropped first,
            as :func:`~.evaluation.evaluate_detections` drops detections.
        snippet_units: evaluate in snippets: ground truth ``round(t / snippet_seconds)``, proposals
            ``t / snippet_seconds``.
        snippet_seconds: snippet length in seconds, for ``snippet_units``.

    Returns:
        AR and recall at each budget, with the actual average numbers of proposals, and the full curve.

    Shape:
        - per video: proposals ``(p,)`` :class:`~.evaluation.Detection`, ground truth ``(g, 2)``
        - output: see :class:`ProposalResult`

    Example:
        >>> from wstal.data import Video
        >>> v = Video("v", np.zeros((2, 1)), np.zeros((2, 1)), np.ones(1), np.array([[0.0, 10.0]]),
        ...           np.array([0]), duration=20.0)
        >>> r = evaluate_proposals([v], {"v": [Detection(0, 0.9, 0.0, 7.0), Detection(0, 0.8, 0.0, 10.0)]},
        ...                        max_proposals=(1, 2))
        >>> r.average_recall.round(2).tolist(), r.recall.tolist(), r.kept_per_video.tolist()
        ([0.5, 1.0], [[1.0, 1.0], [1.0, 1.0]], [1.0, 2.0])
    """
    budgets = _check_budgets(max_proposals)
    thresholds = _check_tiou("tiou_thresholds", tiou_thresholds)
    recall_thresholds = _check_tiou("recall_tiou", recall_tiou)
    if len(videos) == 0:
        raise ValueError("videos must not be empty: the average number of proposals per video needs videos")
    if len({video.name for video in videos}) != len(videos):
        raise ValueError("videos must have unique names")

    table, video_index = _gather_proposals(videos, proposals)
    gt_segments, gt_video = _ground_truth(videos)
    table, video_index, gt_segments = _apply_protocol(
        table, video_index, gt_segments, gt_video, videos, ambiguous, snippet_units, snippet_seconds
    )

    # rank within each video: score descending; the stable sort keeps list order for ties
    order = np.lexsort((-table[:, 1], video_index))
    table, video_index = table[order], video_index[order]
    counts = np.bincount(video_index, minlength=len(videos))
    rank = np.arange(len(table)) - np.repeat(np.cumsum(counts) - counts, counts)

    # first[g, j]: the best rank among proposals reaching threshold j with ground truth g; recalled at a
    # cut N exactly when first < N
    all_thresholds = np.concatenate([thresholds, recall_thresholds])
    pair_p, pair_g, pair_iou = _candidate_pairs(
        video_index, table[:, 2:], gt_video, gt_segments, all_thresholds.min() - _TIOU_TOLERANCE
    )
    first = np.full((len(gt_segments), len(all_thresholds)), _NEVER, dtype=np.int64)
    for j, threshold in enumerate(all_thresholds):
        hit = pair_iou >= threshold - _TIOU_TOLERANCE
        np.minimum.at(first[:, j], pair_g[hit], rank[pair_p[hit]])

    cuts = np.arange(1, max(int(counts.max()), 1) + 1)
    num_gt = len(gt_segments)

    def recall_at(cut: np.ndarray) -> np.ndarray:  # (r + q, len(cut)); nan without ground truth
        ranks = np.sort(first, axis=0)
        recalled = np.stack([np.searchsorted(ranks[:, j], cut, side="left") for j in range(ranks.shape[1])])
        return recalled / num_gt if num_gt else np.full(recalled.shape, np.nan)

    at_budget, on_curve = recall_at(budgets), recall_at(cuts)
    r = len(thresholds)
    return ProposalResult(
        max_proposals=budgets,
        tiou_thresholds=thresholds,
        recall_tiou=recall_thresholds,
        average_recall=at_budget[:r].mean(axis=0),
        recall=at_budget[r:],
        kept_per_video=np.minimum(budgets[:, None], counts[None, :]).mean(axis=1),
        proposals_per_video=float(counts.mean()),
        curve_cut=cuts,
        curve_kept=np.minimum(cuts[:, None], counts[None, :]).mean(axis=1),
        curve_average_recall=on_curve[:r].mean(axis=0),
        curve_recall=on_curve[r:],
        num_ground_truth=num_gt,
        num_videos=len(videos),
    )


def _check_rows(rows: Mapping[str, ProposalResult]) -> list[ProposalResult]:
    results = list(rows.values())
    if not results:
        raise ValueError("rows must name at least one ProposalResult")
    first = results[0]
    for name, result in rows.items():
        if not isinstance(result, ProposalResult):
            raise TypeError(f"rows[{name!r}] must be a ProposalResult, got {type(result).__name__}")
        if (result.num_videos, result.num_ground_truth) != (first.num_videos, first.num_ground_truth):
            raise ValueError(
                f"rows must be evaluated on the same videos: {name!r} has {result.num_videos} videos and "
                f"{result.num_ground_truth} ground truth, the first row {first.num_videos} and "
                f"{first.num_ground_truth}"
            )
    return results


def recall_at_equal_budget(
    rows: Mapping[str, ProposalResult], tiou: float = 0.5, *, budget_from: Optional[Sequence[str]] = None
) -> EqualBudget:
    """Recall of every set at the same average number of proposals per video: the smallest set's average.

    The set with the fewest proposals uses all of them; the others are cut to the same average
    (:meth:`ProposalResult.recall_at_budget`), so no set wins by having more proposals.

    Args:
        rows: per name a result of :func:`evaluate_proposals` on the same videos.
        tiou: one of the results' ``recall_tiou``.
        budget_from: the names of the sets whose smallest average is the budget (default: all of them),
            e.g. the two sets a comparison is about when the table shows a third.

    Example:
        >>> from wstal.data import Video
        >>> v = Video("v", np.zeros((2, 1)), np.zeros((2, 1)), np.ones(1), np.array([[0.0, 4.0]]),
        ...           np.array([0]), duration=9.0)
        >>> few = evaluate_proposals([v], {"v": [Detection(0, 0.3, 0.0, 4.0)]})
        >>> many = evaluate_proposals([v], {"v": [Detection(0, 0.9, 6.0, 8.0), Detection(0, 0.5, 0.0, 4.0)]})
        >>> recall_at_equal_budget({"few": few, "many": many})
        EqualBudget(budget=1.0, tiou=0.5, recall={'few': 1.0, 'many': 0.0})
    """
    _check_rows(rows)
    names = list(rows) if budget_from is None else list(budget_from)
    unknown = [name for name in names if name not in rows]
    if not names or unknown:
        raise ValueError(f"budget_from must name rows among {list(rows)}, got {budget_from!r}")
    budget = min(rows[name].proposals_per_video for name in names)
    return EqualBudget(
        float(budget),
        float(tiou),
        {name: result.recall_at_budget(budget, tiou) for name, result in rows.items()},
    )


def format_proposal_table(
    rows: Mapping[str, ProposalResult],
    *,
    equal_budget_tiou: float = 0.5,
    budget_from: Optional[Sequence[str]] = None,
) -> str:
    """Proposal sets side by side as a markdown table, recalls in percent.

    Columns: the actual average number of proposals per video (``AN/video``: a set with fewer than a budget
    reaches that budget's AR with all it has), AR at each budget, recall at each ``recall_tiou`` at the
    largest budget and, for two or more sets, recall at ``equal_budget_tiou`` with every set cut to the
    smallest set's average (:func:`recall_at_equal_budget`).

    Args:
        rows: per set name its result; all on the same videos, budgets and ``recall_tiou``.
        equal_budget_tiou: tIoU of the equal-budget column.
        budget_from: the sets whose smallest average is the equal budget (default: all).

    Example:
        >>> from wstal.data import Video
        >>> v = Video("v", np.zeros((2, 1)), np.zeros((2, 1)), np.ones(1), np.array([[0.0, 4.0]]),
        ...           np.array([0]), duration=9.0)
        >>> few = evaluate_proposals([v], {"v": [Detection(0, 0.3, 0.0, 4.0)]}, max_proposals=(1, 2))
        >>> many = evaluate_proposals([v], {"v": [Detection(0, 0.9, 6.0, 8.0), Detection(0, 0.5, 0.0, 4.0)]},
        ...                           max_proposals=(1, 2))
        >>> print(format_proposal_table({"few": few, "many": many}))
        | proposals | AN/video | AR@1 | AR@2 | R@0.5 @2 | R@0.7 @2 | R@0.5 @1.0 (equal) |
        | --- | --- | --- | --- | --- | --- | --- |
        | few | 1.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |
        | many | 2.0 | 0.0 | 100.0 | 100.0 | 100.0 | 0.0 |
    """
    results = _check_rows(rows)
    first = results[0]
    for name, result in rows.items():
        if not (
            np.array_equal(result.max_proposals, first.max_proposals)
            and np.array_equal(result.recall_tiou, first.recall_tiou)
        ):
            raise ValueError(
                f"rows must share max_proposals and recall_tiou; {name!r} differs from the first row"
            )
    last = int(np.argmax(first.max_proposals))
    largest = int(first.max_proposals[last])
    header = [
        "proposals",
        "AN/video",
        *(f"AR@{n}" for n in first.max_proposals),
        *(f"R@{t:g} @{largest}" for t in first.recall_tiou),
    ]
    equal = (
        recall_at_equal_budget(rows, equal_budget_tiou, budget_from=budget_from) if len(results) > 1 else None
    )
    if equal is not None:
        header.append(f"R@{equal.tiou:g} @{equal.budget:.1f} (equal)")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for name, result in rows.items():
        cells = [
            name,
            f"{result.proposals_per_video:.1f}",
            *(_percent(v) for v in result.average_recall),
            *(_percent(v) for v in result.recall[:, last]),
        ]
        if equal is not None:
            cells.append(_percent(equal.recall[name]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_recall_curve(rows: Mapping[str, ProposalResult], counts: Sequence[float] = CURVE_COUNTS) -> str:
    """Recall against the number of proposals kept per video, sets as rows: each cell is the recall at
    every ``recall_tiou`` (percent, ``/``-separated) at that average count per video
    (:meth:`ProposalResult.recall_at_budget`: a set with fewer proposals keeps all it has).

    Example:
        >>> from wstal.data import Video
        >>> v = Video("v", np.zeros((2, 1)), np.zeros((2, 1)), np.ones(1), np.array([[0.0, 4.0]]),
        ...           np.array([0]), duration=9.0)
        >>> r = evaluate_proposals([v], {"v": [Detection(0, 0.9, 6.0, 8.0), Detection(0, 0.5, 0.0, 3.0)]})
        >>> print(format_recall_curve({"mine": r}, counts=(1, 2)))
        | proposals | R@0.5 / R@0.7 at 1 per video | R@0.5 / R@0.7 at 2 per video |
        | --- | --- | --- |
        | mine | 0.0 / 0.0 | 100.0 / 100.0 |
    """
    results = _check_rows(rows)
    tious = results[0].recall_tiou
    for name, result in rows.items():
        if not np.array_equal(result.recall_tiou, tious):
            raise ValueError(f"rows must share recall_tiou; {name!r} differs from the first row")
    reading = " / ".join(f"R@{t:g}" for t in tious)
    header = ["proposals", *(f"{reading} at {n:g} per video" for n in counts)]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for name, result in rows.items():
        cells = [" / ".join(_percent(result.recall_at_budget(n, t)) for t in tious) for n in counts]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def proposals_from_segments(
    segments: Mapping[str, Any],
    snippet_seconds: float = SNIPPET_SECONDS,
    *,
    clocks: Optional[Mapping[str, tuple[float, float]]] = None,
) -> dict[str, list[Detection]]:
    """Scored segments in snippets (``Segments`` of :mod:`.pseudo_labels`) as class-agnostic proposals in seconds.

    Args:
        segments: per video name an object with ``segments`` ``(n, 2)`` (snippets) and ``scores`` ``(n,)``,
            tensors or arrays.
        snippet_seconds: snippet length in seconds.
        clocks: per video name ``(snippet_seconds, start_seconds)`` (:func:`~.data.snippet_clock`) for videos
            whose features have their own timing; position ``p`` is at ``start_seconds + p * snippet_seconds``.
            Videos not listed use ``snippet_seconds`` from 0 s.

    Example:
        >>> from types import SimpleNamespace
        >>> s = SimpleNamespace(segments=np.array([[2.0, 5.0]]), scores=np.array([0.75]))
        >>> proposals_from_segments({"v": s}, snippet_seconds=0.5)
        {'v': [Detection(label=0, score=0.75, start=1.0, end=2.5)]}
        >>> proposals_from_segments({"v": s}, clocks={"v": (0.5, 0.25)})
        {'v': [Detection(label=0, score=0.75, start=1.25, end=2.75)]}
    """
    if not (
        isinstance(snippet_seconds, (int, float)) and np.isfinite(snippet_seconds) and snippet_seconds > 0
    ):
        raise ValueError(f"snippet_seconds must be positive, got {snippet_seconds!r}")
    clocks = clocks or {}
    out = {}
    for name, s in segments.items():
        scale, start = clocks.get(name, (snippet_seconds, 0.0))
        out[name] = [
            Detection(0, float(score), start + float(a) * scale, start + float(b) * scale)
            for (a, b), score in zip(s.segments.tolist(), s.scores.tolist())
        ]
    return out
