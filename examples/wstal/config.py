"""The detector's configuration: frozen dataclasses validated where they are made.

Every field states its type, and where it matters its range (``field(metadata=...)`` read by
:func:`validate`) or its choices (a ``Literal``), so a typo or an out-of-range value fails at
construction with the class and field named, not an hour into a run:

    >>> StageSettings(epochs=0, lr=1e-3, weight_decay=0.0, batch_size=4, max_len=64, hidden=32, dropout=0.1)
    Traceback (most recent call last):
    ...
    ValueError: StageSettings.epochs must be >= 1, got 0
    >>> PseudoLabelSettings(source="boundry")
    Traceback (most recent call last):
    ...
    ValueError: PseudoLabelSettings.source must be one of 'boundary', 'attention', got 'boundry'

A run's configuration is the one method (the defaults below) with a preset's capacity and schedule
(:func:`preset_config`); the tests check that the presets differ in nothing else.

The configurations are hashable, so a stage's part of them is the key its trained result is cached
and checkpointed under (see :mod:`.stages`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from .model import FusionStrategy

__all__ = [
    "CAPACITY_FIELDS",
    "CLASS_GROUPING",
    "CLASS_THRESHOLD",
    "DEFAULT_THRESHOLDS",
    "PRESETS",
    "DetectorConfig",
    "GroupingSettings",
    "ProposalSettings",
    "PseudoLabelSettings",
    "ScoringSettings",
    "StageSettings",
    "StudentSettings",
    "ablation_config",
    "from_dict",
    "override",
    "preset_config",
    "validate",
]


def _bound(test: Callable[[Any], bool], text: str) -> dict[str, Any]:
    return {"check": (test, text)}


POSITIVE = _bound(lambda v: v > 0, "> 0")
NON_NEGATIVE = _bound(lambda v: v >= 0, ">= 0")
AT_LEAST_ONE = _bound(lambda v: v >= 1, ">= 1")
PROBABILITY = _bound(lambda v: 0 <= v <= 1, "in [0, 1]")
DROPOUT = _bound(lambda v: 0 <= v < 1, "in [0, 1)")


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return True  # checked against the choices below
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is bool:
        return isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, tuple)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def validate(config: Any) -> None:
    """Check every field of a dataclass instance against its type, ``Literal`` choices and range.

    Raises:
        TypeError: a field of the wrong type, naming the class, the field and what it received.
        ValueError: a value outside its choices or range, likewise.
    """
    cls = type(config).__name__
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if not _type_ok(value, hint):
            expected = getattr(hint, "__name__", str(hint))
            raise TypeError(f"{cls}.{f.name} must be a finite {expected}, got {value!r}")
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ValueError(f"{cls}.{f.name} must be one of {choices}, got {value!r}")
        if "check" in f.metadata:
            test, text = f.metadata["check"]
            if not test(value):
                raise ValueError(f"{cls}.{f.name} must be {text}, got {value!r}")


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

    epochs: int = field(metadata=AT_LEAST_ONE)
    lr: float = field(metadata=POSITIVE)
    weight_decay: float = field(metadata=NON_NEGATIVE)
    batch_size: int = field(metadata=AT_LEAST_ONE)
    max_len: int = field(metadata=AT_LEAST_ONE)
    hidden: int = field(metadata=_bound(lambda v: v >= 2, ">= 2"))
    dropout: float = field(metadata=DROPOUT)

    def __post_init__(self) -> None:
        validate(self)


DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(2, 19))
"""Grouping thresholds 0.10, 0.15, ..., 0.90 (scores are probabilities)."""


@dataclass(frozen=True)
class GroupingSettings:
    """How a score sequence in [0, 1] becomes scored segments (see :mod:`.pseudo_labels`): every maximal
    run at or above each threshold is a candidate, scored by its outer-inner contrast, then NMS.

    Attributes:
        thresholds: grouping thresholds, each in (0, 1).
        outer_ratio: outer margin of the contrast score, relative to the segment's length.
        nms_iou: NMS tIoU among the candidates.
        min_score: candidates whose contrast is below this are dropped.
    """

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    outer_ratio: float = field(default=0.25, metadata=NON_NEGATIVE)
    nms_iou: float = field(default=0.3, metadata=PROBABILITY)
    min_score: float = 0.3

    def __post_init__(self) -> None:
        validate(self)
        if not self.thresholds or not all(0 < t < 1 for t in self.thresholds):
            raise ValueError(
                f"GroupingSettings.thresholds must be a non-empty tuple of values in (0, 1), "
                f"got {self.thresholds!r}"
            )


CLASS_THRESHOLD = 0.1
"""The video-level score at which a class counts as present in a video (the best class always does): the
default of the detectors' classes (:attr:`ScoringSettings.class_threshold`) and of the classes whose
sequences give class segments (:attr:`ProposalSettings.class_threshold`)."""

CLASS_GROUPING = GroupingSettings(nms_iou=0.7, min_score=0.0)
"""How a class's score sequence is grouped into segments by default, wherever one is
(:attr:`ScoringSettings.grouping`, :attr:`ProposalSettings.class_grouping`)."""


@dataclass(frozen=True)
class PseudoLabelSettings:
    """How the base model's attention becomes pseudo segments on the training videos (and the base's
    class-agnostic segments merged into the Stage-1 proposals on every video).

    Attributes:
        source: the attention head grouped: ``boundary`` (per snippet, unbiased edges) or ``attention``
            (temporally smoothed, about a snippet too wide on each side).
        grouping: the grouping rule.
    """

    source: Literal["boundary", "attention"] = "boundary"
    grouping: GroupingSettings = GroupingSettings()

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class ProposalSettings:
    """How the class-agnostic Stage-1 proposals are made: everything here shapes Stage 2's training
    proposals, so the whole dataclass is part of Stage 2's key.

    Attributes:
        nms_iou: NMS tIoU among the T-RPN's proposals.
        max_proposals: T-RPN proposals kept per video.
        min_objectness: T-RPN proposals below this objectness are dropped before NMS.
        vote_iou: each kept proposal's boundaries are the objectness-weighted mean of the candidates
            overlapping it by this tIoU (1 disables voting).
        merge_base_segments: the Stage-1 proposals are the T-RPN's merged with the base model's
            class-agnostic grouped segments (the pseudo-label rule, scored by their contrast), NMS at
            ``merge_iou`` over both (P-MIL classifies the proposals of its base; see
            :func:`wstal.detect.merge_proposals`). False: the T-RPN's alone.
        merge_iou: NMS tIoU of that merge.
        merge_base_wins: where a T-RPN proposal and a base segment overlap by more than ``merge_iou``,
            the base segment is kept, so the T-RPN adds only instances the base's grouping lacks (False:
            the higher score wins).
        merge_min_objectness: T-RPN proposals below this objectness are left out of the merge (the
            base's segments are kept whole).
        class_segments: also add, classes ignored, the segments the base model groups on the class
            sequence of each class it detects in the video (P-MIL's candidates: its base's class
            activations grouped at many thresholds), scored by their contrast; one that overlaps a kept
            segment by more than ``class_segments_iou`` is left out.
        class_threshold: the classes whose video score reaches this give ``class_segments`` (the best
            class always does).
        class_grouping: how ``class_segments`` groups each class sequence.
        class_segments_iou: tIoU above which a class segment repeats a kept one.
    """

    nms_iou: float = field(default=0.6, metadata=PROBABILITY)
    max_proposals: int = field(default=60, metadata=AT_LEAST_ONE)
    min_objectness: float = field(default=0.05, metadata=PROBABILITY)
    vote_iou: float = field(default=0.6, metadata=PROBABILITY)
    merge_base_segments: bool = True
    merge_iou: float = field(default=0.3, metadata=PROBABILITY)
    merge_base_wins: bool = True
    merge_min_objectness: float = field(default=0.99, metadata=PROBABILITY)
    class_segments: bool = False
    class_threshold: float = field(default=CLASS_THRESHOLD, metadata=PROBABILITY)
    class_grouping: GroupingSettings = CLASS_GROUPING
    class_segments_iou: float = field(default=0.9, metadata=PROBABILITY)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class ScoringSettings:
    """How the three detectors score and post-process their detections (inference only: no stage's
    weights depend on these).

    Attributes:
        class_threshold: a class is detected in a video when its video-level score reaches this (the
            best class is always kept).
        soft_nms_sigma: Gaussian soft-NMS sigma.
        max_detections: detections kept per video after soft-NMS.
        base_weight: weight of the base model's evidence in the two-stage class and video scores
            (weighted geometric mean, see :func:`wstal.detect.detections_from_proposals`; 0 = Stage 2 alone).
        grouping: how the base detector groups each class's score sequence into segments (its
            ``outer_ratio`` is also the base's contrast on the Stage-2 proposals).
        candidates: what Stage 2 classifies at inference (it is trained on the Stage-1 proposals):
            ``stage1+base``, the Stage-1 proposals and the segments of the base model's own detections,
            classes ignored, so that the candidates recall at least what the base's detections recall
            (decision 0016); ``stage1``, the Stage-1 proposals alone; ``base``, the base's segments alone.
        objectness: the objectness of each candidate in its two-stage score: ``rpn``, the T-RPN's
            support for the segment, one measure whatever the candidate's source
            (:func:`wstal.detect.rpn_support`); ``own``, the score it came with (a T-RPN proposal's
            objectness, a base segment's contrast).
    """

    class_threshold: float = field(default=CLASS_THRESHOLD, metadata=PROBABILITY)
    soft_nms_sigma: float = field(default=0.3, metadata=POSITIVE)
    max_detections: int = field(default=100, metadata=AT_LEAST_ONE)
    base_weight: float = field(default=0.5, metadata=PROBABILITY)
    grouping: GroupingSettings = CLASS_GROUPING
    candidates: Literal["stage1+base", "stage1", "base"] = "stage1+base"
    objectness: Literal["rpn", "own"] = "rpn"

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class StudentSettings:
    """Stage 3, the boundary-regression student (:mod:`wstal.student`): whether it runs, how its pseudo
    instances are made from the two stages' detections on the training videos, its pyramid, and how its
    output refines the two stages' detections. Every field but the last two (inference only) is part of
    Stage 3's key.

    Attributes:
        enabled: train Stage 3 and report its detections (the ``three_stage`` detector).
        min_score: a training video's detections scoring below this fraction of its best are dropped.
        nms_iou: hard-NMS tIoU among a class's detections before they become instances.
        max_instances: pseudo instances kept per video.
        levels: pyramid levels (strides 1, 2, ..., ``2**(levels - 1)``).
        radius: centre sampling radius, in strides of the level.
        regression_weight: weight of the distance-IoU loss against the focal loss.
        vote_iou: Stage 3's output refines each two-stage detection's boundaries by the student's
            segments of its class that overlap it by at least this tIoU (:func:`wstal.student.refine`).
        score_weight: the student's weight in the refined score, a weighted geometric mean of the
            detection's two-stage score and the student's support for it (0: the two-stage score).
    """

    enabled: bool = False
    min_score: float = field(default=0.1, metadata=PROBABILITY)
    nms_iou: float = field(default=0.5, metadata=PROBABILITY)
    max_instances: int = field(default=100, metadata=AT_LEAST_ONE)
    levels: int = field(default=5, metadata=AT_LEAST_ONE)
    radius: float = field(default=1.5, metadata=POSITIVE)
    regression_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    vote_iou: float = field(default=0.5, metadata=PROBABILITY)
    score_weight: float = field(default=0.3, metadata=PROBABILITY)

    def __post_init__(self) -> None:
        validate(self)


def _is_strategy(value: str) -> bool:
    try:
        FusionStrategy.parse(value)
    except ValueError:
        return False
    return True


FUSION_STRATEGY = _bound(_is_strategy, "one of rgb, flow, concat, mutual, concat+, mutual+")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a run's method and capacity; see docs/detector.md.

    A preset (:data:`PRESETS`) sets only the capacity and schedule fields (``embed_dim`` and the three
    :class:`StageSettings`); every other field is the method, one choice for all data. The evaluation
    protocol belongs to the data (:attr:`wstal.data.WSTALDataset.evaluation_protocol`).

    Attributes:
        stage1_fusion: Stage-1 (T-RPN) fusion strategy.
        stage2_fusion: Stage-2 (proposal classifier) fusion strategy.
        stage3_fusion: Stage-3 (boundary-regression student) fusion strategy.
        dmf_attention: DMF attention form.
        alpha: DMF strength.
        seed: run seed (every stage derives its own).
        embed_dim: width of the fused features every stage starts from.
        base: base model's optimisation and width.
        stage1: Stage 1's (T-RPN) optimisation and width.
        stage2: Stage 2's (proposal classifier) optimisation and width.
        stage3: Stage 3's (student) optimisation and width.
        student: whether Stage 3 runs, its pseudo instances and its pyramid.
        pseudo: how the base's attention becomes pseudo segments.
        proposals: how the Stage-1 proposals are made (part of Stage 2's key).
        scoring: how detections are scored and post-processed (inference only).
        base_topk_ratio: base model top-k is ``t / base_topk_ratio`` (training and inference).
        base_bottomk_ratio: base model easy-background count is ``t / base_bottomk_ratio``.
        mutual_weight: weight of the mutual loss wherever a stage uses mutual fusion.
        mutual_loss_through_dmf: whether the mutual loss trains DMF's gates (``mutual+``); false: only
            the stage's task losses do (the loss reads DMF's output detached).
        proposal_topk_ratio: Stage-2 top-k is ``n / proposal_topk_ratio`` proposals.
        completeness_weight: weight of the Stage-2 pseudo-completeness loss.
        completeness_source: which base attention head gives the completeness targets (``mean``: the
            average of the two).
    """

    stage1_fusion: str = field(default="concat+", metadata=FUSION_STRATEGY)
    stage2_fusion: str = field(default="concat+", metadata=FUSION_STRATEGY)
    stage3_fusion: str = field(default="concat+", metadata=FUSION_STRATEGY)
    dmf_attention: Literal["gate", "dot"] = "gate"
    alpha: float = field(default=0.5, metadata=NON_NEGATIVE)
    seed: int = 0
    embed_dim: int = field(default=256, metadata=AT_LEAST_ONE)
    base: StageSettings = StageSettings(10, 5e-4, 1e-3, 16, 320, 256, 0.5)
    stage1: StageSettings = StageSettings(20, 5e-4, 1e-3, 16, 512, 128, 0.3)
    stage2: StageSettings = StageSettings(20, 5e-4, 1e-3, 8, 100_000, 128, 0.5)
    stage3: StageSettings = StageSettings(20, 5e-4, 1e-3, 8, 512, 128, 0.1)
    student: StudentSettings = StudentSettings()
    pseudo: PseudoLabelSettings = PseudoLabelSettings()
    proposals: ProposalSettings = ProposalSettings()
    scoring: ScoringSettings = ScoringSettings()
    base_topk_ratio: float = field(default=8.0, metadata=AT_LEAST_ONE)
    base_bottomk_ratio: float = field(default=2.0, metadata=AT_LEAST_ONE)
    mutual_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    mutual_loss_through_dmf: bool = True
    proposal_topk_ratio: float = field(default=4.0, metadata=AT_LEAST_ONE)
    completeness_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    completeness_source: Literal["attention", "boundary", "mean"] = "attention"

    def __post_init__(self) -> None:
        validate(self)

    def with_options(
        self,
        *,
        stage1_fusion: Optional[str] = None,
        stage2_fusion: Optional[str] = None,
        stage3_fusion: Optional[str] = None,
        stage3: Optional[bool] = None,
        dmf_attention: Optional[str] = None,
        alpha: Optional[float] = None,
        seed: Optional[int] = None,
        epochs: Optional[int] = None,
        width: Optional[int] = None,
    ) -> DetectorConfig:
        """A copy with the command-line options applied (``None`` keeps the current value); ``stage3``
        enables or disables the student, ``epochs`` sets every stage's epochs, ``width`` the fused width
        and every stage's hidden width."""
        changes: dict[str, Any] = {
            k: v
            for k, v in (
                ("stage1_fusion", stage1_fusion),
                ("stage2_fusion", stage2_fusion),
                ("stage3_fusion", stage3_fusion),
                ("dmf_attention", dmf_attention),
                ("alpha", alpha),
                ("seed", seed),
            )
            if v is not None
        }
        for name in STAGES:
            settings = getattr(self, name)
            if epochs is not None:
                settings = dataclasses.replace(settings, epochs=epochs)
            if width is not None:
                settings = dataclasses.replace(settings, hidden=width)
            changes[name] = settings
        if width is not None:
            changes["embed_dim"] = width
        if stage3 is not None:
            changes["student"] = dataclasses.replace(self.student, enabled=stage3)
        return dataclasses.replace(self, **changes)

    def with_epochs_scaled(self, factor: float) -> DetectorConfig:
        """A copy whose stages train ``round(epochs * factor)`` epochs each (at least 1)."""
        stages = {name: getattr(self, name) for name in STAGES}
        return dataclasses.replace(
            self,
            **{
                name: dataclasses.replace(s, epochs=max(1, round(s.epochs * factor)))
                for name, s in stages.items()
            },
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (written next to the results); :func:`from_dict` rebuilds it."""
        return dataclasses.asdict(self)


STAGES = ("base", "stage1", "stage2", "stage3")
"""The :class:`DetectorConfig` fields that hold a stage's :class:`StageSettings`."""

CAPACITY_FIELDS = ("embed_dim", *STAGES)
"""The only :class:`DetectorConfig` fields a preset sets: widths and the stages' schedules."""

PRESETS: dict[str, dict[str, Any]] = {
    # the 128-wide synthetic families: what docs/detector.md's results were measured with
    "default": {},
    # ``--quick``: a smoke run of every stage on any data in about a minute on 2 cores (with at most 40
    # videos per split): narrow networks, a few epochs at the default's learning rates
    "quick": {
        "embed_dim": 128,
        "base": StageSettings(
            epochs=30, lr=5e-4, weight_decay=1e-3, batch_size=4, max_len=320, hidden=128, dropout=0.5
        ),
        "stage1": StageSettings(
            epochs=30, lr=5e-4, weight_decay=1e-3, batch_size=4, max_len=512, hidden=64, dropout=0.3
        ),
        "stage2": StageSettings(
            epochs=30, lr=5e-4, weight_decay=1e-3, batch_size=4, max_len=100_000, hidden=64, dropout=0.5
        ),
        "stage3": StageSettings(
            epochs=30, lr=5e-4, weight_decay=1e-3, batch_size=4, max_len=512, hidden=64, dropout=0.1
        ),
    },
    # THUMOS14 I3D width (1024 + 1024), close to the paper's lineage (CO2-Net / P-MIL): wider networks,
    # longer training, lower learning rates, 750-snippet Stage-1 clips
    "thumos14": {
        "embed_dim": 1024,
        "base": StageSettings(
            epochs=100, lr=1e-4, weight_decay=1e-3, batch_size=10, max_len=320, hidden=1024, dropout=0.7
        ),
        "stage1": StageSettings(
            epochs=50, lr=1e-4, weight_decay=1e-3, batch_size=8, max_len=750, hidden=512, dropout=0.3
        ),
        "stage2": StageSettings(
            epochs=50, lr=1e-4, weight_decay=1e-3, batch_size=8, max_len=100_000, hidden=512, dropout=0.5
        ),
        "stage3": StageSettings(
            epochs=40, lr=5e-4, weight_decay=1e-3, batch_size=4, max_len=750, hidden=256, dropout=0.1
        ),
    },
}
"""Capacity and schedule presets by name (``--preset``); each sets only :data:`CAPACITY_FIELDS`."""


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Rebuild the frozen dataclass ``cls`` (:class:`DetectorConfig` or one of its parts) from the plain
    form :meth:`DetectorConfig.as_dict` writes: nested settings from their dicts, tuples from lists, then
    validated as any configuration is. Every field must be present and no other.

    Raises:
        TypeError: ``data`` (or a nested part) is not a dict, or a field has the wrong type.
        ValueError: a field is missing or unknown, naming it; a value is out of range.

    Example:
        >>> from_dict(DetectorConfig, DetectorConfig().as_dict()) == DetectorConfig()
        True
    """
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a dict of its fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    missing, unknown = [n for n in names if n not in data], sorted(set(map(str, data)) - set(names))
    if missing or unknown:
        raise ValueError(f"{where}: missing fields {missing}, unknown fields {unknown}")
    values = {}
    for name in names:
        value, hint = data[name], hints[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def preset_config(name: str) -> DetectorConfig:
    """The :class:`DetectorConfig` of preset ``name``: the one method with that preset's capacity.

    Raises:
        ValueError: an unknown preset, naming the known ones.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, PRESETS))}, got {name!r}")
    fields = PRESETS[name]
    unknown = set(fields) - set(CAPACITY_FIELDS)
    if unknown:  # a preset that changes the method is a bug, not a configuration
        raise ValueError(f"preset {name!r} sets {sorted(unknown)}: a preset sets only {CAPACITY_FIELDS}")
    return DetectorConfig(**fields)


def override(config: Any, name: str, text: str) -> Any:
    """A copy of ``config`` (a configuration dataclass) with the field at dotted ``name`` set from ``text``,
    parsed as the field's type (``--set proposals.merge_iou=0.5``); validated like any construction.

    Raises:
        ValueError: an unknown field (the known ones named) or a value that does not parse or validate.

    Example:
        >>> override(DetectorConfig(), "scoring.grouping.nms_iou", "0.5").scoring.grouping.nms_iou
        0.5
    """
    head, _, rest = name.partition(".")
    fields = {f.name: f for f in dataclasses.fields(config)}
    if head not in fields:
        raise ValueError(f"{type(config).__name__} has no field {head!r}; fields: {', '.join(fields)}")
    current = getattr(config, head)
    if dataclasses.is_dataclass(current):
        if not rest:
            raise ValueError(
                f"{name!r} is a group of settings; name one of its fields, e.g. {name}.{dataclasses.fields(current)[0].name}"
            )
        return dataclasses.replace(config, **{head: override(current, rest, text)})
    if rest:
        raise ValueError(f"{type(config).__name__}.{head} has no field {rest!r}")
    return dataclasses.replace(
        config, **{head: _parse_like(current, text, f"{type(config).__name__}.{head}")}
    )


def _parse_like(current: Any, text: str, where: str) -> Any:
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{where} takes a {type(current).__name__}, got {text!r}") from None
    return text


def ablation_config(config: DetectorConfig) -> DetectorConfig:
    """The reduced schedule of ``--ablation``: half the epochs of each stage
    (:meth:`DetectorConfig.with_epochs_scaled`, the one scaling rule), so the 18 cells (2
    single-modality + 16 fusion) fit a CPU budget; the base model and each T-RPN are shared between
    cells, so only the Stage-2 classifier is trained per cell."""
    return config.with_epochs_scaled(0.5)
