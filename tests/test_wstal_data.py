"""Tests of the example's data side: Video / WSTALDataset, the safe unpickler, the THUMOS14 loader, synthetic data.

Tests on the real THUMOS14 annotations use ../shared/data/thumos14 and a small fake feature file built here;
they skip when that folder is absent.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from wstal.data import SNIPPET_SECONDS, Video, WSTALDataset, seconds_to_snippets, snippets_to_seconds
from wstal.synthetic import THUMOS14_CLASSES, make_synthetic_thumos
from wstal.thumos import ANNOTATIONS_DIR, FEATURES_FILE, load_thumos14, safe_load_object_array

THUMOS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14"
needs_thumos = pytest.mark.skipif(not THUMOS_DIR.is_dir(), reason="../shared/data/thumos14 is not available")
ANNOTATION_NAMES = ("videoname", "subset", "classlist", "duration", "segments", "labels", "labels_all")


def object_array(items: list) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items  # element-wise, so equal-shaped items stay separate objects
    return array


def fake_features(lengths: list[int], width: int = 2048) -> np.ndarray:
    """Per video a (T, width) array whose RGB half holds +index and Flow half -index."""
    half = width // 2
    items = []
    for index, length in enumerate(lengths):
        row = np.concatenate([np.full(half, index, np.float32), np.full(width - half, -index, np.float32)])
        items.append(np.tile(row, (length, 1)))
    return object_array(items)


def thumos_layout(root: Path, features: np.ndarray, *, skip: tuple[str, ...] = ()) -> Path:
    """A data folder whose annotation files are links to ../shared (never copies) plus the given features."""
    annotations = root / ANNOTATIONS_DIR
    annotations.mkdir(parents=True)
    for file in [*(f"{name}.npy" for name in ANNOTATION_NAMES), "Ambiguous_test.txt"]:
        if file not in skip:
            (annotations / file).symlink_to(THUMOS_DIR / file)
    np.save(root / FEATURES_FILE, features, allow_pickle=True)
    return root


# --------------------------------------------------------------------------------------------------------------
# data structures


def make_video(**overrides) -> Video:
    fields = dict(
        name="v",
        rgb=np.zeros((4, 3)),
        flow=np.zeros((4, 2)),
        label=np.array([1.0, 0.0]),
        segments=[[0.0, 1.28]],
        segment_classes=[0],
        duration=2.56,
    )
    fields.update(overrides)
    return Video(**fields)


def test_video_converts_dtypes_and_allows_no_ground_truth():
    video = make_video(segments=[], segment_classes=[])
    assert video.rgb.dtype == np.float32 and video.label.dtype == np.float32
    assert video.segments.shape == (0, 2) and video.segments.dtype == np.float64
    assert video.segment_classes.dtype == np.int64
    assert video.num_snippets == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"flow": np.zeros((3, 2))}, "same number of snippets"),
        ({"rgb": np.zeros((0, 3)), "flow": np.zeros((0, 2))}, "zero snippets"),
        ({"rgb": np.zeros(4)}, "rgb must have 2 dimension"),
        ({"segments": [[0.0, 1.0, 2.0]]}, r"shape \(N, 2\)"),
        ({"segment_classes": [0, 1]}, "one entry per segment"),
        ({"segment_classes": [2]}, r"\[0, 2\)"),
        ({"segments": [[2.0, 1.0]]}, "end >= start"),
        ({"duration": 0.0}, "duration"),
        ({"name": ""}, "name"),
    ],
)
def test_video_rejects_inconsistent_fields(overrides, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make_video(**overrides)


def test_dataset_checks_label_width_and_feature_widths():
    video = make_video()
    assert WSTALDataset(("a", "b"), [video], [], {}).num_classes == 2
    with pytest.raises(ValueError, match="expected 3"):
        WSTALDataset(("a", "b", "c"), [video], [], {})
    with pytest.raises(ValueError, match="feature widths"):
        WSTALDataset(("a", "b"), [video], [make_video(rgb=np.zeros((4, 5)))], {})


def test_seconds_snippets_conversion():
    assert seconds_to_snippets(3.2) == 5.0 and isinstance(seconds_to_snippets(3.2), float)
    assert snippets_to_seconds(5) == pytest.approx(3.2)
    times = np.array([0.0, 0.32, 1.6, 100.0])
    np.testing.assert_allclose(snippets_to_seconds(seconds_to_snippets(times)), times)
    np.testing.assert_allclose(seconds_to_snippets(times, snippet_seconds=0.5), times * 2)
    assert SNIPPET_SECONDS == 16 / 25
    with pytest.raises(ValueError, match="snippet_seconds"):
        seconds_to_snippets(1.0, snippet_seconds=0.0)


@pytest.mark.parametrize(
    "module",
    [
        "wstal.data",
        "wstal.thumos",
        "wstal.layouts",
        "wstal.synthetic",
        "wstal.evaluation",
        "wstal.io",
        "wstal.proposals",
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), extraglobs={"np": np, "torch": torch})
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------------------------------------------
# restricted unpickling


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def save_pickle(path: Path, obj: object, shape: tuple[int, ...], protocol: int = 3) -> Path:
    """A .npy file with an object-array header and an arbitrary pickle payload."""
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": shape})
        pickle.dump(obj, handle, protocol=protocol)
    return path


def test_planted_malicious_pickle_is_rejected_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = save_pickle(tmp_path / "evil.npy", object_array([np.zeros(2), Payload(marker)]), (2,))
    with pytest.raises(ValueError, match=r"evil\.npy.*refusing to load global '(posix|os)\.system'"):
        safe_load_object_array(path)
    assert not marker.exists()
    # the payload is live: numpy's own loader with allow_pickle=True runs it
    np.load(path, allow_pickle=True)
    assert marker.exists()


def test_unpickler_rejects_classes_and_containers_outside_the_allow_list(tmp_path):
    from fractions import Fraction

    with pytest.raises(ValueError, match=r"fractions\.Fraction"):
        safe_load_object_array(save_pickle(tmp_path / "a.npy", object_array([Fraction(1, 2)]), (1,)))
    with pytest.raises(ValueError, match="found a dict"):
        safe_load_object_array(save_pickle(tmp_path / "b.npy", object_array([{"x": 1}]), (1,)))
    with pytest.raises(ValueError, match="shape"):
        safe_load_object_array(save_pickle(tmp_path / "c.npy", [1, 2], (2,)))
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        safe_load_object_array(tmp_path / "missing.npy")
    (tmp_path / "d.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"d\.npy"):
        safe_load_object_array(tmp_path / "d.npy")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_unpickler_round_trips_arrays_lists_and_scalars(tmp_path, protocol):
    items = [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        [[0.5, 1.5], [2.0, 3.0]],
        ["CliffDiving", b"x"],
        np.int64(3),
    ]
    loaded = safe_load_object_array(save_pickle(tmp_path / "ok.npy", object_array(items), (4,), protocol))
    assert loaded.dtype == object and loaded.shape == (4,)
    np.testing.assert_array_equal(loaded[0], items[0])
    assert loaded[0].dtype == np.float32
    assert loaded[1:].tolist() == items[1:]
    numeric = np.arange(5.0)
    np.save(tmp_path / "numeric.npy", numeric)
    np.testing.assert_array_equal(safe_load_object_array(tmp_path / "numeric.npy"), numeric)


# --------------------------------------------------------------------------------------------------------------
# THUMOS14 loader on a tiny hand-made layout (runs without ../shared)


def tiny_layout(root: Path, features: np.ndarray | None = None) -> Path:
    annotations = root / ANNOTATIONS_DIR
    annotations.mkdir(parents=True)
    files = {
        "videoname": np.array([b"video_validation_1", b"video_test_1", b"video_test_2"]),
        "subset": np.array([b"validation", b"test", b"test"]),
        "classlist": np.array([b"CliffDiving", b"Diving", b"LongJump"]),
        "duration": np.array([[3.2], [6.4], [1.92]]),
        "segments": object_array([[[0.5, 1.0]], [[1.0, 2.0], [1.0, 2.0], [3.0, 4.5]], []]),
        "labels": object_array([["LongJump"], ["CliffDiving", "Diving", "Diving"], []]),
        "labels_all": object_array([["LongJump"], ["CliffDiving", "Diving"], ["LongJump"]]),
    }
    for name, array in files.items():
        np.save(annotations / f"{name}.npy", array, allow_pickle=True)
    (annotations / "Ambiguous_test.txt").write_text("video_test_1  0.0 0.5\nvideo_test_1  5.0 6.0\n")
    np.save(root / FEATURES_FILE, fake_features([5, 10, 3], width=8) if features is None else features)
    return root


def test_loader_parses_a_hand_made_layout(tmp_path):
    data = load_thumos14(tiny_layout(tmp_path), feature_dim=8)
    assert data.classes == ("CliffDiving", "Diving", "LongJump")
    assert [v.name for v in data.train] == ["video_validation_1"]
    assert [v.name for v in data.test] == ["video_test_1", "video_test_2"]
    test_1 = data.test[0]
    assert test_1.rgb.shape == (10, 4) and test_1.flow.shape == (10, 4)
    assert np.all(test_1.rgb == 1) and np.all(test_1.flow == -1)  # RGB first half, Flow second half
    np.testing.assert_array_equal(test_1.segments, [[1.0, 2.0], [1.0, 2.0], [3.0, 4.5]])
    np.testing.assert_array_equal(test_1.segment_classes, [0, 1, 1])
    np.testing.assert_array_equal(test_1.label, [1, 1, 0])
    assert data.test[1].segments.shape == (0, 2) and data.test[1].label.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(data.ambiguous["video_test_1"], [[0.0, 0.5], [5.0, 6.0]])
    assert len(load_thumos14(tmp_path, feature_dim=8, max_videos=1).test) == 1


@pytest.mark.parametrize(
    ("lengths", "width", "message"),
    [
        ([5, 10], 8, r"one feature array per annotated video \(3 .*shape \(2,\)"),
        ([5, 10, 3], 6, r"'video_validation_1'.*\(T, 8\).*\(5, 6\)"),
        ([5, 0, 3], 8, "'video_test_1'.*zero snippets"),
    ],
)
def test_loader_rejects_bad_features(tmp_path, lengths, width, message):
    with pytest.raises(ValueError, match=message):
        load_thumos14(tiny_layout(tmp_path, fake_features(lengths, width)), feature_dim=8)


def test_loader_reports_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        load_thumos14(tmp_path / "nowhere")
    root = tiny_layout(tmp_path / "a")
    (root / ANNOTATIONS_DIR / "labels_all.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels_all\.npy"):
        load_thumos14(root, feature_dim=8)
    root = tiny_layout(tmp_path / "b")
    (root / FEATURES_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=FEATURES_FILE):
        load_thumos14(root, feature_dim=8)
    root = tiny_layout(tmp_path / "c")
    (root / ANNOTATIONS_DIR / "Ambiguous_test.txt").unlink()
    with pytest.warns(UserWarning, match="Ambiguous filter is off"):
        assert load_thumos14(root, feature_dim=8).ambiguous == {}


def test_loader_rejects_unknown_labels_and_bad_arguments(tmp_path):
    root = tiny_layout(tmp_path)
    np.save(root / ANNOTATIONS_DIR / "labels.npy", object_array([["Jumping"], ["CliffDiving"] * 3, []]))
    with pytest.raises(ValueError, match=r"\['Jumping'\]"):
        load_thumos14(root, feature_dim=8)
    with pytest.raises(ValueError, match="max_videos"):
        load_thumos14(root, max_videos=0)
    with pytest.raises(ValueError, match="feature_dim"):
        load_thumos14(root, feature_dim=7)


# --------------------------------------------------------------------------------------------------------------
# THUMOS14 loader on the real annotations


@pytest.fixture(scope="module")
def real_thumos(tmp_path_factory) -> Path:
    if not THUMOS_DIR.is_dir():
        pytest.skip("../shared/data/thumos14 is not available")
    count = len(np.load(THUMOS_DIR / "videoname.npy"))
    return thumos_layout(tmp_path_factory.mktemp("thumos"), fake_features([1 + i % 3 for i in range(count)]))


@needs_thumos
def test_real_annotations_counts(real_thumos):
    data = load_thumos14(real_thumos)
    assert (len(data.train), len(data.test), data.num_classes) == (200, 212, 20)
    assert data.classes == THUMOS14_CLASSES
    assert sum(len(v.segments) for v in data.test) == 3358
    assert all(v.name.startswith("video_test_") for v in data.test)
    assert all(v.name.startswith("video_validation_") for v in data.train)
    assert (data.rgb_dim, data.flow_dim) == (1024, 1024)
    assert all(np.all(v.rgb == -v.flow) for v in data.test[:5])  # halves split where they should be
    assert sum(len(spans) for spans in data.ambiguous.values()) == 99
    # the weak label is labels_all.npy as in the files: one test video lists no class there
    assert all(v.label.sum() >= 1 for v in data.train)
    assert [v.name for v in data.test if v.label.sum() == 0] == ["video_test_0000270"]


@needs_thumos
def test_real_annotations_already_list_cliffdiving_as_diving(real_thumos):
    data = load_thumos14(real_thumos)
    cliff, diving = data.classes.index("CliffDiving"), data.classes.index("Diving")
    pairs = 0
    for video in data.test:
        cliff_segments = video.segments[video.segment_classes == cliff]
        diving_segments = {tuple(s) for s in video.segments[video.segment_classes == diving]}
        pairs += sum(tuple(s) in diving_segments for s in cliff_segments)
        assert len(cliff_segments) == 0 or video.label[diving] == 1
    assert pairs == 217
    assert sum(int((v.segment_classes == cliff).sum()) for v in data.test) == 217


@needs_thumos
def test_real_annotations_max_videos(real_thumos):
    data = load_thumos14(real_thumos, max_videos=3)
    assert len(data.train) == 3 and len(data.test) == 3


@needs_thumos
def test_real_layout_with_a_missing_annotation_file(tmp_path):
    root = thumos_layout(tmp_path, fake_features([1] * 412), skip=("segments.npy",))
    with pytest.raises(FileNotFoundError, match=r"segments\.npy"):
        load_thumos14(root)


# --------------------------------------------------------------------------------------------------------------
# synthetic data


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_thumos(dim=8, seed=3)


def test_synthetic_is_deterministic_and_prefix_stable():
    a = make_synthetic_thumos(num_train=3, num_test=2, dim=16, seed=7)
    b = make_synthetic_thumos(num_train=3, num_test=2, dim=16, seed=7)
    c = make_synthetic_thumos(num_train=5, num_test=1, dim=16, seed=7)
    other = make_synthetic_thumos(num_train=3, num_test=2, dim=16, seed=8)
    for x, y, z in zip(a.train, b.train, c.train):
        assert x.name == y.name == z.name
        for field in ("rgb", "flow", "label", "segments", "segment_classes"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
            np.testing.assert_array_equal(getattr(x, field), getattr(z, field))
    np.testing.assert_array_equal(a.test[0].flow, c.test[0].flow)
    assert not np.array_equal(a.train[0].rgb[:10], other.train[0].rgb[:10])


def test_synthetic_structure(synthetic):
    assert (len(synthetic.train), len(synthetic.test)) == (200, 212)
    assert synthetic.classes == THUMOS14_CLASSES and synthetic.ambiguous == {}
    assert (synthetic.rgb_dim, synthetic.flow_dim) == (8, 8)
    names = [v.name for v in synthetic.train + synthetic.test]
    assert len(set(names)) == len(names)
    for video in synthetic.train + synthetic.test:
        assert 60 <= video.num_snippets <= 1200
        assert video.duration == pytest.approx(video.num_snippets * SNIPPET_SECONDS)
        assert len(video.segments) >= 1 and np.all(video.segments[:, 1] <= video.duration + 1e-9)
        order = np.argsort(video.segments[:, 0])
        assert np.all(video.segments[order][1:, 0] > video.segments[order][:-1, 1])  # disjoint, with a gap
        np.testing.assert_array_equal(np.flatnonzero(video.label), np.unique(video.segment_classes))


def test_synthetic_lengths_are_thumos_like(synthetic):
    videos = synthetic.train + synthetic.test
    num_snippets = np.array([v.num_snippets for v in videos])
    lengths = np.concatenate([np.diff(v.segments, axis=1)[:, 0] for v in videos]) / SNIPPET_SECONDS
    counts = np.array([len(v.segments) for v in videos])
    two_classes = np.mean([v.label.sum() == 2 for v in videos])
    assert 180 <= np.median(num_snippets) <= 300 and 200 <= num_snippets.mean() <= 350
    assert 4 <= np.median(lengths) <= 6 and lengths.max() >= 40  # median about 5 snippets, long tail
    assert counts.mean() >= 5 and counts.max() >= 15
    assert 0.15 <= two_classes <= 0.35
    assert np.bincount(np.concatenate([v.segment_classes for v in videos]), minlength=20).min() > 0


def ridge_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Accuracy of a one-vs-rest ridge-regression probe (closed form), per snippet."""
    x = np.hstack([train_x, np.ones((len(train_x), 1))])
    targets = np.eye(train_y.max() + 1)[train_y]
    weights = np.linalg.solve(x.T @ x + 1.0 * np.eye(x.shape[1]), x.T @ targets)
    scores = np.hstack([test_x, np.ones((len(test_x), 1))]) @ weights
    return float(np.mean(scores.argmax(axis=1) == test_y))


def snippet_table(videos: list[Video]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    features = {"rgb": [], "flow": []}
    actionness, classes = [], []
    for video in videos:
        inside = np.full(video.num_snippets, -1)
        for (start, end), k in zip(
            np.round(video.segments / SNIPPET_SECONDS).astype(int), video.segment_classes
        ):
            inside[start:end] = k
        features["rgb"].append(video.rgb)
        features["flow"].append(video.flow)
        actionness.append(inside >= 0)
        classes.append(inside)
    table = {name: np.concatenate(parts) for name, parts in features.items()}
    table["both"] = np.hstack([table["rgb"], table["flow"]])
    return table, np.concatenate(actionness).astype(int), np.concatenate(classes)


def test_synthetic_each_modality_alone_is_weaker_than_both():
    """Linear probes per snippet: Flow finds actions (sharp), RGB names classes; both beat either on both."""
    data = make_synthetic_thumos(num_train=60, num_test=40, dim=32, seed=1)
    train, train_act, train_cls = snippet_table(data.train)
    test, test_act, test_cls = snippet_table(data.test)
    on_train, on_test = train_cls >= 0, test_cls >= 0
    act = {m: ridge_accuracy(train[m], train_act, test[m], test_act) for m in train}
    cls = {
        m: ridge_accuracy(train[m][on_train], train_cls[on_train], test[m][on_test], test_cls[on_test])
        for m in train
    }
    assert act["flow"] > act["rgb"] + 0.02, act  # RGB bleeds around actions and carries scene context
    assert cls["rgb"] > cls["flow"] + 0.1, cls  # Flow barely tells the classes of a group apart
    assert act["both"] > act["flow"] and act["both"] > act["rgb"], act
    assert cls["both"] > cls["rgb"] and cls["both"] > cls["flow"], cls


def instance_table(videos: list[Video], bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per ground-truth instance: the mean RGB + Flow of ``bins`` equal parts of it, side by side."""
    rows, classes = [], []
    for video in videos:
        both = np.hstack([video.rgb, video.flow])
        for (start, end), k in zip(np.round(video.segments / SNIPPET_SECONDS).astype(int), video.segment_classes):
            edges = np.linspace(start, end, bins + 1)
            parts = [both[int(a) : max(int(a) + 1, round(b))].mean(axis=0) for a, b in zip(edges[:-1], edges[1:])]
            rows.append(np.concatenate(parts))
            classes.append(k)
    return np.array(rows), np.array(classes)


def test_synthetic_no_snippet_names_the_class_but_the_whole_instance_does():
    """The classes of a group are combinations of two phase looks: a per-snippet linear probe confuses
    them, a probe on the whole instance (its two halves side by side) much less."""
    data = make_synthetic_thumos(num_train=60, num_test=40, dim=32, seed=1)
    train, _, train_cls = snippet_table(data.train)
    test, _, test_cls = snippet_table(data.test)
    on_train, on_test = train_cls >= 0, test_cls >= 0
    snippet = ridge_accuracy(train["both"][on_train], train_cls[on_train], test["both"][on_test], test_cls[on_test])
    whole = ridge_accuracy(*instance_table(data.train, 2), *instance_table(data.test, 2))
    assert whole > snippet + 0.15, (whole, snippet)


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        make_synthetic_thumos(dim=0)
    with pytest.raises(ValueError, match="num_train"):
        make_synthetic_thumos(num_train=-1)
    with pytest.raises(ValueError, match="0 videos"):
        make_synthetic_thumos(num_train=0, num_test=0)
    small = make_synthetic_thumos(num_train=2, num_test=0, dim=4, num_classes=3)
    assert small.classes == ("class_00", "class_01", "class_02") and small.test == []
