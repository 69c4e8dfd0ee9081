"""Evaluation of a trained detector on the test split: its detectors' mAP, the proposal sets' recall, and the result's one serialised form and one printed table.

Evaluation is inference plus mAP: :func:`evaluate` runs :func:`wstal.inference.detect` on the test
videos with the :class:`~wstal.trained.TrainedDetector` that :meth:`~wstal.pipeline.DetectorRunner.train`
returns, and scores what it found with :func:`detection_map` under the data's protocol
(:func:`protocol_options`), the one place detections become mAP. :func:`train_and_evaluate` does both the
way a distributed run needs (every rank trains, rank 0 evaluates).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch

from .data import Video, WSTALDataset
from .evaluation import Detection, MAPResult, evaluate_detections
from .inference import DETECTORS, Inference, detect
from .pipeline import DetectorRunner
from .recall import ProposalResult, evaluate_proposals, format_proposal_table, format_recall_curve
from .trained import TrainedDetector

__all__ = [
    "DETECTORS",
    "PROPOSAL_SETS",
    "EvaluationResult",
    "detection_map",
    "evaluate",
    "map_at",
    "protocol_options",
    "train_and_evaluate",
]

PROPOSAL_SETS = {
    "candidates": "Stage-2 candidates",
    "stage1": "Stage-1 proposals",
    "rpn": "T-RPN proposals alone",
    "grouped": "base grouped segments",
    "base_detections": "base detections, class-agnostic",
}
"""The proposal sets of :attr:`EvaluationResult.proposal_quality`, with their printed names."""


@dataclass
class EvaluationResult:
    """Test-split mAP of the detectors of one configuration (``three_stage`` where it has a Stage-3
    student), what the final detector (:attr:`final`) detected, and the quality
    (average recall) of the candidates Stage 2 classifies (``candidates``: the Stage-1 proposals and the
    base's detected segments), of the Stage-1 proposals (``stage1``), of the T-RPN's own proposals before the merge
    (``rpn``, when the base segments are merged), of the base model's grouped segments (``grouped``) and of
    the base model's own detections with their classes ignored (``base_detections``: what the candidates
    handed to Stage 2 must recall at least as well, or Stage 2 cannot beat the base)."""

    stage1_fusion: str
    stage2_fusion: str
    base: MAPResult
    stage1_only: MAPResult
    two_stage: MAPResult
    detections: dict[str, list[Detection]]
    proposals: dict[str, list[Detection]]
    proposal_quality: dict[str, ProposalResult] = field(default_factory=dict)
    inference: Optional[Inference] = field(default=None, repr=False, compare=False)
    """What the detector found on the test videos (not serialised)."""
    three_stage: Optional[MAPResult] = None
    student: Optional[MAPResult] = None
    stage3_fusion: Optional[str] = None

    @property
    def detectors(self) -> list[str]:
        """The detectors evaluated, in :data:`DETECTORS` order."""
        return [name for name in DETECTORS if getattr(self, name) is not None]

    @property
    def final(self) -> str:
        """The detector whose detections are the output (``detections``): the first of :attr:`detectors`."""
        return self.detectors[0]

    def avg(self, detector: str = "two_stage") -> float:
        """mAP AVG over tIoU 0.1:0.7 of ``detector`` (a key of :data:`DETECTORS`), in percent."""
        return 100 * getattr(self, detector).averages["0.1:0.7"]

    def map_at(self, tiou: float, detector: str = "two_stage") -> float:
        """mAP of ``detector`` at one tIoU threshold of the evaluation, in percent."""
        return map_at(getattr(self, detector), tiou)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form every report writes: the fusions, each detector's table and each proposal set's
        quality (detections and proposals are written apart, as ActivityNet JSON)."""
        fusions = {"stage1_fusion": self.stage1_fusion, "stage2_fusion": self.stage2_fusion}
        if self.stage3_fusion is not None:
            fusions["stage3_fusion"] = self.stage3_fusion
        return {
            **fusions,
            "final": self.final,
            "results": {name: getattr(self, name).as_dict() for name in self.detectors},
            "proposal_quality": {name: r.as_dict() for name, r in self.proposal_quality.items()},
        }

    def table(self) -> str:
        """The printed tables: the three detectors' mAP per tIoU and the proposal quality."""
        header = self.two_stage.table().splitlines()[:2]
        stage3 = f" / Stage 3 {self.stage3_fusion}" if self.three_stage is not None else ""
        lines = [
            f"Stage 1 {self.stage1_fusion} / Stage 2 {self.stage2_fusion}{stage3}, mAP (%) on the test split",
            "",
            header[0].replace("| tIoU |", "| detector |"),
            header[1],
        ]
        for name in self.detectors:
            printed = DETECTORS[name]
            lines.append(getattr(self, name).table().splitlines()[2].replace("| mAP (%) |", f"| {printed} |"))
        if self.proposal_quality:
            quality = {PROPOSAL_SETS[k]: v for k, v in self.proposal_quality.items()}
            lines += [
                "",
                "Proposal quality (class-agnostic, %): average recall over tIoU 0.5:0.05:0.95 at N proposals "
                "per video, recall at tIoU 0.5 / 0.7, and recall at tIoU 0.5 with every set cut to the average "
                "number of the smaller of the Stage-1 proposals and the base's segments",
                "",
                format_proposal_table(
                    quality, budget_from=[PROPOSAL_SETS["stage1"], PROPOSAL_SETS["grouped"]]
                ),
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


def map_at(table: MAPResult, tiou: float) -> float:
    """The mAP of ``table`` at one of its tIoU thresholds, in percent.

    Example:
        >>> table = MAPResult(np.array([0.5, 0.7]), np.zeros((2, 1)), np.array([0.4, 0.25]), {})
        >>> map_at(table, 0.7)
        25.0
    """
    near = np.flatnonzero(np.isclose(table.tiou_thresholds, tiou))
    if near.size == 0:
        raise ValueError(f"tiou must be one of {table.tiou_thresholds.tolist()}, got {tiou!r}")
    return 100 * float(table.mean_ap[near[0]])


def detection_map(
    dataset: WSTALDataset,
    detections: Mapping[str, Sequence[Detection]],
    videos: Optional[Sequence[Video]] = None,
) -> MAPResult:
    """The mAP of ``detections`` (in seconds, e.g. :meth:`Inference.detections
    <wstal.inference.Inference.detections>`) on ``videos`` (default: the test split) under the data's
    protocol."""
    videos = dataset.test if videos is None else videos
    return evaluate_detections(videos, detections, dataset.num_classes, **protocol_options(dataset))


def evaluate(
    trained: TrainedDetector,
    dataset: WSTALDataset,
    *,
    device: Union[torch.device, str, None] = None,
    show_progress: bool = False,
) -> EvaluationResult:
    """Detect on ``dataset``'s test split with ``trained`` (:func:`~wstal.inference.detect`) and score the
    base, Stage-1-only, two-stage (and Stage-3) detectors and the proposal sets, under the data's
    protocol."""
    test = dataset.test
    found = detect(
        trained,
        test,
        snippet_seconds=dataset.snippet_seconds,
        device=device,
        show_progress=show_progress,
        desc="test",
    )
    detections = {name: found.detections(name) for name in DETECTORS if name in found.rows}
    tables = {name: detection_map(dataset, dets) for name, dets in detections.items()}
    sets = ["candidates", "stage1"]
    if found.stage1 is not found.rpn:  # the T-RPN alone, where it differs from Stage 1
        sets.append("rpn")
    agnostic = {name: found.proposals(name) for name in sets}
    agnostic["grouped"] = found.proposals("grouped")
    agnostic["base_detections"] = detections["base"]  # their classes are ignored by the recall
    protocol = protocol_options(dataset)
    quality = {name: evaluate_proposals(test, rows, **protocol) for name, rows in agnostic.items()}
    return EvaluationResult(
        trained.stage1_fusion,
        trained.stage2_fusion,
        **tables,
        detections=detections[found.final],
        proposals=agnostic["stage1"],
        proposal_quality=quality,
        inference=found,
        stage3_fusion=trained.config.stage3_fusion if trained.student is not None else None,
    )


def train_and_evaluate(
    runner: DetectorRunner,
    stage1_fusion: Optional[str] = None,
    stage2_fusion: Optional[str] = None,
    stage3_fusion: Optional[str] = None,
    *,
    save_to: Optional[Union[str, os.PathLike]] = None,
) -> Optional[EvaluationResult]:
    """Train what is missing of a configuration, then evaluate it. In a distributed run every rank trains,
    rank 0 evaluates (and saves the trained detector to ``save_to``, when given) and the others wait for it
    at a barrier and return None."""
    trained = runner.train(stage1_fusion, stage2_fusion, stage3_fusion)
    result = None
    if runner.dist.is_main:
        if save_to is not None:
            trained.save(save_to)
        result = evaluate(trained, runner.dataset, device=runner.device, show_progress=runner.show_progress)
    runner.dist.barrier()
    return result
