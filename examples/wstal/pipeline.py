"""The two-stage detector end to end: configuration, the three trainings, inference and evaluation.

:class:`DetectorRunner` trains and evaluates one or many fusion configurations on one dataset. Each
stage is memoised and checkpointed under a name that encodes everything upstream of it, so the
``--ablation`` grid trains the base model once per base fusion, the T-RPN once per Stage-1 fusion and
only the Stage-2 classifier per cell, and ``--resume`` picks every stage up where it stopped:

    base_<base fusion>.pt -> stage1_<base fusion>_<stage-1 fusion>.pt
                          -> stage2_<base fusion>_<stage-1 fusion>_<stage-2 fusion>.pt

Nothing here looks at the test split before the final evaluation: every model is the one of its last
epoch and every threshold is fixed in :class:`DetectorConfig`.

Under ``torchrun`` (a :class:`~wstal.distributed.DistributedContext` with several ranks) every rank
trains, on its share of each global batch; rank 0 alone computes the pseudo labels and the training
proposals (and sends them to the others), writes the checkpoints and evaluates, while the other ranks
wait at a barrier. See docs/training_at_scale.md.

Axis legend: t snippets, c channels, k classes, n proposals.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .data import Video, WSTALDataset
from .detect import (
    BaseResult,
    DetectionConfig,
    base_detections,
    classify_proposals,
    detections_from_proposals,
    rpn_proposals,
    run_base,
    stage1_detections,
    to_detections,
)
from .distributed import DistributedContext
from .evaluation import Detection, MAPResult, evaluate_detections
from .model import (
    FusionEmbed,
    FusionStrategy,
    MILBaseModel,
    ProposalClassifier,
    TemporalRPN,
    base_losses,
    proposal_mil_losses,
    rpn_losses,
)
from .proposals import outer_inner_contrast
from .pseudo_labels import DEFAULT_THRESHOLDS, Segments, dense_targets, segments_from_scores
from .train import (
    Batch,
    StopAfter,
    batch_indices,
    collate,
    crop_window,
    fingerprint,
    log,
    sample_snippets,
    seed_everything,
    stage_seed,
    train_stage,
)

__all__ = [
    "DetectorConfig",
    "DetectorRunner",
    "EvaluationResult",
    "PseudoLabelSettings",
    "StageSettings",
    "ablation_config",
    "base_strategy_for",
    "proposal_targets",
    "thumos14_config",
]


@dataclass(frozen=True)
class StageSettings:
    """Optimisation and width settings of one stage.

    Attributes:
        epochs: passes over the training videos.
        lr: Adam learning rate.
        weight_decay: Adam L2 weight decay.
        batch_size: videos per step.
        max_len: longest training sequence in snippets (longer videos are subsampled or cropped).
        hidden: width of the stage network.
        dropout: dropout rate.
    """

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    max_len: int
    hidden: int
    dropout: float


@dataclass(frozen=True)
class PseudoLabelSettings:
    """How the base model's attention becomes pseudo segments (see :mod:`.pseudo_labels`).

    ``source`` is the attention head the segments come from: ``boundary`` (per snippet, unbiased edges,
    the default) or ``attention`` (temporally smoothed, about a snippet too wide on each side).
    """

    source: str = "boundary"
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    outer_ratio: float = 0.25
    nms_iou: float = 0.3
    min_score: float = 0.3


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a run; see docs/detector.md for the reasoning behind each value.

    Attributes:
        stage1: Stage-1 (T-RPN) fusion strategy.
        stage2: Stage-2 (classifier) fusion strategy.
        dmf_attention: DMF attention form, ``gate`` or ``dot``.
        alpha: DMF strength.
        seed: run seed (every stage derives its own).
        embed_dim: width of the fused features every stage starts from.
        base, rpn, classifier: per-stage settings.
        pseudo: pseudo-label settings.
        detection: post-processing settings.
        base_topk_ratio: base model top-k is ``t / base_topk_ratio``.
        base_bottomk_ratio: base model easy-background count is ``t / base_bottomk_ratio``.
        mutual_weight: weight of the mutual loss wherever a stage uses mutual fusion.
        proposal_topk_ratio: Stage-2 top-k is ``n / proposal_topk_ratio`` proposals.
        completeness_weight: weight of the Stage-2 pseudo-completeness loss.
        completeness_source: which base attention head gives the completeness targets.
        evaluation_protocol: ``plain`` (seconds, no filter) or ``thumos`` (snippet units and the
            ambiguous-region filter, the community's THUMOS14 conventions).
    """

    stage1: str = "mutual+"
    stage2: str = "concat"
    dmf_attention: str = "gate"
    alpha: float = 0.5
    seed: int = 0
    embed_dim: int = 256
    base: StageSettings = StageSettings(20, 5e-4, 1e-3, 16, 320, 256, 0.5)
    rpn: StageSettings = StageSettings(20, 5e-4, 1e-3, 16, 512, 128, 0.3)
    classifier: StageSettings = StageSettings(20, 5e-4, 1e-3, 8, 100_000, 128, 0.5)
    pseudo: PseudoLabelSettings = field(default_factory=PseudoLabelSettings)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    base_topk_ratio: float = 8.0
    base_bottomk_ratio: float = 2.0
    mutual_weight: float = 1.0
    proposal_topk_ratio: float = 4.0
    completeness_weight: float = 1.0
    completeness_source: str = "attention"
    evaluation_protocol: str = "plain"

    def __post_init__(self) -> None:
        FusionStrategy.parse(self.stage1)
        FusionStrategy.parse(self.stage2)
        if self.dmf_attention not in ("gate", "dot"):
            raise ValueError(f"dmf_attention must be 'gate' or 'dot', got {self.dmf_attention!r}")
        if self.evaluation_protocol not in ("plain", "thumos"):
            raise ValueError(
                f"evaluation_protocol must be 'plain' or 'thumos', got {self.evaluation_protocol!r}"
            )

    def with_options(
        self,
        *,
        stage1: Optional[str] = None,
        stage2: Optional[str] = None,
        dmf_attention: Optional[str] = None,
        alpha: Optional[float] = None,
        seed: Optional[int] = None,
        epochs: Optional[int] = None,
        width: Optional[int] = None,
    ) -> DetectorConfig:
        """A copy with the command-line options applied (``None`` keeps the current value); ``epochs``
        sets every stage's epochs, ``width`` the fused width and every stage's hidden width."""
        changes: dict[str, Any] = {
            k: v
            for k, v in (
                ("stage1", stage1),
                ("stage2", stage2),
                ("dmf_attention", dmf_attention),
                ("alpha", alpha),
                ("seed", seed),
            )
            if v is not None
        }
        stages = {"base": self.base, "rpn": self.rpn, "classifier": self.classifier}
        for name, settings in stages.items():
            if epochs is not None:
                settings = dataclasses.replace(settings, epochs=epochs)
            if width is not None:
                settings = dataclasses.replace(settings, hidden=width)
            changes[name] = settings
        if width is not None:
            changes["embed_dim"] = width
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (written next to the results)."""
        return dataclasses.asdict(self)


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
    """Test-split mAP of the three detectors of one configuration, and what they detected."""

    stage1: str
    stage2: str
    base: MAPResult
    stage1_only: MAPResult
    two_stage: MAPResult
    detections: dict[str, list[Detection]]
    proposals: dict[str, list[Detection]]


def _video_signature(videos: Sequence[Video]) -> str:
    h = hashlib.sha256()
    for v in videos:
        h.update(
            f"{v.name}:{v.num_snippets}:{v.rgb.shape[1]}:{v.flow.shape[1]}:{float(v.rgb[0, 0])!r};".encode()
        )
    return h.hexdigest()[:16]


def proposal_targets(
    proposals: Segments,
    base: BaseResult,
    label: np.ndarray,
    *,
    source: str = "attention",
    outer_ratio: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo completeness and pseudo class of each training proposal, from the base model.

    Completeness is the outer-inner contrast of the base attention over the proposal (rounded to whole
    snippets), clipped to [0, 1]: 1 when the proposal covers exactly a block of full attention, low when it
    covers background, only part of an action or an action plus much background. The class is the
    labelled class with the highest mean base ``p(class)`` inside the proposal.

    Shape:
        proposals: n segments in snippets. Returns completeness (n,) float32 and classes (n,) int64.
    """
    t = base.attention.shape[0]
    ints = proposals.segments.round().long()
    ints[:, 0] = ints[:, 0].clamp(0, t - 1)
    ints[:, 1] = torch.maximum(ints[:, 1].clamp(max=t), ints[:, 0] + 1)
    scores = {"attention": base.attention, "boundary": base.boundary}.get(
        source, (base.attention + base.boundary) / 2
    )
    completeness = outer_inner_contrast(scores.float(), ints, outer_ratio=outer_ratio).clamp(0, 1)
    labelled = torch.as_tensor(np.flatnonzero(label))
    cumulative = torch.cat([torch.zeros(1, base.p.shape[1]), base.p.cumsum(0)])
    inside = (cumulative[ints[:, 1]] - cumulative[ints[:, 0]])[:, labelled]
    classes = labelled[inside.argmax(1)]
    return completeness.float(), classes.long()


class DetectorRunner:
    """Train and evaluate fusion configurations of the two-stage detector on one dataset.

    Args:
        dataset: the data (only ``train`` is used for training, ``test`` only by :meth:`evaluate`).
        config: the run configuration (its ``stage1``/``stage2`` are the defaults of :meth:`evaluate`).
        checkpoint_dir: where stage checkpoints go (None: no checkpoints, no resume).
        resume: continue from the checkpoints in ``checkpoint_dir``.
        device: where the networks run.
        stop: test hook that interrupts training after a number of epochs.
        show_progress: tqdm bars for batches and inference.
        dist: the distributed context (None: one process; its ``device`` then is ``device``).
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
        self.dataset = dataset
        self.config = config
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.dist = dist if dist is not None else DistributedContext(device=torch.device(device))
        self.device = self.dist.device
        self.amp = amp
        self.compile = compile
        self.stop = stop
        self.show_progress = show_progress
        self._data_signature = _video_signature(dataset.train)
        self._bases: dict[str, tuple[MILBaseModel, str]] = {}
        self._pseudo: dict[str, dict[str, Segments]] = {}
        self._base_train: dict[str, dict[str, BaseResult]] = {}
        self._base_test: dict[str, dict[str, BaseResult]] = {}
        self._test_proposals: dict[str, dict[str, Segments]] = {}
        self._rpns: dict[str, tuple[TemporalRPN, str]] = {}
        self._train_proposals: dict[str, dict[str, Segments]] = {}
        self._classifiers: dict[tuple[str, str], tuple[ProposalClassifier, str]] = {}

    # ------------------------------------------------------------------ helpers

    def _fusion(self, strategy: str) -> FusionEmbed:
        d = self.dataset
        return FusionEmbed(
            strategy,
            d.rgb_dim,
            d.flow_dim,
            self.config.embed_dim,
            alpha=self.config.alpha,
            attention=self.config.dmf_attention,
        )

    def _fingerprint(
        self, stage: str, strategy: str, settings: StageSettings, upstream: str, **extra: Any
    ) -> str:
        c = self.config
        dmf = {"alpha": c.alpha, "attention": c.dmf_attention} if FusionStrategy.parse(strategy).dmf else {}
        return fingerprint(
            {
                "stage": stage,
                "strategy": strategy,
                "settings": dataclasses.asdict(settings),
                "seed": c.seed,
                "embed_dim": c.embed_dim,
                "dmf": dmf,
                "data": self._data_signature,
                "upstream": upstream,
                **extra,
            }
        )

    def _checkpoint(self, name: str) -> Optional[Path]:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / f"{name}.pt"

    def _train(
        self,
        name: str,
        model: nn.Module,
        data: Any,
        step: Any,
        settings: StageSettings,
        generator: torch.Generator,
        config_fingerprint: str,
    ) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        architecture = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
        train_stage(
            name,
            model,
            data,
            optimizer,
            step,
            epochs=settings.epochs,
            generator=generator,
            checkpoint=self._checkpoint(name),
            config_fingerprint=fingerprint([config_fingerprint, architecture]),
            resume=self.resume,
            device=self.device,
            stop=self.stop,
            show_progress=self.show_progress,
            dist=self.dist,
            amp=self.amp,
            compile=self.compile,
        )

    # ------------------------------------------------------------------ base model

    @staticmethod
    def base_strategy(stage1: str, stage2: str) -> str:
        """The base model's fusion for a pair of stage fusions (see :func:`base_strategy_for`)."""
        return base_strategy_for(stage1, stage2)

    def base(self, strategy: str) -> MILBaseModel:
        """The trained base model with ``strategy`` fusion (trained on first use)."""
        if strategy not in self._bases:
            c, s = self.config, self.config.base
            generator = seed_everything(stage_seed(c.seed, "base"), self.dist.rank)
            model = MILBaseModel(
                self._fusion(strategy), self.dataset.num_classes, hidden=s.hidden, dropout=s.dropout
            )
            model.to(self.device)
            fp = self._fingerprint(
                "base",
                strategy,
                s,
                "",
                topk=c.base_topk_ratio,
                bottomk=c.base_bottomk_ratio,
                mutual=c.mutual_weight,
            )
            videos = self.dataset.train

            def data(gen: torch.Generator) -> Iterator[Batch]:
                for idx in batch_indices(len(videos), s.batch_size, gen):
                    group = [videos[i] for i in idx]
                    picks = [sample_snippets(v.num_snippets, s.max_len, gen) for v in group]
                    yield collate(
                        [v.name for v in group],
                        [v.rgb[p] for v, p in zip(group, picks)],
                        [v.flow[p] for v, p in zip(group, picks)],
                        [v.label for v in group],
                        shard=self.dist,
                    )

            def step(m: nn.Module, b: Batch) -> dict[str, torch.Tensor]:
                return base_losses(
                    m(b.rgb, b.flow, b.mask),
                    b.labels,
                    b.mask,
                    topk_ratio=c.base_topk_ratio,
                    bottomk_ratio=c.base_bottomk_ratio,
                    mutual_weight=c.mutual_weight,
                )

            self._train(f"base_{strategy}", model, data, step, s, generator, fp)
            self._bases[strategy] = (model, fp)
        return self._bases[strategy][0]

    def base_results(self, strategy: str, videos: Sequence[Video], desc: str) -> dict[str, BaseResult]:
        """Base model scores on ``videos``."""
        return run_base(
            self.base(strategy), videos, device=self.device, desc=desc, show_progress=self.show_progress
        )

    def _on_main(self, compute: Any) -> Any:
        """``compute()`` on rank 0, its result sent to every rank (so that all ranks train on the same
        pseudo labels and proposals); in one process simply ``compute()``."""
        return self.dist.broadcast_object(compute() if self.dist.is_main else None)

    def _base_train_results(self, strategy: str) -> dict[str, BaseResult]:
        if strategy not in self._base_train:
            self.base(strategy)  # every rank trains it
            self._base_train[strategy] = self._on_main(
                lambda: self.base_results(strategy, self.dataset.train, f"pseudo labels ({strategy})")
            )
        return self._base_train[strategy]

    def pseudo_segments(self, strategy: str) -> dict[str, Segments]:
        """Pseudo action segments of the training videos from the base model's attention."""
        if strategy not in self._pseudo:
            p = self.config.pseudo
            results = self._base_train_results(strategy)
            self._pseudo[strategy] = {
                name: segments_from_scores(
                    r.boundary if p.source == "boundary" else r.attention,
                    thresholds=p.thresholds,
                    outer_ratio=p.outer_ratio,
                    nms_iou=p.nms_iou,
                    min_score=p.min_score,
                )
                for name, r in results.items()
            }
            count = sum(len(s.segments) for s in self._pseudo[strategy].values())
            log(f"[pseudo labels] {count} segments on {len(results)} training videos (base {strategy})")
        return self._pseudo[strategy]

    # ------------------------------------------------------------------ Stage 1

    def rpn(self, stage1: str, base: str) -> TemporalRPN:
        """The trained T-RPN with ``stage1`` fusion on the pseudo labels of the ``base`` model."""
        key = f"{stage1}@{base}"
        if key not in self._rpns:
            c, s = self.config, self.config.rpn
            pseudo = self.pseudo_segments(base)
            base_fp = self._bases[base][1]
            generator = seed_everything(stage_seed(c.seed, "stage1"), self.dist.rank)
            model = TemporalRPN(self._fusion(stage1), hidden=s.hidden, dropout=s.dropout).to(self.device)
            fp = self._fingerprint("stage1", stage1, s, base_fp, pseudo=dataclasses.asdict(c.pseudo))
            videos = self.dataset.train
            targets = {v.name: dense_targets(pseudo[v.name].segments, v.num_snippets) for v in videos}

            def data(gen: torch.Generator) -> Iterator[Batch]:
                for idx in batch_indices(len(videos), s.batch_size, gen):
                    group = [videos[i] for i in idx]
                    windows = [crop_window(v.num_snippets, s.max_len, gen) for v in group]
                    yield collate(
                        [v.name for v in group],
                        [v.rgb[a:b] for v, (a, b) in zip(group, windows)],
                        [v.flow[a:b] for v, (a, b) in zip(group, windows)],
                        [v.label for v in group],
                        targets={
                            "objectness": [targets[v.name][0][a:b] for v, (a, b) in zip(group, windows)],
                            "segment": [targets[v.name][1][a:b] - a for v, (a, b) in zip(group, windows)],
                        },
                        shard=self.dist,
                    )

            def step(m: nn.Module, b: Batch) -> dict[str, torch.Tensor]:
                return rpn_losses(
                    m(b.rgb, b.flow, b.mask),
                    b.targets["objectness"],
                    b.targets["segment"],
                    b.mask,
                    mutual_weight=c.mutual_weight,
                )

            self._train(f"stage1_{base}_{stage1}", model, data, step, s, generator, fp)
            self._rpns[key] = (model, fp)
        return self._rpns[key][0]

    def proposals(self, stage1: str, base: str, videos: Sequence[Video], desc: str) -> dict[str, Segments]:
        """Class-agnostic Stage-1 proposals on ``videos``."""
        return rpn_proposals(
            self.rpn(stage1, base),
            videos,
            self.config.detection,
            device=self.device,
            desc=desc,
            show_progress=self.show_progress,
        )

    # ------------------------------------------------------------------ Stage 2

    def classifier(self, stage1: str, stage2: str, base: str) -> ProposalClassifier:
        """The trained proposal classifier with ``stage2`` fusion on the ``stage1`` T-RPN's proposals."""
        key = (f"{stage1}@{base}", stage2)
        if key not in self._classifiers:
            c, s = self.config, self.config.classifier
            if f"{stage1}@{base}" not in self._train_proposals:
                self.rpn(stage1, base)  # every rank trains it
                self._train_proposals[f"{stage1}@{base}"] = self._on_main(
                    lambda: self.proposals(stage1, base, self.dataset.train, f"train proposals ({stage1})")
                )
            proposals = self._train_proposals[f"{stage1}@{base}"]
            rpn_fp = self._rpns[f"{stage1}@{base}"][1]
            generator = seed_everything(stage_seed(c.seed, "stage2"), self.dist.rank)
            model = ProposalClassifier(
                self._fusion(stage2), self.dataset.num_classes, hidden=s.hidden, dropout=s.dropout
            ).to(self.device)
            fp = self._fingerprint(
                "stage2",
                stage2,
                s,
                rpn_fp,
                detection=c.detection._asdict(),
                topk=c.proposal_topk_ratio,
                completeness=c.completeness_weight,
                pseudo=dataclasses.asdict(c.pseudo),
                completeness_source=c.completeness_source,
            )
            videos = [v for v in self.dataset.train if len(proposals[v.name].segments)]
            base_train = self._base_train_results(base)
            targets = {
                v.name: proposal_targets(
                    proposals[v.name], base_train[v.name], v.label, source=c.completeness_source
                )
                for v in videos
            }

            def data(gen: torch.Generator) -> Iterator[Batch]:
                for idx in batch_indices(len(videos), s.batch_size, gen):
                    group = [videos[i] for i in idx]
                    yield collate(
                        [v.name for v in group],
                        [v.rgb for v in group],
                        [v.flow for v in group],
                        [v.label for v in group],
                        per_video={
                            "proposals": [proposals[v.name].segments for v in group],
                            "completeness": [targets[v.name][0] for v in group],
                            "classes": [targets[v.name][1] for v in group],
                        },
                        shard=self.dist,
                    )

            def step(m: nn.Module, b: Batch) -> dict[str, torch.Tensor]:
                logits, aux = m(b.rgb, b.flow, b.mask, b.per_video["proposals"])
                return proposal_mil_losses(
                    logits,
                    b.labels,
                    aux,
                    mask=b.mask,
                    completeness=b.per_video["completeness"],
                    proposal_classes=b.per_video["classes"],
                    topk_ratio=c.proposal_topk_ratio,
                    completeness_weight=c.completeness_weight,
                    mutual_weight=c.mutual_weight,
                )

            self._train(f"stage2_{base}_{stage1}_{stage2}", model, data, step, s, generator, fp)
            self._classifiers[key] = (model, fp)
        return self._classifiers[key][0]

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, stage1: Optional[str] = None, stage2: Optional[str] = None) -> Optional[EvaluationResult]:
        """Train what is missing, then detect on the test split and score the base, Stage-1-only and
        two-stage detectors. In a distributed run every rank trains, rank 0 evaluates and the others
        wait for it at a barrier and return None."""
        stage1 = stage1 or self.config.stage1
        stage2 = stage2 or self.config.stage2
        base = self.base_strategy(stage1, stage2)
        self.classifier(stage1, stage2, base)  # trains base, Stage 1 and Stage 2 as needed
        result = self._evaluate(stage1, stage2, base) if self.dist.is_main else None
        self.dist.barrier()
        return result

    def _evaluate(self, stage1: str, stage2: str, base: str) -> EvaluationResult:
        d, det = self.dataset, self.config.detection
        if base not in self._base_test:
            self._base_test[base] = self.base_results(base, d.test, "test: base")
        if f"{stage1}@{base}" not in self._test_proposals:
            self._test_proposals[f"{stage1}@{base}"] = self.proposals(stage1, base, d.test, "test: proposals")
        base_out, test_proposals = self._base_test[base], self._test_proposals[f"{stage1}@{base}"]
        scores = classify_proposals(
            self.classifier(stage1, stage2, base),
            d.test,
            test_proposals,
            topk_ratio=self.config.proposal_topk_ratio,
            device=self.device,
            desc="test: classify",
            show_progress=self.show_progress,
        )
        sec = d.snippet_seconds
        dets_base = {v.name: to_detections(base_detections(base_out[v.name], det), sec) for v in d.test}
        dets_s1 = {
            v.name: to_detections(stage1_detections(test_proposals[v.name], base_out[v.name], det), sec)
            for v in d.test
        }
        dets = {
            v.name: to_detections(
                detections_from_proposals(test_proposals[v.name], *scores[v.name], det), sec
            )
            for v in d.test
        }
        proposals = {
            v.name: [
                Detection(0, float(s), float(a) * sec, float(b) * sec)
                for (a, b), s in zip(
                    test_proposals[v.name].segments.tolist(), test_proposals[v.name].scores.tolist()
                )
            ]
            for v in d.test
        }

        def score(detections: dict[str, list[Detection]]) -> MAPResult:
            thumos = self.config.evaluation_protocol == "thumos"
            return evaluate_detections(
                d.test,
                detections,
                d.num_classes,
                ambiguous=(d.ambiguous or None) if thumos else None,
                snippet_units=thumos,
                snippet_seconds=sec,
            )

        return EvaluationResult(
            stage1, stage2, score(dets_base), score(dets_s1), score(dets), dets, proposals
        )


def ablation_config(config: DetectorConfig) -> DetectorConfig:
    """The reduced schedule of ``--ablation``: half the epochs of each stage (at least 1), so the 18 cells
    (2 single-modality + 16 fusion) fit a CPU budget; the base model and each T-RPN are shared between
    cells, so only the Stage-2 classifier is trained per cell."""
    stages = {name: getattr(config, name) for name in ("base", "rpn", "classifier")}
    return dataclasses.replace(
        config, **{name: dataclasses.replace(s, epochs=max(1, s.epochs // 2)) for name, s in stages.items()}
    )


def thumos14_config() -> DetectorConfig:
    """Settings for the real THUMOS14 I3D features (1024 + 1024 channels), close to the paper's lineage
    (CO2-Net / P-MIL): wider networks, longer training, lower learning rates, 750-snippet training clips
    for Stage 1 and the THUMOS evaluation protocol. Not tuned here: the features are not available on
    the development machines (see docs/reproduce_thumos14.md)."""
    return DetectorConfig(
        embed_dim=1024,
        base=StageSettings(
            epochs=100, lr=1e-4, weight_decay=1e-3, batch_size=10, max_len=320, hidden=1024, dropout=0.7
        ),
        rpn=StageSettings(
            epochs=50, lr=1e-4, weight_decay=1e-3, batch_size=8, max_len=750, hidden=512, dropout=0.3
        ),
        classifier=StageSettings(
            epochs=50, lr=1e-4, weight_decay=1e-3, batch_size=8, max_len=100_000, hidden=512, dropout=0.5
        ),
        detection=DetectionConfig(max_proposals=100, max_detections=200),
        evaluation_protocol="thumos",
    )
