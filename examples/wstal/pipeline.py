"""The two-stage detector end to end, stage by stage:

    base model -> pseudo segments -> Stage 1 (T-RPN) -> proposals -> Stage 2 (classifier) -> detections

:class:`DetectorRunner` trains and evaluates one or many fusion configurations on one dataset. Each stage
(:mod:`.stages`) is trained by one generic :class:`StageTrainer`, which caches the trained network under
the stage's key (everything upstream of it is part of the key), so the ``--ablation`` grid trains the
base model once per base fusion, the T-RPN once per Stage-1 fusion and only the Stage-2 classifier per
cell, and ``--resume`` picks every stage up where it stopped:

    base_<base fusion>.pt -> stage1_<base fusion>_<stage-1 fusion>.pt
                          -> stage2_<base fusion>_<stage-1 fusion>_<stage-2 fusion>.pt

Nothing here looks at the test split before the final evaluation: every model is the one of its last
epoch and every threshold is fixed in :class:`~wstal.config.DetectorConfig`.

Under ``torchrun`` (a :class:`~wstal.distributed.DistributedContext` with several ranks) every rank
trains, on its share of each global batch; rank 0 alone computes the pseudo labels and the training
proposals (and sends them to the others), writes the checkpoints and evaluates, while the other ranks
wait at a barrier. See docs/training_at_scale.md.

Axis legend: t snippets, c channels, k classes, n proposals.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import torch
from torch import nn

from .config import (
    DetectionConfig,
    DetectorConfig,
    PseudoLabelSettings,
    StageSettings,
    ablation_config,
    thumos14_config,
)
from .console import log
from .data import Video, WSTALDataset, snippet_clock
from .detect import (
    BaseResult,
    base_detections,
    classify_proposals,
    detections_from_proposals,
    rpn_proposals,
    run_base,
    stage1_detections,
    stage1_proposals,
    to_detections,
)
from .distributed import DistributedContext
from .evaluation import Detection, MAPResult, evaluate_detections
from .model import FusionStrategy
from .pseudo_labels import Segments, segments_from_scores
from .recall import ProposalResult, evaluate_proposals, proposals_from_segments
from .stages import BaseStage, ClassifierStage, RPNStage, Stage, StageKey, proposal_targets
from .train import StopAfter, fingerprint, seed_everything, stage_seed, train_stage

__all__ = [
    "DetectionConfig",
    "DetectorConfig",
    "DetectorRunner",
    "EvaluationResult",
    "PseudoLabelSettings",
    "StageSettings",
    "StageTrainer",
    "ablation_config",
    "base_strategy_for",
    "proposal_targets",
    "thumos14_config",
]

T = TypeVar("T")


def base_strategy_for(stage1: str, stage2: str) -> str:
    """The base model's fusion: the single modality when both stages use the same single modality
    (so a single-modality run never sees the other modality), ``concat`` otherwise (the conventional
    MIL baseline, shared by every fusion configuration so they differ only in their stages)."""
    s1, s2 = FusionStrategy.parse(stage1), FusionStrategy.parse(stage2)
    if s1.name == s2.name and s1.name in ("rgb", "flow"):
        return s1.name
    return "concat"


@dataclass
class EvaluationResult:
    """Test-split mAP of the three detectors of one configuration, what they detected, and the quality
    (average recall) of the Stage-1 proposals (``stage1``), of the T-RPN's own proposals before the merge
    (``rpn``, when the base segments are merged) and of the base model's grouped segments (``base``)."""

    stage1: str
    stage2: str
    base: MAPResult
    stage1_only: MAPResult
    two_stage: MAPResult
    detections: dict[str, list[Detection]]
    proposals: dict[str, list[Detection]]
    proposal_quality: dict[str, ProposalResult] = field(default_factory=dict)


class StageTrainer:
    """Train :class:`~wstal.stages.Stage` s: seeded per stage kind, checkpointed under the stage's name and
    fingerprinted with its key, each key trained once per process.

    Args:
        seed: the run seed (each stage kind derives its own, so a stage's result does not depend on
            what was trained before it).
        checkpoint_dir: where stage checkpoints go (None: no checkpoints, no resume).
        resume: continue from the checkpoints in ``checkpoint_dir``.
        dist: the distributed context; its ``device`` is where every network and batch goes.
        stop: test hook that interrupts training after a number of epochs.
        show_progress: tqdm bars for batches.
        amp: mixed precision of the training steps, ``"off"``, ``"bf16"`` or ``"fp16"``.
        compile: train each network through ``torch.compile``.
    """

    def __init__(
        self,
        *,
        seed: int,
        dist: DistributedContext,
        checkpoint_dir: Optional[Path] = None,
        resume: bool = False,
        stop: Optional[StopAfter] = None,
        show_progress: bool = True,
        amp: str = "off",
        compile: bool = False,
    ) -> None:
        self.seed, self.dist, self.checkpoint_dir, self.resume = seed, dist, checkpoint_dir, resume
        self.stop, self.show_progress, self.amp, self.compile = stop, show_progress, amp, compile
        self._trained: dict[StageKey, nn.Module] = {}

    def __call__(self, stage: Stage) -> nn.Module:
        """The trained network of ``stage`` (trained, or loaded from its checkpoint, on first use)."""
        if stage.key not in self._trained:
            s = stage.settings
            generator = seed_everything(stage_seed(self.seed, stage.kind), self.dist.rank)
            model = stage.build().to(self.dist.device)
            optimizer = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
            architecture = [(name, tuple(value.shape)) for name, value in model.state_dict().items()]
            checkpoint = None if self.checkpoint_dir is None else self.checkpoint_dir / f"{stage.name}.pt"
            train_stage(
                stage.name,
                model,
                functools.partial(stage.batches, shard=self.dist),
                optimizer,
                stage.losses,
                epochs=s.epochs,
                generator=generator,
                checkpoint=checkpoint,
                config_fingerprint=fingerprint([stage.key.fingerprint(), architecture]),
                resume=self.resume,
                stop=self.stop,
                show_progress=self.show_progress,
                dist=self.dist,
                amp=self.amp,
                compile=self.compile,
            )
            self._trained[stage.key] = model
        return self._trained[stage.key]


class DetectorRunner:
    """Train and evaluate fusion configurations of the two-stage detector on one dataset.

    Args:
        dataset: the data (only ``train`` is used for training, ``test`` only by :meth:`evaluate`).
        config: the run configuration (its ``stage1``/``stage2`` are the defaults of :meth:`evaluate`).
        checkpoint_dir: where stage checkpoints go (None: no checkpoints, no resume).
        resume: continue from the checkpoints in ``checkpoint_dir``.
        device: where the networks run (ignored when ``dist`` is given: its device is used).
        stop: test hook that interrupts training after a number of epochs.
        show_progress: tqdm bars for batches and inference.
        dist: the distributed context (None: one process on ``device``).
        amp: mixed precision of the training steps, ``"off"``, ``"bf16"`` or ``"fp16"``.
        compile: train each network through ``torch.compile``.
    """

    def __init__(
        self,
        dataset: WSTALDataset,
        config: DetectorConfig,
        *,
        checkpoint_dir: Optional[Path] = None,
        resume: bool = False,
        device: torch.device | str = "cpu",
        stop: Optional[StopAfter] = None,
        show_progress: bool = True,
        dist: Optional[DistributedContext] = None,
        amp: str = "off",
        compile: bool = False,
    ) -> None:
        self.dataset, self.config, self.show_progress = dataset, config, show_progress
        self.dist = dist if dist is not None else DistributedContext(device=torch.device(device))
        self.device = self.dist.device
        self.train_stage = StageTrainer(
            seed=config.seed,
            dist=self.dist,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            stop=stop,
            show_progress=show_progress,
            amp=amp,
            compile=compile,
        )
        self._memo: dict[Hashable, Any] = {}

    def _cached(self, key: Hashable, compute: Callable[[], T], *, on_main: bool = False) -> T:
        """``compute()`` once per key; with ``on_main``, computed on rank 0 and sent to every rank (so all
        ranks train on the same pseudo labels and proposals)."""
        if key not in self._memo:
            if on_main:
                self._memo[key] = self.dist.broadcast_object(compute() if self.dist.is_main else None)
            else:
                self._memo[key] = compute()
        return self._memo[key]

    @staticmethod
    def base_strategy(stage1: str, stage2: str) -> str:
        """The base model's fusion for a pair of stage fusions (see :func:`base_strategy_for`)."""
        return base_strategy_for(stage1, stage2)

    # ---------------------------------------------------------------- base model and pseudo segments

    def base_stage(self, fusion: str) -> BaseStage:
        """The base-model stage with ``fusion``."""
        return self._cached(("base stage", fusion), lambda: BaseStage(fusion, self.config, self.dataset))

    def base_results(self, fusion: str, videos: Sequence[Video], split: str) -> dict[str, BaseResult]:
        """Base-model scores on ``videos`` (the ``split`` names them in the cache and the progress bar)."""
        stage = self.base_stage(fusion)
        model = self.train_stage(stage)  # every rank trains it
        return self._cached(
            ("base results", stage.key, split),
            lambda: run_base(
                model,
                videos,
                topk_ratio=self.config.base_topk_ratio,
                device=self.device,
                desc=f"{split}: base ({fusion})",
                show_progress=self.show_progress,
            ),
            on_main=split == "train",
        )

    def grouped_segments(self, results: dict[str, BaseResult]) -> dict[str, Segments]:
        """Class-agnostic segments grouped on the base model's attention (the pseudo-label rule)."""
        p = self.config.pseudo
        return {
            name: segments_from_scores(
                getattr(r, p.source),
                thresholds=p.thresholds,
                outer_ratio=p.outer_ratio,
                nms_iou=p.nms_iou,
                min_score=p.min_score,
            )
            for name, r in results.items()
        }

    def base_segments(self, fusion: str, videos: Sequence[Video], split: str) -> dict[str, Segments]:
        """:meth:`grouped_segments` of the base model's results on ``videos`` (cached per ``split``): the
        pseudo segments on the training split, merged into the Stage-1 proposals and scored as the base's
        proposal set on both splits."""
        return self._cached(
            ("base segments", self.base_stage(fusion).key, split),
            lambda: self.grouped_segments(self.base_results(fusion, videos, split)),
        )

    def pseudo_segments(self, fusion: str) -> dict[str, Segments]:
        """Pseudo action segments of the training videos from the base model's attention."""

        def compute() -> dict[str, Segments]:
            found = self.base_segments(fusion, self.dataset.train, "train")
            count = sum(len(s.segments) for s in found.values())
            log(f"[pseudo labels] {count} segments on {len(found)} training videos (base {fusion})")
            return found

        return self._cached(("pseudo", self.base_stage(fusion).key), compute)

    # ---------------------------------------------------------------- Stage 1 and its proposals

    def rpn_stage(self, stage1: str, base: str) -> RPNStage:
        """The T-RPN stage with ``stage1`` fusion, on the pseudo segments of the ``base`` model."""
        return self._cached(
            ("rpn stage", stage1, base),
            lambda: RPNStage(
                stage1, self.config, self.dataset, self.base_stage(base).key, self.pseudo_segments(base)
            ),
        )

    def proposals(self, stage1: str, base: str, videos: Sequence[Video], split: str) -> dict[str, Segments]:
        """Class-agnostic Stage-1 proposals on ``videos`` (cached per ``split``): the T-RPN's, merged with
        the base model's grouped segments unless ``detection.merge_base_segments`` is off."""
        det = self.config.detection
        found = self.rpn_proposals(stage1, base, videos, split)
        if not det.merge_base_segments:
            return found

        def merged() -> dict[str, Segments]:
            grouped = self.base_segments(base, videos, split)
            return {name: stage1_proposals(p, grouped[name], det) for name, p in found.items()}

        return self._cached(("merged proposals", self.rpn_stage(stage1, base).key, split), merged)

    def rpn_proposals(
        self, stage1: str, base: str, videos: Sequence[Video], split: str
    ) -> dict[str, Segments]:
        """The T-RPN's own proposals on ``videos`` (cached per ``split``)."""
        stage = self.rpn_stage(stage1, base)
        model = self.train_stage(stage)  # every rank trains it
        return self._cached(
            ("proposals", stage.key, split),
            lambda: rpn_proposals(
                model,
                videos,
                self.config.detection,
                device=self.device,
                desc=f"{split}: proposals ({stage1})",
                show_progress=self.show_progress,
            ),
            on_main=split == "train",
        )

    # ---------------------------------------------------------------- Stage 2

    def classifier_stage(self, stage1: str, stage2: str, base: str) -> ClassifierStage:
        """The proposal-classifier stage with ``stage2`` fusion, on the ``stage1`` T-RPN's training proposals."""
        train = self.dataset.train
        return self._cached(
            ("classifier stage", stage1, stage2, base),
            lambda: ClassifierStage(
                stage2,
                self.config,
                self.dataset,
                self.rpn_stage(stage1, base).key,
                self.proposals(stage1, base, train, "train"),
                self.base_results(base, train, "train"),
            ),
        )

    # ---------------------------------------------------------------- evaluation

    def evaluate(
        self, stage1: Optional[str] = None, stage2: Optional[str] = None
    ) -> Optional[EvaluationResult]:
        """Train what is missing, then detect on the test split and score the base, Stage-1-only and
        two-stage detectors. In a distributed run every rank trains, rank 0 evaluates and the others
        wait for it at a barrier and return None."""
        stage1, stage2 = stage1 or self.config.stage1, stage2 or self.config.stage2
        base = self.base_strategy(stage1, stage2)
        classifier = self.train_stage(self.classifier_stage(stage1, stage2, base))
        result = self._evaluate(stage1, stage2, base, classifier) if self.dist.is_main else None
        self.dist.barrier()
        return result

    def evaluation_options(self) -> dict[str, Any]:
        """The keyword options of the configured evaluation protocol, shared by
        :func:`~wstal.evaluation.evaluate_detections` and :func:`~wstal.recall.evaluate_proposals`: under
        ``"thumos"`` snippet units and the dataset's ambiguous regions, else seconds and no filter."""
        thumos = self.config.evaluation_protocol == "thumos"
        return {
            "ambiguous": (self.dataset.ambiguous or None) if thumos else None,
            "snippet_units": thumos,
            "snippet_seconds": self.dataset.snippet_seconds,
        }

    def _evaluate(self, stage1: str, stage2: str, base: str, classifier: nn.Module) -> EvaluationResult:
        d, c, det = self.dataset, self.config, self.config.detection
        base_out = self.base_results(base, d.test, "test")
        proposals = self.proposals(stage1, base, d.test, "test")
        scores = classify_proposals(
            classifier,
            d.test,
            proposals,
            topk_ratio=c.proposal_topk_ratio,
            device=self.device,
            desc="test: classify",
            show_progress=self.show_progress,
        )
        clocks = {v.name: snippet_clock(v, d.snippet_seconds) for v in d.test}
        detectors = {
            "base": lambda v: base_detections(base_out[v.name], det),
            "stage1_only": lambda v: stage1_detections(proposals[v.name], base_out[v.name], det),
            "two_stage": lambda v: detections_from_proposals(
                proposals[v.name], *scores[v.name], det, base_out[v.name]
            ),
        }
        found = {
            name: {v.name: to_detections(f(v), *clocks[v.name]) for v in d.test} for name, f in detectors.items()
        }
        protocol = self.evaluation_options()
        tables = {name: evaluate_detections(d.test, dets, d.num_classes, **protocol) for name, dets in found.items()}
        sets = {"stage1": proposals}
        if det.merge_base_segments:  # the T-RPN alone, where it differs from Stage 1
            sets["rpn"] = self.rpn_proposals(stage1, base, d.test, "test")
        sets["base"] = self.base_segments(base, d.test, "test")
        agnostic = {
            name: proposals_from_segments(segments, d.snippet_seconds, clocks=clocks) for name, segments in sets.items()
        }
        quality = {name: evaluate_proposals(d.test, rows, **protocol) for name, rows in agnostic.items()}
        return EvaluationResult(
            stage1,
            stage2,
            **tables,
            detections=found["two_stage"],
            proposals=agnostic["stage1"],
            proposal_quality=quality,
        )
