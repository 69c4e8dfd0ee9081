"""The detector's one inference path: a :class:`~wstal.trained.TrainedDetector` and any videos, labelled or
not, to candidates, proposals and the three detectors' detections.

    base model  -> scores, grouped segments, base detections
    T-RPN       -> per-snippet segments -> own proposals -> Stage-1 proposals (merged with the base's segments)
    candidates  =  Stage-1 proposals + the base detections' segments, scored by the T-RPN's support
    Stage 2     -> two-stage detections;  Stage-1 proposals x base classes -> the Stage-1-only detections

:func:`detect` is pure: it reads only the videos' features (never their labels) and the detector, and
returns an :class:`Inference`, everything in snippet units with each video's clock to turn it into
seconds (:meth:`Inference.detections`, :meth:`Inference.proposals`). The evaluation
(:func:`wstal.evaluator.evaluate`) is this function plus mAP; ``examples/detect.py`` and the studies in
``examples/studies/`` call it too. ``scoring`` and ``proposals`` replace the detector's own settings,
and ``reuse`` takes the network outputs of an earlier call on the same videos, so a study can score
variants of the post-processing without running the networks again.

Axis legend: t snippets, k classes, n proposals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from .config import DetectorConfig, ProposalSettings, ScoringSettings
from .data import SNIPPET_SECONDS, Video, snippet_clock
from .detect import (
    BaseResult,
    base_detections,
    blended_video_scores,
    classify_proposals,
    detections_from_proposals,
    grouped_segments,
    proposal_sets,
    rpn_snippets,
    run_base,
    stage1_detections,
    stage2_candidates,
    to_detections,
)
from .evaluation import Detection
from .pseudo_labels import Segments
from .recall import proposals_from_segments
from .student import refine, run_student, student_detections
from .trained import TrainedDetector

__all__ = ["DETECTORS", "SEGMENT_SETS", "Inference", "Rows", "detect", "detect_base"]

Rows = list[tuple[int, float, float, float]]
"""One video's detections as ``(class, score, start, end)``, start and end in snippets, best first."""

DETECTORS = {
    "three_stage": "Stage 3 (two stages refined by the student)",
    "student": "Stage-3 student alone",
    "two_stage": "two-stage (Stage-2 detections)",
    "stage1_only": "Stage-1 proposals x base classes (no Stage 2)",
    "base": "base MIL model alone",
}
"""The detectors of an :class:`Inference`, by name, with their printed names (``three_stage`` and ``student``
only where the trained detector has a Stage-3 student)."""

SEGMENT_SETS = ("candidates", "stage1", "rpn", "grouped")
"""The class-agnostic segment sets of an :class:`Inference` (its fields of that name)."""


@dataclass(frozen=True)
class Inference:
    """What :func:`detect` found on some videos, per video name, in snippets.

    Attributes:
        base: the base model's scores (:class:`~wstal.detect.BaseResult`).
        grouped: the segments grouped on the base's attention by the pseudo-label rule.
        snippets: the T-RPN's raw output, a segment and an objectness per snippet.
        rpn: the T-RPN's own proposals.
        stage1: the Stage-1 proposals (``rpn`` merged with ``grouped``, as the proposal settings say).
        candidates: what Stage 2 classified (:func:`~wstal.detect.stage2_candidates`).
        rows: per detector of :data:`DETECTORS` that ran, its detections (:data:`Rows`).
        clocks: ``(snippet_seconds, start_seconds)`` of each video (:func:`~wstal.data.snippet_clock`).
        student: the Stage-3 student's raw output, every location's segment and class probabilities
            (:func:`~wstal.student.run_student`; empty without a student).
    """

    base: dict[str, BaseResult]
    grouped: dict[str, Segments]
    snippets: dict[str, Segments]
    rpn: dict[str, Segments]
    stage1: dict[str, Segments]
    candidates: dict[str, Segments]
    rows: dict[str, dict[str, Rows]]
    clocks: dict[str, tuple[float, float]]
    student: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    @property
    def final(self) -> str:
        """The detector whose detections are the output: ``three_stage`` where it ran, else ``two_stage``
        (``base`` for :func:`detect_base`)."""
        return next(name for name in DETECTORS if name in self.rows)

    def detections(self, detector: Optional[str] = None) -> dict[str, list[Detection]]:
        """``detector``'s detections (a key of :data:`DETECTORS`; default :attr:`final`) in seconds on each
        video's clock."""
        detector = self.final if detector is None else detector
        if detector not in self.rows:
            raise ValueError(f"detector must be one of {', '.join(map(repr, self.rows))}, got {detector!r}")
        return {name: to_detections(rows, *self.clocks[name]) for name, rows in self.rows[detector].items()}

    def proposals(self, which: str = "stage1") -> dict[str, list[Detection]]:
        """A segment set of :data:`SEGMENT_SETS` as class-agnostic detections (class 0, its scores) in
        seconds, best first: what ``proposals.json`` and the recall take."""
        if which not in SEGMENT_SETS:
            raise ValueError(f"which must be one of {', '.join(map(repr, SEGMENT_SETS))}, got {which!r}")
        seconds = next(iter(self.clocks.values()), (1.0, 0.0))[0]
        return proposals_from_segments(getattr(self, which), seconds, clocks=self.clocks)


def detect_base(
    base_model: nn.Module,
    videos: Sequence[Video],
    config: DetectorConfig,
    *,
    scoring: Optional[ScoringSettings] = None,
    reuse: Optional[Inference] = None,
    snippet_seconds: float = SNIPPET_SECONDS,
    start_seconds: float = 0.0,
    device: torch.device | str | None = None,
    show_progress: bool = False,
    desc: str = "detect",
) -> Inference:
    """The base detector alone: the base model's scores, grouped segments and detections (its part of
    :func:`detect`, which calls it), for a base model trained without the two stages (the calibration of
    a data family). The :class:`Inference` holds the base's fields; the other segment sets are empty and
    ``rows`` holds ``"base"`` only. Arguments as :func:`detect`'s, ``config`` the base model's."""
    scoring = scoring or config.scoring
    if reuse is not None:
        base = reuse.base
    else:
        device = next(base_model.parameters()).device if device is None else torch.device(device)
        base = run_base(
            base_model.to(device),
            videos,
            topk_ratio=config.base_topk_ratio,
            device=device,
            desc=f"{desc}: base",
            show_progress=show_progress,
        )
    grouped = grouped_segments(base, config.pseudo)
    rows = {"base": {v.name: base_detections(base[v.name], scoring) for v in videos}}
    clocks = {v.name: _clock(v, snippet_seconds, start_seconds) for v in videos}
    return Inference(base, grouped, {}, {}, {}, {}, rows, clocks)


def _clock(video: Video, snippet_seconds: float, start_seconds: float) -> tuple[float, float]:
    """The video's own clock (its timing), else ``snippet_seconds`` from ``start_seconds``."""
    clock = snippet_clock(video, snippet_seconds)
    return clock if video.timing is not None else (clock[0], float(start_seconds))


def detect(
    trained: TrainedDetector,
    videos: Sequence[Video],
    *,
    scoring: Optional[ScoringSettings] = None,
    proposals: Optional[ProposalSettings] = None,
    reuse: Optional[Inference] = None,
    snippet_seconds: Optional[float] = None,
    start_seconds: Optional[float] = None,
    device: torch.device | str | None = None,
    show_progress: bool = False,
    desc: str = "detect",
) -> Inference:
    """Run ``trained`` on ``videos``: candidates, proposals and the detectors' detections (the Stage-3
    student's too, where ``trained`` has one).

    Args:
        trained: the detector.
        videos: the videos; only their names and features are read.
        scoring: how candidates are chosen and detections scored (default: the detector's).
        proposals: how the Stage-1 proposals are made (default: the detector's).
        reuse: an earlier :class:`Inference` of the same videos and detector whose network outputs (the
            base model's scores, the T-RPN's snippets, the student's locations) are taken instead of
            running those networks.
        snippet_seconds: the clock of videos without their own timing: seconds per feature (default: the
            detector's :attr:`~wstal.trained.FeatureSpec.snippet_seconds`)...
        start_seconds: ... and the time of snippet position 0 (default: the detector's
            :attr:`~wstal.trained.FeatureSpec.start_seconds` where ``snippet_seconds`` is not given, else 0).
        device: where the networks run (default: where they are).
        show_progress: progress bars over the batches.
        desc: the bars' prefix.

    Returns:
        The :class:`Inference`, in snippets, with each video's clock.
    """
    config = trained.config
    scoring = scoring or config.scoring
    settings = proposals or config.proposals
    device = trained.device if device is None else torch.device(device)
    _check_features(trained, videos)
    if snippet_seconds is None:
        snippet_seconds = trained.features.snippet_seconds
        start_seconds = trained.features.start_seconds if start_seconds is None else start_seconds
    found = detect_base(
        trained.base_model,
        videos,
        config,
        scoring=scoring,
        reuse=reuse,
        snippet_seconds=snippet_seconds,
        start_seconds=start_seconds or 0.0,
        device=device,
        show_progress=show_progress,
        desc=desc,
    )
    base, grouped, base_rows = found.base, found.grouped, found.rows["base"]
    if reuse is not None:
        snippets = reuse.snippets
    else:
        snippets = rpn_snippets(
            trained.rpn.to(device),
            videos,
            device=device,
            desc=f"{desc}: proposals ({trained.stage1_fusion})",
            show_progress=show_progress,
        )
    own, merged = proposal_sets(snippets, grouped, base, settings)
    candidates = {
        name: stage2_candidates(p, base[name], base_rows[name], snippets[name], scoring)
        for name, p in merged.items()
    }
    scores = classify_proposals(
        trained.classifier.to(device),
        videos,
        candidates,
        topk_ratio=config.proposal_topk_ratio,
        device=device,
        desc=f"{desc}: classify",
        show_progress=show_progress,
    )
    names = [v.name for v in videos]
    rows = {
        "two_stage": {
            n: detections_from_proposals(candidates[n], *scores[n], scoring, base[n]) for n in names
        },
        "stage1_only": {n: stage1_detections(merged[n], base[n], scoring) for n in names},
        "base": base_rows,
    }
    student = {}
    if trained.student is not None:
        if reuse is not None and reuse.student:
            student = reuse.student
        else:
            student = run_student(
                trained.student.to(device),
                videos,
                device=device,
                desc=f"{desc}: student ({trained.config.stage3_fusion})",
                show_progress=show_progress,
            )
        w = scoring.base_weight
        video_scores = {n: blended_video_scores(scores[n][1], base[n], w) for n in names}
        alone = {n: student_detections(*student[n], video_scores[n], scoring) for n in names}
        settings = config.student
        refined = {n: refine(rows["two_stage"][n], alone[n], *student[n], settings, scoring) for n in names}
        rows = {"three_stage": refined, "student": alone, **rows}
    return Inference(base, grouped, snippets, own, merged, candidates, rows, found.clocks, student)


def _check_features(trained: TrainedDetector, videos: Sequence[Video]) -> None:
    spec = trained.features
    names = [v.name for v in videos]
    if len(set(names)) != len(names):
        raise ValueError(f"videos: each name once, got {len(names) - len(set(names))} repeated")
    for v in videos:
        if (v.rgb.shape[1], v.flow.shape[1]) != (spec.rgb_dim, spec.flow_dim):
            raise ValueError(
                f"video {v.name!r}: the detector takes {spec.rgb_dim} RGB + {spec.flow_dim} Flow channels, "
                f"got {v.rgb.shape[1]} + {v.flow.shape[1]}"
            )
