"""Data structures shared by the real THUMOS14 loader, the synthetic generator and the evaluator.

A video is a sequence of I3D snippets (16 frames at 25 fps, 0.64 s each) with one RGB and one optical-flow
feature vector per snippet, a video-level multi-hot label (the only supervision WSTAL trains on) and the
ground-truth action instances (used for evaluation only). Both data sources produce exactly these
structures, so everything downstream is data-agnostic.

Axis legend: t snippets (time), c channels, k classes, n ground-truth instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Union

import numpy as np
import numpy.typing as npt

__all__ = [
    "EVALUATION_PROTOCOLS",
    "SNIPPET_SECONDS",
    "FeatureTiming",
    "Video",
    "WSTALDataset",
    "seconds_to_snippets",
    "snippet_clock",
    "snippets_to_seconds",
]

SNIPPET_SECONDS = 16 / 25
"""Length of one I3D snippet in seconds: 16 frames at 25 fps."""


EVALUATION_PROTOCOLS = ("plain", "thumos")
"""The evaluation protocols a dataset can name (:attr:`WSTALDataset.evaluation_protocol`)."""


def _check_snippet_seconds(snippet_seconds: float) -> None:
    if not (
        isinstance(snippet_seconds, (int, float)) and np.isfinite(snippet_seconds) and snippet_seconds > 0
    ):
        raise ValueError(f"snippet_seconds must be a positive finite number, got {snippet_seconds!r}")


def seconds_to_snippets(
    t: npt.ArrayLike, snippet_seconds: float = SNIPPET_SECONDS
) -> Union[float, np.ndarray]:
    """Convert times in seconds to fractional snippet positions (``t / snippet_seconds``).

    Nothing is rounded: snippet ``i`` covers ``[i, i + 1)``, so ``floor`` gives the index of the snippet
    that contains ``t`` and ``round`` the nearest snippet boundary (the THUMOS evaluation convention).

    Args:
        t: a time or an array of times in seconds.
        snippet_seconds: length of one snippet in seconds.

    Returns:
        A float for a scalar input, otherwise a float64 array of the input's shape.

    Example:
        >>> seconds_to_snippets(3.2)
        5.0
        >>> seconds_to_snippets([0.0, 0.64, 1.6]).tolist()
        [0.0, 1.0, 2.5]
    """
    _check_snippet_seconds(snippet_seconds)
    out = np.asarray(t, dtype=np.float64) / snippet_seconds
    return float(out) if out.ndim == 0 else out


def snippets_to_seconds(
    s: npt.ArrayLike, snippet_seconds: float = SNIPPET_SECONDS
) -> Union[float, np.ndarray]:
    """Convert snippet positions to seconds (``s * snippet_seconds``), the inverse of :func:`seconds_to_snippets`.

    Args:
        s: a snippet position or an array of them (snippet ``i`` starts at ``i``).
        snippet_seconds: length of one snippet in seconds.

    Returns:
        A float for a scalar input, otherwise a float64 array of the input's shape.

    Example:
        >>> snippets_to_seconds(5)
        3.2
    """
    _check_snippet_seconds(snippet_seconds)
    out = np.asarray(s, dtype=np.float64) * snippet_seconds
    return float(out) if out.ndim == 0 else out


class FeatureTiming(NamedTuple):
    """How a video's feature sequence was sampled: one feature every ``stride`` frames, each computed over a
    ``window``-frame clip, at ``fps`` frames per second.

    Feature ``i`` covers frames ``[i * stride, i * stride + window)``; its centre is frame
    ``i * stride + window / 2``. The detector works in snippet positions (snippet ``i`` spans ``[i, i + 1)``,
    its centre ``i + 0.5``), so position ``p`` is at ``start_seconds + p * snippet_seconds`` seconds, which
    puts every snippet centre on its feature's centre. The Thumos14reduced features (16-frame clips every 16
    frames at 25 fps) give 0.64 s per snippet from 0 s; ActionFormer's THUMOS14 I3D features (16-frame clips
    every 4 frames at about 30 fps) give 4/30 s per snippet from 6/30 = 0.2 s.

    Example:
        >>> t = FeatureTiming(fps=30.0, stride=4, window=16)
        >>> round(t.snippet_seconds, 4), round(t.start_seconds, 4)
        (0.1333, 0.2)
        >>> FeatureTiming(25.0, 16, 16).snippet_seconds == SNIPPET_SECONDS
        True
    """

    fps: float
    stride: int
    window: int

    @property
    def snippet_seconds(self) -> float:
        """Seconds between two features: ``stride / fps``."""
        return self.stride / self.fps

    @property
    def start_seconds(self) -> float:
        """Time of snippet position 0: ``(window - stride) / 2 / fps``, 0 for non-overlapping clips."""
        return (self.window - self.stride) / (2 * self.fps)


def _check_timing(timing: FeatureTiming, where: str) -> None:
    if not isinstance(timing, FeatureTiming):
        raise TypeError(f"{where}: timing must be a FeatureTiming or None, got {type(timing).__name__}")
    fps, stride, window = timing
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"{where}: timing.fps must be a positive finite number, got {fps!r}")
    for name, value in (("stride", stride), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{where}: timing.{name} must be a positive int (frames), got {value!r}")


def snippet_clock(video: Video, snippet_seconds: float = SNIPPET_SECONDS) -> tuple[float, float]:
    """``(snippet_seconds, start_seconds)`` of ``video``: from its :class:`FeatureTiming` when it has one,
    else ``(snippet_seconds, 0.0)``. Snippet position ``p`` is at ``start_seconds + p * snippet_seconds``.

    Example:
        >>> v = Video("v", np.zeros((5, 4)), np.zeros((5, 4)), np.ones(1), [], [], duration=3.2)
        >>> snippet_clock(v)
        (0.64, 0.0)
    """
    if video.timing is None:
        _check_snippet_seconds(snippet_seconds)
        return float(snippet_seconds), 0.0
    return video.timing.snippet_seconds, video.timing.start_seconds


def _as_array(
    name: str,
    value: npt.ArrayLike,
    dtype: type[np.generic],
    ndim: int,
    *,
    empty_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be convertible to a {np.dtype(dtype)} array, got {type(value).__name__}"
        ) from error
    if array.size == 0 and empty_shape is not None:
        array = array.reshape(empty_shape)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    return array


@dataclass(frozen=True, eq=False)
class Video:
    """One untrimmed video: snippet features, weak label and ground truth.

    Arrays are converted to the documented dtypes on construction (no copy when they already match) and
    their shapes are checked against each other. Equality is identity (arrays have no single truth value).

    Attributes:
        name: video name, e.g. ``"video_test_0000004"``.
        rgb: RGB features.
        flow: optical-flow features, the same number of snippets as ``rgb``.
        label: multi-hot video-level label (the weak supervision).
        segments: ground-truth ``[start, end]`` in seconds; ``N`` may be 0.
        segment_classes: class index of each ground-truth segment.
        duration: video length in seconds.
        timing: how the features were sampled (:class:`FeatureTiming`), which fixes the time of every
            snippet; ``None`` (synthetic data) means the dataset's ``snippet_seconds`` from 0 s.

    Shape:
        - rgb: ``(t, c_rgb)`` float32
        - flow: ``(t, c_flow)`` float32
        - label: ``(k,)`` float32
        - segments: ``(n, 2)`` float64
        - segment_classes: ``(n,)`` int64

    Example:
        >>> v = Video("v", np.zeros((5, 4)), np.zeros((5, 4)), np.array([0.0, 1.0]),
        ...           np.array([[0.64, 1.92]]), np.array([1]), duration=3.2)
        >>> v.num_snippets, v.rgb.dtype, v.segments.shape
        (5, dtype('float32'), (1, 2))
    """

    name: str
    rgb: np.ndarray
    flow: np.ndarray
    label: np.ndarray
    segments: np.ndarray
    segment_classes: np.ndarray
    duration: float
    timing: Optional[FeatureTiming] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")
        if self.timing is not None:
            _check_timing(self.timing, f"video {self.name!r}")
        rgb = _as_array("rgb", self.rgb, np.float32, 2)
        flow = _as_array("flow", self.flow, np.float32, 2)
        label = _as_array("label", self.label, np.float32, 1)
        segments = _as_array(
            "segments", self.segments, np.float64, 2, empty_shape=(0, 2)
        )  # [] = no ground truth
        segment_classes = _as_array("segment_classes", self.segment_classes, np.int64, 1)
        if rgb.shape[0] != flow.shape[0]:
            raise ValueError(
                f"video {self.name!r}: rgb and flow must have the same number of snippets, "
                f"got rgb {rgb.shape} and flow {flow.shape}"
            )
        if rgb.shape[0] == 0:
            raise ValueError(f"video {self.name!r}: has zero snippets (rgb shape {rgb.shape})")
        if segments.shape[1] != 2:
            raise ValueError(f"video {self.name!r}: segments must have shape (N, 2), got {segments.shape}")
        if segment_classes.shape[0] != segments.shape[0]:
            raise ValueError(
                f"video {self.name!r}: segment_classes must have one entry per segment, "
                f"got {segment_classes.shape[0]} classes for {segments.shape[0]} segments"
            )
        if not np.all(np.isfinite(segments)) or np.any(segments[:, 1] < segments[:, 0]):
            raise ValueError(
                f"video {self.name!r}: segments must be finite with end >= start, got {segments.tolist()}"
            )
        if np.any(segment_classes < 0) or np.any(segment_classes >= label.shape[0]):
            raise ValueError(
                f"video {self.name!r}: segment_classes must lie in [0, {label.shape[0]}) "
                f"(the label length), got {segment_classes.tolist()}"
            )
        if not (np.isfinite(self.duration) and self.duration > 0):
            raise ValueError(
                f"video {self.name!r}: duration must be a positive finite number, got {self.duration!r}"
            )
        object.__setattr__(self, "rgb", rgb)
        object.__setattr__(self, "flow", flow)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "segment_classes", segment_classes)
        object.__setattr__(self, "duration", float(self.duration))

    @property
    def num_snippets(self) -> int:
        """Number of snippets ``t``."""
        return int(self.rgb.shape[0])


@dataclass(frozen=True, eq=False)
class WSTALDataset:
    """A WSTAL benchmark: class names, a training and a test split, and ambiguous regions.

    Attributes:
        classes: class names in class-index order.
        train: training videos (THUMOS14: the ``validation`` subset, 200 videos).
        test: evaluation videos (THUMOS14: the ``test`` subset, 212 videos).
        ambiguous: per test video the ``(M, 2)`` regions in seconds that THUMOS marks ambiguous
            (empty for synthetic data); see ``evaluate_detections(ambiguous=...)``.
        snippet_seconds: length of one snippet in seconds, for the videos without their own
            :class:`FeatureTiming`.
        not_used: the annotated videos the loader left out, by name, with the reason (an unknown subset, no
            feature file, no label); empty unless the loader was told to leave them out with a warning.
        evaluation_protocol: how the data are evaluated, a property of the data source: ``plain``
            (seconds, no filter) or ``thumos`` (snippet units and the ambiguous-region filter, the
            community's THUMOS14 conventions; the THUMOS14 loaders set it).

    Every video's label must have ``len(classes)`` entries and all videos the same feature widths.
    """

    classes: tuple[str, ...]
    train: list[Video]
    test: list[Video]
    ambiguous: dict[str, np.ndarray]
    snippet_seconds: float = SNIPPET_SECONDS
    not_used: Mapping[str, str] = field(default_factory=dict)
    evaluation_protocol: str = "plain"

    def __post_init__(self) -> None:
        _check_snippet_seconds(self.snippet_seconds)
        if self.evaluation_protocol not in EVALUATION_PROTOCOLS:
            raise ValueError(
                f"evaluation_protocol must be one of {', '.join(map(repr, EVALUATION_PROTOCOLS))}, "
                f"got {self.evaluation_protocol!r}"
            )
        if not self.classes:
            raise ValueError("classes must not be empty")
        videos = [*self.train, *self.test]
        if not videos:
            raise ValueError("the dataset has no videos: train and test are both empty")
        widths = {(v.rgb.shape[1], v.flow.shape[1]) for v in videos}
        if len(widths) != 1:
            raise ValueError(
                f"all videos must have the same (rgb, flow) feature widths, got {sorted(widths)}"
            )
        for video in videos:
            if video.label.shape[0] != len(self.classes):
                raise ValueError(
                    f"video {video.name!r}: label has {video.label.shape[0]} entries, "
                    f"expected {len(self.classes)} (one per class)"
                )

    @property
    def num_classes(self) -> int:
        """Number of classes ``k``."""
        return len(self.classes)

    def video_counts(self) -> dict[str, object]:
        """How many videos each split holds, and the annotated videos left out (name: reason), for
        results files.

        Example:
            >>> v = Video("v", np.zeros((5, 4)), np.zeros((5, 4)), np.ones(1), [], [], duration=3.2)
            >>> WSTALDataset(("a",), [v], [], {}, not_used={"w": "no feature file"}).video_counts()
            {'train': 1, 'test': 0, 'not_used': {'w': 'no feature file'}}
        """
        return {"train": len(self.train), "test": len(self.test), "not_used": dict(self.not_used)}

    @property
    def rgb_dim(self) -> int:
        """RGB feature width ``c_rgb``."""
        return int((self.train or self.test)[0].rgb.shape[1])

    @property
    def flow_dim(self) -> int:
        """Optical-flow feature width ``c_flow``."""
        return int((self.train or self.test)[0].flow.shape[1])
