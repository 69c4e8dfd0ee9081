"""The detector's three trainable stages as units: what each depends on, its network, batches and losses.

A :class:`Stage` is everything :class:`~wstal.pipeline.StageTrainer` needs to train one network:

* ``key``: a frozen, hashable description of everything the trained weights depend on (the stage's
  part of the configuration, the data, and the key of the stage upstream of it); results are cached
  and checkpoints fingerprinted under it, so two stages with equal keys are the same training;
* ``build()``: a fresh network; ``batches(generator, shard)``: one epoch of training batches;
  ``losses(module, batch)``: the named losses of one step.

The stages, in pipeline order:

    BaseStage (snippet MIL)  -> pseudo segments ->  RPNStage (T-RPN)  -> proposals ->  ClassifierStage
        -> the two stages' detections on the training videos -> pseudo instances -> StudentStage (optional)

Axis legend: t snippets, k classes, n proposals.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .batching import Batch, collate
from .config import DetectorConfig, StageSettings
from .data import Video, WSTALDataset
from .detect import BaseResult
from .distributed import DistributedContext
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
from .proposals import outer_inner_contrast, whole_snippets
from .pseudo_labels import Segments, dense_targets
from .student import BoundaryStudent, Instances, student_losses, student_targets
from .train import batch_indices, crop_window, sample_snippets

__all__ = [
    "NETWORKS",
    "BaseStage",
    "ClassifierStage",
    "RPNStage",
    "Stage",
    "StageKey",
    "StudentStage",
    "build_network",
    "data_signature",
    "proposal_targets",
]


@dataclass(frozen=True)
class StageKey:
    """What a trained stage depends on: its kind, fusion, configuration part and upstream stage."""

    kind: str
    fusion: str
    config: tuple
    upstream: Optional[StageKey] = None

    def fingerprint(self) -> str:
        """A short stable hash of the key (written into and checked against the stage checkpoint)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


def data_signature(videos: Sequence[Video]) -> str:
    """A short hash that tells training sets apart (names, lengths, widths and one feature value)."""
    h = hashlib.sha256()
    for v in videos:
        h.update(
            f"{v.name}:{v.num_snippets}:{v.rgb.shape[1]}:{v.flow.shape[1]}:{float(v.rgb[0, 0])!r};".encode()
        )
    return h.hexdigest()[:16]


class Stage(abc.ABC):
    """One trainable stage. Subclasses set ``kind`` and ``settings`` and implement the four members."""

    kind: ClassVar[str]
    settings: StageSettings

    @property
    @abc.abstractmethod
    def key(self) -> StageKey:
        """Everything the trained weights depend on."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The checkpoint's file name (without ``.pt``)."""

    @abc.abstractmethod
    def build(self) -> nn.Module:
        """A freshly initialised network."""

    @abc.abstractmethod
    def batches(self, generator: torch.Generator, shard: DistributedContext) -> Iterator[Batch]:
        """One epoch of training batches, every random draw from ``generator``."""

    @abc.abstractmethod
    def losses(self, module: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """Named losses of one step, ``total`` among them; ``module`` is the (wrapped) network."""


def _fusion(config: DetectorConfig, rgb_dim: int, flow_dim: int, strategy: str) -> FusionEmbed:
    return FusionEmbed(
        strategy,
        rgb_dim,
        flow_dim,
        config.embed_dim,
        alpha=config.alpha,
        attention=config.dmf_attention,
        mutual_loss_through_dmf=config.mutual_loss_through_dmf,
    )


NETWORKS = ("base", "stage1", "stage2", "stage3")
"""The networks of a trained detector, by their stage's name: the stage's kind, and the
:class:`~wstal.config.DetectorConfig` field that holds its :class:`~wstal.config.StageSettings`
(``stage3``, the student, only where :attr:`~wstal.config.StudentSettings.enabled`)."""


def build_network(
    kind: str, fusion: str, config: DetectorConfig, *, rgb_dim: int, flow_dim: int, num_classes: int
) -> nn.Module:
    """A freshly initialised network of one stage: ``kind`` one of :data:`NETWORKS` (the MIL base model,
    the T-RPN, the proposal classifier) on ``fusion`` features of ``rgb_dim`` + ``flow_dim`` channels.
    What each stage's ``build()`` makes, and what a saved detector is rebuilt from."""
    if kind not in NETWORKS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, NETWORKS))}, got {kind!r}")
    s: StageSettings = getattr(config, kind)
    embed = _fusion(config, rgb_dim, flow_dim, fusion)
    if kind == "base":
        return MILBaseModel(embed, num_classes, hidden=s.hidden, dropout=s.dropout)
    if kind == "stage1":
        return TemporalRPN(embed, hidden=s.hidden, dropout=s.dropout)
    if kind == "stage2":
        return ProposalClassifier(embed, num_classes, hidden=s.hidden, dropout=s.dropout)
    return BoundaryStudent(
        embed, num_classes, hidden=s.hidden, levels=config.student.levels, dropout=s.dropout
    )


def _widths(dataset: WSTALDataset) -> dict[str, int]:
    return {"rgb_dim": dataset.rgb_dim, "flow_dim": dataset.flow_dim, "num_classes": dataset.num_classes}


def _fusion_key(config: DetectorConfig, strategy: str) -> tuple:
    parsed = FusionStrategy.parse(strategy)
    dmf = (config.dmf_attention, config.alpha) if parsed.dmf else ()
    if parsed.dmf and parsed.name == "mutual" and not config.mutual_loss_through_dmf:
        dmf += ("mutual loss detached",)  # only when set: the keys of earlier checkpoints hold
    return (config.embed_dim, config.mutual_weight, dmf, config.seed)


# --------------------------------------------------------------------------------------------------
# base model: snippet-level MIL from video labels
# --------------------------------------------------------------------------------------------------


@dataclass
class BaseStage(Stage):
    """The snippet-level MIL base model (its attention becomes the pseudo segments)."""

    kind: ClassVar[str] = "base"
    fusion: str
    config: DetectorConfig
    dataset: WSTALDataset

    @property
    def settings(self) -> StageSettings:
        return self.config.base

    @functools.cached_property
    def key(self) -> StageKey:
        c = self.config
        part = (c.base, c.base_topk_ratio, c.base_bottomk_ratio, _fusion_key(c, self.fusion))
        return StageKey(self.kind, self.fusion, (*part, data_signature(self.dataset.train)))

    @property
    def name(self) -> str:
        return f"base_{self.fusion}"

    def build(self) -> MILBaseModel:
        return build_network(self.kind, self.fusion, self.config, **_widths(self.dataset))

    def batches(self, generator: torch.Generator, shard: DistributedContext) -> Iterator[Batch]:
        videos, s = self.dataset.train, self.settings
        lengths = [min(v.num_snippets, s.max_len) for v in videos]
        for idx in batch_indices(len(videos), s.batch_size, generator, lengths=lengths):
            group = [videos[i] for i in idx]
            picks = [sample_snippets(v.num_snippets, s.max_len, generator) for v in group]
            yield collate(
                [v.name for v in group],
                [v.rgb[p] for v, p in zip(group, picks)],
                [v.flow[p] for v, p in zip(group, picks)],
                [v.label for v in group],
                shard=shard,
            )

    def losses(self, module: nn.Module, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        return base_losses(
            module(batch.rgb, batch.flow, batch.mask),
            batch.labels,
            batch.mask,
            topk_ratio=c.base_topk_ratio,
            bottomk_ratio=c.base_bottomk_ratio,
            mutual_weight=c.mutual_weight,
        )


# --------------------------------------------------------------------------------------------------
# Stage 1: the T-RPN from pseudo segments
# --------------------------------------------------------------------------------------------------


@dataclass
class RPNStage(Stage):
    """Stage 1: the temporal region proposal network, trained on the base model's pseudo segments."""

    kind: ClassVar[str] = "stage1"
    fusion: str
    config: DetectorConfig
    dataset: WSTALDataset
    base: StageKey
    pseudo: dict[str, Segments]

    def __post_init__(self) -> None:
        self._targets = {
            v.name: dense_targets(self.pseudo[v.name].segments, v.num_snippets) for v in self.dataset.train
        }

    @property
    def settings(self) -> StageSettings:
        return self.config.stage1

    @functools.cached_property
    def key(self) -> StageKey:
        c = self.config
        return StageKey(self.kind, self.fusion, (c.stage1, c.pseudo, _fusion_key(c, self.fusion)), self.base)

    @property
    def name(self) -> str:
        return f"stage1_{self.base.fusion}_{self.fusion}"

    def build(self) -> TemporalRPN:
        return build_network(self.kind, self.fusion, self.config, **_widths(self.dataset))

    def batches(self, generator: torch.Generator, shard: DistributedContext) -> Iterator[Batch]:
        videos, s = self.dataset.train, self.settings
        lengths = [min(v.num_snippets, s.max_len) for v in videos]
        for idx in batch_indices(len(videos), s.batch_size, generator, lengths=lengths):
            group = [videos[i] for i in idx]
            windows = [crop_window(v.num_snippets, s.max_len, generator) for v in group]
            objectness = [self._targets[v.name][0][a:b] for v, (a, b) in zip(group, windows)]
            segment = [self._targets[v.name][1][a:b] - a for v, (a, b) in zip(group, windows)]
            yield collate(
                [v.name for v in group],
                [v.rgb[a:b] for v, (a, b) in zip(group, windows)],
                [v.flow[a:b] for v, (a, b) in zip(group, windows)],
                [v.label for v in group],
                targets={"objectness": objectness, "segment": segment},
                shard=shard,
            )

    def losses(self, module: nn.Module, batch: Batch) -> dict[str, Tensor]:
        return rpn_losses(
            module(batch.rgb, batch.flow, batch.mask),
            batch.targets["objectness"],
            batch.targets["segment"],
            batch.mask,
            mutual_weight=self.config.mutual_weight,
        )


# --------------------------------------------------------------------------------------------------
# Stage 2: the proposal classifier
# --------------------------------------------------------------------------------------------------


def proposal_targets(
    proposals: Segments,
    base: BaseResult,
    label: np.ndarray,
    *,
    source: str,
    outer_ratio: float,
) -> tuple[Tensor, Tensor]:
    """Pseudo completeness and pseudo class of each training proposal, from the base model.

    Completeness is the outer-inner contrast of the base attention over the proposal (rounded to whole
    snippets), clipped to [0, 1]: 1 when the proposal covers exactly a block of full attention, low when it
    covers background, only part of an action or an action plus much background. The class is the
    labelled class with the highest mean base ``p(class)`` inside the proposal.

    Args:
        source: the attention head, ``attention``, ``boundary`` or ``mean`` (of the two).
        outer_ratio: the contrast's outer margin (the pseudo-label grouping's).

    Shape:
        proposals: n segments in snippets. Returns completeness (n,) float32 and classes (n,) int64.
    """
    heads = {
        "attention": base.attention,
        "boundary": base.boundary,
        "mean": (base.attention + base.boundary) / 2,
    }
    if source not in heads:
        raise ValueError(f"source must be one of {', '.join(map(repr, heads))}, got {source!r}")
    ints = whole_snippets(proposals.segments, base.attention.shape[0])
    completeness = outer_inner_contrast(heads[source].float(), ints, outer_ratio=outer_ratio).clamp(0, 1)
    labelled = torch.as_tensor(np.flatnonzero(label))
    cumulative = torch.cat([torch.zeros(1, base.p.shape[1]), base.p.cumsum(0)])
    inside = (cumulative[ints[:, 1]] - cumulative[ints[:, 0]])[:, labelled]
    classes = labelled[inside.argmax(1)]
    return completeness.float(), classes.long()


@dataclass
class ClassifierStage(Stage):
    """Stage 2: the proposal classifier, trained by proposal-level MIL on the T-RPN's training proposals
    with pseudo completeness from the base model."""

    kind: ClassVar[str] = "stage2"
    fusion: str
    config: DetectorConfig
    dataset: WSTALDataset
    stage1: StageKey
    proposals: dict[str, Segments]
    base_results: dict[str, BaseResult]

    def __post_init__(self) -> None:
        c = self.config
        self._videos = [v for v in self.dataset.train if len(self.proposals[v.name].segments)]
        self._targets = {
            v.name: proposal_targets(
                self.proposals[v.name],
                self.base_results[v.name],
                v.label,
                source=c.completeness_source,
                outer_ratio=c.pseudo.grouping.outer_ratio,
            )
            for v in self._videos
        }

    @property
    def settings(self) -> StageSettings:
        return self.config.stage2

    @functools.cached_property
    def key(self) -> StageKey:
        c = self.config
        # the proposal settings whole (every field shapes the training proposals); the scoring settings
        # are inference only and stay out; the pseudo-label rule is in the upstream T-RPN key
        part = (
            c.stage2,
            c.proposals,
            c.proposal_topk_ratio,
            c.completeness_weight,
            c.completeness_source,
        )
        return StageKey(self.kind, self.fusion, (*part, _fusion_key(c, self.fusion)), self.stage1)

    @property
    def name(self) -> str:
        return f"stage2_{self.stage1.upstream.fusion}_{self.stage1.fusion}_{self.fusion}"

    def build(self) -> ProposalClassifier:
        return build_network(self.kind, self.fusion, self.config, **_widths(self.dataset))

    def batches(self, generator: torch.Generator, shard: DistributedContext) -> Iterator[Batch]:
        videos = self._videos
        lengths = [v.num_snippets for v in videos]
        for idx in batch_indices(len(videos), self.settings.batch_size, generator, lengths=lengths):
            group = [videos[i] for i in idx]
            yield collate(
                [v.name for v in group],
                [v.rgb for v in group],
                [v.flow for v in group],
                [v.label for v in group],
                per_video={
                    "proposals": [self.proposals[v.name].segments for v in group],
                    "completeness": [self._targets[v.name][0] for v in group],
                    "classes": [self._targets[v.name][1] for v in group],
                },
                shard=shard,
            )

    def losses(self, module: nn.Module, batch: Batch) -> dict[str, Tensor]:
        c = self.config
        logits, aux = module(batch.rgb, batch.flow, batch.mask, batch.per_video["proposals"])
        return proposal_mil_losses(
            logits,
            batch.labels,
            aux,
            mask=batch.mask,
            completeness=batch.per_video["completeness"],
            proposal_classes=batch.per_video["classes"],
            topk_ratio=c.proposal_topk_ratio,
            completeness_weight=c.completeness_weight,
            mutual_weight=c.mutual_weight,
        )


# --------------------------------------------------------------------------------------------------
# Stage 3: the boundary-regression student
# --------------------------------------------------------------------------------------------------


def window_instances(instances: Instances, start: int, end: int, *, keep: float = 0.5) -> Instances:
    """The instances seen by a training window ``[start, end)``, in its own snippets: each clipped to the
    window and kept when at least ``keep`` of its length lies inside (a boundary the window cut is not
    the action's).

    Example:
        >>> found = Instances(torch.tensor([[2.0, 6.0], [9.0, 14.0]]), torch.tensor([0, 1]), torch.ones(2))
        >>> window_instances(found, 4, 12).segments.tolist()  # half of the first inside, 3/5 of the second
        [[0.0, 2.0], [5.0, 8.0]]
        >>> window_instances(found, 5, 12).segments.tolist()
        [[4.0, 7.0]]
    """
    segments = instances.segments
    if segments.shape[0] == 0:
        return instances
    clipped = segments.clamp(start, end)
    inside = (clipped[:, 1] - clipped[:, 0]) >= keep * (segments[:, 1] - segments[:, 0]).clamp_min(1e-6)
    return Instances(clipped[inside] - start, instances.classes[inside], instances.weights[inside])


@dataclass
class StudentStage(Stage):
    """Stage 3: the boundary-regression student (:mod:`wstal.student`), trained on the pseudo instances the
    two stages' detections on the training videos make."""

    kind: ClassVar[str] = "stage3"
    fusion: str
    config: DetectorConfig
    dataset: WSTALDataset
    stage2: StageKey
    instances: dict[str, Instances]

    @property
    def settings(self) -> StageSettings:
        return self.config.stage3

    @functools.cached_property
    def key(self) -> StageKey:
        c = self.config
        # the scoring settings shape the two stages' detections the instances come from; how the output
        # refines them is inference only and stays out
        training = dataclasses.replace(c.student, vote_iou=0.0, score_weight=0.0)
        part = (c.stage3, training, c.scoring)
        return StageKey(self.kind, self.fusion, (*part, _fusion_key(c, self.fusion)), self.stage2)

    @property
    def name(self) -> str:
        s1 = self.stage2.upstream
        return f"stage3_{s1.upstream.fusion}_{s1.fusion}_{self.stage2.fusion}_{self.fusion}"

    def build(self) -> BoundaryStudent:
        return build_network(self.kind, self.fusion, self.config, **_widths(self.dataset))

    def batches(self, generator: torch.Generator, shard: DistributedContext) -> Iterator[Batch]:
        videos, s, student = self.dataset.train, self.settings, self.config.student
        lengths = [min(v.num_snippets, s.max_len) for v in videos]
        for idx in batch_indices(len(videos), s.batch_size, generator, lengths=lengths):
            group = [videos[i] for i in idx]
            windows = [crop_window(v.num_snippets, s.max_len, generator) for v in group]
            per_level: dict[str, list[Tensor]] = {}
            for v, (a, b) in zip(group, windows):
                found = window_instances(self.instances[v.name], a, b)
                levels = student_targets(
                    found, b - a, self.dataset.num_classes, levels=student.levels, radius=student.radius
                )
                for level, parts in enumerate(levels):
                    for part, value in zip(("cls", "segment", "weight"), parts):
                        per_level.setdefault(f"{part}{level}", []).append(value)
            yield collate(
                [v.name for v in group],
                [v.rgb[a:b] for v, (a, b) in zip(group, windows)],
                [v.flow[a:b] for v, (a, b) in zip(group, windows)],
                [v.label for v in group],
                targets=per_level,
                shard=shard,
            )

    def losses(self, module: nn.Module, batch: Batch) -> dict[str, Tensor]:
        c, t = self.config, batch.targets
        targets = [(t[f"cls{i}"], t[f"segment{i}"], t[f"weight{i}"]) for i in range(c.student.levels)]
        return student_losses(
            module(batch.rgb, batch.flow, batch.mask),
            targets,
            regression_weight=c.student.regression_weight,
            mutual_weight=c.mutual_weight,
            input_mask=batch.mask,
        )
