"""Videos without annotations, for detection: per-video feature files or a Thumos14reduced joint file, read
and checked against the features a trained detector takes (:class:`~wstal.trained.FeatureSpec`).

Two sources, as the data layouts hold them (:mod:`.per_video`, :mod:`.thumos`):

* a folder of ``<video>.npy`` files, each a plain ``(t, c_rgb + c_flow)`` array, RGB first (or a
  per-video layout's root, whose ``i3d_features/`` folder holds them);
* a Thumos14reduced ``Thumos14reduced-I3D-JOINTFeatures.npy`` object array, read without running code
  (:func:`~wstal.thumos.safe_load_object_array`), its videos named by the ``videoname.npy`` of the
  ``Thumos14reduced-Annotations/`` folder beside it, or ``entry_<i>`` without one.

Every array is checked before any is used, and refused with a ``ValueError`` naming the file (and the
entry) and what was expected: not a plain numeric ``.npy``, the wrong shape or width, fewer than
:data:`MIN_SNIPPETS` snippets, a NaN or an infinity.

Axis legend: t snippets, c channels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from .data import Video
from .per_video import FEATURE_DIRS, read_feature_file
from .thumos import ANNOTATIONS_DIR, safe_load_object_array
from .trained import FeatureSpec

__all__ = ["MIN_SNIPPETS", "check_features", "read_videos"]

MIN_SNIPPETS = 1
"""The fewest snippets a video may have: every network runs on a single snippet; an empty array has nothing
to detect in."""

PathLike = Union[str, "os.PathLike[str]"]


def check_features(features: np.ndarray, spec: FeatureSpec, where: str) -> np.ndarray:
    """``features`` as float32 if they are ``(t, spec.width)``, finite, with ``t >= MIN_SNIPPETS``; else a
    ``ValueError`` that names ``where``, what was expected and what was received."""
    expected = f"(T, {spec.width}) features ({spec.rgb_dim} RGB + {spec.flow_dim} Flow channels, what the detector takes)"
    if not isinstance(features, np.ndarray) or features.dtype.kind not in "fiu":
        kind = features.dtype if isinstance(features, np.ndarray) else type(features).__name__
        raise ValueError(f"{where}: expected {expected}, got an array of {kind}")
    if features.ndim != 2 or features.shape[1] != spec.width:
        raise ValueError(f"{where}: expected {expected}, got shape {features.shape}")
    if features.shape[0] < MIN_SNIPPETS:
        raise ValueError(
            f"{where}: the video is too short: {features.shape[0]} snippet(s), the detector needs at least {MIN_SNIPPETS}"
        )
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise ValueError(
            f"{where}: {int(bad.sum())} NaN/inf value(s) in {rows.size} snippet(s), the first at snippet {rows[0]}"
        )
    return features.astype(np.float32, copy=False)


def _video(name: str, features: np.ndarray, spec: FeatureSpec) -> Video:
    rgb, flow = features[:, : spec.rgb_dim], features[:, spec.rgb_dim :]
    empty = np.zeros((0, 2))
    duration = features.shape[0] * spec.snippet_seconds
    return Video(name, rgb, flow, np.zeros(1), empty, np.zeros(0, np.int64), duration=duration)


def read_videos(source: PathLike, spec: FeatureSpec) -> list[Video]:
    """The videos of ``source`` (a folder of ``<video>.npy`` files, or a Thumos14reduced joint ``.npy``
    file), in name order (file order for a joint file), checked against ``spec``; without labels or
    ground truth.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: no feature file, or a file or entry that :func:`check_features` refuses (named).
    """
    source = Path(source)
    if source.is_file():
        return _read_joint(source, spec)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder or file")
    folder = next((source / d for d in FEATURE_DIRS if (source / d).is_dir()), source)
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise ValueError(f"{folder}: no <video>.npy feature files")
    return [
        _video(f.stem, check_features(read_feature_file(f, str(f), spec.width), spec, str(f)), spec)
        for f in files
    ]


def _read_joint(path: Path, spec: FeatureSpec) -> list[Video]:
    try:
        entries = safe_load_object_array(path)
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy file ({error})") from None
    if entries.dtype != object:  # one plain array: a single video's features
        return [_video(path.stem, check_features(entries, spec, str(path)), spec)]
    if entries.ndim != 1 or len(entries) == 0:
        raise ValueError(
            f"{path}: expected a 1-d object array of per-video features, got shape {entries.shape}"
        )
    names = [f"entry_{i}" for i in range(len(entries))]
    listed = path.parent / ANNOTATIONS_DIR / "videoname.npy"
    if listed.is_file():
        found = [
            n.decode() if isinstance(n, bytes) else str(n) for n in safe_load_object_array(listed).tolist()
        ]
        if len(found) != len(entries):
            raise ValueError(f"{listed}: {len(found)} names for the {len(entries)} videos of {path}")
        names = found
    return [
        _video(name, check_features(np.asarray(f), spec, f"{path}: video {name!r} (entry {i})"), spec)
        for i, (name, f) in enumerate(zip(names, entries))
    ]
