"""A seeded, THUMOS14-like synthetic WSTAL benchmark: the example's default data.

The generator reproduces the *structure* of THUMOS14 I3D features that matters for weakly-supervised
localization, not their values:

- **Lengths.** Videos of 60-1,200 snippets (log-normal, median about 230, mean about 260; THUMOS14: median
  about 240, mean 333, longest 2,600). Instances log-normal with a median of 5 snippets (THUMOS14: 3.0 s =
  4.7 snippets) and a long tail, with a per-class length scale; about nine instances per video on average
  with a long tail; a quarter of the videos hold instances of two classes.
- **Classes come in groups of four that share a sport**, e.g. HighJump, LongJump, PoleVault and
  JavelinThrow all start with a run-up. An instance has two phases, split at a random point between 35 %
  and 65 % of its length; each phase has one of two looks of its group, and each class of the group is one
  of the four (first look, second look) combinations. **No single snippet names the class**: a snippet of
  the first phase is equally like two classes, one of the second phase like two others. The whole
  instance names it. This is the incompleteness problem of weakly-supervised localization made explicit: a
  snippet-level model sees parts, a proposal-level model sees the whole action (and is what Stage 2 of the
  reference detector adds).
- **RGB = appearance + context.** The phase looks are present during their phase and *bleed* outside the
  instance (decaying over a few snippets, longer for longer instances); a scene direction of the group is
  present in the whole video. RGB therefore tells the classes apart (through the two phases) but gives soft
  boundaries and fires on background that shares the scene.
- **Flow = motion.** Instances carry a generic "something moves" direction, a motion direction of the group
  and a weak class-specific part, all with sharp box boundaries; camera-motion bursts in the background look
  like the motion of a random group. Flow therefore localizes well but barely tells the classes of a group
  apart, and fires on camera motion.
- Gaussian noise on both. Each modality alone is weaker than both together: RGB supplies the class and
  rejects camera motion, Flow supplies the boundaries and rejects scene context.

Determinism: the class directions come from ``seed``, and video ``i`` of each split from its own child
seed, so the first ``n`` videos are the same whatever ``num_train`` / ``num_test`` are.

Axis legend: t snippets (time), c channels, k classes, g groups, n instances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import SNIPPET_SECONDS, Video, WSTALDataset

__all__ = ["SYNTHETIC_DIM", "THUMOS14_CLASSES", "make_synthetic_thumos"]

SYNTHETIC_DIM = 128
"""Feature width per modality of every synthetic family unless told otherwise: the width the ``default``
preset was made for (``--synthetic-dim``; real I3D features are 1024 wide)."""

THUMOS14_CLASSES = (
    "BaseballPitch",
    "BasketballDunk",
    "Billiards",
    "CleanAndJerk",
    "CliffDiving",
    "CricketBowling",
    "CricketShot",
    "Diving",
    "FrisbeeCatch",
    "GolfSwing",
    "HammerThrow",
    "HighJump",
    "JavelinThrow",
    "LongJump",
    "PoleVault",
    "Shotput",
    "SoccerPenalty",
    "TennisSwing",
    "ThrowDiscus",
    "VolleyballSpiking",
)
"""The 20 THUMOS14 detection classes, in the class-index order of ``classlist.npy``."""

# Groups of four classes that share scene, motion and the two looks of each phase (indices into
# THUMOS14_CLASSES); the class at position j of its group is the (j // 2, j % 2) combination of looks.
_THUMOS_GROUPS = (
    (11, 13, 14, 12),  # run-up sports: HighJump, LongJump, PoleVault, JavelinThrow
    (10, 18, 15, 3),  # spins and lifts: HammerThrow, ThrowDiscus, Shotput, CleanAndJerk
    (0, 5, 6, 17),  # pitch and swing: BaseballPitch, CricketBowling, CricketShot, TennisSwing
    (1, 19, 16, 8),  # ball games: BasketballDunk, VolleyballSpiking, SoccerPenalty, FrisbeeCatch
    (2, 9, 4, 7),  # the rest: Billiards, GolfSwing, CliffDiving, Diving
)

# Signal strengths, in units of the per-channel noise standard deviation (projection onto a direction).
_PHASE_LOOK = 3.0  # RGB: the look of each phase during (and bleeding around) an instance
_PHASE_SPLIT = (0.35, 0.65)  # where the second phase starts, as a fraction of the instance (uniform)
_SCENE = 1.6  # RGB: the group's scene context over the whole video
_VIDEO_SCENE = 1.0  # RGB: video-specific scene, unrelated to the class
_ACTIONNESS = 2.5  # Flow: motion common to all actions
_GROUP_MOTION = 2.0  # Flow: motion shared by the classes of a group
_CLASS_MOTION = 0.6  # Flow: weak class-specific motion
_CAMERA_BURSTS_PER_SNIPPET = 1 / 90  # Flow: expected background camera-motion bursts per snippet


@dataclass(frozen=True)
class _Directions:
    """Unit feature directions shared by all videos (rows)."""

    group: np.ndarray  # (k,) group of each class
    first_look: np.ndarray  # (k, c): look of the first phase, identical rows for two classes of a group
    second_look: np.ndarray  # (k, c): look of the second phase, identical rows for the other pairing
    scene: np.ndarray  # (g, c)
    actionness: np.ndarray  # (c,)
    group_motion: np.ndarray  # (g, c)
    class_motion: np.ndarray  # (k, c)
    length_scale: np.ndarray  # (k,) per-class instance-length multiplier


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _groups(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Group of each class and its position in the group: the THUMOS groups for 20 classes, otherwise
    classes (0-3), (4-7), ..."""
    if num_classes == len(THUMOS14_CLASSES):
        group, position = np.empty(num_classes, np.int64), np.empty(num_classes, np.int64)
        for index, members in enumerate(_THUMOS_GROUPS):
            group[list(members)] = index
            position[list(members)] = np.arange(len(members))
        return group, position
    return np.arange(num_classes) // 4, np.arange(num_classes) % 4


def _directions(rng: np.random.Generator, num_classes: int, dim: int) -> _Directions:
    group, position = _groups(num_classes)
    num_groups = int(group.max()) + 1
    return _Directions(
        group=group,
        first_look=_unit(rng, num_groups, 2, dim)[group, position // 2],
        second_look=_unit(rng, num_groups, 2, dim)[group, position % 2],
        scene=_unit(rng, num_groups, dim),
        actionness=_unit(rng, dim),
        group_motion=_unit(rng, num_groups, dim),
        class_motion=_unit(rng, num_classes, dim),
        length_scale=np.exp(rng.normal(0.0, 0.35, num_classes)),
    )


def _layout(rng: np.random.Generator, num_snippets: int, lengths: np.ndarray) -> np.ndarray:
    """Start snippet of each instance: non-overlapping, at least one background snippet between two."""
    free = num_snippets - int(lengths.sum()) - (len(lengths) - 1)
    gaps = np.floor(rng.dirichlet(np.ones(len(lengths) + 1)) * free).astype(np.int64)
    gaps[1:-1] += 1
    return gaps[:-1].cumsum() + np.concatenate([[0], lengths[:-1].cumsum()])


def _instances(
    rng: np.random.Generator, num_snippets: int, classes: np.ndarray, length_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class, start and end snippet of each instance; at most half of the video is action."""
    count = max(len(classes), 1 + rng.negative_binomial(1.5, 0.12))  # mean 12, long tail
    instance_class = classes[rng.integers(0, len(classes), count)]
    instance_class[: len(classes)] = classes  # every labelled class occurs at least once
    lengths = np.round(rng.lognormal(np.log(6), 0.75, count) * length_scale[instance_class])
    lengths = np.clip(lengths, 2, max(2, num_snippets // 4)).astype(np.int64)
    while count > len(classes) and lengths[:count].sum() > num_snippets // 2:
        count -= 1
    starts = _layout(rng, num_snippets, lengths[:count])
    return instance_class[:count], starts, starts + lengths[:count]


def _video(name: str, rng: np.random.Generator, directions: _Directions, dim: int) -> Video:
    num_classes = len(directions.length_scale)
    num_snippets = int(np.clip(np.round(rng.lognormal(np.log(230), 0.55)), 60, 1200))
    classes = rng.choice(num_classes, size=2 if num_classes > 1 and rng.random() < 0.25 else 1, replace=False)
    instance_class, starts, ends = _instances(rng, num_snippets, classes, directions.length_scale)
    amplitude = rng.uniform(0.6, 1.4, len(starts))[:, None]

    time = np.arange(num_snippets)[None, :]
    inside = (time >= starts[:, None]) & (time < ends[:, None])  # (n, t)
    distance = np.maximum(starts[:, None] - time, time - ends[:, None] + 1).clip(min=0)
    bleed = np.exp(-distance / (1.5 + 0.3 * (ends - starts)[:, None]))  # 1 inside, decaying outside
    lengths = ends - starts
    split = starts + np.clip(np.round(rng.uniform(*_PHASE_SPLIT, len(starts)) * lengths), 1, lengths - 1)
    second = time >= split[:, None]  # (n, t): the second phase and what bleeds after the instance

    rgb = rng.standard_normal((num_snippets, dim), dtype=np.float32)
    rgb += (bleed * ~second * amplitude).T @ (_PHASE_LOOK * directions.first_look[instance_class])
    rgb += (bleed * second * amplitude).T @ (_PHASE_LOOK * directions.second_look[instance_class])
    rgb += _SCENE * directions.scene[directions.group[classes]].mean(axis=0) + _VIDEO_SCENE * _unit(rng, dim)

    flow = rng.standard_normal((num_snippets, dim), dtype=np.float32)
    motion = _ACTIONNESS * directions.actionness + _GROUP_MOTION * directions.group_motion[directions.group]
    flow += (inside * amplitude).T @ (motion + _CLASS_MOTION * directions.class_motion)[instance_class]
    background = ~inside.any(axis=0)
    for _ in range(rng.poisson(num_snippets * _CAMERA_BURSTS_PER_SNIPPET)):  # never inside an action
        start = rng.choice(np.flatnonzero(background))
        length = int(np.clip(np.round(rng.lognormal(np.log(4), 0.5)), 2, 20))
        burst = np.arange(start, min(num_snippets, start + length))
        flow[burst[background[burst]]] += rng.uniform(0.6, 1.4) * motion[rng.integers(0, num_classes)]

    label = np.zeros(num_classes, dtype=np.float32)
    label[classes] = 1.0
    return Video(
        name=name,
        rgb=rgb,
        flow=flow,
        label=label,
        segments=np.stack([starts, ends], axis=1) * SNIPPET_SECONDS,
        segment_classes=instance_class,
        duration=num_snippets * SNIPPET_SECONDS,
    )


def make_synthetic_thumos(
    *,
    num_train: int = 200,
    num_test: int = 212,
    dim: int = SYNTHETIC_DIM,
    num_classes: int = 20,
    seed: int = 0,
) -> WSTALDataset:
    """Generate a THUMOS14-like WSTAL dataset (see the module docstring for the design).

    Args:
        num_train: training videos (THUMOS14: 200).
        num_test: test videos (THUMOS14: 212).
        dim: feature width per modality (real I3D: 1024; smaller is faster on CPU).
        num_classes: number of classes; 20 uses the THUMOS14 class names and groups.
        seed: seed of the whole dataset; equal arguments give identical data.

    Returns:
        A dataset with the same structure as :func:`wstal.thumos.load_thumos14` and no ambiguous regions.

    Example:
        >>> data = make_synthetic_thumos(num_train=2, num_test=1, dim=8)
        >>> len(data.train), len(data.test), data.classes[4], data.test[0].rgb.shape[1]
        (2, 1, 'CliffDiving', 8)
    """
    for name, value, low in (
        ("num_train", num_train, 0),
        ("num_test", num_test, 0),
        ("dim", dim, 1),
        ("num_classes", num_classes, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if num_train + num_test == 0:
        raise ValueError("num_train + num_test must be positive, got 0 videos")
    direction_seed, train_seed, test_seed = np.random.SeedSequence(seed).spawn(3)
    directions = _directions(np.random.default_rng(direction_seed), num_classes, dim)

    def split(subset: str, seeds: list[np.random.SeedSequence]) -> list[Video]:
        return [
            _video(f"synthetic_{subset}_{i:04d}", np.random.default_rng(s), directions, dim)
            for i, s in enumerate(seeds)
        ]

    if num_classes == len(THUMOS14_CLASSES):
        classes = THUMOS14_CLASSES
    else:
        classes = tuple(f"class_{k:02d}" for k in range(num_classes))
    return WSTALDataset(
        classes=classes,
        train=split("validation", train_seed.spawn(num_train)),
        test=split("test", test_seed.spawn(num_test)),
        ambiguous={},
        snippet_seconds=SNIPPET_SECONDS,
    )
