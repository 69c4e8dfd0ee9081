"""Inference of the two-stage detector: base-model scores, Stage-1 proposals, Stage-2 detections.

Every function here runs a trained network in ``eval`` mode under ``torch.no_grad`` on whole videos
(no cropping) and returns per-video results in snippet units; :func:`to_detections` converts to the
seconds-based :class:`~wstal.evaluation.Detection` the evaluator and the JSON writer take.

Detection scores:

* **base**: for each class the video is predicted to contain, segments grouped on the class score
  sequence ``attention * p(class)``, scored by outer-inner contrast times the video-level class score;
* **Stage 1 alone**: each T-RPN proposal x the base model's mean ``p(class)`` inside it x its video
  score (the proposals classified without Stage 2);
* **Stage 2**: each candidate's objectness x its class score x the video score, where class and video
  scores are Stage 2's, fused with the base model's (weighted geometric mean, ``base_weight``); the
  candidates are the Stage-1 proposals and the base's detected segments, each with the T-RPN's support
  as its objectness (:func:`stage2_candidates`, :func:`rpn_support`);

all followed by per-class soft-NMS.

Axis legend: t snippets, k classes (``k + 1`` with background), n proposals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .batching import collate
from .config import GroupingSettings, ProposalSettings, PseudoLabelSettings, ScoringSettings
from .console import progress
from .data import Video
from .evaluation import Detection
from .model import MILBaseModel, ProposalClassifier, TemporalRPN, proposal_video_logits, snippet_video_logits
from .proposals import nms_1d, outer_inner_contrast, segment_iou, soft_nms_1d, whole_snippets
from .pseudo_labels import Segments, segments_from_scores

__all__ = [
    "BaseResult",
    "base_contrast",
    "base_detections",
    "base_segments",
    "best_detections",
    "blended_video_scores",
    "class_detections",
    "class_segments",
    "class_sequence",
    "classify_proposals",
    "detections_from_proposals",
    "grouped_segments",
    "merge_proposals",
    "proposal_sets",
    "proposals_from_snippets",
    "rpn_snippets",
    "rpn_support",
    "run_base",
    "segments_of_classes",
    "select_classes",
    "soft_nms_per_class",
    "stage1_detections",
    "stage1_proposals",
    "stage2_candidates",
    "support",
    "to_detections",
    "vote_boundaries",
]


class BaseResult(NamedTuple):
    """Base model outputs for one video: ``p`` (t, k + 1) softmax of the CAS, ``attention`` and
    ``boundary`` (t,), ``video_scores`` (k,)."""

    p: Tensor
    attention: Tensor
    boundary: Tensor
    video_scores: Tensor


def _batches(videos: Sequence[Video], batch_size: int) -> list[list[Video]]:
    # longest first, so each padded batch wastes little
    order = sorted(range(len(videos)), key=lambda i: -videos[i].num_snippets)
    return [[videos[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]


def _collate(videos: Sequence[Video]):
    return collate(
        [v.name for v in videos], [v.rgb for v in videos], [v.flow for v in videos], [v.label for v in videos]
    )


@torch.no_grad()
def run_base(
    model: MILBaseModel,
    videos: Sequence[Video],
    *,
    topk_ratio: float = 8.0,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    desc: str = "base inference",
    show_progress: bool = True,
) -> dict[str, BaseResult]:
    """Run the base model on whole videos; video scores are the softmax over the ``k`` action classes of
    their top-k mean logits (the classification MIL term)."""
    model.eval()
    results: dict[str, BaseResult] = {}
    for group in progress(_batches(videos, batch_size), desc=desc, enabled=show_progress):
        batch = _collate(group).to(device)
        out = model(batch.rgb, batch.flow, batch.mask)
        video_scores = F.softmax(snippet_video_logits(out.cas, batch.mask, topk_ratio), -1)
        p = F.softmax(out.cas, -1)
        for i, video in enumerate(group):
            t = video.num_snippets
            results[video.name] = BaseResult(
                p[i, :t].cpu(), out.attention[i, :t].cpu(), out.boundary[i, :t].cpu(), video_scores[i].cpu()
            )
    return results


def select_classes(video_scores: Tensor, threshold: float) -> list[int]:
    """Classes whose video score reaches ``threshold``, best first; at least the best class."""
    order = video_scores.argsort(descending=True).tolist()
    return [c for c in order if video_scores[c] >= threshold] or order[:1]


def soft_nms_per_class(
    per_class: dict[int, tuple[Tensor, Tensor]], config: ScoringSettings
) -> list[tuple[int, float, float, float]]:
    """Detections ``(class, score, start, end)`` from each class's ``(segments, scores)``: soft-NMS per
    class (``config.soft_nms_sigma``), then the best ``config.max_detections`` over all classes, best first."""
    suppressed = {}
    for c, (segments, scores) in per_class.items():
        if segments.shape[0] == 0:
            continue
        keep, decayed = soft_nms_1d(
            segments, scores, sigma=config.soft_nms_sigma, max_keep=config.max_detections
        )
        suppressed[c] = (segments[keep], decayed)
    return best_detections(suppressed, config)


def class_detections(rows: Sequence[tuple[int, float, float, float]], c: int) -> tuple[Tensor, Tensor]:
    """The detections ``(class, score, start, end)`` of class ``c`` among ``rows`` as ``(segments (n, 2),
    scores (n,))`` float32 tensors, in their order (``n`` may be 0): the per-class form
    :func:`best_detections` takes.

    Example:
        >>> class_detections([(0, 0.9, 1.0, 2.0), (1, 0.5, 4.0, 5.0), (0, 0.2, 0.0, 2.0)], 0)
        (tensor([[1., 2.],
                [0., 2.]]), tensor([0.9000, 0.2000]))
    """
    mine = [r for r in rows if int(r[0]) == c]
    segments = torch.tensor([[r[2], r[3]] for r in mine], dtype=torch.float32).reshape(-1, 2)
    return segments, torch.tensor([r[1] for r in mine], dtype=torch.float32)


def best_detections(
    per_class: dict[int, tuple[Tensor, Tensor]], config: ScoringSettings
) -> list[tuple[int, float, float, float]]:
    """Detections ``(class, score, start, end)`` from each class's ``(segments, scores)`` as they are (no
    suppression): the best ``config.max_detections`` over all classes, best first.

    Example:
        >>> per_class = {0: (torch.tensor([[0.0, 2.0], [1.0, 2.0]]), torch.tensor([0.2, 0.9])),
        ...              1: (torch.tensor([[4.0, 5.0]]), torch.tensor([0.5]))}
        >>> best_detections(per_class, ScoringSettings(max_detections=2))
        [(0, 0.8999999761581421, 1.0, 2.0), (1, 0.5, 4.0, 5.0)]
    """
    rows = [
        (c, float(s), float(a), float(b))
        for c, (segments, scores) in per_class.items()
        for (a, b), s in zip(segments.tolist(), scores.tolist())
    ]
    rows.sort(key=lambda r: -r[1])
    return rows[: config.max_detections]


def class_sequence(result: BaseResult, c: int) -> Tensor:
    """The base model's evidence for class ``c`` per snippet: attention x p(c), p(c) scaled to peak at 1."""
    return result.attention * result.p[:, c] / result.p[:, c].max().clamp_min(1e-6)


def base_detections(result: BaseResult, config: ScoringSettings) -> list[tuple[int, float, float, float]]:
    """Detections of the base model alone, ``(class, score, start, end)`` in snippets."""
    per_class = {}
    for c in select_classes(result.video_scores, config.class_threshold):
        found = segments_from_scores(class_sequence(result, c), config.grouping)
        per_class[c] = (found.segments, found.scores.clamp_min(0) * result.video_scores[c])
    return soft_nms_per_class(per_class, config)


def base_contrast(result: BaseResult, c: int, segments: Tensor, outer_ratio: float) -> Tensor:
    """The base model's score for class ``c`` on given segments: the outer-inner contrast of its class
    sequence with margin ``outer_ratio`` (the score :func:`base_detections` gives its own segments),
    clipped at 0.

    Shape:
        segments: (n, 2) in snippets. Returns (n,).
    """
    whole = whole_snippets(segments, result.p.shape[0])
    return outer_inner_contrast(class_sequence(result, c).float(), whole, outer_ratio=outer_ratio).clamp_min(
        0
    )


@torch.no_grad()
def rpn_snippets(
    model: TemporalRPN,
    videos: Sequence[Video],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    desc: str = "proposals",
    show_progress: bool = True,
) -> dict[str, Segments]:
    """The T-RPN's raw output per video: at every snippet the segment it regresses (clipped to the video)
    and its objectness, unfiltered and in snippet order."""
    model.eval()
    found: dict[str, Segments] = {}
    for group in progress(_batches(videos, batch_size), desc=desc, enabled=show_progress):
        batch = _collate(group).to(device)
        out = model(batch.rgb, batch.flow, batch.mask)
        objectness = torch.sigmoid(out.objectness)
        for i, video in enumerate(group):
            t = video.num_snippets
            centres = torch.arange(t, dtype=torch.float32) + 0.5
            offsets = out.offsets[i, :t].float().cpu()
            segments = torch.stack([centres - offsets[:, 0], centres + offsets[:, 1]], -1).clamp(0, t)
            found[video.name] = Segments(segments, objectness[i, :t].float().cpu())
    return found


def proposals_from_snippets(snippets: Segments, config: ProposalSettings) -> Segments:
    """One video's class-agnostic T-RPN proposals from its :func:`rpn_snippets`: objectness filter, NMS,
    the best ``config.max_proposals``, boundary voting."""
    segments, scores = snippets
    keep = (scores >= config.min_objectness) & (segments[:, 1] - segments[:, 0] >= 0.5)
    if not keep.any():
        keep = scores == scores.max()
    segments, scores = segments[keep], scores[keep]
    keep_idx = nms_1d(segments, scores, config.nms_iou)
    keep_idx = keep_idx[scores[keep_idx].argsort(descending=True, stable=True)][: config.max_proposals]
    kept = segments[keep_idx]
    if config.vote_iou < 1:
        kept = vote_boundaries(kept, segments, scores, config.vote_iou)
    return Segments(kept, scores[keep_idx])


def vote_boundaries(kept: Tensor, candidates: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Boundary voting: each kept segment becomes the score-weighted mean of the candidates that overlap it
    by at least ``iou_threshold`` (itself included). Every snippet inside an action regresses the action's
    boundaries; averaging the votes of its neighbours cancels much of the per-snippet noise.

    Shape:
        kept: (n, 2); candidates: (m, 2); scores: (m,). Returns (n, 2).

    Example:
        >>> cands = torch.tensor([[0.0, 10.0], [2.0, 10.0], [30.0, 40.0]])
        >>> vote_boundaries(cands[:1], cands, torch.tensor([1.0, 1.0, 1.0]), 0.5).tolist()
        [[1.0, 10.0]]
    """
    if kept.shape[0] == 0:
        return kept
    iou = segment_iou(kept[:, None, 0], kept[:, None, 1], candidates[None, :, 0], candidates[None, :, 1])
    weight = (iou >= iou_threshold).to(scores.dtype) * scores[None]
    voted = weight @ candidates / weight.sum(1, keepdim=True).clamp_min(1e-12)
    return torch.where(weight.sum(1, keepdim=True) > 0, voted, kept)


def merge_proposals(
    proposals: Segments,
    extra: Segments,
    iou_threshold: float,
    *,
    extra_wins: bool = False,
    min_score: float = 0.0,
) -> Segments:
    """The union of two scored segment sets, NMS at ``iou_threshold`` over both, best first.

    The Stage-1 proposals merged with the base model's grouped segments (``extra``). Scores stay in
    [0, 1] (objectness and contrast, the latter clipped) and rank the result.

    Args:
        proposals: the T-RPN's proposals.
        extra: the base model's grouped segments.
        iou_threshold: NMS tIoU over the union.
        extra_wins: the NMS visits every segment of ``extra`` before any proposal, so where the two
            overlap the base's segment is kept and the proposals add only the instances it lacks (False:
            the NMS visits both by score, so the higher score's boundaries win).
        min_score: proposals scoring below this are left out (``extra`` is kept whole).

    Example:
        >>> a = Segments(torch.tensor([[0.0, 10.0], [40.0, 50.0]]), torch.tensor([0.9, 0.3]))
        >>> b = Segments(torch.tensor([[1.0, 10.0], [20.0, 22.0]]), torch.tensor([0.5, 1.4]))
        >>> merge_proposals(a, b, 0.6)
        Segments(segments=tensor([[20., 22.],
                [ 0., 10.],
                [40., 50.]]), scores=tensor([1.0000, 0.9000, 0.3000]))
        >>> merge_proposals(a, b, 0.6, extra_wins=True, min_score=0.5)
        Segments(segments=tensor([[20., 22.],
                [ 1., 10.]]), scores=tensor([1.0000, 0.5000]))
    """
    keep = proposals.scores >= min_score
    segments = torch.cat([extra.segments.to(proposals.segments.dtype), proposals.segments[keep]])
    scores = torch.cat([extra.scores.to(proposals.scores.dtype), proposals.scores[keep]]).clamp(0, 1)
    if segments.shape[0] == 0:
        return Segments(segments, scores)
    # NMS priority: the scores, or (extra_wins) every extra segment first, each set by its scores
    priority = scores + 2 * (torch.arange(len(scores)) < extra.segments.shape[0]) if extra_wins else scores
    kept = nms_1d(segments, priority, iou_threshold)
    kept = kept[scores[kept].argsort(descending=True, stable=True)]
    return Segments(segments[kept], scores[kept])


def stage1_proposals(
    proposals: Segments, grouped: Segments, config: ProposalSettings, base: Optional[BaseResult] = None
) -> Segments:
    """One video's Stage-1 proposals under ``config``: the T-RPN's ``proposals`` merged with the base
    model's ``grouped`` segments (:func:`merge_proposals` with ``merge_iou``, ``merge_base_wins`` and
    ``merge_min_objectness``), or the T-RPN's alone when ``merge_base_segments`` is off; with
    ``class_segments``, plus the base's class segments (:func:`class_segments`, which needs ``base``)
    that repeat none of them."""
    found = proposals
    if config.merge_base_segments:
        found = merge_proposals(
            proposals,
            grouped,
            config.merge_iou,
            extra_wins=config.merge_base_wins,
            min_score=config.merge_min_objectness,
        )
    if config.class_segments:
        if base is None:
            raise ValueError("class_segments needs the base model's result of the video (base=...)")
        found = merge_proposals(
            class_segments(base, config), found, config.class_segments_iou, extra_wins=True
        )
    return found


def grouped_segments(results: Mapping[str, BaseResult], pseudo: PseudoLabelSettings) -> dict[str, Segments]:
    """Per video, the class-agnostic segments the pseudo-label rule groups on the base model's attention
    (``pseudo.source``): the pseudo labels on the training videos, and on every video the base's
    segments merged into the Stage-1 proposals."""
    return {
        name: segments_from_scores(getattr(r, pseudo.source), pseudo.grouping) for name, r in results.items()
    }


def proposal_sets(
    snippets: Mapping[str, Segments],
    grouped: Mapping[str, Segments],
    results: Mapping[str, BaseResult],
    config: ProposalSettings,
) -> tuple[dict[str, Segments], dict[str, Segments]]:
    """Per video, the T-RPN's own proposals (:func:`proposals_from_snippets`) and the Stage-1 proposals
    (:func:`stage1_proposals` with the base's ``grouped`` segments and ``results``); when neither the merge
    nor the class segments are on, the second is the first, the same object."""
    own = {name: proposals_from_snippets(raw, config) for name, raw in snippets.items()}
    if not (config.merge_base_segments or config.class_segments):
        return own, own
    return own, {name: stage1_proposals(p, grouped[name], config, results[name]) for name, p in own.items()}


def class_segments(result: BaseResult, config: ProposalSettings) -> Segments:
    """The segments the base model groups on each class sequence (:func:`class_sequence`) of the classes
    whose video score reaches ``config.class_threshold``, by ``config.class_grouping``; classes ignored,
    best first (contrast scores)."""
    classes = select_classes(result.video_scores, config.class_threshold)
    return segments_of_classes(result, classes, config.class_grouping)


def segments_of_classes(result: BaseResult, classes: Sequence[int], grouping: GroupingSettings) -> Segments:
    """The segments ``grouping`` makes of the class sequences (:func:`class_sequence`) of ``classes``,
    classes ignored, best first (contrast scores)."""
    found = [segments_from_scores(class_sequence(result, int(c)), grouping) for c in classes]
    segments = torch.cat([f.segments for f in found]).reshape(-1, 2)
    scores = torch.cat([f.scores for f in found])
    order = scores.argsort(descending=True, stable=True)
    return Segments(segments[order], scores[order])


def support(segments: Tensor, reference: Tensor, scores: Tensor) -> Tensor:
    """The support of scored ``reference`` segments for each of ``segments``: the largest ``score x tIoU``
    over them (0 without any). The T-RPN's support (:func:`rpn_support`) and the Stage-3 student's
    (:func:`wstal.student.refine`) are this.

    Shape:
        segments: (n, 2); reference: (m, 2); scores: (m,). Returns (n,).

    Example:
        >>> support(torch.tensor([[0.0, 4.0]]), torch.tensor([[0.0, 2.0], [0.0, 4.0]]), torch.tensor([1.0, 0.6]))
        tensor([0.6000])
    """
    if segments.shape[0] == 0 or reference.shape[0] == 0:
        return torch.zeros(segments.shape[0])
    a, b = segments.float().T, reference.T
    iou = segment_iou(a[0, :, None], a[1, :, None], b[0], b[1])
    return (iou * scores[None]).amax(1)


def rpn_support(segments: Tensor, snippets: Segments) -> Tensor:
    """The T-RPN's support for arbitrary segments: for each, the largest ``objectness x tIoU`` between it
    and the segments the T-RPN regresses at the video's snippets (:func:`rpn_snippets`; :func:`support`).
    One objectness for every candidate, whatever made it: high only where the T-RPN both fires and agrees
    on the boundaries.

    Shape:
        segments: (n, 2) in snippets. Returns (n,).

    Example:
        >>> snippets = Segments(torch.tensor([[0.0, 4.0], [0.0, 4.0], [10.0, 12.0]]), torch.tensor([0.9, 0.8, 0.2]))
        >>> rpn_support(torch.tensor([[0.0, 4.0], [2.0, 4.0], [10.0, 12.0], [20.0, 30.0]]), snippets)
        tensor([0.9000, 0.4500, 0.2000, 0.0000])
    """
    return support(segments, snippets.segments, snippets.scores)


def base_segments(
    result: BaseResult, rows: Sequence[tuple[int, float, float, float]], outer_ratio: float
) -> Segments:
    """The segments of the base model's detections ``rows`` (:func:`base_detections`), classes ignored, each
    scored by the base's contrast for its class (:func:`base_contrast`); a segment detected for several
    classes once, with its best score; best first.

    Example:
        >>> r = BaseResult(torch.full((8, 2), 0.5), torch.tensor([0, 0, 1, 1, 1, 1, 0, 0.0]), torch.zeros(8), torch.ones(2))
        >>> base_segments(r, [(0, 0.9, 2.0, 6.0), (1, 0.8, 2.0, 6.0), (0, 0.1, 0.0, 8.0)], 0.25)
        Segments(segments=tensor([[2., 6.],
                [0., 8.]]), scores=tensor([1.0000, 0.5000]))
    """
    if not rows:
        return Segments(torch.zeros(0, 2), torch.zeros(0))
    segments = torch.tensor([[a, b] for _, _, a, b in rows], dtype=torch.float32)
    classes = torch.tensor([c for c, *_ in rows])
    scores = torch.zeros(len(rows))
    for c in classes.unique().tolist():
        at = classes == c
        scores[at] = base_contrast(result, c, segments[at], outer_ratio)
    return _unique(segments, scores)


def _unique(segments: Tensor, scores: Tensor) -> Segments:
    """Each distinct segment once, with its best score; best first."""
    distinct, inverse = torch.unique(segments, dim=0, return_inverse=True)
    best = torch.full((distinct.shape[0],), -torch.inf).scatter_reduce(0, inverse, scores, "amax")
    order = best.argsort(descending=True, stable=True)
    return Segments(distinct[order], best[order])


def stage2_candidates(
    stage1: Segments,
    base: BaseResult,
    detected: Sequence[tuple[int, float, float, float]],
    snippets: Segments,
    config: ScoringSettings,
) -> Segments:
    """One video's candidates for Stage 2 at inference (``config.candidates``, ``config.objectness``): the
    Stage-1 proposals and/or the segments of the base model's detections ``detected``
    (:func:`base_detections` under ``config``; :func:`base_segments`), each distinct segment once, scored
    by the T-RPN's support (:func:`rpn_support`, from the video's ``snippets``) or by its own score; best
    first."""
    sets = []
    if config.candidates != "base":
        sets.append(stage1)
    if config.candidates != "stage1":
        sets.append(base_segments(base, detected, config.grouping.outer_ratio))
    segments = torch.cat([s.segments.float() for s in sets]).reshape(-1, 2)
    scores = torch.cat([s.scores.float().clamp(0, 1) for s in sets])
    if config.objectness == "rpn":
        scores = rpn_support(segments, snippets)
    if segments.shape[0] == 0:
        return Segments(segments, scores)
    return _unique(segments, scores)


def stage1_detections(
    proposals: Segments, result: BaseResult, config: ScoringSettings
) -> list[tuple[int, float, float, float]]:
    """Stage-1 proposals classified by the base model (no Stage 2): objectness x mean p(class) inside x
    video score."""
    t = result.p.shape[0]
    per_class = {}
    for c in select_classes(result.video_scores, config.class_threshold):
        cumulative = torch.cat([torch.zeros(1), result.p[:, c].cumsum(0)])
        lo = proposals.segments[:, 0].floor().long().clamp(0, t - 1)
        hi = torch.maximum(proposals.segments[:, 1].ceil().long(), lo + 1).clamp(max=t)
        inside = (cumulative[hi] - cumulative[lo]) / (hi - lo).float()
        per_class[c] = (proposals.segments, proposals.scores * inside * result.video_scores[c])
    return soft_nms_per_class(per_class, config)


@torch.no_grad()
def classify_proposals(
    model: ProposalClassifier,
    videos: Sequence[Video],
    proposals: dict[str, Segments],
    *,
    topk_ratio: float = 4.0,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    desc: str = "classify",
    show_progress: bool = True,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Stage-2 class probabilities ``(n, k)`` (softmax over ``k + 1``, background dropped) per proposal,
    and video scores ``(k,)`` (softmax over the ``k`` classes of their top-k mean proposal logits)."""
    model.eval()
    found: dict[str, tuple[Tensor, Tensor]] = {}
    for group in progress(_batches(videos, batch_size), desc=desc, enabled=show_progress):
        batch = _collate(group).to(device)
        props = [proposals[v.name].segments.to(device) for v in group]
        logits, _ = model(batch.rgb, batch.flow, batch.mask, props)
        for video, lg in zip(group, logits):
            video_logits = proposal_video_logits(lg, topk_ratio)
            found[video.name] = (F.softmax(lg, -1)[:, :-1].cpu(), F.softmax(video_logits, -1).cpu())
    return found


def blended_video_scores(video_scores: Tensor, base: BaseResult, weight: float) -> Tensor:
    """Stage 2's video scores blended with the base model's: the weighted geometric mean
    ``v2(c)^(1 - w) v_base(c)^w``, renormalised over the classes (the two-stage detector's video scores).

    Example:
        >>> base = BaseResult(None, None, None, torch.tensor([0.25, 1.0]))
        >>> blended_video_scores(torch.tensor([1.0, 0.25]), base, 0.5).tolist()  # both sqrt(1/4)
        [0.5, 0.5]
    """
    scores = video_scores.clamp_min(1e-8) ** (1 - weight) * base.video_scores.clamp_min(1e-8) ** weight
    return scores / scores.sum()


def detections_from_proposals(
    proposals: Segments,
    class_probs: Tensor,
    video_scores: Tensor,
    config: ScoringSettings,
    base: Optional[BaseResult] = None,
) -> list[tuple[int, float, float, float]]:
    """Stage-2 detections: objectness x class score x video score, soft-NMS per class.

    Without ``base`` (or with ``config.base_weight = 0``) the class and video scores are Stage 2's own.
    With it, each is a weighted geometric mean with the base model's evidence, ``w = config.base_weight``:
    class score ``p2(c)^(1 - w) * contrast_base(c)^w`` (the base's outer-inner contrast of class ``c``
    over the proposal, :func:`base_contrast`) and video score ``v2(c)^(1 - w) * v_base(c)^w``,
    renormalised over the classes. Stage 2 then refines the base's evidence instead of replacing it.
    """
    w = config.base_weight if base is not None else 0.0
    if w > 0:
        video_scores = blended_video_scores(video_scores, base, w)
    per_class = {}
    for c in select_classes(video_scores, config.class_threshold):
        score = class_probs[:, c]
        if w > 0:
            evidence = base_contrast(base, c, proposals.segments, config.grouping.outer_ratio)
            score = score.clamp_min(1e-8) ** (1 - w) * evidence.clamp_min(1e-8) ** w
        per_class[c] = (proposals.segments, proposals.scores * score * video_scores[c])
    return soft_nms_per_class(per_class, config)


def to_detections(
    rows: Sequence[tuple[int, float, float, float]], snippet_seconds: float, start_seconds: float = 0.0
) -> list[Detection]:
    """``(class, score, start, end)`` in snippets to :class:`Detection` in seconds: snippet position ``p`` is
    at ``start_seconds + p * snippet_seconds`` (a video's clock, :func:`~.data.snippet_clock`)."""
    return [
        Detection(int(c), float(s), start_seconds + a * snippet_seconds, start_seconds + b * snippet_seconds)
        for c, s, a, b in rows
    ]
