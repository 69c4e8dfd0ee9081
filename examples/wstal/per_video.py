"""The per-video THUMOS14 layout of the TAL toolboxes: an ActivityNet-style annotation JSON and one feature
array per video, as ActionFormer's release unpacks it (reused by TriDet and OpenTAD).

Two variants are read, told apart by the annotation file's name::

    data_dir/                                     ActionFormer (happyharrycn/actionformer_release), TriDet
        annotations/thumos14.json                 subsets "Validation" (training) and "Test" (evaluation)
        annotations/category_idx.txt              optional: the class list, one name a line
        i3d_features/<video>.npy                  (t, 2048) float: RGB 0-1023, then Flow 1024-2047

    data_dir/                                     OpenTAD (sming256/OpenTAD)
        annotations/thumos_14_anno.json           subsets "training" (THUMOS validation videos) and
        annotations/category_idx.txt              "validation" (THUMOS test videos)
        features/i3d_actionformer_stride4_thumos/<video>.npy     (or i3d_features/, or features/)

The JSON is ``{"database": {video: {"subset", "duration", "fps", "annotations": [{"label", "segment",
"label_id"}]}}}`` with times in seconds (OpenTAD states ``"frame"``, the frame count, instead of ``"fps"``:
fps = frame / duration). Annotations labelled ``Ambiguous`` are THUMOS's ambiguous regions, not a class. The
class list is ``category_idx.txt`` when present, else the classes ordered by ``label_id``, else by name
(OpenTAD's rule). The weak label of a video is the set of its segments' classes. Keys this project adds
and the toolboxes ignore: top-level ``feature_stride`` and ``feature_window``, per video ``video_labels``
(a weak label that differs from the segments', as ``labels_all.npy`` allows) and ``ambiguous`` (regions).

Feature timing. Feature ``i`` is the I3D output on frames ``[i * stride, i * stride + window)``; the detector
uses the features at their own rate and converts snippet positions to seconds per video through
:class:`~.data.FeatureTiming` (``start = (window - stride) / 2 / fps``, ``step = stride / fps``). Stride and
window come from the JSON's ``feature_stride`` / ``feature_window`` when it has them, fps from each video's
``fps`` (or ``frame``); otherwise from the arguments, whose defaults are the published THUMOS14 I3D features'
(ActionFormer's ``thumos_i3d.yaml``: 16-frame clips every 4 frames, about 30 fps). An argument that
contradicts the JSON is refused.

Per-video arrays are read with ``np.load(allow_pickle=False)``: a pickled array is refused, never
unpickled. Every check of the Thumos14reduced loader holds (:mod:`.checks`), and an annotated video that the
run cannot use (a subset that is neither split, no feature file, no label) is refused or left out with a
warning that names it.

Axis legend: t snippets (time), c channels.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np

from .checks import (
    GroundTruth,
    check_loader_options,
    check_segments,
    settle_unused,
    video_from_features,
)
from .data import FeatureTiming, Video, WSTALDataset, snippet_clock

__all__ = [
    "ACTIONFORMER_JSON",
    "CLASS_FILE",
    "DEFAULT_TIMING",
    "FEATURE_DIRS",
    "OPENTAD_JSON",
    "VARIANTS",
    "PerVideoVariant",
    "find_variant",
    "load_per_video",
    "read_feature_file",
    "write_per_video",
]

PathLike = Union[str, Path]

ACTIONFORMER_JSON = "annotations/thumos14.json"
OPENTAD_JSON = "annotations/thumos_14_anno.json"
CLASS_FILE = "annotations/category_idx.txt"
FEATURE_DIRS = ("i3d_features", "features/i3d_actionformer_stride4_thumos", "features")
"""Where the per-video arrays are looked for, in this order: ActionFormer's folder, OpenTAD's, a bare one."""
AMBIGUOUS = "Ambiguous"
DEFAULT_TIMING = FeatureTiming(fps=30.0, stride=4, window=16)
"""The published THUMOS14 I3D features (ActionFormer's release): 16-frame clips every 4 frames, ~30 fps."""

_NUMBER = (int, float)


class PerVideoVariant(NamedTuple):
    """One toolbox's spelling of the layout: its annotation file and the subset names of the two splits."""

    name: str
    annotation_file: str
    train_subset: str
    test_subset: str


VARIANTS = (
    PerVideoVariant("actionformer", ACTIONFORMER_JSON, "validation", "test"),
    PerVideoVariant("opentad", OPENTAD_JSON, "training", "validation"),
)
"""The variants read; subset names compare case-insensitively (ActionFormer writes "Validation")."""


def find_variant(data_dir: PathLike) -> Optional[PerVideoVariant]:
    """The variant whose annotation file ``data_dir`` holds, or ``None``.

    Raises:
        ValueError: the folder holds both variants' annotation files.
    """
    data_dir = Path(data_dir)
    found = [v for v in VARIANTS if (data_dir / v.annotation_file).is_file()]
    if len(found) > 1:
        raise ValueError(
            f"{data_dir}: holds both {ACTIONFORMER_JSON} and {OPENTAD_JSON}; keep the one that matches the "
            "features"
        )
    return found[0] if found else None


# --------------------------------------------------------------------------------------------------------------
# reading the JSON


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = Counter(key for key, _ in pairs)
    twice = sorted(key for key, count in keys.items() if count > 1)
    if twice:
        raise ValueError(f"key(s) {twice[:3]} appear more than once in one object (a video listed twice?)")
    return dict(pairs)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(), object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text file ({error})") from None
    except ValueError as error:  # a duplicate key
        raise ValueError(f"{path}: {error}") from None
    expected = "expected an ActivityNet-style object with a 'database' object mapping video names to entries"
    if not isinstance(document, dict):
        raise ValueError(
            f"{path}: not an ActivityNet-style annotation file: {expected}, got a JSON {type(document).__name__}"
        )
    if "database" not in document:
        hint = " (this looks like a detection results file)" if "results" in document else ""
        raise ValueError(
            f"{path}: not an ActivityNet-style annotation file{hint}: {expected}, got the keys {sorted(document)[:5]}"
        )
    if not isinstance(document["database"], dict) or not document["database"]:
        raise ValueError(f"{path}: 'database' must be a non-empty object mapping video names to entries")
    return document


def _positive(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _frames(document: dict[str, Any], key: str, given: Optional[int], default: int, path: Path) -> int:
    """Stride or window (frames): the JSON's top-level ``key``, else ``given``, else ``default``."""
    flag = f"--{key.replace('_', '-')}"
    if key in document:
        value = document[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: '{key}' must be a positive int (frames), got {value!r}")
        if given is not None and given != value:
            raise ValueError(
                f"{key}={given} ({flag}) contradicts {path.name}'s '{key}': {value}; the file's value is used "
                "where it states one: drop the argument or edit the file"
            )
        return value
    return default if given is None else given


class _Entry(NamedTuple):
    truth: GroundTruth
    fps: Optional[float]
    ambiguous: list[list[float]]


def _entry(name: str, entry: Any, path: Path, classes: dict[str, int], class_source: str) -> _Entry:
    where = f"{path.name}: video {name!r}"
    if not isinstance(entry, dict):
        raise ValueError(
            f"{where} must be an object with 'subset', 'duration' and 'annotations', got {entry!r}"
        )
    missing = [key for key in ("subset", "duration") if key not in entry]
    if missing:
        raise ValueError(
            f"{where} has no {' or '.join(repr(m) for m in missing)}; ActivityNet-style entries state both"
        )
    subset, duration = entry["subset"], entry["duration"]
    if not isinstance(subset, str):
        raise ValueError(f"{where}: 'subset' must be a string, got {subset!r}")
    if not _positive(duration):
        raise ValueError(f"{where}: 'duration' must be a positive number of seconds, got {duration!r}")
    fps = None
    if "fps" in entry:
        fps = entry["fps"]
        if not _positive(fps):
            raise ValueError(f"{where}: 'fps' must be a positive number, got {fps!r}")
    elif "frame" in entry:  # OpenTAD states the frame count
        if not _positive(entry["frame"]):
            raise ValueError(f"{where}: 'frame' must be a positive frame count, got {entry['frame']!r}")
        fps = entry["frame"] / duration
    annotations = entry.get("annotations", [])
    if not isinstance(annotations, list):
        raise ValueError(f"{where}: 'annotations' must be a list, got {type(annotations).__name__}")
    segments, segment_classes, ambiguous = [], [], []
    for j, item in enumerate(annotations):
        if not isinstance(item, dict) or "label" not in item or "segment" not in item:
            raise ValueError(
                f"{where}: annotation {j} must be an object with 'label' and 'segment', got {item!r}"
            )
        label, segment = item["label"], item["segment"]
        if (
            not isinstance(segment, list)
            or len(segment) != 2
            or not all(isinstance(x, _NUMBER) and not isinstance(x, bool) for x in segment)
        ):
            raise ValueError(
                f"{where}: annotation {j} 'segment' must be [start, end] in seconds, got {segment!r}"
            )
        if label == AMBIGUOUS:
            ambiguous.append([float(x) for x in segment])
            continue
        if not isinstance(label, str) or label not in classes:
            raise ValueError(
                f"{where}: annotation {j} has the label {label!r}, which is not in {class_source}"
            )
        segments.append([float(x) for x in segment])
        segment_classes.append(classes[label])
    extra = entry.get("ambiguous", [])
    if not isinstance(extra, list) or not all(
        isinstance(s, list)
        and len(s) == 2
        and all(isinstance(x, _NUMBER) and not isinstance(x, bool) for x in s)
        for s in extra
    ):
        raise ValueError(f"{where}: 'ambiguous' must be a list of [start, end] pairs, got {extra!r}")
    ambiguous += [[float(x) for x in s] for s in extra]
    segments_array = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    check_segments(segments_array, float(duration), name=name, where=where, duration_from="its 'duration'")
    label_vector = np.zeros(len(classes), dtype=np.float32)
    if "video_labels" in entry:
        video_labels = entry["video_labels"]
        if not isinstance(video_labels, list):
            raise ValueError(f"{where}: 'video_labels' must be a list of class names, got {video_labels!r}")
        unknown = sorted({str(c) for c in video_labels} - classes.keys())
        if unknown:
            raise ValueError(f"{where}: 'video_labels' names {unknown}, not in {class_source}")
        label_vector[[classes[c] for c in video_labels]] = 1.0
    else:
        label_vector[segment_classes] = 1.0
    truth = GroundTruth(
        name,
        subset,
        float(duration),
        segments_array,
        np.asarray(segment_classes, dtype=np.int64),
        label_vector,
    )
    return _Entry(truth, None if fps is None else float(fps), ambiguous)


def _class_list(database: dict[str, Any], data_dir: Path, path: Path) -> tuple[str, ...]:
    """``category_idx.txt`` when present; else the labels ordered by ``label_id``; else by name."""
    class_file = data_dir / CLASS_FILE
    if class_file.is_file():
        names = [line.strip() for line in class_file.read_text().splitlines() if line.strip()]
        twice = sorted(name for name, count in Counter(names).items() if count > 1)
        if not names or twice:
            raise ValueError(
                f"{class_file}: expected one class name a line, each once; got "
                + (f"{twice} more than once" if twice else "no names")
            )
        return tuple(names)
    ids: dict[str, Any] = {}
    without = []
    for name, entry in database.items():
        annotations = entry.get("annotations", []) if isinstance(entry, dict) else []
        for j, item in enumerate(annotations if isinstance(annotations, list) else []):
            if not isinstance(item, dict) or item.get("label") in (None, AMBIGUOUS):
                continue
            label = item["label"]
            if "label_id" not in item:
                without.append(f"{name!r} annotation {j}")
                continue
            label_id = item["label_id"]
            if isinstance(label_id, bool) or not isinstance(label_id, int):
                raise ValueError(
                    f"{path.name}: video {name!r} annotation {j}: 'label_id' must be an int, got {label_id!r}"
                )
            if ids.setdefault(label, label_id) != label_id:
                raise ValueError(
                    f"{path.name}: video {name!r} annotation {j}: the label {label!r} has label_id {label_id}, "
                    f"elsewhere {ids[label]}"
                )
    if ids and without:
        raise ValueError(
            f"{path.name}: some annotations have a 'label_id' and some do not, e.g. {without[0]}"
        )
    if not ids:
        labels = {
            item["label"]
            for entry in database.values()
            if isinstance(entry, dict) and isinstance(entry.get("annotations", []), list)
            for item in entry.get("annotations", [])
            if isinstance(item, dict) and isinstance(item.get("label"), str) and item["label"] != AMBIGUOUS
        }
        return tuple(sorted(labels))
    shared = sorted(i for i, n in Counter(ids.values()).items() if n > 1)
    if shared:
        raise ValueError(
            f"{path.name}: label_id {shared[0]} is given to several labels: "
            f"{sorted(label for label, i in ids.items() if i == shared[0])}"
        )
    return tuple(sorted(ids, key=ids.__getitem__))


def _feature_dir(data_dir: Path) -> Path:
    for name in FEATURE_DIRS:
        if (data_dir / name).is_dir():
            return data_dir / name
    raise FileNotFoundError(
        f"{data_dir}: no feature folder: expected one of {', '.join(f'{n}/' for n in FEATURE_DIRS)} "
        "holding one <video>.npy per video"
    )


def read_feature_file(path: Path, rel: str, feature_dim: Union[int, str]) -> np.ndarray:
    """A plain ``.npy`` array, read with ``allow_pickle=False``: a pickle is refused, never loaded; ``rel``
    names the file in errors, ``feature_dim`` the width a refused pickle should have had. The per-video
    layout's reader and :func:`wstal.new_videos.read_videos` read each feature file with it."""
    with path.open("rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise ValueError(f"{rel}: not a readable .npy file (no .npy header)")
        handle.seek(0)
        try:
            return np.lib.format.read_array(handle, allow_pickle=False)
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise ValueError(
                    f"{rel}: holds a pickled object array; a per-video feature file must be a plain "
                    f"(T, {feature_dim}) numeric array (np.save(path, features.astype(np.float32))), and pickles "
                    "are never loaded"
                ) from None
            raise ValueError(f"{rel}: not a readable .npy file ({error})") from None
        except (OSError, EOFError) as error:
            raise ValueError(f"{rel}: not a readable .npy file ({error})") from None


# --------------------------------------------------------------------------------------------------------------
# loading


def load_per_video(
    data_dir: PathLike,
    *,
    max_videos: int | None = None,
    feature_dim: Optional[int] = None,
    nonfinite: str = "error",
    unused: str = "error",
    feature_stride: Optional[int] = None,
    feature_window: Optional[int] = None,
    feature_fps: Optional[float] = None,
) -> WSTALDataset:
    """Load THUMOS14 features and annotations from the per-video layout (either variant, see the module).

    Args:
        data_dir: the folder holding ``annotations/`` and the feature folder.
        max_videos: keep only the first ``max_videos`` videos of each split (JSON order); ``None`` keeps all.
        feature_dim: width of one feature row; the first half is RGB, the second half Flow; ``None``: the width
            of the first video read, which every other video must have (I3D: 2048).
        nonfinite: ``"error"`` refuses a NaN or inf in a video's features; ``"zero"`` replaces them with 0 and
            warns, naming the videos.
        unused: what an annotated video that the run cannot use does (a subset that is neither split, no
            feature file, no label): ``"error"`` refuses the folder naming them; ``"warn"`` leaves them out
            with a warning naming them and their count (they are listed in ``not_used``).
        feature_stride: frames between two features, where the JSON has no ``feature_stride``
            (``None``: 4, :data:`DEFAULT_TIMING`).
        feature_window: frames of one feature's clip, where the JSON has no ``feature_window`` (``None``: 16).
        feature_fps: frames per second of the videos the features were computed on, for every video without
            ``fps`` or ``frame`` in the JSON (``None``: 30, with a warning when it is used).

    Returns:
        The dataset; every video carries its :class:`~.data.FeatureTiming`; ``snippet_seconds`` is the most
        common snippet length among them.

    Raises:
        FileNotFoundError: the folder, the annotation file or the feature folder is missing.
        ValueError: the JSON is not ActivityNet-style or lists a video twice; an entry lacks ``subset`` or
            ``duration``, states ``fps`` for some videos and not others, or a bad value; a label is not in
            the class list; a segment is reversed, negative or past the duration; an argument contradicts
            the JSON; a feature file is pickled, unreadable, not ``(T, feature_dim)``, empty or (with
            ``nonfinite="error"``) not finite; a split is empty; (with ``unused="error"``) an annotated video
            cannot be used.
    """
    check_loader_options(max_videos, feature_dim, nonfinite, unused)
    for name, value in (("feature_stride", feature_stride), ("feature_window", feature_window)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int (frames) or None, got {value!r}")
    if feature_fps is not None and not _positive(feature_fps):
        raise ValueError(f"feature_fps must be a positive number or None, got {feature_fps!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: THUMOS14 data folder not found")
    variant = find_variant(data_dir)
    if variant is None:
        raise FileNotFoundError(
            f"{data_dir}: no {ACTIONFORMER_JSON} (ActionFormer) or {OPENTAD_JSON} (OpenTAD)"
        )
    path = data_dir / variant.annotation_file
    document = _read_json(path)
    database: dict[str, Any] = document["database"]
    stride = _frames(document, "feature_stride", feature_stride, DEFAULT_TIMING.stride, path)
    window = _frames(document, "feature_window", feature_window, DEFAULT_TIMING.window, path)
    classes = _class_list(database, data_dir, path)
    if not classes:
        raise ValueError(f"{path}: no action is annotated in any video, so there is no class list")
    class_index = {c: i for i, c in enumerate(classes)}
    class_source = CLASS_FILE if (data_dir / CLASS_FILE).is_file() else "the class list (its label_id values)"
    entries = [_entry(name, entry, path, class_index, class_source) for name, entry in database.items()]
    fps = _fps(entries, feature_fps, path)
    feature_dir = _feature_dir(data_dir)
    roles = {variant.train_subset: "training", variant.test_subset: "test"}

    not_used = {}
    for entry in entries:
        truth = entry.truth
        file = feature_dir / f"{truth.name}.npy"
        if truth.subset.lower() not in roles:
            not_used[truth.name] = (
                f"subset {truth.subset!r} is neither {variant.train_subset!r} (training) nor "
                f"{variant.test_subset!r} (test) of the {variant.name} layout"
            )
        elif not truth.has_label:
            not_used[truth.name] = "no label: no action annotated"
        elif not file.is_file():
            not_used[truth.name] = f"no feature file {file.relative_to(data_dir)}"
    not_used = settle_unused(not_used, unused, str(path))

    repaired: list[str] = []
    far: list[str] = []
    width = [feature_dim]  # the row width: given, or the first video's

    def split(subset: str) -> list[Video]:
        chosen = [e for e in entries if e.truth.subset.lower() == subset and e.truth.name not in not_used]
        if not chosen:
            found = sorted({e.truth.subset for e in entries})
            raise ValueError(
                f"{path}: no {roles[subset]} videos: no usable video is in the {subset!r} subset "
                f"(subsets found: {found})"
            )
        videos = []
        for entry in chosen[:max_videos]:
            truth = entry.truth
            file = feature_dir / f"{truth.name}.npy"
            rel = str(file.relative_to(data_dir))
            timing = FeatureTiming(fps[truth.name], stride, window)
            video = video_from_features(
                read_feature_file(file, rel, width[0] or "2C"),
                truth,
                where=rel,
                feature_dim=width[0],
                nonfinite=nonfinite,
                repaired=repaired,
                timing=timing,
            )
            width[0] = 2 * video.rgb.shape[1]  # every other video must be as wide as the first
            span = ((video.num_snippets - 1) * stride + window) / timing.fps
            if not 0.5 <= span / truth.duration <= 2.0:
                far.append(
                    f"{truth.name} ({video.num_snippets} features span {span:.1f} s, duration {truth.duration:g} s)"
                )
            videos.append(video)
        return videos

    train, test = split(variant.train_subset), split(variant.test_subset)
    if repaired:
        warnings.warn(
            f"{feature_dir}: replaced NaN/inf feature values with 0 in {len(repaired)} video(s): "
            f"{', '.join(repaired[:5])}{', ...' if len(repaired) > 5 else ''}",
            stacklevel=2,
        )
    if far:
        warnings.warn(
            f"{feature_dir}: {len(far)} video(s) whose features span less than half or more than twice their "
            f"duration at {stride}-frame steps over {window}-frame clips: {'; '.join(far[:5])}"
            f"{'; ...' if len(far) > 5 else ''}. Are the stride and fps right (--feature-stride, --feature-fps)?",
            stacklevel=2,
        )
    ambiguous = {
        e.truth.name: np.asarray(e.ambiguous, dtype=np.float64).reshape(-1, 2) for e in entries if e.ambiguous
    }
    if not ambiguous:
        warnings.warn(
            f"{path}: no Ambiguous annotations, so the THUMOS Ambiguous filter is off (right for data without "
            "them; THUMOS14's are annotations labelled 'Ambiguous' or a video entry's 'ambiguous' list)",
            stacklevel=2,
        )
    lengths = Counter(snippet_clock(v)[0] for v in [*train, *test])
    return WSTALDataset(
        classes=classes,
        train=train,
        test=test,
        ambiguous=ambiguous,
        snippet_seconds=lengths.most_common(1)[0][0],
        not_used=not_used,
        evaluation_protocol="thumos",
    )


def _fps(entries: list[_Entry], given: Optional[float], path: Path) -> dict[str, float]:
    """Each video's fps: the JSON's, else ``given``, else :data:`DEFAULT_TIMING`'s (with a warning)."""
    stated = [e for e in entries if e.fps is not None]
    if stated and len(stated) < len(entries):
        missing = [e.truth.name for e in entries if e.fps is None]
        raise ValueError(
            f"{path.name}: video {missing[0]!r} has no 'fps' (nor 'frame'), while {len(stated)} other video(s) "
            f"state theirs ({len(missing)} without); the snippet times depend on it: add it"
        )
    if stated:
        if given is not None:
            differ = [e for e in stated if e.fps != given]
            if differ:
                raise ValueError(
                    f"feature_fps={given:g} (--feature-fps) contradicts the fps {path.name} states for "
                    f"{len(differ)} video(s), e.g. {differ[0].truth.name!r}: {differ[0].fps:g}; the file's "
                    "values are used where it states them: drop the argument or edit the file"
                )
        return {e.truth.name: float(e.fps) for e in stated}
    if given is None:
        warnings.warn(
            f"{path.name} states no fps: assuming {DEFAULT_TIMING.fps:g} fps for every video (the published "
            "THUMOS14 features'); pass --feature-fps to state it",
            stacklevel=3,
        )
        given = DEFAULT_TIMING.fps
    return {e.truth.name: float(given) for e in entries}


# --------------------------------------------------------------------------------------------------------------
# writing


def write_per_video(dataset: WSTALDataset, out_dir: PathLike) -> Path:
    """Write ``dataset`` in the per-video layout, ActionFormer's variant (what :func:`load_per_video` and
    ActionFormer's THUMOS14 loader read).

    ``annotations/thumos14.json`` gets ``feature_stride``, ``feature_window`` and per video ``subset``
    (``Validation`` for training videos, ``Test`` for test videos), ``duration``, ``fps``, ``annotations``
    (``label``, ``segment``, ``label_id``), ``video_labels`` (the weak label) and, where there are any,
    ``ambiguous``; ``annotations/category_idx.txt`` the class list; ``i3d_features/<video>.npy`` one
    ``(T, c_rgb + c_flow)`` float32 array per video, RGB first, saved without pickling. Videos without a
    :class:`~.data.FeatureTiming` (synthetic data) are written as 16-frame snippets at 25 fps, which is what
    ``snippet_seconds = 0.64`` means.

    Args:
        dataset: the videos to write.
        out_dir: a new or empty folder.

    Returns:
        ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
        ValueError: the videos' stride or window differ (the JSON states one of each), or a video without a
            timing has a snippet length other than 0.64 s.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: the output folder exists and is not empty; choose a new folder")
    videos = [*dataset.train, *dataset.test]
    timings = {}
    for video in videos:
        timing = video.timing
        if timing is None:
            if dataset.snippet_seconds != 16 / 25:
                raise ValueError(
                    f"video {video.name!r} has no FeatureTiming and the dataset's snippets are "
                    f"{dataset.snippet_seconds:g} s, not 16 frames at 25 fps: state its timing"
                )
            timing = FeatureTiming(25.0, 16, 16)
        timings[video.name] = timing
    frames = {(t.stride, t.window) for t in timings.values()}
    if len(frames) > 1:
        raise ValueError(
            f"the videos' (stride, window) differ, {sorted(frames)}; the JSON states one of each"
        )
    ((stride, window),) = frames
    classes = dataset.classes
    database = {}
    for video, subset in [*((v, "Validation") for v in dataset.train), *((v, "Test") for v in dataset.test)]:
        entry: dict[str, Any] = {
            "subset": subset,
            "duration": video.duration,
            "fps": float(timings[video.name].fps),
            "annotations": [
                {"label": classes[c], "segment": [start, end], "label_id": c}
                for (start, end), c in zip(video.segments.tolist(), video.segment_classes.tolist())
            ],
            "video_labels": [classes[c] for c in np.flatnonzero(video.label).tolist()],
        }
        spans = dataset.ambiguous.get(video.name)
        if spans is not None and len(spans):
            entry["ambiguous"] = np.asarray(spans, dtype=np.float64).reshape(-1, 2).tolist()
        database[video.name] = entry
    left = sorted(set(dataset.ambiguous) - set(database))
    if left:
        warnings.warn(
            f"ambiguous regions of {len(left)} video(s) that are not in the dataset are not written, "
            f"e.g. {left[:3]}",
            stacklevel=2,
        )
    document = {
        "version": "THUMOS14, per-video layout (ActionFormer's), written by dmf-fusion",
        "feature_stride": stride,
        "feature_window": window,
        "database": database,
    }
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    (out_dir / ACTIONFORMER_JSON).write_text(json.dumps(document))
    (out_dir / CLASS_FILE).write_text("".join(f"{c}\n" for c in classes))
    feature_dir = out_dir / FEATURE_DIRS[0]
    feature_dir.mkdir()
    for video in videos:
        features = np.concatenate([video.rgb, video.flow], axis=1).astype(np.float32, copy=False)
        np.save(feature_dir / f"{video.name}.npy", features, allow_pickle=False)
    return out_dir
