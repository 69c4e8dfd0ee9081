"""Diagnostics of the robustness grid (``examples/robustness_grid.py --diagnostics``), scored on a run's
trained networks without retraining any of them: decision record 0015's tables.

**Fusion variants**: ways for the base model's own detections to enter the two-stage output
(:data:`VARIANTS`), each scored by mAP AVG 0.1:0.7 and at tIoU 0.7:

- ``two-stage``: the configured two-stage detections, as the grid reports them;
- ``base``: the base model's detections alone;
- ``pooled``: both sets of detections in one list per class, then the per-class soft-NMS;
- ``base re-scored + two-stage``: the base's detections with Stage 2's class probability on their
  segments, ``s_base^(1 - w) * p2(c)^w`` with ``w =`` :data:`RESCORE_WEIGHT`, pooled with the two-stage
  detections;
- ``base segments as candidates``: Stage 2 classifies the Stage-1 candidates and the segments of the
  base's detections (objectness: the base's outer-inner contrast of the detected class), scored as the
  two-stage detections are;
- ``base segments filling gaps``: the same with only the base's segments that overlap no Stage-1
  candidate by tIoU :data:`GAP_IOU` or more.

**Segment sources**: the recall at tIoU 0.7 and the number per video of the segments the pseudo-label
grouping (``config.pseudo.grouping``) makes of two of the base model's outputs, on the training and the
test split (:data:`SOURCES`). On the training split this reads the
synthetic ground truth, which the detector never sees: it says which source a pseudo-label rule
*should* trust, so that a rule made from the training split alone can be checked against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .config import GroupingSettings, ScoringSettings
from .data import Video, snippet_clock
from .detect import (
    BaseResult,
    base_contrast,
    base_detections,
    class_sequence,
    classify_proposals,
    soft_nms_per_class,
    to_detections,
)
from .evaluation import evaluate_detections
from .evaluator import protocol_options, two_stage_rows
from .pipeline import DetectorRunner
from .proposals import segment_iou
from .pseudo_labels import Segments, segments_from_scores
from .recall import evaluate_proposals, proposals_from_segments

Rows = list[tuple[int, float, float, float]]
"""Detections ``(class, score, start, end)``, start and end in snippets."""

RESCORE_WEIGHT = 0.25
"""Stage 2's share in the re-scored base detections."""

GAP_IOU = 0.5
"""A base segment fills a gap when its tIoU with every Stage-1 candidate is below this."""

VARIANTS = (
    "two-stage",
    "base",
    "pooled",
    "base re-scored + two-stage",
    "base segments as candidates",
    "base segments filling gaps",
)
SOURCES = ("boundary head (pseudo labels)", "class sequences of the labelled classes")


def pool(config: ScoringSettings, *sets: Rows) -> Rows:
    """Detections of several sources in one list per class, then the per-class soft-NMS of ``config``.

    Example:
        >>> rows = pool(ScoringSettings(), [(0, 0.9, 0.0, 4.0)], [(1, 0.5, 0.0, 4.0), (0, 0.6, 10.0, 12.0)])
        >>> [(c, round(s, 2), a, b) for c, s, a, b in rows]
        [(0, 0.9, 0.0, 4.0), (0, 0.6, 10.0, 12.0), (1, 0.5, 0.0, 4.0)]
    """
    per_class: dict[int, list[tuple[float, float, float]]] = {}
    for rows in sets:
        for c, s, a, b in rows:
            per_class.setdefault(c, []).append((s, a, b))
    tensors = {
        c: (torch.tensor([[a, b] for _, a, b in found]), torch.tensor([s for s, _, _ in found]))
        for c, found in per_class.items()
    }
    return soft_nms_per_class(tensors, config)


def segments_of(rows: Rows, score: Callable[[int, Tensor], Tensor]) -> Segments:
    """The segments of detections as one class-agnostic set, each scored by ``score(class, segments)``.

    Example:
        >>> segments_of([(2, 0.9, 0.0, 4.0), (1, 0.5, 1.0, 3.0)], lambda c, s: c * (s[:, 1] - s[:, 0]))
        Segments(segments=tensor([[0., 4.],
                [1., 3.]]), scores=tensor([8., 2.]))
    """
    segments = torch.tensor([[a, b] for _, _, a, b in rows], dtype=torch.float32).reshape(-1, 2)
    classes = torch.tensor([c for c, *_ in rows], dtype=torch.long)
    values = torch.zeros(len(rows))
    for c in classes.unique().tolist():
        at = classes == c
        values[at] = score(c, segments[at]).float()
    return Segments(segments, values)


def score_variants(runner: DetectorRunner) -> dict[str, tuple[float, float]]:
    """Every fusion variant's ``(mAP AVG 0.1:0.7, mAP at tIoU 0.7)`` in percent on the test split, from the
    runner's trained (or checkpointed) networks."""
    dataset, config = runner.dataset, runner.config
    trained = runner.train()
    test, scoring = dataset.test, config.scoring
    base = runner.base_outputs(trained.base, "test").results
    stage1 = runner.proposals(trained.stage1, trained.base, "test").stage1

    def classified(candidates: dict[str, Segments]) -> dict[str, Rows]:
        return two_stage_rows(trained.classifier, test, candidates, base, config, device=runner.device)

    own = {v.name: base_detections(base[v.name], scoring) for v in test}
    two_stage = classified(stage1)
    margin = scoring.grouping.outer_ratio
    segments = {
        name: segments_of(rows, lambda c, s, r=base[name]: base_contrast(r, c, s, margin))
        for name, rows in own.items()
    }
    probabilities = classify_proposals(
        trained.classifier,
        test,
        segments,
        topk_ratio=config.proposal_topk_ratio,
        device=runner.device,
        show_progress=False,
    )
    w = RESCORE_WEIGHT
    rescored = {
        name: [
            (c, max(s, 1e-8) ** (1 - w) * max(float(probabilities[name][0][i, c]), 1e-8) ** w, a, b)
            for i, (c, s, a, b) in enumerate(rows)
        ]
        for name, rows in own.items()
    }

    def with_base_segments(name: str, gaps_only: bool) -> Segments:
        extra, found = segments[name], stage1[name]
        keep = torch.ones(len(extra.segments), dtype=torch.bool)
        if gaps_only and len(extra.segments) and len(found.segments):
            a, b = extra.segments.T, found.segments.T
            keep = segment_iou(a[0, :, None], a[1, :, None], b[0], b[1]).amax(1) < GAP_IOU
        return Segments(
            torch.cat([found.segments, extra.segments[keep]]),
            torch.cat([found.scores, extra.scores[keep].clamp(0, 1)]),
        )

    found = {
        "two-stage": two_stage,
        "base": own,
        "pooled": {n: pool(scoring, two_stage[n], own[n]) for n in own},
        "base re-scored + two-stage": {n: pool(scoring, rescored[n], two_stage[n]) for n in own},
        "base segments as candidates": classified({n: with_base_segments(n, False) for n in own}),
        "base segments filling gaps": classified({n: with_base_segments(n, True) for n in own}),
    }
    protocol = protocol_options(dataset)
    clocks = {v.name: snippet_clock(v, dataset.snippet_seconds) for v in test}
    scores = {}
    for variant, rows in found.items():
        detections = {name: to_detections(r, *clocks[name]) for name, r in rows.items()}
        result = evaluate_detections(test, detections, dataset.num_classes, **protocol)
        at = int(np.argmin(np.abs(result.tiou_thresholds - 0.7)))
        scores[variant] = (100 * result.averages["0.1:0.7"], 100 * float(result.mean_ap[at]))
    return scores


def labelled_class_segments(result: BaseResult, video: Video, grouping: GroupingSettings) -> Segments:
    """The segments ``grouping`` makes of the class sequences of the video's labelled classes, classes
    ignored, best first."""
    found = [
        segments_from_scores(class_sequence(result, int(c)), grouping)
        for c in np.flatnonzero(np.asarray(video.label))
    ]
    segments = torch.cat([f.segments for f in found]).reshape(-1, 2)
    scores = torch.cat([f.scores for f in found])
    order = scores.argsort(descending=True, stable=True)
    return Segments(segments[order], scores[order])


def source_recall(
    runner: DetectorRunner, splits: Sequence[str] = ("train", "test")
) -> dict[str, tuple[float, float]]:
    """Recall (%) at tIoU 0.7 and segments per video of every segment source on each split, keyed
    ``"<split>: <source>"``."""
    dataset, config = runner.dataset, runner.config
    trained = runner.train()
    protocol = protocol_options(dataset)
    recall = {}
    for split in splits:
        videos = runner.videos(split)
        outputs = runner.base_outputs(trained.base, split)
        sets = {
            SOURCES[0]: outputs.segments,
            SOURCES[1]: {
                v.name: labelled_class_segments(outputs.results[v.name], v, config.pseudo.grouping)
                for v in videos
            },
        }
        clocks = {v.name: snippet_clock(v, dataset.snippet_seconds) for v in videos}
        for source, found in sets.items():
            rows = proposals_from_segments(found, dataset.snippet_seconds, clocks=clocks)
            quality = evaluate_proposals(videos, rows, recall_tiou=(0.7,), **protocol)
            recall[f"{split}: {source}"] = (100 * float(quality.recall[0, -1]), quality.proposals_per_video)
    return recall


def format_diagnostics(
    per_cell: dict[str, list[dict[str, tuple[float, float]]]],
    sources: dict[str, list[dict[str, tuple[float, float]]]],
) -> str:
    """The fusion variants (cells as rows, each variant's seed-mean AVG / mAP@0.7, and the mean over the
    cells) and the segment sources' recall (seed means)."""
    header = ["cell", *(f"{v}: AVG / @0.7" for v in VARIANTS)]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    means = {
        name: {v: np.mean([run[v] for run in runs], axis=0) for v in VARIANTS}
        for name, runs in per_cell.items()
    }
    means["mean over the cells"] = {v: np.mean([m[v] for m in means.values()], axis=0) for v in VARIANTS}
    for name, m in means.items():
        lines.append("| " + " | ".join([name, *(f"{m[v][0]:.1f} / {m[v][1]:.1f}" for v in VARIANTS)]) + " |")
    keys = list(next(iter(sources.values()))[0]) if sources else []
    lines += [
        "",
        "| cell | " + " | ".join(f"{k}: R@0.7 (per video)" for k in keys) + " |",
        "| --- |" + " --- |" * len(keys),
    ]
    for name, runs in sources.items():
        means = [np.mean([r[k] for r in runs], axis=0) for k in keys]
        lines.append(f"| {name} | " + " | ".join(f"{m[0]:.1f} ({m[1]:.1f})" for m in means) + " |")
    return "\n".join(lines)
