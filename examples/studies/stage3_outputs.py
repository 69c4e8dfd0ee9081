"""What Stage 3's output could be, scored on a robustness grid's trained networks without retraining any.

    python examples/studies/robustness_grid.py --out OUT --stage3 ...    # trains the grid with Stage 3
    python examples/studies/stage3_outputs.py --out OUT --stage3 ...     # the same flags: scores the outputs

Every (cell, seed) run of the grid is loaded from its checkpoints (the grid's flags name them, as
``--resume`` does) and its test split detected once; then each output of :data:`OUTPUTS` is made from the
same network outputs: the student alone, the two stages' detections rescored by the student, the union of
both, and the two stages' detections refined by it (boundaries voted, scores fused: the configured Stage
3, :func:`wstal.student.refine`) with each half of the refinement alone. Writes ``OUT/stage3_outputs.md``
(mAP AVG 0.1:0.7 / at tIoU 0.1 / at 0.7, means over the seeds, per cell and over the grid) and ``.json``.
Decision record 0018 reads it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the wstal package and the studies

import numpy as np
import torch

from studies.experiments import write_json
from wstal import launch
from wstal.config import ScoringSettings, StudentSettings
from wstal.data import WSTALDataset
from wstal.detect import class_detections, soft_nms_per_class, support, to_detections
from wstal.evaluator import detection_map, map_at
from wstal.inference import Inference, Rows, detect
from wstal.student import refine

Output = Callable[[Inference, str, StudentSettings, ScoringSettings], Rows]
"""One video's output rows from an inference with a student, the student's and the scoring settings."""


def _rows_of(detector: str) -> Output:
    return lambda found, name, settings, scoring: found.rows[detector][name]


def _refined(**changes: float) -> Output:
    def make(found: Inference, name: str, settings: StudentSettings, scoring: ScoringSettings) -> Rows:
        varied = dataclasses.replace(settings, **changes)
        teacher, student = found.rows["two_stage"][name], found.rows["student"][name]
        return refine(teacher, student, *found.student[name], varied, scoring)

    return make


def _union(weight: float) -> Output:
    """Every two-stage and every student detection of a class, each scored by a weighted geometric mean
    of the two sets' support for it (:func:`~wstal.detect.support`)."""

    def make(found: Inference, name: str, settings: StudentSettings, scoring: ScoringSettings) -> Rows:
        teacher, student = found.rows["two_stage"][name], found.rows["student"][name]
        per_class = {}
        for c in sorted({int(r[0]) for r in (*teacher, *student)}):
            sets = [class_detections(rows, c) for rows in (teacher, student)]
            segments = torch.cat([sets[0][0], sets[1][0]])
            a, b = (support(segments, *s).clamp_min(1e-8) for s in sets)
            per_class[c] = (segments, a ** (1 - weight) * b**weight)
        return soft_nms_per_class(per_class, scoring)

    return make


OUTPUTS: dict[str, Output] = {
    "two-stage": _rows_of("two_stage"),
    "student alone": _rows_of("student"),
    "two-stage rescored (w 0.1)": _refined(vote_iou=1.0, score_weight=0.1),
    "two-stage rescored (w 0.3)": _refined(vote_iou=1.0, score_weight=0.3),
    "two-stage rescored (w 0.5)": _refined(vote_iou=1.0, score_weight=0.5),
    "two-stage boundaries voted (w 0)": _refined(score_weight=0.0),
    "two-stage boundaries voted at tIoU 0.7 (w 0)": _refined(vote_iou=0.7, score_weight=0.0),
    "union, fused scores (w 0.3)": _union(0.3),
    "refined: voted and rescored (Stage 3)": _rows_of("three_stage"),
}
"""Stage 3's candidate outputs by name. ``vote_iou 1`` votes only with student segments equal to the
detection's, which leaves the boundaries as they are."""


def score_outputs(
    found: Inference, dataset: WSTALDataset, settings: StudentSettings, scoring: ScoringSettings
) -> dict[str, list[float]]:
    """Every output's ``[AVG 0.1:0.7, mAP at tIoU 0.1, at 0.7]`` in percent on ``dataset``'s test split
    (``found``: its inference by a detector with a student)."""
    scores = {}
    for name, make in OUTPUTS.items():
        rows = {v.name: make(found, v.name, settings, scoring) for v in dataset.test}
        detections = {n: to_detections(r, *found.clocks[n]) for n, r in rows.items()}
        table = detection_map(dataset, detections)
        scores[name] = [100 * table.averages["0.1:0.7"], map_at(table, 0.1), map_at(table, 0.7)]
    return scores


def format_outputs(cells: dict[str, list[dict[str, list[float]]]]) -> str:
    """Per cell and output the means over the seeds, ``AVG / @0.1 / @0.7``, and the grid's mean."""
    outputs = list(next(iter(cells.values()))[0])
    lines = [
        "mAP AVG 0.1:0.7 / at tIoU 0.1 / at 0.7 (%), means over the seeds",
        "",
        "| output | " + " | ".join(cells) + " | grid mean |",
        "| --- | " + " | ".join("---" for _ in cells) + " | --- |",
    ]
    for output in outputs:
        means = [np.mean([run[output] for run in runs], axis=0) for runs in cells.values()]
        grid = np.mean(means, axis=0)
        lines.append(
            f"| {output} | " + " | ".join(" / ".join(f"{v:.1f}" for v in m) for m in [*means, grid]) + " |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from studies import robustness_grid as grid

    parser = grid.build_parser()
    args = launch.parse(parser, argv)
    args.resume = True  # the grid's networks, never retrained: a mismatching checkpoint is refused
    if not launch.make_config(args).student.enabled:
        parser.error("argument --stage3: the outputs are Stage 3's; pass the grid's --stage3")
    stamp = launch.source_stamp()

    def body() -> int:
        cells: dict[str, list[dict[str, list[float]]]] = {}
        for cell in args.cells:
            dataset = cell.dataset(args)
            for seed in args.seeds:
                config = launch.make_config(args, seed=seed).with_epochs_scaled(args.epochs_scale)
                runner = launch.make_runner(args, dataset, config, grid.run_dir(args, cell, seed))
                trained = runner.train()
                found = detect(trained, dataset.test, snippet_seconds=dataset.snippet_seconds)
                scores = score_outputs(found, dataset, config.student, config.scoring)
                cells.setdefault(cell.name, []).append(scores)
        text = f"{stamp}\n\n{format_outputs(cells)}"
        (args.out / "stage3_outputs.md").write_text(text + "\n")
        write_json(args.out / "stage3_outputs.json", {"seeds": list(args.seeds), "cells": cells})
        print(text)
        return 0

    return launch.run(parser, args, body)


if __name__ == "__main__":
    sys.exit(main())
