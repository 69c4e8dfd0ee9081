"""A fourth synthetic WSTAL family: the action-context family plus the structure of broadcast sports video.

THUMOS14's videos are broadcast footage: an attempt is often followed a few seconds later by its replay,
in slow motion and framed by the broadcaster's replay graphics, and score bugs, lower thirds and channel
logos sit on the picture for long stretches, appearing and disappearing at shot cuts. Most replays are not
annotated. The families before this one have none of it; this one takes the features of
:mod:`wstal.synthetic_context` (for the same arguments, the same arrays) and lays broadcast structure on
them:

- **Replays.** After an annotated instance, with probability ``min(1, 0.35 * difficulty)``, its replay
  starts 1-4 snippets after the instance ends (sliding up to 10 snippets later to find room): a shot of
  its own holding the instance's RGB and Flow resampled 1.5-2x slower by linear interpolation over time
  (at most 24 snippets: a longer instance is replayed from its middle), with a fresh re-encoding noise,
  half the Flow (slow motion halves the motion) and a shared *replay graphics* code in RGB on a wipe of
  1-2 snippets at each edge. Replays are not in the ground truth and never cover an annotated instance or
  an Ambiguous region: one that finds no free gap is skipped (see :func:`_place_replays`).
- **Broadcast overlay.** One of three overlay codes per video (score bug, lower third, logo) is in RGB,
  action or not, switching on or off at a shot cut with probability 0.35 (so it spans several shots) and
  off during replays; strength ``1.5 * difficulty``. RGB thus changes abruptly at cuts that are not action
  boundaries.
- **Dense long videos** are not synthesised: they come from the real annotations, with ``max_seconds``.

``difficulty`` (``>= 0``) is passed to the context model and scales the replay chance and the overlay
strength; at 0 the data equal :func:`wstal.synthetic_context.make_synthetic_context`'s at 0.

Ground truth, selection and the ambiguous regions are exactly those of the context (and ground-truth)
family. Determinism: the broadcast codes come from ``seed``; each video's broadcast structure from a
child seed keyed by ``seed``, the video's name and this family's tag, so a video is the same whichever
other videos are selected. See docs/synthetic_broadcast.md.

Axis legend: t snippets (time), c channels, n instances, m replays, s shots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import numpy as np

from .data import SNIPPET_SECONDS, Video, WSTALDataset
from .synthetic import SYNTHETIC_DIM
from .synthetic_context import _noise, _sparse_codes, _video_model, _video_rng
from .synthetic_gt import _check_arguments, _dataset, _read_folder
from .thumos import GroundTruth

__all__ = ["make_synthetic_broadcast"]

PathLike = Union[str, Path]

_REPLAY_CHANCE = 0.35  # chance of a replay per annotated instance at difficulty 1, x difficulty (at most 1)
_SLOW_MOTION = (1.5, 2.0)  # replay length / source length (uniform)
_REPLAY_DELAY = (1, 4)  # snippets from the instance's end to its replay's earliest start (uniform)
_REPLAY_SLACK = 10  # snippets a replay may slide later to find a free gap
_REPLAY_MAX = 24  # snippets of slow motion at most (about 15 s)
_WIPE = (1, 2)  # snippets of replay graphics at each edge of a replay (uniform)
_REPLAY_GRAPHICS = 3.0  # RGB: the replay-graphics code on the wipes
_REPLAY_NOISE = 0.5  # RGB: fresh noise of the re-encoded replay, per-channel standard deviation
_REPLAY_MOTION = 0.5  # Flow: the source's motion scaled by this (noise topped up to about unit variance)
_OVERLAY_LOOK = 1.5  # RGB: overlay strength at difficulty 1, x difficulty
_OVERLAY_CODES = 3  # score bug, lower third, channel logo
_OVERLAY_SWITCH = 0.35  # chance that the overlay switches on or off at a shot cut
_FAMILY_TAG = 4  # keeps this family's random streams apart from the other families'


class _Broadcast(NamedTuple):
    """The broadcast structure of one video, in snippets."""

    replays: np.ndarray  # (m, 5) int: start, stop (wipes included), wipe, source start, source stop
    shot: np.ndarray  # (t,) the context family's shots, each replay cut out as a shot of its own
    overlay: np.ndarray  # (t,) overlay strength in RGB (0: off)


def _covered(spans: np.ndarray, t: int) -> np.ndarray:
    """Snippets ``[i, i + 1)`` that any span ``[start, end)`` (snippets, ``(n, 2)``) touches; each at least one.

    Example:
        >>> _covered(np.array([[1.5, 3.0], [6.0, 6.0]]), 8).astype(int).tolist()
        [0, 1, 1, 0, 0, 0, 1, 0]
    """
    covered = np.zeros(t, dtype=bool)
    for start, end in spans:
        first = int(np.floor(start))
        covered[max(0, first) : max(first + 1, int(np.ceil(end)))] = True
    return covered


def _place_replays(occupied: np.ndarray, requests: np.ndarray) -> np.ndarray:
    """The first snippet of each requested replay: the earliest start in its window from which the whole
    replay lies on free snippets inside the video, taken in request order (a placed replay occupies its
    snippets, so replays never overlap); -1 where none fits.

    Args:
        occupied: snippets no replay may cover (annotated instances, ambiguous regions).
        requests: rows ``(earliest, latest, length)``: the window of the replay's first snippet and its
            length, in snippets.

    Shape:
        occupied: (t,) bool; requests: (m, 3) int; returns (m,) int.

    Example:
        >>> occupied = np.array([0, 1, 1, 0, 0, 0, 1, 0, 0, 0], dtype=bool)
        >>> _place_replays(occupied, np.array([[3, 5, 3], [3, 7, 2], [0, 9, 1], [8, 9, 3]])).tolist()
        [3, 7, 0, -1]
    """
    taken = np.array(occupied, dtype=bool)
    t = len(taken)
    starts = np.full(len(requests), -1, dtype=np.int64)
    for i, (earliest, latest, length) in enumerate(requests):
        free = np.concatenate([[0], np.cumsum(~taken)])  # free snippets before each position
        candidates = np.arange(max(0, earliest), min(latest, t - length) + 1)
        fits = candidates[free[candidates + length] - free[candidates] == length]
        if len(fits):
            starts[i] = fits[0]
            taken[fits[0] : fits[0] + length] = True
    return starts


def _slow_motion(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` resampled to ``length`` snippets by linear interpolation over time, first and last kept.

    Shape:
        x: (t, c); returns (length, c).

    Example:
        >>> _slow_motion(np.array([[0.0], [2.0], [4.0]]), 5)[:, 0].tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0]
    """
    position = np.linspace(0, len(x) - 1, length)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, len(x) - 1)
    weight = (position - lower)[:, None]
    return (1 - weight) * x[lower] + weight * x[upper]


def _replays(
    rng: np.random.Generator, spans: np.ndarray, occupied: np.ndarray, difficulty: float
) -> np.ndarray:
    """Replays of the instances ``spans`` (snippets, ``(n, 2)``, in order of start) that find a free gap,
    as ``_Broadcast.replays`` rows."""
    n, t = len(spans), len(occupied)
    wanted = rng.random(n) < min(1.0, _REPLAY_CHANCE * difficulty)
    factor = rng.uniform(*_SLOW_MOTION, n)
    delay = rng.integers(_REPLAY_DELAY[0], _REPLAY_DELAY[1] + 1, n)
    wipe = rng.integers(_WIPE[0], _WIPE[1] + 1, n)
    first = np.maximum(0, np.floor(spans[:, 0])).astype(np.int64)
    last = np.maximum(first + 1, np.ceil(np.minimum(spans[:, 1], t)).astype(np.int64))  # the instance's stop
    # a long instance is replayed from its middle, at most _REPLAY_MAX snippets of slow motion
    source = np.minimum(last - first, np.floor(_REPLAY_MAX / factor).astype(np.int64))
    source_start = first + (last - first - source) // 2
    length = np.round(factor * source).astype(np.int64) + 2 * wipe
    earliest = last + delay
    requests = np.stack([earliest, earliest + _REPLAY_SLACK, length], axis=1)[wanted]
    start = _place_replays(occupied, requests)
    placed = start >= 0
    rows = np.stack([start, start + length[wanted], wipe[wanted], source_start[wanted]], axis=1)[placed]
    return np.concatenate([rows, (rows[:, 3] + source[wanted][placed])[:, None]], axis=1)


def _broadcast_model(
    seed: int, classes: tuple[str, ...], dim: int, difficulty: float
) -> Callable[[GroundTruth, np.ndarray], tuple[Video, _Broadcast]]:
    """The per-video generator of this family: a video's ground truth and its ambiguous regions (seconds,
    ``(n, 2)``) to the video and its broadcast structure."""
    context = _video_model(seed, classes, dim, difficulty)
    codes = np.random.default_rng([seed, 0, _FAMILY_TAG])
    overlay_codes, graphics = _sparse_codes(codes, _OVERLAY_CODES, dim), _sparse_codes(codes, 1, dim)[0]

    def draw(truth: GroundTruth, regions: np.ndarray) -> tuple[Video, _Broadcast]:
        drawn = context(truth, regions)
        t = len(drawn.rgb)
        rng = _video_rng(seed, truth.name, _FAMILY_TAG)
        spans = truth.segments / SNIPPET_SECONDS
        spans = spans[spans[:, 0] < t]  # as in the context family: evidence only for these
        occupied = _covered(np.concatenate([spans, regions / SNIPPET_SECONDS]), t)
        replays = _replays(rng, spans[np.argsort(spans[:, 0], kind="stable")], occupied, difficulty)

        # each replay a shot of its own; the overlay on or off per shot, off in replays
        cut = np.zeros(t, dtype=bool)
        cut[1:] = drawn.shot[1:] != drawn.shot[:-1]
        in_replay = np.zeros(t, dtype=bool)
        for start, stop, *_ in replays:
            cut[start] = True
            cut[stop : stop + 1] = True  # no cut past the video's end
            in_replay[start:stop] = True
        shot = np.cumsum(cut)
        switches = rng.random(int(shot[-1]) + 1) < _OVERLAY_SWITCH
        on = (rng.random() < 0.5) ^ (np.cumsum(switches) % 2 == 1)
        overlay = _OVERLAY_LOOK * difficulty * on[shot] * ~in_replay

        rgb, flow = drawn.rgb.astype(np.float64), drawn.flow.astype(np.float64)
        for start, stop, wipe, source_start, source_stop in replays:
            length = stop - start - 2 * wipe
            inside = slice(start + wipe, stop - wipe)
            rgb[inside] = _slow_motion(drawn.rgb[source_start:source_stop], length)
            rgb[inside] += _REPLAY_NOISE * _noise(rng, length, dim)
            flow[inside] = _REPLAY_MOTION * _slow_motion(drawn.flow[source_start:source_stop], length)
            flow[inside] += np.sqrt(1 - _REPLAY_MOTION**2) * _noise(rng, length, dim)
            rgb[start : start + wipe] += _REPLAY_GRAPHICS * graphics
            rgb[stop - wipe : stop] += _REPLAY_GRAPHICS * graphics
        rgb += np.outer(overlay, overlay_codes[rng.integers(_OVERLAY_CODES)])
        video = Video(
            truth.name,
            rgb.astype(np.float32),
            flow.astype(np.float32),
            truth.label,
            truth.segments,
            truth.segment_classes,
            truth.duration,
        )
        return video, _Broadcast(replays, shot, overlay)

    return draw


def make_synthetic_broadcast(
    annotation_dir: PathLike,
    *,
    seed: int = 0,
    dim: int = SYNTHETIC_DIM,
    difficulty: float = 1.0,
    max_videos_per_split: Optional[int] = None,
    max_seconds: Optional[float] = None,
) -> WSTALDataset:
    """Synthesise the action-context family's features around an annotation folder's ground truth, with
    unannotated slow-motion replays and broadcast overlays laid on them.

    See the module docstring (and docs/synthetic_broadcast.md) for the model. The folder, the selection
    (``max_seconds``, then ``max_videos_per_split`` evenly spaced in name order), the ground truth and the
    ambiguous regions are exactly those of :func:`wstal.synthetic_context.make_synthetic_context`, and so
    are the features outside the replays and the overlay.

    Args:
        annotation_dir: the folder holding ``videoname.npy`` ... ``labels_all.npy`` (and optionally
            ``Ambiguous_test.txt``), or a data folder with a ``Thumos14reduced-Annotations/`` inside.
        seed: seed of the feature model; equal arguments give identical data.
        dim: feature width per modality (real I3D: 1024).
        difficulty: the context family's confusion and the scale of the replay chance and the overlay
            strength (>= 0; 0: the context family at 0, no replays, no overlay).
        max_videos_per_split: at most this many videos per split; ``None`` keeps all.
        max_seconds: keep only videos of at most this duration; ``None`` keeps all (larger values keep
            the long, densely annotated videos).

    Returns:
        A dataset with the real video names, classes, ground truth, weak labels and ambiguous regions;
        features ``(t, dim)`` float32 per modality, ``t`` as in the context family.

    Raises:
        FileNotFoundError: the folder or an annotation file is missing.
        ValueError: a bad argument, a malformed or unsafe file, or no video left after the selection.
    """
    _check_arguments(seed, dim, difficulty, max_videos_per_split, max_seconds)
    annotation_dir, classes, truths, ambiguous = _read_folder(annotation_dir)
    draw = _broadcast_model(seed, classes, dim, difficulty)
    return _dataset(
        annotation_dir,
        classes,
        truths,
        ambiguous,
        lambda truth: draw(truth, ambiguous.get(truth.name, np.zeros((0, 2))))[0],
        max_videos_per_split=max_videos_per_split,
        max_seconds=max_seconds,
    )
