"""Stage 3: a student that learns to put boundaries where the actions are, from the two stages' own
detections on the training videos.

The two stages re-score segments that others made; nothing in them regresses a boundary from what it
learnt about all videos. The WSTAL methods that lead since 2024 (FuSTAL, PseudoFormer, NoCo) add that
step: the weakly-supervised detector's detections on the training videos become pseudo instances for a
fully-supervised-style detector on the same features. This module is that student, in the anchor-free
style of ActionFormer (Zhang et al., ECCV 2022) and TriDet (Shi et al., CVPR 2023):

* :func:`pseudo_instances`: a training video's two-stage detections, restricted to its labelled classes,
  hard-NMS'd per class, those scoring at least a fraction of the video's best, each weighted by its score;
* :class:`BoundaryStudent`: fused features, a temporal feature pyramid (stride ``2**l`` at level ``l``), and
  per level a classification head (``k`` sigmoid logits) and a regression head (the distances from each
  location's centre to the start and to the end), the heads shared by every level;
* :func:`student_targets`: ActionFormer's assignment: a location is positive for an instance whose centre
  region (``radius`` strides around its middle) holds it and whose longer side fits the level's range;
  the shortest such instance wins;
* :func:`student_losses`: sigmoid focal loss over every location and class, and a distance-IoU loss over
  the positive locations, both weighted by the pseudo instances' scores;
* :func:`student_detections`: every location's segment, scored by its class probability times the video
  score, soft-NMS per class (the same post-processing as the other detectors): the student alone;
* :func:`refine`: Stage 3's output, the two stages' detections refined by the student: each one's
  boundaries voted with the student's segments of its class that overlap it, its score a weighted
  geometric mean with the student's support for it (decision record 0018: on THUMOS-width data of 60
  training videos the student alone ranks below its teacher; refining the teacher's detections keeps what
  both know).

Axis legend: b batch, t snippets, k classes, n instances, m locations over all levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmf_fusion.functional import zero_padding

from .config import ScoringSettings, StudentSettings
from .console import progress
from .data import Video
from .detect import (
    _batches,
    _collate,
    best_detections,
    class_detections,
    select_classes,
    soft_nms_per_class,
    support,
)
from .distributed import global_denominator, global_rescale
from .model import FusionEmbed, TemporalConv, residual_blocks
from .proposals import nms_1d, segment_iou

__all__ = [
    "BoundaryStudent",
    "Instances",
    "StudentOutput",
    "distance_iou",
    "level_range",
    "locations",
    "pseudo_instances",
    "refine",
    "run_student",
    "sigmoid_focal_loss",
    "student_detections",
    "student_losses",
    "student_segments",
    "student_targets",
]


class Instances(NamedTuple):
    """One video's pseudo instances: segments ``[start, end)`` in snippets, their classes and weights in
    (0, 1]."""

    segments: Tensor
    classes: Tensor
    weights: Tensor

    @classmethod
    def empty(cls) -> Instances:
        return cls(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0))


def pseudo_instances(
    rows: Sequence[tuple[int, float, float, float]], label: np.ndarray, settings: StudentSettings
) -> Instances:
    """A training video's pseudo instances from its detections ``rows`` (``(class, score, start, end)`` in
    snippets): those of a labelled class, hard NMS per class at ``settings.nms_iou``, those scoring at least
    ``settings.min_score`` times the best, at most ``settings.max_instances`` (best first), each weighted
    by its score over the best.

    Example:
        >>> rows = [(0, 0.8, 2.0, 6.0), (0, 0.7, 2.5, 6.0), (1, 0.9, 0.0, 1.0), (0, 0.1, 9.0, 12.0)]
        >>> found = pseudo_instances(rows, np.array([1.0, 0.0]), StudentSettings(min_score=0.5))
        >>> found.segments.tolist(), found.weights.tolist()
        ([[2.0, 6.0]], [1.0])
    """
    labelled = set(np.flatnonzero(np.asarray(label) > 0).tolist())
    kept = [r for r in rows if int(r[0]) in labelled and r[3] > r[2]]
    if not kept:
        return Instances.empty()
    classes = torch.tensor([int(r[0]) for r in kept])
    scores = torch.tensor([float(r[1]) for r in kept])
    segments = torch.tensor([[float(r[2]), float(r[3])] for r in kept])
    chosen = []
    for c in classes.unique().tolist():
        index = torch.nonzero(classes == c).flatten()
        chosen.append(index[nms_1d(segments[index], scores[index], settings.nms_iou)])
    index = torch.cat(chosen)
    index = index[scores[index].argsort(descending=True, stable=True)]
    top = scores[index[0]]
    if not top > 0:
        return Instances.empty()
    index = index[scores[index] >= settings.min_score * top][: settings.max_instances]
    return Instances(segments[index], classes[index], (scores[index] / top).float())


# --------------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------------


class StudentOutput(NamedTuple):
    """Per pyramid level ``l`` (stride ``2**l``): class ``logits`` (b, t_l, k), ``offsets`` (b, t_l, 2) (the
    distances in snippets from each location's centre to the start and to the end), the level's ``masks``
    (b, t_l); and the fusion's auxiliary loss."""

    logits: list[Tensor]
    offsets: list[Tensor]
    masks: list[Tensor]
    aux_loss: Tensor


def locations(length: int, level: int, *, device: torch.device | str | None = None) -> Tensor:
    """The centres, in snippets, of the ``length`` locations of pyramid level ``level`` (stride ``2**level``:
    location ``i`` covers snippets ``[i s, (i + 1) s)``).

    Example:
        >>> locations(3, 1).tolist()
        [1.0, 3.0, 5.0]
    """
    return (torch.arange(length, device=device, dtype=torch.float32) + 0.5) * 2**level


def level_range(level: int, levels: int) -> tuple[float, float]:
    """The range ``[low, high)`` of an instance's longer side (the larger distance from a location's centre
    to its start or end, in snippets) that level ``level`` of ``levels`` regresses: ``[0, 4)`` at stride 1,
    ``[2 s, 4 s)`` at stride ``s``, the last level unbounded above (ActionFormer's ranges).

    Example:
        >>> [level_range(l, 3) for l in range(3)]
        [(0.0, 4.0), (4.0, 8.0), (8.0, inf)]
    """
    low = 0.0 if level == 0 else 2.0 ** (level + 1)
    high = math.inf if level == levels - 1 else 2.0 ** (level + 2)
    return low, high


class BoundaryStudent(nn.Module):
    """Stage 3: an anchor-free temporal detector over a feature pyramid (ActionFormer / TriDet style, with
    convolutions for the transformer).

    Fused snippet features go through a stem and two residual dilated convolutions at stride 1; each next
    level halves the time axis (max pooling) and adds a residual convolution. A classification head and a
    regression head, shared by every level, read each level; the regression is ``exp`` of a per-level
    scaled output, in units of the level's stride.

    Args:
        fusion: the input fusion.
        num_classes: ``k``.
        hidden: width of the pyramid.
        levels: pyramid levels (strides ``1, 2, ..., 2**(levels - 1)``).
        dropout: dropout in the pyramid (training only).
        prior: the initial class probability (the focal-loss initialisation).

    Shape:
        rgb, flow: (b, t, c); mask: (b, t). Returns a :class:`StudentOutput`.
    """

    def __init__(
        self,
        fusion: FusionEmbed,
        num_classes: int,
        *,
        hidden: int = 128,
        levels: int = 5,
        dropout: float = 0.1,
        prior: float = 0.01,
    ) -> None:
        super().__init__()
        self.fusion, self.num_classes, self.levels = fusion, num_classes, levels
        self.stem = nn.Linear(fusion.dim, hidden)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = residual_blocks(hidden, (1, 2), dropout)
        self.pyramid = residual_blocks(hidden, (1,) * (levels - 1), dropout)
        self.norm = nn.LayerNorm(hidden)
        self.cls_conv = TemporalConv(hidden, hidden, 3)
        self.cls_head = TemporalConv(hidden, num_classes, 3)
        self.reg_conv = TemporalConv(hidden, hidden, 3)
        self.reg_head = TemporalConv(hidden, 2, 3)
        self.scales = nn.Parameter(torch.ones(levels))
        nn.init.constant_(self.cls_head.conv.bias, -math.log((1 - prior) / prior))
        nn.init.constant_(self.reg_head.conv.bias, math.log(2.0))

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> StudentOutput:
        if mask is None:
            mask = torch.ones(rgb.shape[:2], dtype=torch.bool, device=rgb.device)
        fused = self.fusion(rgb, flow, mask)
        x = zero_padding(self.input_dropout(F.relu(self.stem(fused.features))), mask)
        for block in self.blocks:
            x = block(x, mask)
        logits, offsets, masks = [], [], []
        for level in range(self.levels):
            if level:
                x = F.max_pool1d(x.transpose(1, 2), 2, 2, ceil_mode=True).transpose(1, 2)
                mask = mask[:, ::2]
                x = self.pyramid[level - 1](zero_padding(x, mask), mask)
            y = self.norm(x)
            cls = self.cls_head(F.relu(self.cls_conv(y, mask)), mask)
            reg = self.reg_head(F.relu(self.reg_conv(y, mask)), mask)
            distance = torch.exp((self.scales[level] * reg).clamp(max=8.0)) * 2**level
            logits.append(cls)
            offsets.append(zero_padding(distance, mask))
            masks.append(mask)
        return StudentOutput(logits, offsets, masks, fused.aux_loss)


# --------------------------------------------------------------------------------------------------
# targets and losses
# --------------------------------------------------------------------------------------------------


def student_targets(
    instances: Instances, num_snippets: int, num_classes: int, *, levels: int, radius: float
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per pyramid level, the targets of its ``ceil(t / 2**l)`` locations: class targets ``(t_l, k)`` in
    {0, 1}, the assigned segment ``(t_l, 2)`` and its weight ``(t_l,)`` (0 at negative locations).

    A location is a candidate for an instance when its centre lies inside the instance and within
    ``radius`` strides of the instance's middle (centre sampling; an instance shorter than that still has
    the locations inside it), and the larger of its distances to the instance's start and end lies in the
    level's :func:`level_range`; among the candidates it takes the shortest instance.

    Example:
        >>> found = Instances(torch.tensor([[2.0, 5.0]]), torch.tensor([1]), torch.tensor([0.5]))
        >>> cls, seg, weight = student_targets(found, 8, 2, levels=2, radius=1.5)[0]
        >>> cls[:, 1].tolist(), weight.tolist()
        ([0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0])
    """
    targets = []
    segments, classes, weights = instances
    for level in range(levels):
        length = -(-num_snippets // 2**level)
        cls = torch.zeros(length, num_classes)
        assigned = torch.zeros(length, 2)
        weight = torch.zeros(length)
        if segments.shape[0]:
            centre = locations(length, level)[:, None]  # (t_l, 1)
            start, end = segments[None, :, 0], segments[None, :, 1]
            middle, reach = (start + end) / 2, radius * 2**level
            inside = (centre > start) & (centre < end)
            near = (centre >= middle - reach) & (centre <= middle + reach)
            longer = torch.maximum(centre - start, end - centre)
            low, high = level_range(level, levels)
            candidate = inside & near & (longer >= low) & (longer < high)  # (t_l, n)
            span = (end - start).expand(length, -1).masked_fill(~candidate, math.inf)
            best = span.argmin(1)
            positive = candidate.any(1)
            rows = torch.nonzero(positive).flatten()
            cls[rows, classes[best[rows]]] = 1.0
            assigned[rows] = segments[best[rows]]
            weight[rows] = weights[best[rows]]
        targets.append((cls, assigned, weight))
    return targets


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss (Lin et al., 2017): ``-alpha_t (1 - p_t)^gamma log p_t``.

    Example:
        >>> loss = sigmoid_focal_loss(torch.tensor([0.0]), torch.tensor([1.0]), gamma=0.0, alpha=0.5)
        >>> round(loss.item(), 4)  # 0.5 * log 2
        0.3466
    """
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def distance_iou(predicted: Tensor, target: Tensor) -> Tensor:
    """1-D distance-IoU (Zheng et al., 2020): tIoU minus the squared distance of the centres over the
    squared length of the smallest segment that covers both.

    Shape:
        predicted, target: (n, 2). Returns (n,).
    """
    iou = segment_iou(predicted[:, 0], predicted[:, 1], target[:, 0], target[:, 1])
    cover = torch.maximum(predicted[:, 1], target[:, 1]) - torch.minimum(predicted[:, 0], target[:, 0])
    gap = (predicted.sum(1) - target.sum(1)) / 2
    return iou - gap.square() / cover.square().clamp_min(1e-6)


def student_losses(
    out: StudentOutput,
    targets: Sequence[tuple[Tensor, Tensor, Tensor]],
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    regression_weight: float = 1.0,
    mutual_weight: float = 1.0,
    input_mask: Optional[Tensor] = None,
) -> dict[str, Tensor]:
    """Losses of :class:`BoundaryStudent` against padded per-level targets.

    * ``cls``: sigmoid focal loss over every valid location and class, a positive location's terms
      weighted by its pseudo instance's weight, summed and divided by the summed weight of the positives;
    * ``reg``: ``1 -`` distance-IoU of the predicted and the assigned segment over the positive locations,
      weighted likewise;
    * ``mutual``: the fusion's auxiliary loss (``input_mask``: the batch's snippet mask, which it is a mean
      over).

    Shape:
        targets: per level ``(cls (b, t_l, k), segment (b, t_l, 2), weight (b, t_l))``, the segments in
        snippets from the sequence start.
    """
    cls_terms, reg_terms, weights = [], [], []
    for level, (logits, offsets, mask) in enumerate(zip(out.logits, out.offsets, out.masks)):
        cls_target, segment, weight = targets[level]
        positive = (weight > 0) & mask
        location_weight = torch.where(positive, weight, mask.to(weight.dtype))
        focal = sigmoid_focal_loss(logits, cls_target, alpha=focal_alpha, gamma=focal_gamma).sum(-1)
        cls_terms.append((focal * location_weight).sum())
        centre = locations(logits.shape[1], level, device=logits.device)
        predicted = torch.stack([centre - offsets[..., 0], centre + offsets[..., 1]], -1)
        reg = 1 - distance_iou(predicted[positive], segment[positive])
        reg_terms.append((reg * weight[positive]).sum())
        weights.append(weight[positive].sum())
    norm = global_denominator(torch.stack(weights).sum().detach(), at_least=1.0)
    cls = torch.stack(cls_terms).sum() / norm
    reg = torch.stack(reg_terms).sum() / norm
    mutual = out.aux_loss if input_mask is None else global_rescale(out.aux_loss, input_mask.sum())
    total = cls + regression_weight * reg + mutual_weight * mutual
    return {"total": total, "cls": cls, "reg": reg, "mutual": mutual}


# --------------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------------


def student_segments(out: StudentOutput, index: int, num_snippets: int) -> tuple[Tensor, Tensor]:
    """Video ``index`` of a batch output as every valid location's segment ``(m, 2)`` (clipped to the
    video) and class probabilities ``(m, k)``."""
    segments, probs = [], []
    for level, (logits, offsets, mask) in enumerate(zip(out.logits, out.offsets, out.masks)):
        valid = int(mask[index].sum())
        centre = locations(valid, level, device=logits.device)
        d = offsets[index, :valid]
        segments.append(torch.stack([centre - d[:, 0], centre + d[:, 1]], -1).clamp(0, num_snippets))
        probs.append(torch.sigmoid(logits[index, :valid]))
    return torch.cat(segments).float().cpu(), torch.cat(probs).float().cpu()


@torch.no_grad()
def run_student(
    model: BoundaryStudent,
    videos: Sequence[Video],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    desc: str = "student",
    show_progress: bool = True,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Run the student on whole videos: per video every location's segment ``(m, 2)`` and class
    probabilities ``(m, k)`` (:func:`student_segments`)."""
    model.eval()
    found: dict[str, tuple[Tensor, Tensor]] = {}
    for group in progress(_batches(videos, batch_size), desc=desc, enabled=show_progress):
        batch = _collate(group).to(device)
        out = model(batch.rgb, batch.flow, batch.mask)
        for i, video in enumerate(group):
            found[video.name] = student_segments(out, i, video.num_snippets)
    return found


def student_detections(
    segments: Tensor,
    probs: Tensor,
    video_scores: Tensor,
    config: ScoringSettings,
    *,
    pre_nms: int = 1000,
) -> list[tuple[int, float, float, float]]:
    """One video's Stage-3 detections ``(class, score, start, end)`` in snippets: for each class the video
    score selects (:func:`~wstal.detect.select_classes`), the ``pre_nms`` best locations' segments scored
    ``p(class) x video score``, soft-NMS per class (:func:`~wstal.detect.soft_nms_per_class`)."""
    per_class = {}
    long_enough = segments[:, 1] - segments[:, 0] > 1e-3
    for c in select_classes(video_scores, config.class_threshold):
        score = torch.where(long_enough, probs[:, c], torch.zeros(()))
        top = score.argsort(descending=True, stable=True)[:pre_nms]
        top = top[score[top] > 0]
        per_class[c] = (segments[top], score[top] * video_scores[c])
    return soft_nms_per_class(per_class, config)


def refine(
    teacher: Sequence[tuple[int, float, float, float]],
    student: Sequence[tuple[int, float, float, float]],
    segments: Tensor,
    probs: Tensor,
    settings: StudentSettings,
    config: ScoringSettings,
) -> list[tuple[int, float, float, float]]:
    """Stage 3's detections of one video: the two stages' detections ``teacher`` refined by the student.

    For each class of ``teacher``, each detection ``[s, e]``:

    * **boundaries**: the weighted mean of its own segment and of every student location's segment
      (``segments``) that overlaps it by at least ``settings.vote_iou``, each location weighted by its
      probability of the class (``probs``), the detection's own segment by the largest of those
      probabilities in the video (it counts as much as the student's most confident location);
    * **score**: ``teacher^(1 - w) x support^w``, ``w = settings.score_weight``, where the support is the
      largest ``score x tIoU`` over the student's own detections of the class (``student``,
      :func:`student_detections`; :func:`~wstal.detect.support`);

    the best ``config.max_detections`` of them, with no second suppression (:func:`~wstal.detect.best_detections`:
    the two stages' scores are soft-NMS'd already). ``w = 0`` and ``vote_iou = 1`` without an exact match
    give the teacher's detections back.

    Shape:
        segments: (m, 2) every student location's segment; probs: (m, k) its class probabilities.

    Example:
        >>> teacher, student = [(0, 0.8, 0.0, 4.0)], [(0, 0.5, 0.0, 6.0)]
        >>> locations = torch.tensor([[0.0, 6.0], [10.0, 12.0]])
        >>> refine(teacher, student, locations, torch.tensor([[1.0], [0.9]]), StudentSettings(vote_iou=0.5,
        ...        score_weight=0.0), ScoringSettings())
        [(0, 0.800000011920929, 0.0, 5.0)]
    """
    per_class = {}
    for c in sorted({int(r[0]) for r in teacher}):
        found, scores = class_detections(teacher, c)
        w = settings.score_weight
        if w > 0:  # the student's support for the detection as the two stages bounded it
            backing = support(found, *class_detections(student, c))
            scores = scores.clamp_min(1e-8) ** (1 - w) * backing.clamp_min(1e-8) ** w
        if segments.shape[0]:
            p = probs[:, c].float()
            iou = segment_iou(
                found[:, None, 0], found[:, None, 1], segments[None, :, 0], segments[None, :, 1]
            )
            votes = p[None] * (iou >= settings.vote_iou)  # (n, m)
            own = p.max()
            total = (own + votes.sum(1, keepdim=True)).clamp_min(1e-12)
            found = (found * own + votes @ segments.float()) / total
        per_class[c] = (found, scores)
    return best_detections(per_class, config)
