"""Evaluation of a trained two-stage detector on the test split: the three detectors' mAP, the proposal
sets' recall, and the result's one serialised form and one printed table.

:func:`evaluate` takes the :class:`~wstal.pipeline.TrainedDetector` that
:meth:`~wstal.pipeline.DetectorRunner.train` returns; :func:`train_and_evaluate` does both the way a
distributed run needs (every rank trains, rank 0 evaluates). The protocol is the data's
(:func:`protocol_options`), and the two-stage detections are made by one function,
:func:`two_stage_detections`, whoever asks for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .config import DetectorConfig
from .data import Video, WSTALDataset, snippet_clock
from .detect import (
    BaseResult,
    classify_proposals,
    detections_from_proposals,
    stage1_detections,
    to_detections,
)
from .evaluation import Detection, MAPResult, evaluate_detections
from .pipeline import DetectorRunner, TrainedDetector
from .pseudo_labels import Segments
from .recall import (
    ProposalResult,
    evaluate_proposals,
    format_proposal_table,
    format_recall_curve,
    proposals_from_segments,
)

__all__ = [
    "DETECTORS",
    "PROPOSAL_SETS",
    "EvaluationResult",
    "evaluate",
    "protocol_options",
    "train_and_evaluate",
    "two_stage_detections",
    "two_stage_rows",
]

DETECTORS = {
    "two_stage": "two-stage (Stage-2 detections)",
    "stage1_only": "Stage-1 proposals x base classes (no Stage 2)",
    "base": "base MIL model alone",
}
"""The three detectors of a result, by field name, with their printed names."""

PROPOSAL_SETS = {
    "candidates": "Stage-2 candidates",
    "stage1": "Stage-1 proposals",
    "rpn": "T-RPN proposals alone",
    "base": "base grouped segments",
    "base_detections": "base detections, class-agnostic",
}
"""The proposal sets of :attr:`EvaluationResult.proposal_quality`, with their printed names."""


@dataclass
class EvaluationResult:
    """Test-split mAP of the three detectors of one configuration, what they detected, and the quality
    (average recall) of the candidates Stage 2 classifies (``candidates``: the Stage-1 proposals and the
    base's detected segments), of the Stage-1 proposals (``stage1``), of the T-RPN's own proposals before the merge
    (``rpn``, when the base segments are merged), of the base model's grouped segments (``base``) and of
    the base model's own detections with their classes ignored (``base_detections``: what the candidates
    handed to Stage 2 must recall at least as well, or Stage 2 cannot beat the base)."""

    stage1: str
    stage2: str
    base: MAPResult
    stage1_only: MAPResult
    two_stage: MAPResult
    detections: dict[str, list[Detection]]
    proposals: dict[str, list[Detection]]
    proposal_quality: dict[str, ProposalResult] = field(default_factory=dict)

    def avg(self, detector: str = "two_stage") -> float:
        """mAP AVG over tIoU 0.1:0.7 of ``detector`` (a key of :data:`DETECTORS`), in percent."""
        return 100 * getattr(self, detector).averages["0.1:0.7"]

    def map_at(self, tiou: float, detector: str = "two_stage") -> float:
        """mAP of ``detector`` at one tIoU threshold of the evaluation, in percent."""
        table = getattr(self, detector)
        near = np.flatnonzero(np.isclose(table.tiou_thresholds, tiou))
        if near.size == 0:
            raise ValueError(f"tiou must be one of {table.tiou_thresholds.tolist()}, got {tiou!r}")
        return 100 * float(table.mean_ap[near[0]])

    def as_dict(self) -> dict[str, Any]:
        """The JSON form every report writes: the fusions, each detector's table and each proposal set's
        quality (detections and proposals are written apart, as ActivityNet JSON)."""
        return {
            "stage1": self.stage1,
            "stage2": self.stage2,
            "results": {name: getattr(self, name).as_dict() for name in DETECTORS},
            "proposal_quality": {name: r.as_dict() for name, r in self.proposal_quality.items()},
        }

    def table(self) -> str:
        """The printed tables: the three detectors' mAP per tIoU and the proposal quality."""
        header = self.two_stage.table().splitlines()[:2]
        lines = [
            f"Stage 1 {self.stage1} / Stage 2 {self.stage2}, mAP (%) on the test split",
            "",
            header[0].replace("| tIoU |", "| detector |"),
            header[1],
        ]
        for name, printed in DETECTORS.items():
            lines.append(getattr(self, name).table().splitlines()[2].replace("| mAP (%) |", f"| {printed} |"))
        if self.proposal_quality:
            quality = {PROPOSAL_SETS[k]: v for k, v in self.proposal_quality.items()}
            lines += [
                "",
                "Proposal quality (class-agnostic, %): average recall over tIoU 0.5:0.05:0.95 at N proposals "
                "per video, recall at tIoU 0.5 / 0.7, and recall at tIoU 0.5 with every set cut to the average "
                "number of the smaller of the Stage-1 proposals and the base's segments",
                "",
                format_proposal_table(quality, budget_from=[PROPOSAL_SETS["stage1"], PROPOSAL_SETS["base"]]),
                "",
                "Recall (%) at tIoU 0.5 / 0.7 against the average number of proposals kept per video",
                "",
                format_recall_curve(quality),
            ]
        return "\n".join(lines)


def protocol_options(dataset: WSTALDataset) -> dict[str, Any]:
    """The keyword options of the data's evaluation protocol, shared by
    :func:`~wstal.evaluation.evaluate_detections` and :func:`~wstal.recall.evaluate_proposals`: under
    ``"thumos"`` snippet units and the dataset's ambiguous regions, else seconds and no filter."""
    thumos = dataset.evaluation_protocol == "thumos"
    return {
        "ambiguous": (dataset.ambiguous or None) if thumos else None,
        "snippet_units": thumos,
        "snippet_seconds": dataset.snippet_seconds,
    }


def two_stage_rows(
    classifier: nn.Module,
    videos: Sequence[Video],
    proposals: dict[str, Segments],
    base: dict[str, BaseResult],
    config: DetectorConfig,
    *,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> dict[str, list[tuple[int, float, float, float]]]:
    """The two-stage detections of ``videos`` as ``(class, score, start, end)`` in snippets: Stage 2
    classifies ``proposals`` (the candidates, :meth:`~wstal.pipeline.DetectorRunner.candidates`) and its
    scores are fused with the ``base`` model's evidence (:func:`~wstal.detect.detections_from_proposals`)."""
    scores = classify_proposals(
        classifier,
        videos,
        proposals,
        topk_ratio=config.proposal_topk_ratio,
        device=device,
        desc="test: classify",
        show_progress=show_progress,
    )
    return {
        v.name: detections_from_proposals(proposals[v.name], *scores[v.name], config.scoring, base[v.name])
        for v in videos
    }


def two_stage_detections(
    classifier: nn.Module,
    videos: Sequence[Video],
    proposals: dict[str, Segments],
    base: dict[str, BaseResult],
    config: DetectorConfig,
    *,
    snippet_seconds: float,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> dict[str, list[Detection]]:
    """:func:`two_stage_rows` in seconds on each video's clock (:func:`~wstal.data.snippet_clock`;
    ``snippet_seconds`` for videos without one)."""
    rows = two_stage_rows(
        classifier, videos, proposals, base, config, device=device, show_progress=show_progress
    )
    return {v.name: to_detections(rows[v.name], *snippet_clock(v, snippet_seconds)) for v in videos}


def evaluate(runner: DetectorRunner, trained: TrainedDetector) -> EvaluationResult:
    """Detect on the test split with ``trained`` and score the base, Stage-1-only and two-stage
    detectors and the proposal sets, under the data's protocol."""
    d, c = runner.dataset, runner.config
    test, sec = d.test, d.snippet_seconds
    base_out = runner.base_outputs(trained.base, "test")
    proposals = runner.proposals(trained.stage1, trained.base, "test")
    candidates = runner.candidates(trained.stage1, trained.base, "test")
    detected = runner.base_detections(trained.base, "test")
    results, scoring = base_out.results, c.scoring
    clocks = {v.name: snippet_clock(v, sec) for v in test}
    found = {
        "base": {v.name: to_detections(detected[v.name], *clocks[v.name]) for v in test},
        "stage1_only": {
            v.name: to_detections(
                stage1_detections(proposals.stage1[v.name], results[v.name], scoring), *clocks[v.name]
            )
            for v in test
        },
        "two_stage": two_stage_detections(
            trained.classifier,
            test,
            candidates,
            results,
            c,
            snippet_seconds=sec,
            device=runner.device,
            show_progress=runner.show_progress,
        ),
    }
    protocol = protocol_options(d)
    tables = {
        name: evaluate_detections(test, dets, d.num_classes, **protocol) for name, dets in found.items()
    }
    sets = {"candidates": candidates, "stage1": proposals.stage1}
    if proposals.stage1 is not proposals.rpn:  # the T-RPN alone, where it differs from Stage 1
        sets["rpn"] = proposals.rpn
    sets["base"] = base_out.segments
    agnostic = {
        name: proposals_from_segments(segments, sec, clocks=clocks) for name, segments in sets.items()
    }
    agnostic["base_detections"] = found["base"]  # their classes are ignored by the recall
    quality = {name: evaluate_proposals(test, rows, **protocol) for name, rows in agnostic.items()}
    return EvaluationResult(
        trained.stage1,
        trained.stage2,
        **tables,
        detections=found["two_stage"],
        proposals=agnostic["stage1"],
        proposal_quality=quality,
    )


def train_and_evaluate(
    runner: DetectorRunner, stage1: Optional[str] = None, stage2: Optional[str] = None
) -> Optional[EvaluationResult]:
    """Train what is missing of a configuration, then evaluate it. In a distributed run every rank trains,
    rank 0 evaluates and the others wait for it at a barrier and return None."""
    trained = runner.train(stage1, stage2)
    result = evaluate(runner, trained) if runner.dist.is_main else None
    runner.dist.barrier()
    return result
