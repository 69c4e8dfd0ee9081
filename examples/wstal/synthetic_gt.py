"""A second synthetic WSTAL family: features synthesised around the real ground truth of an annotation folder.

The first family (:mod:`wstal.synthetic`) invents its own timings. This one takes every timing from a
THUMOS-layout annotation folder -- the real instance counts, lengths, gaps and overlaps, the class
imbalance and odd class coverage, the weak labels as the files give them, the Ambiguous regions -- and
only synthesises the features. It also spreads the evidence over an instance differently:

- **A key moment names the class.** Each instance has an *apex* (the release of a throw, the take-off of a
  jump) at a class-typical fraction of its length (35-75 %, jittered per instance). The class-specific RGB
  look is a Gaussian bump around the apex (standard deviation ``max(0.6, 0.15 * length)`` snippets);
  everywhere else the instance shows only the look of its *group* of related classes (athletics run-ups,
  throws, cricket, ...; groups of one to four). A snippet at the apex names the class, most snippets of a
  long instance do not. (In the first family no single snippet names the class, the two phases do.)
- **RGB = appearance + context, with soft boundaries.** The group look follows a smooth ramp that rises
  before the annotated start and falls after the end (ramp width ``0.5 + 0.15 * length`` snippets); the
  scene of every group present in the video is there all along with a slowly drifting strength, plus a
  video-specific scene and, in some videos, the scene of an unrelated group (co-occurring context).
- **Flow = motion, with sharp boundaries.** A generic motion direction and a group motion direction
  cover exactly the annotated snippets (a snippet's share of the instance, so a 0.3 s instance is about half
  of one snippet's motion); the motion peaks at the apex, where a weak class-specific motion sits too.
- **Nuisances.** Hard negatives in the background: the group look and a weakened key look of a class
  of the video's groups with no action motion (people in position, a replay's still frame); camera-motion
  bursts: generic and group motion in Flow with nothing in RGB. Ambiguous regions carry half-strength
  evidence of the class of the nearest labelled instance, so they are genuinely ambiguous.
- **Difficulty.** ``difficulty`` scales the Gaussian noise (standard deviation ``difficulty``) and the
  rates of hard negatives and camera bursts; the signal strengths stay fixed. 0 is noise- and
  distractor-free, 1 the calibrated default, 2 hard.

Ground truth is the annotation files' exactly (segments in seconds, ``labels.npy`` classes, ``labels_all``
as the weak label, as :func:`wstal.thumos.load_thumos14` reads them); evidence is drawn for every segment,
also where ``labels_all`` omits its class or the segment runs past the video's end (clipped). Features
have ``t = max(1, round(duration / snippet_seconds))`` snippets. See docs/synthetic_from_annotations.md.

Determinism: the feature directions come from ``seed``; each video's features from a child seed keyed by
``seed`` and the video's *name*, so a video is the same whichever other videos are selected.

Axis legend: t snippets (time), c channels, k classes, g groups, n instances.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .data import SNIPPET_SECONDS, Video, WSTALDataset
from .synthetic import SYNTHETIC_DIM
from .thumos import ANNOTATIONS_DIR, TEST_SUBSET, TRAIN_SUBSET, GroundTruth, read_ground_truth

__all__ = ["make_synthetic_from_annotations"]

PathLike = Union[str, Path]

# Groups of related THUMOS14 classes (by name); they share an RGB group look, a scene and a group motion.
# Unknown class lists are grouped in threes by index.
_THUMOS_GROUPS = (
    ("HighJump", "LongJump", "PoleVault", "JavelinThrow"),  # run-up
    ("HammerThrow", "ThrowDiscus", "Shotput"),  # throws from a circle
    ("CricketBowling", "CricketShot"),  # cricket: often the same instant
    ("BaseballPitch", "TennisSwing", "GolfSwing"),  # pitch and swing
    ("BasketballDunk", "VolleyballSpiking", "SoccerPenalty", "FrisbeeCatch"),  # ball games
    ("CliffDiving", "Diving"),  # every CliffDiving segment is also a Diving one in the files
    ("CleanAndJerk",),
    ("Billiards",),
)

# Signal strengths, in units of the per-channel noise standard deviation at difficulty 1.
_GROUP_LOOK = 2.0  # RGB: group look over the soft-ramped instance
_KEY_LOOK = 5.0  # RGB: class look at the apex
_SCENE = 1.2  # RGB: scene of each group present in the video, whole video
_VIDEO_SCENE = 1.0  # RGB: video-specific scene
_CONTEXT_PROBABILITY = 0.3  # RGB: chance of an unrelated group's scene in a video (co-occurring context)
_ACTIONNESS = 2.0  # Flow: generic motion inside instances (x 0.7 away from the apex, x 1.3 at it)
_GROUP_MOTION = 1.8  # Flow: group motion inside instances
_CLASS_MOTION = 0.8  # Flow: class motion at the apex
_APEX_RANGE = (0.35, 0.75)  # class-typical apex position, fraction of the instance
_APEX_JITTER = 0.08  # per-instance standard deviation around it
_HARD_NEGATIVES_PER_SNIPPET = 1 / 150  # at difficulty 1
_CAMERA_BURSTS_PER_SNIPPET = 1 / 120  # at difficulty 1
_AMBIGUOUS_STRENGTH = 0.5


@dataclass(frozen=True)
class _Directions:
    """Unit feature directions and per-class timing shared by all videos."""

    group: np.ndarray  # (k,) group of each class
    group_look: np.ndarray  # (g, c)
    key_look: np.ndarray  # (k, c)
    scene: np.ndarray  # (g, c)
    actionness: np.ndarray  # (c,)
    group_motion: np.ndarray  # (g, c)
    class_motion: np.ndarray  # (k, c)
    apex: np.ndarray  # (k,) typical apex position as a fraction of the instance


@dataclass(frozen=True)
class _Instance:
    """Evidence to draw (a ground-truth segment, an ambiguous region or a hard negative), in snippets."""

    start: float
    end: float
    cls: int
    strength: float  # overall amplitude
    key: float = 1.0  # class-look amplitude relative to strength
    motion: bool = True  # Flow evidence (hard negatives have none)


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))  # no overflow far from the instance


def _groups(classes: tuple[str, ...]) -> np.ndarray:
    known = {name: g for g, members in enumerate(_THUMOS_GROUPS) for name in members}
    if set(classes) <= known.keys():
        used = sorted({known[c] for c in classes})  # groups renumbered 0..g-1
        return np.array([used.index(known[c]) for c in classes], dtype=np.int64)
    return np.arange(len(classes), dtype=np.int64) // 3


def _directions(rng: np.random.Generator, classes: tuple[str, ...], dim: int) -> _Directions:
    group = _groups(classes)
    num_groups, num_classes = int(group.max()) + 1, len(classes)
    return _Directions(
        group=group,
        group_look=_unit(rng, num_groups, dim),
        key_look=_unit(rng, num_classes, dim),
        scene=_unit(rng, num_groups, dim),
        actionness=_unit(rng, dim),
        group_motion=_unit(rng, num_groups, dim),
        class_motion=_unit(rng, num_classes, dim),
        apex=rng.uniform(*_APEX_RANGE, num_classes),
    )


def _video_rng(seed: int, name: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key]))


def _profiles(rng: np.random.Generator, instances: list[_Instance], directions: _Directions, t: int):
    """Per instance: soft RGB ramp, sharp Flow box and apex bump over the snippets, each (n, t)."""
    centre = np.arange(t) + 0.5
    start = np.array([i.start for i in instances])[:, None]
    end = np.array([i.end for i in instances])[:, None]
    length = np.maximum(end - start, 1e-3)
    # the share of each snippet [i, i + 1) that the instance covers: sharp, and sub-snippet instances are weak
    box = np.clip(np.minimum(np.arange(1, t + 1), end) - np.maximum(np.arange(t), start), 0.0, 1.0)
    ramp_width = 0.5 + 0.15 * length
    ramp = _sigmoid((centre - start) / ramp_width) * _sigmoid((end - centre) / ramp_width)
    ramp = ramp / ramp.max(axis=1, keepdims=True).clip(min=1e-6) * np.minimum(length, 1.0)
    typical = directions.apex[[i.cls for i in instances]][:, None]
    fraction = np.clip(typical + rng.normal(0.0, _APEX_JITTER, typical.shape), 0.15, 0.85)
    apex = start + fraction * length
    width = np.maximum(0.6, 0.15 * length)
    key = np.exp(-0.5 * ((centre - apex) / width) ** 2) * np.minimum(length, 1.0)
    return ramp, box, key


def _nuisances(
    rng: np.random.Generator,
    t: int,
    occupied: np.ndarray,
    groups: np.ndarray,
    d: _Directions,
    difficulty: float,
) -> tuple[list[_Instance], list[tuple[int, int]]]:
    """Hard negatives (RGB look-alikes without motion) and camera bursts (Flow motion without an action),
    both in snippets that no instance or ambiguous region occupies."""
    free = np.flatnonzero(~occupied)
    negatives: list[_Instance] = []
    bursts: list[tuple[int, int]] = []
    if len(free) == 0:
        return negatives, bursts
    candidates = np.flatnonzero(np.isin(d.group, groups)) if len(groups) else np.arange(len(d.group))
    for _ in range(rng.poisson(len(free) * _HARD_NEGATIVES_PER_SNIPPET * difficulty)):
        start = float(rng.choice(free))
        length = float(np.clip(rng.lognormal(np.log(4), 0.5), 1, 20))
        cls = int(rng.choice(candidates))
        negatives.append(
            _Instance(
                start, start + length, cls, rng.uniform(0.6, 1.0), key=rng.uniform(0.4, 0.8), motion=False
            )
        )
    for _ in range(rng.poisson(len(free) * _CAMERA_BURSTS_PER_SNIPPET * difficulty)):
        start = int(rng.choice(free))
        bursts.append((start, min(t, start + int(np.clip(np.round(rng.lognormal(np.log(4), 0.5)), 2, 20)))))
    return negatives, bursts


def _features(
    rng: np.random.Generator,
    t: int,
    instances: list[_Instance],
    ambiguous: list[_Instance],
    directions: _Directions,
    dim: int,
    difficulty: float,
) -> tuple[np.ndarray, np.ndarray]:
    d = directions
    num_groups, num_classes = len(d.scene), len(d.key_look)
    present = np.unique(d.group[[i.cls for i in instances]]) if instances else np.zeros(0, np.int64)
    drawn = instances + ambiguous
    occupied = np.zeros(t, dtype=bool)
    for i in drawn:  # with two snippets of margin for the RGB ramps
        occupied[max(0, int(i.start) - 2) : max(0, int(np.ceil(i.end)) + 2)] = True
    negatives, bursts = _nuisances(rng, t, occupied, present, d, difficulty)
    everything = drawn + negatives

    rgb = difficulty * rng.standard_normal((t, dim), dtype=np.float32)
    flow = difficulty * rng.standard_normal((t, dim), dtype=np.float32)
    scenes = list(present) + ([int(rng.integers(num_groups))] if rng.random() < _CONTEXT_PROBABILITY else [])
    drift = 1 + 0.3 * np.sin(2 * np.pi * (np.arange(t) / rng.uniform(60, 240) + rng.random()))
    for g in scenes:
        rgb += (_SCENE * drift)[:, None] * d.scene[g]
    rgb += _VIDEO_SCENE * _unit(rng, dim)
    if everything:
        ramp, box, key = _profiles(rng, everything, d, t)
        strength = np.array([i.strength for i in everything])[:, None]
        cls = np.array([i.cls for i in everything])
        motion = np.array([i.motion for i in everything])[:, None]
        key_strength = strength * np.array([i.key for i in everything])[:, None]
        # overlapping instances (CliffDiving = Diving duplicates) do not add up: the max per row wins
        group_w = np.zeros((num_groups, t))
        key_w = np.zeros((num_classes, t))
        gbox_w = np.zeros((num_groups, t))
        np.maximum.at(group_w, d.group[cls], ramp * strength)
        np.maximum.at(key_w, cls, key * key_strength)
        np.maximum.at(gbox_w, d.group[cls], box * strength * motion)
        action = (box * strength * motion * (0.7 + 0.6 * key)).max(axis=0)
        ckey_w = np.zeros((num_classes, t))
        np.maximum.at(ckey_w, cls, key * strength * motion)
        rgb += group_w.T @ (_GROUP_LOOK * d.group_look) + key_w.T @ (_KEY_LOOK * d.key_look)
        flow += np.outer(action, _ACTIONNESS * d.actionness) + gbox_w.T @ (_GROUP_MOTION * d.group_motion)
        flow += ckey_w.T @ (_CLASS_MOTION * d.class_motion)
    for a, b in bursts:
        motion = _ACTIONNESS * d.actionness + _GROUP_MOTION * d.group_motion[rng.integers(num_groups)]
        flow[a:b] += rng.uniform(0.6, 1.2) * motion
    return rgb.astype(np.float32, copy=False), flow.astype(np.float32, copy=False)


def _nearest_class(start: float, end: float, segments: np.ndarray, classes: np.ndarray, fallback: int) -> int:
    if len(segments) == 0:
        return fallback
    gap = np.maximum(segments[:, 0] - end, start - segments[:, 1]).clip(min=0)
    return int(classes[int(np.argmin(gap))])


def _check(name: str, value: object, *, low: float, kind: type, optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else kind)
    if not ok or not np.isfinite(value) or value < low:  # type: ignore[operator,arg-type]
        what = "an int" if kind is int else "a finite number"
        raise ValueError(f"{name} must be {what} >= {low}{' or None' if optional else ''}, got {value!r}")


def _read_folder(
    annotation_dir: PathLike,
) -> tuple[Path, tuple[str, ...], list[GroundTruth], dict[str, np.ndarray]]:
    """The annotation folder (or the one inside a data folder) and what :func:`read_ground_truth` reads
    from it; shared with the other annotation-driven families."""
    annotation_dir = Path(annotation_dir)
    if (annotation_dir / ANNOTATIONS_DIR).is_dir():
        annotation_dir = annotation_dir / ANNOTATIONS_DIR
    return (annotation_dir, *read_ground_truth(annotation_dir))


def _dataset(
    annotation_dir: Path,
    classes: tuple[str, ...],
    truths: list[GroundTruth],
    ambiguous: dict[str, np.ndarray],
    video: Callable[[GroundTruth], Video],
    *,
    max_videos_per_split: Optional[int],
    max_seconds: Optional[float],
) -> WSTALDataset:
    """The selected videos of each split (see :func:`make_synthetic_from_annotations`), each made by
    ``video``, with the ambiguous regions of the selected test videos."""

    def split(subset: str) -> list[Video]:
        chosen = sorted(
            (t for t in truths if t.subset == subset and (max_seconds is None or t.duration <= max_seconds)),
            key=lambda t: t.name,
        )
        if max_videos_per_split is not None and len(chosen) > max_videos_per_split:
            spaced = np.round(np.linspace(0, len(chosen) - 1, max_videos_per_split)).astype(int)
            chosen = [chosen[j] for j in spaced]
        return [video(t) for t in chosen]

    train, test = split(TRAIN_SUBSET), split(TEST_SUBSET)
    if not train and not test:
        raise ValueError(
            f"{annotation_dir}: no {TRAIN_SUBSET!r} or {TEST_SUBSET!r} video left "
            f"(max_seconds={max_seconds!r}, max_videos_per_split={max_videos_per_split!r})"
        )
    kept = {v.name for v in test}
    return WSTALDataset(
        classes=classes,
        train=train,
        test=test,
        ambiguous={name: regions for name, regions in ambiguous.items() if name in kept},
        snippet_seconds=SNIPPET_SECONDS,
    )


def _check_arguments(
    seed: int, dim: int, difficulty: float, max_videos_per_split: Optional[int], max_seconds: Optional[float]
) -> None:
    """The arguments every annotation-driven family takes, checked once."""
    _check("seed", seed, low=0, kind=int)
    _check("dim", dim, low=1, kind=int)
    _check("difficulty", difficulty, low=0.0, kind=float)
    _check("max_videos_per_split", max_videos_per_split, low=1, kind=int, optional=True)
    _check("max_seconds", max_seconds, low=0.0, kind=float, optional=True)


def make_synthetic_from_annotations(
    annotation_dir: PathLike,
    *,
    seed: int = 0,
    dim: int = SYNTHETIC_DIM,
    difficulty: float = 1.0,
    max_videos_per_split: Optional[int] = None,
    max_seconds: Optional[float] = None,
) -> WSTALDataset:
    """Synthesise RGB and Flow features around the ground truth of a THUMOS-layout annotation folder.

    See the module docstring (and docs/synthetic_from_annotations.md) for the feature model.

    Selection: the videos of each split (``validation`` -> train, ``test`` -> test) no longer than
    ``max_seconds``, in name order; with ``max_videos_per_split`` that many of them evenly spaced in that
    order (THUMOS names are grouped by class, so even spacing keeps the class coverage; a prefix would not).

    Args:
        annotation_dir: the folder holding ``videoname.npy`` ... ``labels_all.npy`` (and optionally
            ``Ambiguous_test.txt``), or a data folder with a ``Thumos14reduced-Annotations/`` inside.
        seed: seed of the feature model; equal arguments give identical data.
        dim: feature width per modality (real I3D: 1024; the default is every synthetic family's, :data:`~wstal.synthetic.SYNTHETIC_DIM`).
        difficulty: noise standard deviation and rate multiplier of the distractors (>= 0; 1 = default).
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
    directions = _directions(np.random.default_rng(np.random.SeedSequence([seed, 0])), classes, dim)

    def video(truth: GroundTruth) -> Video:
        name, duration, segments, segment_classes = (
            truth.name,
            truth.duration,
            truth.segments,
            truth.segment_classes,
        )
        t = max(1, round(duration / SNIPPET_SECONDS))
        rng = _video_rng(seed, name)
        strength = rng.uniform(0.7, 1.3, len(segments))
        instances = [
            _Instance(a / SNIPPET_SECONDS, b / SNIPPET_SECONDS, int(k), float(s))
            for (a, b), k, s in zip(segments, segment_classes, strength)
            if a / SNIPPET_SECONDS < t  # a segment that starts after the features end leaves no evidence
        ]
        fallback = int(np.flatnonzero(truth.label)[0]) if truth.label.any() else 0
        unclear = [
            _Instance(
                a / SNIPPET_SECONDS,
                b / SNIPPET_SECONDS,
                _nearest_class(a, b, segments, segment_classes, fallback),
                _AMBIGUOUS_STRENGTH,
            )
            for a, b in ambiguous.get(name, np.zeros((0, 2)))
            if a / SNIPPET_SECONDS < t
        ]
        rgb, flow = _features(rng, t, instances, unclear, directions, dim, float(difficulty))
        return Video(name, rgb, flow, truth.label, segments, segment_classes, duration)

    return _dataset(
        annotation_dir,
        classes,
        truths,
        ambiguous,
        video,
        max_videos_per_split=max_videos_per_split,
        max_seconds=max_seconds,
    )
