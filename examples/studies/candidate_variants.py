"""Diagnostics of the robustness grid (``examples/robustness_grid.py --diagnostics``), scored on a run's
trained networks without retraining any of them: decision record 0016's tables.

**Candidate variants**: what Stage 2 classifies at inference and the objectness it scores them with
(:data:`VARIANTS`, each a change of :class:`~wstal.config.ScoringSettings`), scored by mAP AVG 0.1:0.7
and at tIoU 0.7, beside the configured two-stage detections and the base model's alone. The Stage-1
proposals with their own objectness are the two stages before decision 0016.

**Segment sources**: the recall at tIoU 0.7 and the number per video of the segments the pseudo-label
grouping (``config.pseudo.grouping``) makes of two of the base model's outputs, on the training and the
test split (:data:`SOURCES`). On the training split this reads the
synthetic ground truth, which the detector never sees: it says which source a pseudo-label rule
*should* trust, so that a rule made from the training split alone can be checked against it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional

import numpy as np

from wstal.data import WSTALDataset
from wstal.detect import segments_of_classes
from wstal.evaluator import detection_map, map_at, protocol_options
from wstal.inference import Inference, detect, detect_base
from wstal.recall import evaluate_proposals, proposals_from_segments
from wstal.trained import TrainedDetector

VARIANTS: dict[str, Optional[dict[str, str]]] = {
    "two-stage": {},
    "base": None,
    "Stage-1 proposals, own objectness": {"candidates": "stage1", "objectness": "own"},
    "Stage-1 proposals, T-RPN support": {"candidates": "stage1", "objectness": "rpn"},
    "Stage-1 + base segments, own objectness": {"candidates": "stage1+base", "objectness": "own"},
    "base segments, T-RPN support": {"candidates": "base", "objectness": "rpn"},
}
"""The variants by name: the changes to the configured scoring settings (``{}``: as configured; None: the
base model's detections alone)."""

SOURCES = ("boundary head (pseudo labels)", "class sequences of the labelled classes")


def score_variants(
    trained: TrainedDetector, dataset: WSTALDataset, *, reuse: Optional[Inference] = None
) -> dict[str, tuple[float, float]]:
    """Every variant's ``(mAP AVG 0.1:0.7, mAP at tIoU 0.7)`` in percent on the test split, by
    :func:`~wstal.inference.detect` with the variant's scoring settings (``reuse``: an earlier inference of
    the test split, whose network outputs are taken)."""
    scores = {}
    for variant, changes in VARIANTS.items():
        scoring = dataclasses.replace(trained.config.scoring, **(changes or {}))
        found = detect(
            trained, dataset.test, scoring=scoring, reuse=reuse, snippet_seconds=dataset.snippet_seconds
        )
        reuse = reuse or found
        table = detection_map(dataset, found.detections("base" if changes is None else "two_stage"))
        scores[variant] = (100 * table.averages["0.1:0.7"], map_at(table, 0.7))
    return scores


def source_recall(
    trained: TrainedDetector, dataset: WSTALDataset, splits: Sequence[str] = ("train", "test")
) -> dict[str, tuple[float, float]]:
    """Recall (%) at tIoU 0.7 and segments per video of every segment source on each split, keyed
    ``"<split>: <source>"``."""
    protocol = protocol_options(dataset)
    grouping = trained.config.pseudo.grouping
    recall = {}
    for split in splits:
        videos = {"train": dataset.train, "test": dataset.test}[split]
        # the base model's part of the inference path: the sources are the base's, nothing else need run
        found = detect_base(
            trained.base_model, videos, trained.config, snippet_seconds=dataset.snippet_seconds
        )
        sets = {
            SOURCES[0]: found.grouped,
            SOURCES[1]: {
                v.name: segments_of_classes(found.base[v.name], np.flatnonzero(np.asarray(v.label)), grouping)
                for v in videos
            },
        }
        for source, segments in sets.items():
            rows = proposals_from_segments(segments, dataset.snippet_seconds, clocks=found.clocks)
            quality = evaluate_proposals(videos, rows, recall_tiou=(0.7,), **protocol)
            recall[f"{split}: {source}"] = (100 * float(quality.recall[0, -1]), quality.proposals_per_video)
    return recall


def format_diagnostics(
    per_cell: dict[str, list[dict[str, tuple[float, float]]]],
    sources: dict[str, list[dict[str, tuple[float, float]]]],
) -> str:
    """The candidate variants (cells as rows, each variant's seed-mean AVG / mAP@0.7, and the mean over the
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


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two scorings of the same items: concordant minus discordant pairs over the
    geometric mean of the pairs each scoring does not tie (1: the same order, ties included; nan when
    one scoring ties everything).

    Example:
        >>> kendall_tau([1, 2, 3], [10, 20, 30]), kendall_tau([1, 2, 3], [30, 20, 10])
        (1.0, -1.0)
        >>> round(kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]), 4)  # one of the six pairs swapped: (5 - 1) / 6
        0.6667
        >>> kendall_tau([0, 0, 2], [0, 0, 5])  # the same order, a tie included
        1.0
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"kendall_tau needs two scorings of the same >= 2 items, got {len(a)} and {len(b)}")
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    da = np.array([np.sign(a[i] - a[j]) for i, j in pairs])
    db = np.array([np.sign(b[i] - b[j]) for i, j in pairs])
    untied = np.sqrt(float(np.count_nonzero(da)) * float(np.count_nonzero(db)))
    return float(np.sum(da * db) / untied) if untied > 0 else float("nan")


def compare_rankings(
    short: dict[str, list[dict[str, Sequence[float]]]], full: dict[str, list[dict[str, Sequence[float]]]]
) -> tuple[str, dict[str, float]]:
    """Do two grids' diagnostics (a shortened and the full schedule, say) rank the variants alike? Per cell
    both hold, the variants' seed-mean AVG under each, the order (best first, variants numbered as in
    :data:`VARIANTS`), Kendall's tau of the two orders and whether their best variant is the same.

    Returns the markdown table and Kendall's tau per cell.

    Example:
        >>> a = {"c": [{"x": (3.0, 0.0), "y": (2.0, 0.0), "z": (1.0, 0.0)}]}
        >>> b = {"c": [{"x": (9.0, 0.0), "y": (7.0, 0.0), "z": (8.0, 0.0)}]}
        >>> compare_rankings(a, b)[1]
        {'c': 0.3333333333333333}
    """
    lines = [
        "| cell | order, first grid | order, second grid | Kendall's tau (AVG) | same best |",
        "| --- | --- | --- | --- | --- |",
    ]
    taus = {}
    for cell in [c for c in short if c in full]:
        names = [v for v in short[cell][0] if v in full[cell][0]]
        means = [
            [float(np.mean([run[v][0] for run in runs])) for v in names] for runs in (short[cell], full[cell])
        ]
        orders = [sorted(range(len(names)), key=lambda i, m=m: -m[i]) for m in means]
        taus[cell] = kendall_tau(*means)
        text = [" > ".join(f"{i + 1} ({m[i]:.1f})" for i in order) for order, m in zip(orders, means)]
        same = "yes" if orders[0][0] == orders[1][0] else "no"
        lines.append(f"| {cell} | {text[0]} | {text[1]} | {taus[cell]:.2f} | {same} |")
    legend = "Variants: " + "; ".join(f"{i + 1} {v}" for i, v in enumerate(names)) if taus else ""
    return "\n".join([*lines, "", legend]), taus
