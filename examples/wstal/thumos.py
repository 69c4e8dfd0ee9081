"""Loader (and writer) for the real THUMOS14 I3D features in the ``Thumos14reduced`` layout most WSTAL code
reads. The per-video layout of the TAL toolboxes is :mod:`.per_video`; :mod:`.layouts` picks the loader.

The layout (W-TALC, CO2-Net, P-MIL, ...)::

    data_dir/
        Thumos14reduced-I3D-JOINTFeatures.npy     object array, per video (t, 2048) float: RGB 0-1023, Flow 1024-2047
        Thumos14reduced-Annotations/
            videoname.npy  subset.npy  classlist.npy  duration.npy
            segments.npy  labels.npy  labels_all.npy  Ambiguous_test.txt

Split convention: THUMOS14 ``validation`` videos (200) are the training split, ``test`` videos (212) the
evaluation split. Ground truth is kept exactly as in the files, including the second copy of every
CliffDiving segment labelled Diving (the community's "CliffDiving is also Diving" convention); nothing is
added or removed. The video-level label is ``labels_all.npy``, as W-TALC and its descendants use it.

Broken folders are refused with a ``ValueError`` (or ``FileNotFoundError``) that names the file, the video
or the split: non-finite features (unless ``nonfinite="zero"`` repairs them), an empty split, duplicate
video names, reversed or negative segments, segments past the video's duration (see
:data:`SEGMENT_TOLERANCE`; the public annotations' own errata are kept), feature arrays of the wrong
width or length, and (unless ``unused="warn"`` leaves them out with a warning) annotated videos that no
split would use: a subset other than ``validation`` and ``test``, or neither a label nor a segment.
docs/reproduce_thumos14.md lists them.

The object arrays are pickles. ``np.load(allow_pickle=True)`` would run whatever code a crafted file asks
for, so :func:`safe_load_object_array` unpickles with an allow-list: numpy arrays, lists/tuples and plain
scalars (str, bytes, int, float, bool, None, numpy scalars) and nothing else.

Axis legend: t snippets (time), c channels.
"""

from __future__ import annotations

import pickle
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

import numpy as np

from .checks import (
    SEGMENT_TOLERANCE,
    GroundTruth,
    check_loader_options,
    check_segments,
    settle_unused,
    video_from_features,
)
from .data import SNIPPET_SECONDS, FeatureTiming, Video, WSTALDataset, snippet_clock

__all__ = [
    "ANNOTATIONS_DIR",
    "FEATURES_FILE",
    "SEGMENT_TOLERANCE",
    "TEST_SUBSET",
    "THUMOS14_REDUCED_TIMING",
    "TRAIN_SUBSET",
    "GroundTruth",
    "load_thumos14",
    "read_ground_truth",
    "safe_load_object_array",
    "write_thumos14",
]

FEATURES_FILE = "Thumos14reduced-I3D-JOINTFeatures.npy"
ANNOTATIONS_DIR = "Thumos14reduced-Annotations"
TRAIN_SUBSET = "validation"
TEST_SUBSET = "test"
_ANNOTATION_FILES = ("videoname", "subset", "classlist", "duration", "segments", "labels", "labels_all")
_AMBIGUOUS_FILE = "Ambiguous_test.txt"
_SPLIT_ROLES = {TRAIN_SUBSET: "training", TEST_SUBSET: "test"}

THUMOS14_REDUCED_TIMING = FeatureTiming(fps=25.0, stride=16, window=16)
"""The Thumos14reduced features: one snippet per 16 frames at 25 fps (0.64 s), non-overlapping clips."""

PathLike = Union[str, Path]


# --------------------------------------------------------------------------------------------------------------
# restricted unpickling


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 pickles ``bytes`` at protocol < 3 as ``_codecs.encode(text, "latin1")``; allow only that.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(
            f"_codecs.encode is only allowed with latin1 text, got encoding {encoding!r}"
        )
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    # numpy >= 2 moved ``numpy.core`` to ``numpy._core``; files written by either name the one they had.
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the handful of numpy globals that arrays and scalars need."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only numpy arrays, lists and plain scalars are allowed"
            ) from None


_PLAIN_SCALARS = (str, bytes, int, float, complex, bool, type(None), np.generic)


def _check_contents(root: np.ndarray, path: Path) -> None:
    """Walk an unpickled object array and reject anything but arrays, lists/tuples and plain scalars."""
    stack: list[Any] = [root]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            if item.dtype == object:
                stack.extend(item.flat)
            elif item.dtype.hasobject:
                raise ValueError(
                    f"{path}: structured arrays with object fields are not allowed (dtype {item.dtype})"
                )
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif not isinstance(item, _PLAIN_SCALARS):
            raise ValueError(
                f"{path}: found a {type(item).__name__}; only numpy arrays, lists and plain scalars are allowed"
            )


def _read_header(handle: BinaryIO, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as error:
        raise ValueError(f"{path}: not a readable .npy file ({error})") from error
    return shape, dtype


def safe_load_object_array(path: PathLike) -> np.ndarray:
    """Load a ``.npy`` file, unpickling object arrays with an allow-list instead of ``allow_pickle=True``.

    Numeric arrays are read with ``allow_pickle=False``. For object arrays the pickle may only reference
    numpy's array/dtype/scalar reconstructors, and the loaded elements may only be numpy arrays, lists,
    tuples and plain scalars; Python 2 pickles (byte strings) are decoded as latin1, like ``np.load`` with
    ``encoding="latin1"``. Anything else -- a class, a function call such as ``os.system`` -- is rejected
    before it runs.

    Args:
        path: the ``.npy`` file.

    Returns:
        The array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a ``.npy`` file, or its pickle asks for anything outside the allow-list.

    Example:
        >>> import tempfile, os
        >>> ragged = np.empty(2, dtype=object); ragged[0] = [[0.0, 1.5]]; ragged[1] = []
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     np.save(os.path.join(tmp, "segments.npy"), ragged, allow_pickle=True)
        ...     safe_load_object_array(os.path.join(tmp, "segments.npy")).tolist()
        [[[0.0, 1.5]], []]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as handle:
        shape, dtype = _read_header(handle, path)
        if not dtype.hasobject:
            handle.seek(0)
            try:
                return np.lib.format.read_array(handle, allow_pickle=False)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from error
        try:
            array = _RestrictedUnpickler(handle, encoding="latin1").load()
        except pickle.UnpicklingError as error:
            raise ValueError(f"{path}: {error}") from error
        except Exception as error:  # untrusted bytes: any failure is a malformed file
            raise ValueError(
                f"{path}: corrupt or unsupported pickle payload ({type(error).__name__}: {error})"
            ) from error
    if not isinstance(array, np.ndarray) or array.shape != shape:
        found = f"array of shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{path}: header promises an array of shape {shape}, the payload is a {found}")
    _check_contents(array, path)
    return array


# --------------------------------------------------------------------------------------------------------------
# THUMOS14


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _read_annotations(annotation_dir: Path) -> dict[str, np.ndarray]:
    if not annotation_dir.is_dir():
        raise FileNotFoundError(f"{annotation_dir}: annotation folder not found")
    missing = [f"{name}.npy" for name in _ANNOTATION_FILES if not (annotation_dir / f"{name}.npy").is_file()]
    if missing:
        raise FileNotFoundError(f"{annotation_dir}: missing annotation file(s) {', '.join(missing)}")
    files = {name: safe_load_object_array(annotation_dir / f"{name}.npy") for name in _ANNOTATION_FILES}
    files["duration"] = files["duration"].reshape(-1)
    counts = {name: len(array) for name, array in files.items() if name != "classlist"}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{annotation_dir}: the annotation files disagree on the number of videos: {counts}")
    return files


def _read_ambiguous(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        warnings.warn(
            f"{path} not found: no ambiguous regions, so the THUMOS Ambiguous filter is off (right for data "
            "without them; THUMOS14's file comes with the annotations)",
            stacklevel=3,
        )
        return {}
    regions: dict[str, list[tuple[float, float]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            name, start, end = fields[0], float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{number}: expected 'video start end', got {line!r}") from None
        regions.setdefault(name, []).append((start, end))
    return {name: np.asarray(spans, dtype=np.float64).reshape(-1, 2) for name, spans in regions.items()}


def _check_unique_names(names: list[str], annotation_dir: Path) -> None:
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(
            f"{annotation_dir / 'videoname.npy'}: {len(duplicates)} video name(s) appear more than once, "
            f"e.g. {duplicates[:3]}"
        )


def _check_splits(subsets: np.ndarray, annotation_dir: Path) -> None:
    found = sorted(set(subsets.tolist()))
    for subset, role in _SPLIT_ROLES.items():
        if not np.any(subsets == subset):
            raise ValueError(
                f"{annotation_dir / 'subset.npy'}: no {role} videos: no video is in the {subset!r} subset "
                f"(subsets found: {found})"
            )


def _ground_truth(index: int, files: dict[str, np.ndarray], class_index: dict[str, int]) -> GroundTruth:
    name = _text(files["videoname"][index])
    duration = float(files["duration"][index])
    if not (np.isfinite(duration) and duration > 0):
        raise ValueError(
            f"{ANNOTATIONS_DIR}/duration.npy: video {name!r} has duration {duration!r}, "
            "expected a positive number"
        )
    try:
        segments = np.asarray(files["segments"][index], dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{ANNOTATIONS_DIR}/segments.npy: video {name!r} must list [start, end] pairs in seconds, "
            f"got {files['segments'][index]!r}"
        ) from error
    check_segments(
        segments,
        duration,
        name=name,
        where=f"{ANNOTATIONS_DIR}/segments.npy: video {name!r}",
        duration_from="duration.npy",
    )
    labels = [_text(label) for label in files["labels"][index]]
    video_labels = [_text(label) for label in files["labels_all"][index]]
    if len(labels) != len(segments):
        raise ValueError(
            f"{ANNOTATIONS_DIR}: video {name!r} has {len(segments)} segments but {len(labels)} segment labels"
        )
    unknown = sorted(set(labels + video_labels) - class_index.keys())
    if unknown:
        raise ValueError(
            f"{ANNOTATIONS_DIR}: video {name!r} uses labels {unknown} that are not in classlist.npy"
        )
    label = np.zeros(len(class_index), dtype=np.float32)
    label[[class_index[c] for c in video_labels]] = 1.0
    classes = np.asarray([class_index[c] for c in labels], dtype=np.int64)
    return GroundTruth(name, _text(files["subset"][index]), duration, segments, classes, label)


def read_ground_truth(
    annotation_dir: PathLike,
) -> tuple[tuple[str, ...], list[GroundTruth], dict[str, np.ndarray]]:
    """Read and check a ``Thumos14reduced-Annotations`` folder (the restricted unpickler reads every file).

    Returns:
        The class names (``classlist.npy`` order), every video's :class:`GroundTruth` in file order, and the
        ambiguous regions of ``Ambiguous_test.txt`` per video name (a warning and none when it is absent).

    Raises:
        FileNotFoundError: the folder or an annotation file is missing.
        ValueError: a file is malformed or unsafe, the files disagree on the number of videos, a name
            appears twice, the ``validation`` or ``test`` subset is empty, a label is unknown, a duration is
            not positive, or a segment is reversed, starts before 0 or ends more than
            :data:`SEGMENT_TOLERANCE` past the video's duration.
    """
    annotation_dir = Path(annotation_dir)
    files = _read_annotations(annotation_dir)
    classes = tuple(_text(c) for c in files["classlist"])
    _check_unique_names([_text(n) for n in files["videoname"]], annotation_dir)
    _check_splits(np.asarray([_text(s) for s in files["subset"]]), annotation_dir)
    class_index = {c: i for i, c in enumerate(classes)}
    videos = [_ground_truth(i, files, class_index) for i in range(len(files["videoname"]))]
    return classes, videos, _read_ambiguous(annotation_dir / _AMBIGUOUS_FILE)


def _not_used(truths: list[GroundTruth]) -> dict[str, str]:
    """The annotated videos no split would use, with the reason."""
    reasons = {}
    for truth in truths:
        if truth.subset not in _SPLIT_ROLES:
            reasons[truth.name] = (
                f"subset {truth.subset!r} is neither {TRAIN_SUBSET!r} (training) nor {TEST_SUBSET!r} (test)"
            )
        elif not truth.has_label:
            reasons[truth.name] = "no label: labels_all.npy lists no class and it has no segment"
    return reasons


def load_thumos14(
    data_dir: PathLike,
    *,
    max_videos: int | None = None,
    feature_dim: Optional[int] = None,
    nonfinite: str = "error",
    unused: str = "error",
) -> WSTALDataset:
    """Load THUMOS14 I3D features and annotations from the ``Thumos14reduced`` layout.

    Args:
        data_dir: folder holding ``Thumos14reduced-I3D-JOINTFeatures.npy`` and ``Thumos14reduced-Annotations/``.
        max_videos: keep only the first ``max_videos`` videos of each split (file order); ``None`` keeps all.
        feature_dim: width of one joint feature row; the first half is RGB, the second half Flow; ``None``: the width
            of the first video read, which every other video must have (I3D: 2048).
        nonfinite: what a NaN or inf in a video's features does: ``"error"`` refuses the folder (naming the
            video); ``"zero"`` replaces those values with 0 and warns, naming the videos repaired.
        unused: what an annotated video that no split can use does (a subset other than ``validation`` and
            ``test``, or neither a label in ``labels_all.npy`` nor a segment): ``"error"`` refuses the folder,
            naming the videos; ``"warn"`` leaves them out with a warning that names them and their count
            (and lists them in :attr:`~.data.WSTALDataset.not_used`).

    Returns:
        The dataset: train = the ``validation`` subset, test = the ``test`` subset, 20 classes, and the
        ambiguous regions of ``Ambiguous_test.txt`` (a warning and no regions when that file is absent). Every
        video's :attr:`~.data.Video.timing` is :data:`THUMOS14_REDUCED_TIMING`.

    Raises:
        FileNotFoundError: the folder, the feature file or an annotation file is missing.
        ValueError: a file is malformed or unsafe; the feature file does not hold one entry per annotated
            video; a video's features are not ``(T, feature_dim)``, have zero snippets or (with
            ``nonfinite="error"``) a NaN or inf; a label is unknown; the ``validation`` or the ``test``
            subset is empty; a video name appears twice; a segment is reversed, starts before 0 or ends
            more than :data:`SEGMENT_TOLERANCE` past the video's duration; (with ``unused="error"``) an
            annotated video cannot be used.
    """
    check_loader_options(max_videos, feature_dim, nonfinite, unused)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: THUMOS14 data folder not found")
    features_path = data_dir / FEATURES_FILE
    if not features_path.is_file():
        raise FileNotFoundError(f"{features_path}: feature file not found")
    classes, truths, ambiguous = read_ground_truth(data_dir / ANNOTATIONS_DIR)
    not_used = settle_unused(_not_used(truths), unused, str(data_dir / ANNOTATIONS_DIR))
    features = safe_load_object_array(features_path)
    if features.ndim != 1 or len(features) != len(truths):
        raise ValueError(
            f"{features_path}: expected one feature array per annotated video ({len(truths)} in "
            f"{ANNOTATIONS_DIR}/videoname.npy), got an array of shape {features.shape}"
        )

    repaired: list[str] = []
    width = [feature_dim]  # the row width: given, or the first video's

    def split(subset: str) -> list[Video]:
        indices = [i for i, t in enumerate(truths) if t.subset == subset and t.name not in not_used]
        if not indices:
            raise ValueError(
                f"{data_dir / ANNOTATIONS_DIR}: no {_SPLIT_ROLES[subset]} videos left after leaving out "
                f"{len(not_used)} that cannot be used"
            )
        videos = []
        for i in indices[:max_videos]:
            videos.append(
                video_from_features(
                    features[i],
                    truths[i],
                    where=f"{FEATURES_FILE}: video {truths[i].name!r} (entry {i})",
                    feature_dim=width[0],
                    nonfinite=nonfinite,
                    repaired=repaired,
                    timing=THUMOS14_REDUCED_TIMING,
                )
            )
            width[0] = 2 * videos[-1].rgb.shape[1]  # every other video must be as wide as the first
        return videos

    train, test = split(TRAIN_SUBSET), split(TEST_SUBSET)
    if repaired:
        warnings.warn(
            f"{features_path}: replaced NaN/inf feature values with 0 in {len(repaired)} video(s): "
            f"{', '.join(repaired[:5])}{', ...' if len(repaired) > 5 else ''}",
            stacklevel=2,
        )
    return WSTALDataset(
        classes=classes,
        train=train,
        test=test,
        ambiguous=ambiguous,
        snippet_seconds=SNIPPET_SECONDS,
        evaluation_protocol="thumos",
        not_used=not_used,
    )


# --------------------------------------------------------------------------------------------------------------
# writing


def _object_array(items: list[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items  # element-wise, so equal-shaped items stay separate objects
    return array


def _check_empty_output(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: the output folder exists and is not empty; choose a new folder")


def write_thumos14(dataset: WSTALDataset, out_dir: PathLike) -> Path:
    """Write ``dataset`` in the ``Thumos14reduced`` layout (what :func:`load_thumos14` reads back).

    Training videos get the subset ``validation``, test videos ``test``; the weak label is written as
    ``labels_all.npy``, the ambiguous regions as ``Ambiguous_test.txt`` (no file when there are none), the
    features as one ``(T, c_rgb + c_flow)`` float32 array per video, RGB first.

    Args:
        dataset: the videos to write.
        out_dir: a new or empty folder.

    Returns:
        ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty.
        ValueError: a video's features are not 16-frame snippets at 25 fps from 0 s (the only timing this
            layout can state): stride-4 features, for example, would be read back 4.8 times too slow.

    Example:
        >>> import tempfile, warnings
        >>> from wstal.synthetic import make_synthetic_thumos
        >>> data = make_synthetic_thumos(num_train=2, num_test=2, dim=8, seed=0)
        >>> with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # synthetic data has no ambiguous regions: no Ambiguous_test.txt
        ...     back = load_thumos14(write_thumos14(data, tmp), feature_dim=16)
        >>> [v.name for v in back.test] == [v.name for v in data.test]
        True
    """
    out_dir = Path(out_dir)
    _check_empty_output(out_dir)
    videos = [*dataset.train, *dataset.test]
    for video in videos:
        clock = snippet_clock(video, dataset.snippet_seconds)
        if clock != (SNIPPET_SECONDS, 0.0):
            raise ValueError(
                f"video {video.name!r}: its features have one snippet every {clock[0]:g} s from {clock[1]:g} s "
                f"(timing {video.timing}); the Thumos14reduced layout can only state 16-frame snippets at "
                "25 fps (0.64 s from 0 s), so these features would be read back at the wrong times. Keep them "
                "in the per-video layout, which states fps, stride and window"
            )
    annotations = out_dir / ANNOTATIONS_DIR
    annotations.mkdir(parents=True, exist_ok=True)
    classes = dataset.classes
    arrays = {
        "videoname": np.array([v.name.encode() for v in videos]),
        "subset": np.array(
            [TRAIN_SUBSET.encode()] * len(dataset.train) + [TEST_SUBSET.encode()] * len(dataset.test)
        ),
        "classlist": np.array([c.encode() for c in classes]),
        "duration": np.array([[v.duration] for v in videos], dtype=np.float64),
        "segments": _object_array([v.segments.tolist() for v in videos]),
        "labels": _object_array([[classes[c] for c in v.segment_classes.tolist()] for v in videos]),
        "labels_all": _object_array([[classes[c] for c in np.flatnonzero(v.label).tolist()] for v in videos]),
    }
    for name, array in arrays.items():
        np.save(annotations / f"{name}.npy", array, allow_pickle=True)
    if any(len(spans) for spans in dataset.ambiguous.values()):
        lines = [
            f"{name} {start!r} {end!r}"
            for name, spans in dataset.ambiguous.items()
            for start, end in np.asarray(spans, dtype=np.float64).reshape(-1, 2).tolist()
        ]
        (annotations / _AMBIGUOUS_FILE).write_text("\n".join(lines) + "\n")
    features = _object_array([np.concatenate([v.rgb, v.flow], axis=1) for v in videos])
    np.save(out_dir / FEATURES_FILE, features, allow_pickle=True)
    return out_dir
