"""A seeded, THUMOS14-like synthetic WSTAL benchmark: the example's default data.

The generator reproduces the *structure* of THUMOS14 I3D features that matters for weakly-supervised
localization, not their values:

- **Lengths.** Videos of 60-1,200 snippets (log-normal, median about 230, mean about 260; THUMOS14: median
  about 240, mean 333, longest 2,600). Instances log-normal with a median of 5 snippets (THUMOS14: 3.0 s =
  4.7 snippets) and a long tail, with a per-class length scale; about nine instances per video on average
  with a long tail; a quarter of the videos hold instances of two classes.
- **RGB = appearance + context.** Each class has an appearance direction that is present during its
  instances and *bleeds* outside them (decaying over a few snippets, longer for longer instances), and a
  scene-context direction present in the whole video. RGB therefore names the class well but gives soft
  boundaries and fires on background that shares the scene.
- **Flow = motion.** Instances carry a generic "something moves" direction, a motion direction shared by a
  *pair* of classes (e.g. CliffDiving/Diving, CricketBowling/CricketShot) and a weak class-specific part,
  all with sharp box boundaries; camera-motion bursts in the background look like motion of a random pair.
  Flow therefore localizes well but confuses paired classes and fires on camera motion.
- Gaussian noise on both. Each modality alone is weaker than both together: RGB supplies the class and
  rejects camera motion, Flow supplies the boundaries and rejects scene context.

Determinism: the class directions come from ``seed``, and video ``i`` of each split from its own child
seed, so the first ``n`` videos are the same whatever ``num_train`` / ``num_test`` are.

Axis legend: t snippets (time), c channels, k classes, n instances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import SNIPPET_SECONDS, Video, WSTALDataset

__all__ = ["THUMOS14_CLASSES", "make_synthetic_thumos"]

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

# Pairs of classes whose motion looks alike (indices into THUMOS14_CLASSES); the rest are paired in order.
_THUMOS_MOTION_PAIRS = (
    (4, 7),
    (5, 6),
    (10, 18),
    (11, 13),
    (12, 15),
    (0, 17),
    (1, 19),
    (2, 9),
    (3, 14),
    (8, 16),
)

# Signal strengths, in units of the per-channel noise standard deviation (projection onto a direction).
_APPEARANCE = 2.2  # RGB: class appearance during (and bleeding around) an instance
_SCENE = 1.6  # RGB: class-correlated scene context over the whole video
_VIDEO_SCENE = 1.0  # RGB: video-specific scene, unrelated to the class
_ACTIONNESS = 2.0  # Flow: motion common to all actions
_PAIR_MOTION = 2.0  # Flow: motion shared by the two classes of a pair
_CLASS_MOTION = 0.6  # Flow: weak class-specific motion
_CAMERA_BURSTS_PER_SNIPPET = 1 / 90  # Flow: expected background camera-motion bursts per snippet


@dataclass(frozen=True)
class _Directions:
    """Unit feature directions shared by all videos (rows)."""

    appearance: np.ndarray  # (k, c)
    scene: np.ndarray  # (k, c)
    actionness: np.ndarray  # (c,)
    pair_motion: np.ndarray  # (k, c): identical rows for the two classes of a pair
    class_motion: np.ndarray  # (k, c)
    length_scale: np.ndarray  # (k,) per-class instance-length multiplier


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _motion_pairs(num_classes: int) -> np.ndarray:
    """Pair index of each class: the THUMOS pairs for 20 classes, otherwise (0, 1), (2, 3), ..."""
    if num_classes == len(THUMOS14_CLASSES):
        pair_of = np.empty(num_classes, dtype=np.int64)
        for index, pair in enumerate(_THUMOS_MOTION_PAIRS):
            pair_of[list(pair)] = index
        return pair_of
    return np.arange(num_classes) // 2


def _directions(rng: np.random.Generator, num_classes: int, dim: int) -> _Directions:
    pair_of = _motion_pairs(num_classes)
    return _Directions(
        appearance=_unit(rng, num_classes, dim),
        scene=_unit(rng, num_classes, dim),
        actionness=_unit(rng, dim),
        pair_motion=_unit(rng, int(pair_of.max()) + 1, dim)[pair_of],
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

    rgb = rng.standard_normal((num_snippets, dim), dtype=np.float32)
    rgb += (bleed * amplitude).T @ (_APPEARANCE * directions.appearance[instance_class])
    rgb += _SCENE * directions.scene[classes].mean(axis=0) + _VIDEO_SCENE * _unit(rng, dim)

    flow = rng.standard_normal((num_snippets, dim), dtype=np.float32)
    motion = _ACTIONNESS * directions.actionness + _PAIR_MOTION * directions.pair_motion
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
    *, num_train: int = 200, num_test: int = 212, dim: int = 256, num_classes: int = 20, seed: int = 0
) -> WSTALDataset:
    """Generate a THUMOS14-like WSTAL dataset (see the module docstring for the design).

    Args:
        num_train: training videos (THUMOS14: 200).
        num_test: test videos (THUMOS14: 212).
        dim: feature width per modality (real I3D: 1024; smaller is faster on CPU).
        num_classes: number of classes; 20 uses the THUMOS14 class names and motion pairs.
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
