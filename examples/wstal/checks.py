"""The checks every THUMOS14 loader applies, whatever the folder layout (:mod:`.thumos`, :mod:`.per_video`).

A loader reads its files into :class:`GroundTruth` records and per-video feature arrays; this module turns
them into :class:`~.data.Video` objects with the same checks for every layout: segments finite, ordered,
inside the video (:data:`SEGMENT_TOLERANCE`; the public annotations' own errata are kept), features
``(T, feature_dim)`` with at least one snippet and finite values, and no annotated video left out without
a refusal or a warning that names it (:func:`settle_unused`).

Axis legend: t snippets (time), c channels.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

import numpy as np

from .data import SNIPPET_SECONDS, FeatureTiming, Video

__all__ = [
    "SEGMENT_TOLERANCE",
    "UNUSED_POLICIES",
    "GroundTruth",
    "check_loader_options",
    "check_segments",
    "check_unused_policy",
    "settle_unused",
    "video_from_features",
]

SEGMENT_TOLERANCE = SNIPPET_SECONDS
"""How far (seconds) a ground-truth segment may end past its video's duration: annotations are rounded to
0.1 s, durations come from frame counts."""

# The public annotations' own errors: 30 segments of these 5 videos lie wholly past the stated duration
# (video_test_0000270 up to 537 s). Kept as in the files, so results compare with published numbers.
PAST_END_ERRATA = frozenset(
    {
        "video_validation_0000364",
        "video_validation_0000856",
        "video_test_0000270",
        "video_test_0000814",
        "video_test_0001081",
    }
)

UNUSED_POLICIES = ("error", "warn")
"""What an annotated video that a run cannot use does: refuse the folder, or leave it out with a warning."""

_NAMED = 10  # videos named in a refusal or warning; results.json lists them all


class GroundTruth(NamedTuple):
    """One annotated video without its features: what the annotation files say about it.

    ``segments`` are ``[start, end]`` in seconds with their ``segment_classes``; ``label`` is the multi-hot
    weak label (``labels_all.npy`` in the Thumos14reduced layout; the segment labels, or ``video_labels``,
    in the per-video layout), the only supervision WSTAL trains on."""

    name: str
    subset: str
    duration: float
    segments: np.ndarray
    segment_classes: np.ndarray
    label: np.ndarray

    @property
    def has_label(self) -> bool:
        """Whether the video carries anything to learn or evaluate: a video-level label or a segment."""
        return bool(self.label.any()) or len(self.segments) > 0


def check_segments(
    segments: np.ndarray, duration: float, *, name: str, where: str, duration_from: str
) -> None:
    """Refuse a segment that is not finite, is reversed, starts before 0 s or ends more than
    :data:`SEGMENT_TOLERANCE` past ``duration`` (the five errata videos of the public annotations excepted).

    Args:
        segments: ``(n, 2)`` ``[start, end]`` in seconds.
        duration: the video's length in seconds.
        name: the video's name.
        where: the file and video, e.g. ``"Thumos14reduced-Annotations/segments.npy: video 'v'"``; it opens
            every message.
        duration_from: where the duration was read, named when a segment ends past it.

    Raises:
        ValueError: naming ``where``, the segment's index and its times.
    """
    for i, (start, end) in enumerate(segments.tolist()):
        if not (np.isfinite(start) and np.isfinite(end)):
            raise ValueError(f"{where}: segment {i} [{start}, {end}] is not finite")
        if end < start:
            raise ValueError(f"{where}: segment {i} [{start}, {end}] ends before it starts")
        if start < 0:
            raise ValueError(f"{where}: segment {i} [{start}, {end}] starts before 0 s")
        if end > duration + SEGMENT_TOLERANCE and name not in PAST_END_ERRATA:
            raise ValueError(
                f"{where}: segment {i} [{start}, {end}] ends past the video's duration {duration:g} s "
                f"({duration_from}; tolerance {SEGMENT_TOLERANCE:g} s); are the times in frames, not seconds?"
            )


def _finite(features: np.ndarray, where: str, name: str, nonfinite: str, repaired: list[str]) -> np.ndarray:
    """``features`` unchanged when all finite (one ``np.isfinite`` pass), else refused or repaired."""
    finite = np.isfinite(features)
    if finite.all():
        return features
    if nonfinite == "zero":
        repaired.append(name)
        return np.where(finite, features, np.float32(0))
    bad = finite.size - int(np.count_nonzero(finite))
    first = int(np.flatnonzero(~finite.all(axis=1))[0])
    raise ValueError(
        f"{where} has {bad} non-finite feature value(s) (NaN or inf; the first in snippet {first}); fix the "
        "file, or replace them with 0 explicitly (nonfinite='zero', on the command line --repair-nonfinite)"
    )


def video_from_features(
    features: Any,
    truth: GroundTruth,
    *,
    where: str,
    feature_dim: Optional[int],
    nonfinite: str,
    repaired: list[str],
    timing: Optional[FeatureTiming] = None,
) -> Video:
    """Check one video's feature array and build its :class:`~.data.Video` (RGB = the first half of the
    channels, Flow = the second half).

    Args:
        features: the array as loaded.
        truth: the video's annotations.
        where: the file (and entry) the features came from; it opens every message.
        feature_dim: the expected width ``c`` of a row (None: any even width).
        nonfinite: ``"error"`` refuses a NaN or inf; ``"zero"`` replaces them with 0 and appends the video's
            name to ``repaired`` (the caller warns once for all of them).
        repaired: see ``nonfinite``.
        timing: how the features were sampled (:class:`~.data.FeatureTiming`).

    Raises:
        ValueError: the array is not ``(T, feature_dim)``, has zero snippets, holds values that are not
            numbers, or (``nonfinite="error"``) a NaN or inf after the cast to float32.
    """
    array = isinstance(features, np.ndarray) and features.ndim == 2
    width = features.shape[1] if array else None
    if feature_dim is None and array and (width < 2 or width % 2):
        raise ValueError(
            f"{where} must be a (T, C) array with C even (RGB half, then Flow half), got shape {features.shape}"
        )
    if not array or (feature_dim is not None and width != feature_dim):
        found = f"shape {features.shape}" if isinstance(features, np.ndarray) else type(features).__name__
        raise ValueError(f"{where} must be a (T, {feature_dim or 'C'}) array, got {found}")
    if features.shape[0] == 0:
        raise ValueError(f"{where} has zero snippets")
    try:  # checked for NaN/inf after the cast: float64 values may overflow float32
        with np.errstate(over="ignore"):
            features = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} holds {features.dtype} values, not numbers") from error
    features = _finite(features, where, truth.name, nonfinite, repaired)
    half = features.shape[1] // 2
    return Video(
        name=truth.name,
        rgb=np.ascontiguousarray(features[:, :half]),
        flow=np.ascontiguousarray(features[:, half:]),
        label=truth.label,
        segments=truth.segments,
        segment_classes=truth.segment_classes,
        duration=truth.duration,
        timing=timing,
    )


def check_loader_options(
    max_videos: Optional[int], feature_dim: Optional[int], nonfinite: str, unused: str
) -> None:
    """The options every THUMOS14 loader takes, checked once: ``max_videos`` a positive int or None,
    ``feature_dim`` a positive even int or None (the width of the folder's first video), ``nonfinite``
    ``"error"`` or ``"zero"``, ``unused`` a policy."""
    if max_videos is not None and (
        isinstance(max_videos, bool) or not isinstance(max_videos, int) or max_videos < 1
    ):
        raise ValueError(f"max_videos must be a positive int or None, got {max_videos!r}")
    if feature_dim is not None and (
        isinstance(feature_dim, bool)
        or not isinstance(feature_dim, int)
        or feature_dim < 2
        or feature_dim % 2
    ):
        raise ValueError(
            f"feature_dim must be a positive even int (RGB half + Flow half) or None, got {feature_dim!r}"
        )
    if nonfinite not in ("error", "zero"):
        raise ValueError(f"nonfinite must be 'error' or 'zero', got {nonfinite!r}")
    check_unused_policy(unused)


def check_unused_policy(unused: str) -> None:
    """Refuse an ``unused`` argument outside :data:`UNUSED_POLICIES`."""
    if unused not in UNUSED_POLICIES:
        raise ValueError(f"unused must be 'error' or 'warn', got {unused!r}")


def settle_unused(not_used: Mapping[str, str], unused: str, source: str) -> dict[str, str]:
    """Refuse, or warn about, the annotated videos a run would not use.

    Args:
        not_used: per video name the reason it cannot be used (an unknown subset, no feature file, no label).
        unused: ``"error"`` raises; ``"warn"`` warns, naming the videos and their count.
        source: the annotation file, opening the message.

    Returns:
        ``not_used`` as a dict (for :attr:`~.data.WSTALDataset.not_used`), when nothing was raised.

    Raises:
        ValueError: ``unused="error"`` and ``not_used`` is not empty.
    """
    if not not_used:
        return {}
    listed = "; ".join(f"{name} ({reason})" for name, reason in list(not_used.items())[:_NAMED])
    more = f"; and {len(not_used) - _NAMED} more" if len(not_used) > _NAMED else ""
    if unused == "error":
        raise ValueError(
            f"{source}: {len(not_used)} annotated video(s) would not be used: {listed}{more}; fix the folder, "
            "or leave them out with a warning (unused='warn', on the command line --unused-videos warn)"
        )
    warnings.warn(
        f"{source}: leaving out {len(not_used)} annotated video(s) that cannot be used: {listed}{more}",
        stacklevel=3,
    )
    return dict(not_used)
