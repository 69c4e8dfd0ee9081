"""The two-stage detector's training graph, stage by stage:

    base model -> pseudo segments -> Stage 1 (T-RPN) -> proposals -> Stage 2 (classifier)
        -> (optional) two-stage detections on the training videos -> pseudo instances -> Stage 3 (student)

Stage 2 is trained on the Stage-1 proposals of the training videos; at inference
(:func:`wstal.inference.detect`) it classifies those proposals and the base model's own detected
segments, each scored by the T-RPN's support. Stage 3 (:mod:`.student`, where
``config.student.enabled``) learns boundaries from the two stages' detections on the training videos.

:class:`DetectorRunner` only trains: it trains the stages of one or many fusion configurations on one
dataset, keeps the training split's outputs each next stage learns from, typed (:class:`BaseOutputs`:
the pseudo labels; :class:`StageProposals`: Stage 2's training proposals) and keyed by the key of the
stage that made them, and returns a :class:`~wstal.trained.TrainedDetector`. Each stage
(:mod:`.stages`) is trained by one generic :class:`StageTrainer`, which caches the trained network under
the stage's key (everything upstream of it is part of the key), so the ``--ablation`` grid trains the
base model once per base fusion, the T-RPN once per Stage-1 fusion and only the Stage-2 classifier per
cell, and ``--resume`` picks every stage up where it stopped:

    base_<base fusion>.pt -> stage1_<base fusion>_<stage-1 fusion>.pt
                          -> stage2_<base fusion>_<stage-1 fusion>_<stage-2 fusion>.pt
                          -> stage3_<base fusion>_<stage-1 fusion>_<stage-2 fusion>_<stage-3 fusion>.pt

Inference (:mod:`.inference`) and evaluation (:mod:`.evaluator`) are apart: they take the
:class:`~wstal.trained.TrainedDetector` that :meth:`DetectorRunner.train` returns. Nothing here reads the
test split: every model is the one of its last epoch and every threshold is fixed in
:class:`~wstal.config.DetectorConfig`.

Under ``torchrun`` (a :class:`~wstal.distributed.DistributedContext` with several ranks) every rank
trains, on its share of each global batch; rank 0 alone computes the pseudo labels and the training
proposals (and sends them to the others) and writes the checkpoints. See docs/training_at_scale.md.

Axis legend: t snippets, c channels, k classes, n proposals.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TypeVar

import torch
from torch import nn

from .config import DetectorConfig
from .console import log
from .data import WSTALDataset
from .detect import BaseResult, grouped_segments, proposal_sets, rpn_snippets, run_base
from .distributed import DistributedContext
from .inference import detect
from .pseudo_labels import Segments
from .stages import BaseStage, ClassifierStage, RPNStage, Stage, StageKey, StudentStage
from .student import Instances, pseudo_instances
from .train import CHECKPOINT_EVERY, StopAfter, adam, fingerprint, seed_everything, stage_seed, train_stage
from .trained import FeatureSpec, TrainedDetector, base_strategy_for

__all__ = [
    "BaseOutputs",
    "DetectorRunner",
    "StageProposals",
    "StageTrainer",
    "TrainedDetector",
    "base_strategy_for",
]

T = TypeVar("T")


@dataclass(frozen=True)
class BaseOutputs:
    """The base model's outputs on the training videos.

    Attributes:
        key: the base stage's key.
        results: per video, the base model's scores (:class:`~wstal.detect.BaseResult`).
        segments: per video, the class-agnostic segments grouped on its attention by the pseudo-label
            rule: the pseudo segments Stage 1 learns from, merged into Stage 2's training proposals.
    """

    key: StageKey
    results: dict[str, BaseResult]
    segments: dict[str, Segments]


@dataclass(frozen=True)
class StageProposals:
    """Stage 1's class-agnostic proposals on the training videos, which Stage 2 learns from.

    Attributes:
        key: the T-RPN stage's key.
        rpn: per video, the T-RPN's own proposals.
        stage1: per video, the Stage-1 proposals Stage 2 is trained on: ``rpn`` merged with the base's
            grouped segments (:func:`~wstal.detect.stage1_proposals`); ``rpn`` itself when the merge is off.
        snippets: per video, the T-RPN's raw output, a segment and an objectness per snippet
            (:func:`~wstal.detect.rpn_snippets`).
    """

    key: StageKey
    rpn: dict[str, Segments]
    stage1: dict[str, Segments]
    snippets: dict[str, Segments]


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
        checkpoint_every: seconds between two checkpoints of a stage (0: after every epoch; the last
            epoch is always written): :func:`~wstal.train.train_stage`.
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
        checkpoint_every: float = CHECKPOINT_EVERY,
    ) -> None:
        self.seed, self.dist, self.checkpoint_dir, self.resume = seed, dist, checkpoint_dir, resume
        self.stop, self.show_progress, self.amp, self.compile = stop, show_progress, amp, compile
        self.checkpoint_every = checkpoint_every
        self._trained: dict[StageKey, nn.Module] = {}

    def __call__(self, stage: Stage) -> nn.Module:
        """The trained network of ``stage`` (trained, or loaded from its checkpoint, on first use)."""
        if stage.key not in self._trained:
            s = stage.settings
            generator = seed_everything(stage_seed(self.seed, stage.kind), self.dist.rank)
            model = stage.build().to(self.dist.device)
            optimizer = adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
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
                checkpoint_every=self.checkpoint_every,
            )
            self._trained[stage.key] = model
        return self._trained[stage.key]


class DetectorRunner:
    """Train the stages of fusion configurations of the two-stage detector on one dataset.

    Its public methods are training only: the stages (:meth:`base_stage`, :meth:`rpn_stage`,
    :meth:`classifier_stage`, trained by :attr:`train_stage`), the training outputs each next stage learns
    from (:meth:`pseudo_labels`, :meth:`training_proposals`) and :meth:`train`, which returns the
    :class:`~wstal.trained.TrainedDetector` that inference takes.

    Args:
        dataset: the data (only ``train`` is read: its features and labels, and the feature spec and class
            names the trained detector records).
        config: the run configuration (its ``stage1``/``stage2`` are the defaults of :meth:`train`).
        checkpoint_dir: where stage checkpoints go (None: no checkpoints, no resume).
        resume: continue from the checkpoints in ``checkpoint_dir``.
        device: where the networks run (ignored when ``dist`` is given: its device is used).
        stop: test hook that interrupts training after a number of epochs.
        show_progress: tqdm bars for batches and inference.
        dist: the distributed context (None: one process on ``device``).
        amp: mixed precision of the training steps, ``"off"``, ``"bf16"`` or ``"fp16"``.
        compile: train each network through ``torch.compile``.
        checkpoint_every: seconds between two checkpoints of a stage (0: after every epoch; the last
            epoch is always written).
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
        checkpoint_every: float = CHECKPOINT_EVERY,
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
            checkpoint_every=checkpoint_every,
        )
        self._stages: dict[tuple[str, ...], Stage] = {}
        self._base_outputs: dict[StageKey, BaseOutputs] = {}
        self._proposals: dict[StageKey, StageProposals] = {}
        self._instances: dict[StageKey, dict[str, Instances]] = {}

    def _on_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` on rank 0, sent to every rank, so all ranks train on the same pseudo labels and
        proposals."""
        return self.dist.broadcast_object(compute() if self.dist.is_main else None)

    def _stage(self, name: tuple[str, ...], make: Callable[[], Stage]) -> Stage:
        if name not in self._stages:
            self._stages[name] = make()
        return self._stages[name]

    # ---------------------------------------------------------------- base model and pseudo segments

    def base_stage(self, fusion: str) -> BaseStage:
        """The base-model stage with ``fusion``."""
        return self._stage(("base", fusion), lambda: BaseStage(fusion, self.config, self.dataset))

    def pseudo_labels(self, fusion: str) -> BaseOutputs:
        """The base model's scores and grouped segments (the pseudo segments) on the training videos
        (trained on first use)."""
        videos = self.dataset.train
        stage = self.base_stage(fusion)
        model = self.train_stage(stage)  # every rank trains it
        if stage.key not in self._base_outputs:
            results = self._on_main(
                lambda: run_base(
                    model,
                    videos,
                    topk_ratio=self.config.base_topk_ratio,
                    device=self.device,
                    desc=f"train: base ({fusion})",
                    show_progress=self.show_progress,
                )
            )
            segments = grouped_segments(results, self.config.pseudo)
            count = sum(len(s.segments) for s in segments.values())
            log(f"[pseudo labels] {count} segments on {len(segments)} training videos (base {fusion})")
            self._base_outputs[stage.key] = BaseOutputs(stage.key, results, segments)
        return self._base_outputs[stage.key]

    # ---------------------------------------------------------------- Stage 1 and its proposals

    def rpn_stage(self, stage1_fusion: str, base_fusion: str) -> RPNStage:
        """The T-RPN stage with fusion ``stage1_fusion``, on the pseudo segments of the base model with
        fusion ``base_fusion``."""
        return self._stage(
            ("stage1", stage1_fusion, base_fusion),
            lambda: RPNStage(
                stage1_fusion,
                self.config,
                self.dataset,
                self.base_stage(base_fusion).key,
                self.pseudo_labels(base_fusion).segments,
            ),
        )

    def training_proposals(self, stage1_fusion: str, base_fusion: str) -> StageProposals:
        """Stage 1's proposals on the training videos, the T-RPN's own and the merged set Stage 2 learns
        from (trained on first use)."""
        videos = self.dataset.train
        stage = self.rpn_stage(stage1_fusion, base_fusion)
        model = self.train_stage(stage)  # every rank trains it
        if stage.key not in self._proposals:
            settings = self.config.proposals
            snippets = self._on_main(
                lambda: rpn_snippets(
                    model,
                    videos,
                    device=self.device,
                    desc=f"train: proposals ({stage1_fusion})",
                    show_progress=self.show_progress,
                )
            )
            outputs = self.pseudo_labels(base_fusion)
            own, merged = proposal_sets(snippets, outputs.segments, outputs.results, settings)
            self._proposals[stage.key] = StageProposals(stage.key, own, merged, snippets)
        return self._proposals[stage.key]

    # ---------------------------------------------------------------- Stage 2

    def classifier_stage(self, stage1_fusion: str, stage2_fusion: str, base_fusion: str) -> ClassifierStage:
        """The proposal-classifier stage with fusion ``stage2_fusion``, on the training proposals of the
        T-RPN with fusion ``stage1_fusion``."""
        return self._stage(
            ("stage2", stage1_fusion, stage2_fusion, base_fusion),
            lambda: ClassifierStage(
                stage2_fusion,
                self.config,
                self.dataset,
                self.rpn_stage(stage1_fusion, base_fusion).key,
                self.training_proposals(stage1_fusion, base_fusion).stage1,
                self.pseudo_labels(base_fusion).results,
            ),
        )

    def two_stage(self, stage1_fusion: str, stage2_fusion: str) -> TrainedDetector:
        """The trained two-stage detector of the two fusions (its stages trained on first use), without
        Stage 3."""
        base_fusion = base_strategy_for(stage1_fusion, stage2_fusion)
        classifier = self.train_stage(self.classifier_stage(stage1_fusion, stage2_fusion, base_fusion))
        config = dataclasses.replace(
            self.config,
            stage1_fusion=stage1_fusion,
            stage2_fusion=stage2_fusion,
            student=dataclasses.replace(self.config.student, enabled=False),
        )
        return TrainedDetector(
            config,
            tuple(self.dataset.classes),
            FeatureSpec.of(self.dataset),
            self.train_stage(self.base_stage(base_fusion)),
            self.train_stage(self.rpn_stage(stage1_fusion, base_fusion)),
            classifier,
        )

    # ---------------------------------------------------------------- Stage 3

    def pseudo_instances(self, stage1_fusion: str, stage2_fusion: str) -> dict[str, Instances]:
        """The two stages' detections on the training videos as Stage 3's pseudo instances
        (:func:`~wstal.student.pseudo_instances`; the two stages trained on first use)."""
        key = self.classifier_stage(
            stage1_fusion, stage2_fusion, base_strategy_for(stage1_fusion, stage2_fusion)
        ).key
        if key not in self._instances:
            trained = self.two_stage(stage1_fusion, stage2_fusion)
            videos = self.dataset.train
            rows = self._on_main(
                lambda: detect(
                    trained,
                    videos,
                    snippet_seconds=self.dataset.snippet_seconds,
                    device=self.device,
                    show_progress=self.show_progress,
                    desc="train: detections",
                ).rows["two_stage"]
            )
            instances = {v.name: pseudo_instances(rows[v.name], v.label, self.config.student) for v in videos}
            count = sum(len(i.classes) for i in instances.values())
            log(f"[pseudo instances] {count} on {len(instances)} training videos (Stage 2 {stage2_fusion})")
            self._instances[key] = instances
        return self._instances[key]

    def student_stage(
        self, stage1_fusion: str, stage2_fusion: str, stage3_fusion: str, base_fusion: str
    ) -> StudentStage:
        """The Stage-3 student with fusion ``stage3_fusion``, on the pseudo instances of the two stages with
        fusions ``stage1_fusion`` / ``stage2_fusion``."""
        return self._stage(
            ("stage3", stage1_fusion, stage2_fusion, stage3_fusion, base_fusion),
            lambda: StudentStage(
                stage3_fusion,
                self.config,
                self.dataset,
                self.classifier_stage(stage1_fusion, stage2_fusion, base_fusion).key,
                self.pseudo_instances(stage1_fusion, stage2_fusion),
            ),
        )

    def train(
        self,
        stage1_fusion: Optional[str] = None,
        stage2_fusion: Optional[str] = None,
        stage3_fusion: Optional[str] = None,
    ) -> TrainedDetector:
        """Train what is missing of the configuration (default: the config's fusions; Stage 3 where the
        config's student is enabled, on the single modality of a single-modality run), on every rank, and
        return the trained detector (its configuration with these fusions)."""
        stage1 = stage1_fusion or self.config.stage1_fusion
        stage2 = stage2_fusion or self.config.stage2_fusion
        base_fusion = base_strategy_for(stage1, stage2)
        single = base_fusion if base_fusion in ("rgb", "flow") else None  # never shown the other modality
        stage3 = stage3_fusion or single or self.config.stage3_fusion
        two_stage = self.two_stage(stage1, stage2)
        config = dataclasses.replace(two_stage.config, student=self.config.student, stage3_fusion=stage3)
        if not self.config.student.enabled:
            return dataclasses.replace(two_stage, config=config)
        student = self.train_stage(self.student_stage(stage1, stage2, stage3, base_fusion))
        return dataclasses.replace(two_stage, config=config, student=student)
