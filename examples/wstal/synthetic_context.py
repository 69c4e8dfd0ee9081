"""A third synthetic WSTAL family: action-context confusion in RGB and class-agnostic motion in Flow.

Like :mod:`wstal.synthetic_gt` it takes every timing from a THUMOS-layout annotation folder (the real
instance counts, lengths, gaps and overlaps, the weak labels and the Ambiguous regions) and synthesises
only the features; the feature model is built around the best-known failure of WSTAL on real video
instead of around how the class shows inside an instance:

- **Context competes with the action in RGB.** Each class has a *context* look (the pool, the runway,
  the billiard table: a venue look shared by the classes of one venue plus a class-specific part). It is
  present through the whole *shot* that holds an instance, occluded by the actor during the action
  itself, and with ``difficulty`` also strongest in *context windows* just before and after every
  instance (the athlete at the start line, the landing pit, the replay's surroundings), in *action-free
  shots* of the video (the venue between attempts) and, in some videos, as the context of another class
  of the same venue. The class *action* look inside an instance weakens with ``difficulty`` while the
  context next to it strengthens; above difficulty 1.77 the context is the stronger class evidence. A
  classifier that pools on context fires outside actions (Liu et al., CVPR 2019; ACSNet, AAAI 2021).
- **Flow is dominated by class-agnostic motion.** Every shot may have camera motion (one of four camera
  codes: pans, zoom, shake), inside and outside actions alike, and background movement (crowd, water)
  where no one acts; inside an instance a generic actor motion and a class motion whose code is partly
  that of a *motion family* (run-and-jump, throw, swing, fall-and-lift: a partition unlike the venues'),
  weaker where a moving camera follows the actor. So Flow's energy barely separates action from
  background and its direction names the family more than the class. With ``difficulty`` the actor also
  moves in the context windows (walking back, getting ready).
- **Video structure and noise.** A video is a sequence of shots (log-normal lengths, median 20
  snippets); scene and camera are per shot. Evidence is laid on sparse non-negative channel codes (a
  few channels per concept, like rectified I3D units) rather than dense directions, and the unit noise
  has a temporally correlated part (16 % of its variance, exponentially smoothed over 6 snippets).
- **Difficulty** (``>= 0``) scales the confusion only, never the noise: the chance of context in
  action-free shots and of another class's context, the length and strength of the context windows,
  the weakness of the action look, the family's share of the class motion, the actor motion in the
  context windows and the rates of camera and background motion. 0 has no context windows and no
  action-free context. See :func:`confusion`.

Ground truth, selection and the ambiguous regions are the annotation folder's, read and selected
exactly as :func:`wstal.synthetic_gt.make_synthetic_from_annotations` does; ambiguous regions carry
half-strength evidence (with context windows) of the nearest instance's class. See
docs/synthetic_context.md.

Determinism: the codes come from ``seed`` (and ``difficulty`` for the family share); each video's
features from a child seed keyed by ``seed`` and the video's name, so a video is the same whichever
other videos are selected.

Axis legend: t snippets (time), c channels, k classes, n instances, s shots.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import numpy as np

from .data import SNIPPET_SECONDS, Video, WSTALDataset
from .synthetic import SYNTHETIC_DIM
from .synthetic_gt import _check_arguments, _dataset, _nearest_class, _read_folder
from .thumos import GroundTruth

__all__ = ["Confusion", "confusion", "make_synthetic_context"]

PathLike = Union[str, Path]

# Venues (RGB context) and motion families (Flow) of the THUMOS14 classes, two different partitions:
# context confuses HighJump with JavelinThrow (same track), motion HighJump with VolleyballSpiking.
_VENUES = (
    ("HighJump", "LongJump", "PoleVault", "JavelinThrow", "HammerThrow", "ThrowDiscus", "Shotput"),
    ("SoccerPenalty", "FrisbeeCatch", "BaseballPitch", "CricketBowling", "CricketShot", "GolfSwing"),
    ("BasketballDunk", "VolleyballSpiking", "TennisSwing"),
    ("Diving", "CliffDiving"),
    ("CleanAndJerk", "Billiards"),
)
_MOTION_FAMILIES = (
    ("HighJump", "LongJump", "PoleVault", "BasketballDunk", "VolleyballSpiking"),
    (
        "JavelinThrow",
        "HammerThrow",
        "ThrowDiscus",
        "Shotput",
        "FrisbeeCatch",
        "CricketBowling",
        "BaseballPitch",
    ),
    ("TennisSwing", "GolfSwing", "CricketShot", "Billiards", "SoccerPenalty"),
    ("Diving", "CliffDiving", "CleanAndJerk"),
)

# Strengths, in units of the per-channel noise standard deviation (the projection on a unit code).
_CONTEXT_WINDOW = 2.0  # RGB: context next to an instance at difficulty 0, x (1 + 0.25 difficulty)
_CONTEXT_SHOT = 1.2  # RGB: context over a whole shot (occluded where an actor acts) at difficulty 1
_CONTEXT_INSIDE = 0.8  # RGB: context during the action
_VENUE_SHARE = 0.6  # the venue's share (cosine) of each class's context code
_ACTION_LOOK = 8.0  # RGB: class action look inside instances at difficulty 0, / (1 + difficulty)
_ACTOR_LOOK = 1.5  # RGB: class-agnostic "person in action" look inside instances
_VIDEO_LOOK = 1.0  # RGB: video-specific look (broadcast style), whole video
_NEUTRAL_LOOK = 1.0  # RGB: video-specific look of shots without context (crowd, studio, close-ups)
_ACTOR_MOTION = 2.2  # Flow: class-agnostic actor motion inside instances
_CLASS_MOTION = 1.4  # Flow: class motion inside instances (partly the motion family's code)
_CAMERA = (1.5, 3.5)  # Flow: camera-motion amplitude of a moving shot (uniform)
_TRACKING = 0.7  # Flow: actor motion left in a shot with camera motion (the camera follows the actor)
_BACKGROUND_MOTION = 2.2  # Flow: background movement of a shot, where no one acts (x 0.7-1.3)
_NOISE_WHITE, _NOISE_SMOOTH = 0.92, 0.4  # noise: white and smoothed parts (variances add to 1)
_NOISE_TIME = 6.0  # correlation time of the smoothed part, snippets
_SHOT_MEDIAN, _SHOT_RANGE = 20.0, (4, 120)  # shot lengths, snippets (log-normal, sigma 0.6)
_CAMERA_CODES = 4
_AMBIGUOUS_STRENGTH = 0.5
_FAMILY_TAG = 3  # keeps this family's random streams apart from the other families'


@dataclass(frozen=True)
class Confusion:
    """The confusion parameters that ``difficulty`` sets (see :func:`confusion`).

    Attributes:
        free_scene: chance that an action-free shot shows the context of one of the video's classes.
        cross_scene: chance that an action-free shot shows the context of a class the video lacks
            (of the same venue as one of its classes where there is one).
        window: context-window length on each side, per snippet of the instance plus 4 (0: none).
        action_look: strength of the class action look inside instances (RGB).
        context: strength of the context in the windows next to an instance (RGB).
        scene: strength of the context over a whole shot (RGB).
        window_motion: actor motion in the context windows, as a fraction of the action's.
        family_share: share (squared cosine) of the motion family's code in each class motion code.
        camera: chance that a shot has camera motion.
        background: chance that a shot has background movement (where no one acts).
    """

    free_scene: float
    cross_scene: float
    window: float
    action_look: float
    context: float
    scene: float
    window_motion: float
    family_share: float
    camera: float
    background: float


def confusion(difficulty: float) -> Confusion:
    """The confusion parameters at ``difficulty`` (0 = least confusion, 1 = default, 2 = hard).

    Example:
        >>> c = confusion(1.0)
        >>> round(c.free_scene, 2), round(c.action_look, 2), round(c.context, 2)
        (0.4, 4.0, 2.5)
    """
    d = float(difficulty)
    return Confusion(
        free_scene=min(0.85, 0.4 * d),
        cross_scene=min(0.3, 0.1 * d),
        window=0.5 * d,
        action_look=_ACTION_LOOK / (1 + d),
        context=_CONTEXT_WINDOW * (1 + 0.25 * d),
        scene=_CONTEXT_SHOT * min(2.0, 0.5 + 0.5 * d),
        window_motion=min(0.6, 0.2 * d),
        family_share=min(0.9, 0.3 + 0.25 * d),
        camera=min(0.9, 0.45 + 0.2 * d),
        background=min(0.9, 0.4 + 0.25 * d),
    )


@dataclass(frozen=True)
class _Codes:
    """Sparse non-negative unit channel codes and the class partitions, shared by all videos."""

    venue: np.ndarray  # (k,) venue of each class
    context: np.ndarray  # (k, c): venue code + class-specific scene code
    action: np.ndarray  # (k, c)
    actor: np.ndarray  # (c,)
    actor_motion: np.ndarray  # (c,)
    class_motion: np.ndarray  # (k, c): own code + motion family code
    camera: np.ndarray  # (camera codes, c)
    background: np.ndarray  # (c,)


def _sparse_codes(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """``n`` unit codes, each non-zero (positive) on ``max(4, dim // 32)`` random channels."""
    active = min(dim, max(4, dim // 32))
    channels = np.argsort(rng.random((n, dim)), axis=1)[:, :active]
    codes = np.zeros((n, dim))
    np.put_along_axis(codes, channels, rng.uniform(0.5, 1.5, (n, active)), axis=1)
    return codes / np.linalg.norm(codes, axis=1, keepdims=True)


def _partition(classes: tuple[str, ...], groups: tuple[tuple[str, ...], ...], fallback: int) -> np.ndarray:
    """Group of each class (renumbered 0..); unknown class lists are grouped by index modulo ``fallback``."""
    known = {name: g for g, members in enumerate(groups) for name in members}
    if set(classes) <= known.keys():
        used = sorted({known[c] for c in classes})
        return np.array([used.index(known[c]) for c in classes], dtype=np.int64)
    return np.arange(len(classes), dtype=np.int64) % min(fallback, len(classes))


def _mix(own: np.ndarray, shared: np.ndarray, share: float) -> np.ndarray:
    mixed = np.sqrt(1 - share) * own + np.sqrt(share) * shared
    return mixed / np.linalg.norm(mixed, axis=-1, keepdims=True)


def _codes(rng: np.random.Generator, classes: tuple[str, ...], dim: int, family_share: float) -> _Codes:
    k = len(classes)
    venue = _partition(classes, _VENUES, len(_VENUES))
    family = _partition(classes, _MOTION_FAMILIES, len(_MOTION_FAMILIES))
    venues, families = (
        _sparse_codes(rng, int(venue.max()) + 1, dim),
        _sparse_codes(rng, int(family.max()) + 1, dim),
    )
    return _Codes(
        venue=venue,
        context=_mix(_sparse_codes(rng, k, dim), venues[venue], _VENUE_SHARE**2),
        action=_sparse_codes(rng, k, dim),
        actor=_sparse_codes(rng, 1, dim)[0],
        actor_motion=_sparse_codes(rng, 1, dim)[0],
        class_motion=_mix(_sparse_codes(rng, k, dim), families[family], family_share),
        camera=_sparse_codes(rng, _CAMERA_CODES, dim),
        background=_sparse_codes(rng, 1, dim)[0],
    )


def _video_rng(seed: int, name: str, tag: int = _FAMILY_TAG) -> np.random.Generator:
    """The stream of one video, keyed by ``seed``, its name and a family ``tag``."""
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key, tag]))


def _noise(rng: np.random.Generator, t: int, dim: int) -> np.ndarray:
    """White plus exponentially smoothed Gaussian noise, unit variance per channel, stationary in time."""
    lag = int(np.ceil(5 * _NOISE_TIME))
    kernel = np.exp(-np.arange(lag) / _NOISE_TIME)
    kernel /= np.linalg.norm(kernel)
    size = t + 2 * lag
    drift = rng.standard_normal((t + lag, dim), dtype=np.float32)
    smooth = np.fft.irfft(np.fft.rfft(drift, size, axis=0) * np.fft.rfft(kernel, size)[:, None], size, axis=0)
    noise = _NOISE_SMOOTH * smooth[lag : lag + t]  # past the warm-up, every snippet has a full history
    return noise + _NOISE_WHITE * rng.standard_normal((t, dim), dtype=np.float32)


def _shots(rng: np.random.Generator, t: int) -> np.ndarray:
    """Shot index of each snippet."""
    lengths = np.clip(
        np.round(rng.lognormal(np.log(_SHOT_MEDIAN), 0.6, t // _SHOT_RANGE[0] + 1)), *_SHOT_RANGE
    )
    return np.searchsorted(np.cumsum(lengths), np.arange(t), side="right")


class _Drawn(NamedTuple):
    """One video of this family: its features and the shots they were laid on."""

    rgb: np.ndarray  # (t, c) float32
    flow: np.ndarray  # (t, c) float32
    shot: np.ndarray  # (t,) shot index of each snippet


def _features(
    rng: np.random.Generator,
    t: int,
    start: np.ndarray,
    end: np.ndarray,
    cls: np.ndarray,
    amp: np.ndarray,
    video_classes: np.ndarray,
    codes: _Codes,
    conf: Confusion,
    dim: int,
) -> _Drawn:
    """RGB, Flow and shots of one video from its instances (snippet ``start``/``end``, class, amplitude)."""
    k, n = len(codes.action), len(start)
    centre = np.arange(t) + 0.5
    start, end, amp = start[:, None], end[:, None], amp[:, None]
    # the share of snippet [i, i + 1) that an instance covers: sharp, sub-snippet instances are weak
    box = np.clip(np.minimum(np.arange(1, t + 1), end) - np.maximum(np.arange(t), start), 0.0, 1.0)  # (n, t)
    acting = box.max(axis=0, initial=0.0)  # (t,) how much of each snippet is action
    size = conf.window * (4 + np.maximum(end - start, 0.0))
    before, after = size * rng.uniform(0.5, 1.5, (n, 1)), size * rng.uniform(0.5, 1.5, (n, 1))
    before, after = np.maximum(before, 1e-6), np.maximum(after, 1e-6)  # 0: no window
    # context windows, strongest next to the instance (1) and 0.4 at their far end
    pre = ((centre >= start - before) & (centre < start)) * (0.4 + 0.6 * (centre - start + before) / before)
    post = ((centre >= end) & (centre < end + after)) * (0.4 + 0.6 * (end + after - centre) / after)
    window = np.maximum(pre, post) * (1 - acting)  # (n, t), not where anything acts

    shot = _shots(rng, t)
    num_shots = int(shot[-1]) + 1
    shot_class = np.full(num_shots, -1)
    draw = rng.random(num_shots)
    if len(video_classes):
        free = draw < conf.free_scene
        shot_class[free] = rng.choice(video_classes, int(free.sum()))
        others = np.setdiff1d(np.arange(k), video_classes)
        same_venue = others[np.isin(codes.venue[others], codes.venue[video_classes])]
        pool = same_venue if len(same_venue) else others
        cross = (draw >= conf.free_scene) & (draw < conf.free_scene + conf.cross_scene)
        if len(pool):
            shot_class[cross] = rng.choice(pool, int(cross.sum()))
    rows, columns = np.nonzero(box > 0)
    shot_class[shot[columns]] = cls[rows]  # a shot that holds an instance shows its context
    action_shot = np.zeros(num_shots, dtype=bool)
    action_shot[shot[columns]] = True

    # RGB: context (shots, occluded by the actor; windows; inside), action and actor looks
    scene = np.zeros((k, t))
    in_scene = np.flatnonzero(shot_class[shot] >= 0)
    shot_strength = conf.scene * rng.uniform(0.8, 1.2, num_shots)
    scene[shot_class[shot[in_scene]], in_scene] = shot_strength[shot[in_scene]] * (1 - acting[in_scene])
    np.maximum.at(scene, cls, conf.context * window * amp)
    np.maximum.at(scene, cls, _CONTEXT_INSIDE * box * amp)
    jitter = np.clip(1 + 0.25 * rng.standard_normal((2, t)), 0.0, None)  # per-snippet evidence strength
    look = np.zeros((k, t))
    np.maximum.at(look, cls, box * amp * jitter[0])
    actor = (box * amp).max(axis=0, initial=0.0) * jitter[0]
    neutral = (shot_class[shot] < 0) & (acting == 0)
    rgb = _noise(rng, t, dim)
    rgb += scene.T @ codes.context + (conf.action_look * look).T @ codes.action
    rgb += np.outer(_ACTOR_LOOK * actor, codes.actor)
    rgb += _VIDEO_LOOK * _sparse_codes(rng, 1, dim)[0] + np.outer(
        _NEUTRAL_LOOK * neutral, _sparse_codes(rng, 1, dim)[0]
    )

    # Flow: actor and class motion inside (actor also in the windows), camera per shot, background movement
    motion = np.zeros((k, t))
    np.maximum.at(motion, cls, box * amp * jitter[1])
    moving = (box * amp).max(axis=0, initial=0.0) * jitter[1]
    moving = np.maximum(moving, conf.window_motion * (window * amp).max(axis=0, initial=0.0))
    camera = np.where(rng.random(num_shots) < conf.camera, rng.integers(0, _CAMERA_CODES, num_shots), -1)
    camera_strength = np.where(camera >= 0, rng.uniform(*_CAMERA, num_shots), 0.0)
    tracking = np.where(camera[shot] >= 0, _TRACKING, 1.0)  # a moving camera follows the actor
    background = rng.random(num_shots) < conf.background
    background_strength = background * _BACKGROUND_MOTION * rng.uniform(0.7, 1.3, num_shots)
    flow = _noise(rng, t, dim)
    flow += np.outer(_ACTOR_MOTION * moving * tracking, codes.actor_motion)
    flow += (_CLASS_MOTION * motion * tracking).T @ codes.class_motion
    flow += camera_strength[shot][:, None] * codes.camera[camera[shot]]  # code -1 is weighted 0
    flow += np.outer(background_strength[shot] * (acting == 0), codes.background)
    return _Drawn(rgb.astype(np.float32, copy=False), flow.astype(np.float32, copy=False), shot)


def _video_model(
    seed: int, classes: tuple[str, ...], dim: int, difficulty: float
) -> Callable[[GroundTruth, np.ndarray], _Drawn]:
    """The per-video generator of this family for ``classes``: a video's ground truth and its ambiguous
    regions (seconds, ``(n, 2)``) to its features and shots. Shared with :mod:`wstal.synthetic_broadcast`."""
    conf = confusion(difficulty)
    codes = _codes(np.random.default_rng([seed, 0, _FAMILY_TAG]), classes, dim, conf.family_share)

    def draw(truth: GroundTruth, regions: np.ndarray) -> _Drawn:
        t = max(1, round(truth.duration / SNIPPET_SECONDS))
        rng = _video_rng(seed, truth.name)
        spans = truth.segments / SNIPPET_SECONDS
        keep = spans[:, 0] < t  # a segment that starts after the features end leaves no evidence
        fallback = int(np.flatnonzero(truth.label)[0]) if truth.label.any() else 0
        regions = regions / SNIPPET_SECONDS
        regions = regions[regions[:, 0] < t]
        unclear = [
            _nearest_class(a, b, truth.segments / SNIPPET_SECONDS, truth.segment_classes, fallback)
            for a, b in regions
        ]
        start = np.concatenate([spans[keep, 0], regions[:, 0]])
        end = np.concatenate([spans[keep, 1], regions[:, 1]])
        cls = np.concatenate([truth.segment_classes[keep], np.array(unclear, dtype=np.int64)])
        amp = np.concatenate(
            [rng.uniform(0.7, 1.3, int(keep.sum())), np.full(len(regions), _AMBIGUOUS_STRENGTH)]
        )
        video_classes = np.union1d(truth.segment_classes, np.flatnonzero(truth.label)).astype(np.int64)
        return _features(rng, t, start, end, cls, amp, video_classes, codes, conf, dim)

    return draw


def make_synthetic_context(
    annotation_dir: PathLike,
    *,
    seed: int = 0,
    dim: int = SYNTHETIC_DIM,
    difficulty: float = 1.0,
    max_videos_per_split: Optional[int] = None,
    max_seconds: Optional[float] = None,
) -> WSTALDataset:
    """Synthesise RGB and Flow with action-context confusion around the ground truth of an annotation folder.

    See the module docstring (and docs/synthetic_context.md) for the feature model. The folder, the
    selection (``max_seconds``, then ``max_videos_per_split`` evenly spaced in name order) and the ground
    truth are exactly those of :func:`wstal.synthetic_gt.make_synthetic_from_annotations`.

    Args:
        annotation_dir: the folder holding ``videoname.npy`` ... ``labels_all.npy`` (and optionally
            ``Ambiguous_test.txt``), or a data folder with a ``Thumos14reduced-Annotations/`` inside.
        seed: seed of the feature model; equal arguments give identical data.
        dim: feature width per modality (real I3D: 1024).
        difficulty: confusion scale (>= 0; 0 least, 1 default, 2 hard; see :func:`confusion`).
        max_videos_per_split: at most this many videos per split; ``None`` keeps all.
        max_seconds: keep only videos of at most this duration; ``None`` keeps all.

    Returns:
        A dataset with the real video names, classes, ground truth, weak labels and ambiguous regions.

    Raises:
        FileNotFoundError: the folder or an annotation file is missing.
        ValueError: a bad argument, a malformed or unsafe file, or no video left after the selection.
    """
    _check_arguments(seed, dim, difficulty, max_videos_per_split, max_seconds)
    annotation_dir, classes, truths, ambiguous = _read_folder(annotation_dir)
    draw = _video_model(seed, classes, dim, difficulty)

    def video(truth: GroundTruth) -> Video:
        rgb, flow, _ = draw(truth, ambiguous.get(truth.name, np.zeros((0, 2))))
        return Video(
            truth.name, rgb, flow, truth.label, truth.segments, truth.segment_classes, truth.duration
        )

    return _dataset(
        annotation_dir,
        classes,
        truths,
        ambiguous,
        video,
        max_videos_per_split=max_videos_per_split,
        max_seconds=max_seconds,
    )
