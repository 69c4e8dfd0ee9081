"""Tests of the ground-truth-driven synthetic family (wstal.synthetic_gt).

The core tests run on THUMOS-layout annotation folders written here; the tests on the real THUMOS14
annotations use ../shared/data/thumos14 and skip when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scripts import check_annotation_family_cli

from wstal.data import SNIPPET_SECONDS, Video
from wstal.synthetic import THUMOS14_CLASSES, make_synthetic_thumos
from wstal.synthetic_gt import make_synthetic_from_annotations
from wstal.thumos import ANNOTATIONS_DIR, safe_load_object_array

THUMOS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14"
needs_thumos = pytest.mark.skipif(not THUMOS_DIR.is_dir(), reason="../shared/data/thumos14 is not available")


def object_array(items: list) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items  # element-wise, so equal-shaped items stay separate objects
    return array


def annotation_folder(root: Path, num_train: int, num_test: int, *, seed: int = 0) -> Path:
    """A THUMOS-layout annotation folder with random, THUMOS-like ground truth: one or two classes per
    video, a few to twenty instances of median 3 s, CliffDiving segments repeated as Diving, one
    sub-snippet instance, one segment a little past the video's end, a weak label that misses a class, and
    ambiguous regions."""
    rng = np.random.default_rng(seed)
    classes = list(THUMOS14_CLASSES)
    names, subsets, durations, segments, labels, weak = [], [], [], [], [], []
    ambiguous = []
    for i in range(num_train + num_test):
        subset = "validation" if i < num_train else "test"
        names.append(f"video_{subset}_{i:07d}")
        subsets.append(subset)
        duration = float(rng.uniform(60, 300))
        video_classes = rng.choice(20, size=1 + int(rng.random() < 0.2), replace=False)
        count = int(rng.integers(2, 20))
        lengths = np.clip(rng.lognormal(np.log(3.0), 0.7, count), 0.3, 40)
        while lengths.sum() > duration / 2:
            lengths = lengths[:-1]
        gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * (duration - lengths.sum())
        starts = gaps[:-1].cumsum() + np.concatenate([[0], lengths[:-1].cumsum()])
        spans, names_of = [], []
        for start, length in zip(starts, lengths):
            k = int(rng.choice(video_classes))
            spans.append([round(start, 1), round(start + length, 1)])
            names_of.append(classes[k])
            if classes[k] == "CliffDiving":  # the files' "CliffDiving is also Diving" convention
                spans.append(spans[-1])
                names_of.append("Diving")
        present = sorted(set(names_of))
        if i == 1:
            spans.append([1.0, 1.3])  # shorter than one snippet
            names_of.append(names_of[0])
        if i == 2:
            spans.append([duration - 2.0, duration + 0.5])  # past the end within the loader's tolerance
            names_of.append(names_of[0])
        if i == 3:
            present = present[:-1]  # the weak label misses a class, as some real ones do
        segments.append(spans)
        labels.append(names_of)
        weak.append(present)
        durations.append(duration)
        if subset == "test" and i % 3 == 0:
            ambiguous.append(f"{names[-1]} {duration * 0.9:.1f} {duration * 0.9 + 4:.1f}")
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "videoname": np.array([n.encode() for n in names]),
        "subset": np.array([s.encode() for s in subsets]),
        "classlist": np.array([c.encode() for c in classes]),
        "duration": np.array(durations)[:, None],
        "segments": object_array(segments),
        "labels": object_array(labels),
        "labels_all": object_array(weak),
    }
    for name, array in arrays.items():
        np.save(root / f"{name}.npy", array, allow_pickle=True)
    (root / "Ambiguous_test.txt").write_text("\n".join(ambiguous) + "\n")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return annotation_folder(tmp_path_factory.mktemp("tiny"), 6, 6)


@pytest.fixture(scope="module")
def probe_folder(tmp_path_factory) -> Path:
    return annotation_folder(tmp_path_factory.mktemp("probe"), 40, 30, seed=1)


# --------------------------------------------------------------------------------------------------------------
# probes


def ridge_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Accuracy of a one-vs-rest ridge-regression probe (closed form)."""
    x = np.hstack([train_x, np.ones((len(train_x), 1))])
    targets = np.eye(max(train_y.max(), test_y.max()) + 1)[train_y]
    weights = np.linalg.solve(x.T @ x + 1.0 * np.eye(x.shape[1]), x.T @ targets)
    scores = np.hstack([test_x, np.ones((len(test_x), 1))]) @ weights
    return float(np.mean(scores.argmax(axis=1) == test_y))


def snippet_table(videos: list[Video]) -> dict[str, np.ndarray]:
    """Per snippet: features, class (-1 = background) and relative position inside its instance."""
    rows: dict[str, list] = {"rgb": [], "flow": [], "cls": [], "position": [], "length": []}
    for video in videos:
        t = video.num_snippets
        cls, position, length = np.full(t, -1), np.full(t, -1.0), np.zeros(t)
        for (start, end), k in zip(
            np.round(video.segments / SNIPPET_SECONDS).astype(int), video.segment_classes
        ):
            end = min(end, t)
            if end <= start or np.any(cls[start:end] >= 0):
                continue  # keep one class per snippet: skip overlaps (the Diving copies)
            cls[start:end] = k
            position[start:end] = (np.arange(start, end) + 0.5 - start) / (end - start)
            length[start:end] = end - start
        for name, value in (
            ("rgb", video.rgb),
            ("flow", video.flow),
            ("cls", cls),
            ("position", position),
            ("length", length),
        ):
            rows[name].append(value)
    table = {name: np.concatenate(parts) for name, parts in rows.items()}
    table["both"] = np.hstack([table["rgb"], table["flow"]])
    return table


def class_probe(train: dict[str, np.ndarray], test: dict[str, np.ndarray], modality: str) -> float:
    on_train, on_test = train["cls"] >= 0, test["cls"] >= 0
    return ridge_accuracy(
        train[modality][on_train], train["cls"][on_train], test[modality][on_test], test["cls"][on_test]
    )


def action_probe(train: dict[str, np.ndarray], test: dict[str, np.ndarray], modality: str) -> float:
    return ridge_accuracy(
        train[modality], (train["cls"] >= 0).astype(int), test[modality], (test["cls"] >= 0).astype(int)
    )


# --------------------------------------------------------------------------------------------------------------
# ground truth, shapes, selection, determinism


def read(folder: Path, name: str) -> np.ndarray:
    return safe_load_object_array(folder / f"{name}.npy")


def test_ground_truth_and_labels_are_the_files(folder):
    data = make_synthetic_from_annotations(folder, dim=16)
    names = [n.decode() for n in read(folder, "videoname")]
    durations = read(folder, "duration").reshape(-1)
    segments, labels, weak = read(folder, "segments"), read(folder, "labels"), read(folder, "labels_all")
    assert data.classes == THUMOS14_CLASSES
    assert [v.name for v in data.train] == [n for n in names if "validation" in n]
    assert [v.name for v in data.test] == [n for n in names if "_test_" in n]
    for video in data.train + data.test:
        i = names.index(video.name)
        np.testing.assert_array_equal(
            video.segments, np.asarray(segments[i], dtype=np.float64).reshape(-1, 2)
        )
        assert [data.classes[k] for k in video.segment_classes] == list(labels[i])
        assert [data.classes[k] for k in np.flatnonzero(video.label)] == sorted(weak[i])
        assert video.duration == durations[i]
        assert video.rgb.shape == video.flow.shape == (round(durations[i] / SNIPPET_SECONDS), 16)
        assert (
            video.rgb.dtype == np.float32
            and np.all(np.isfinite(video.rgb))
            and np.all(np.isfinite(video.flow))
        )
    lines = (folder / "Ambiguous_test.txt").read_text().split()
    assert sorted(data.ambiguous) == sorted(lines[0::3])
    name, start, end = lines[:3]
    np.testing.assert_allclose(data.ambiguous[name], [[float(start), float(end)]])
    # the weak label of video 3 misses a class that its segments have: kept as in the files
    video_3 = data.train[3]
    assert set(video_3.segment_classes) - set(np.flatnonzero(video_3.label))


def test_reads_a_data_folder_and_refuses_unsafe_or_missing_files(folder, tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / ANNOTATIONS_DIR).mkdir(parents=True)
    for file in folder.iterdir():
        (data_dir / ANNOTATIONS_DIR / file.name).symlink_to(file)
    a = make_synthetic_from_annotations(folder, dim=4, max_videos_per_split=1)
    b = make_synthetic_from_annotations(data_dir, dim=4, max_videos_per_split=1)
    np.testing.assert_array_equal(a.test[0].rgb, b.test[0].rgb)
    with pytest.raises(FileNotFoundError, match="annotation folder not found"):
        make_synthetic_from_annotations(tmp_path / "nowhere")

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil"
    evil.mkdir()
    for file in folder.iterdir():
        (evil / file.name).symlink_to(file)
    (evil / "segments.npy").unlink()
    np.save(evil / "segments.npy", object_array([Boom()] * 12), allow_pickle=True)
    with pytest.raises(ValueError, match="refusing to load global"):
        make_synthetic_from_annotations(evil)


def test_deterministic_per_seed_and_per_video(folder):
    a = make_synthetic_from_annotations(folder, dim=8, seed=3)
    b = make_synthetic_from_annotations(folder, dim=8, seed=3)
    other = make_synthetic_from_annotations(folder, dim=8, seed=4)
    few = make_synthetic_from_annotations(folder, dim=8, seed=3, max_videos_per_split=2)
    for x, y in zip(a.train + a.test, b.train + b.test):
        np.testing.assert_array_equal(x.rgb, y.rgb)
        np.testing.assert_array_equal(x.flow, y.flow)
    assert not np.array_equal(a.train[0].rgb, other.train[0].rgb)
    by_name = {v.name: v for v in a.train + a.test}
    for video in few.train + few.test:  # a video's features do not depend on which others are selected
        np.testing.assert_array_equal(video.rgb, by_name[video.name].rgb)


def test_selection_options(folder):
    data = make_synthetic_from_annotations(folder, dim=4, max_videos_per_split=3)
    every = make_synthetic_from_annotations(folder, dim=4)
    train_names = [v.name for v in every.train]
    assert len(train_names) == 6  # evenly spaced: positions round(0), round(2.5), round(5)
    assert [v.name for v in data.train] == [train_names[0], train_names[2], train_names[5]]
    assert len(data.test) == 3 and set(data.ambiguous) <= {v.name for v in data.test}
    short = make_synthetic_from_annotations(folder, dim=4, max_seconds=150)
    kept = [v for v in every.train + every.test if v.duration <= 150]
    assert [v.name for v in short.train + short.test] == [v.name for v in kept]
    with pytest.raises(ValueError, match="no 'validation' or 'test' video left"):
        make_synthetic_from_annotations(folder, max_seconds=1)
    for kwargs, message in (
        ({"dim": 0}, "dim"),
        ({"difficulty": -1.0}, "difficulty"),
        ({"difficulty": float("nan")}, "difficulty"),
        ({"max_videos_per_split": 0}, "max_videos_per_split"),
        ({"max_seconds": "400"}, "max_seconds"),
        ({"seed": 1.5}, "seed"),
    ):
        with pytest.raises(ValueError, match=message):
            make_synthetic_from_annotations(folder, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# the feature model


def test_difficulty_lowers_probe_accuracy_monotonically(probe_folder):
    accuracy = {}
    for difficulty in (0.5, 1.0, 2.0):
        data = make_synthetic_from_annotations(probe_folder, dim=32, difficulty=difficulty)
        train, test = snippet_table(data.train), snippet_table(data.test)
        accuracy[difficulty] = (class_probe(train, test, "both"), action_probe(train, test, "both"))
    for easy, hard in ((0.5, 1.0), (1.0, 2.0)):
        assert accuracy[easy][0] > accuracy[hard][0] + 0.05, accuracy
        assert accuracy[easy][1] > accuracy[hard][1] + 0.02, accuracy


def test_each_modality_alone_is_weaker_than_both(probe_folder):
    """Flow finds actions (sharp boxes), RGB names classes (key moments); both beat either on both."""
    data = make_synthetic_from_annotations(probe_folder, dim=32)
    train, test = snippet_table(data.train), snippet_table(data.test)
    act = {m: action_probe(train, test, m) for m in ("rgb", "flow", "both")}
    cls = {m: class_probe(train, test, m) for m in ("rgb", "flow", "both")}
    assert act["flow"] > act["rgb"] + 0.03, act  # RGB ramps around actions and fires on look-alikes
    assert cls["rgb"] > cls["flow"] + 0.08, cls  # Flow names the group, barely the class
    assert act["both"] > max(act["rgb"], act["flow"]), act
    assert cls["both"] > max(cls["rgb"], cls["flow"]) + 0.02, cls


def position_profile(data) -> np.ndarray:
    """Per-snippet class-probe accuracy inside instances of 8+ snippets, by fifth of the instance."""
    train, test = snippet_table(data.train), snippet_table(data.test)
    on = train["cls"] >= 0
    x = np.hstack([train["both"][on], np.ones((on.sum(), 1))])
    weights = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ np.eye(len(data.classes))[train["cls"][on]])
    predicted = (np.hstack([test["both"], np.ones((len(test["cls"]), 1))]) @ weights).argmax(axis=1)
    fifth = np.floor(test["position"] * 5).astype(int)
    long = test["length"] >= 8
    return np.array(
        [np.mean(predicted[long & (fifth == j)] == test["cls"][long & (fifth == j)]) for j in range(5)]
    )


def test_class_evidence_peaks_at_a_key_moment_unlike_the_first_family(probe_folder):
    """Here the class is named around an apex inside the instance, its ends show only the group: a snippet
    probe is far more accurate in the middle fifths than at the ends. In the first family (two phase
    looks, no snippet names the class) accuracy is flat along the instance."""
    here = position_profile(make_synthetic_from_annotations(probe_folder, dim=32, difficulty=0.5))
    first = position_profile(make_synthetic_thumos(num_train=60, num_test=40, dim=32, seed=1))
    peak = lambda p: p[1:4].max() - (p[0] + p[4]) / 2  # noqa: E731
    assert peak(here) > 0.2, here
    assert peak(first) < 0.1, first


# --------------------------------------------------------------------------------------------------------------
# the real THUMOS14 annotations


@needs_thumos
def test_real_annotations_ground_truth_and_held_out_selection():
    every = make_synthetic_from_annotations(THUMOS_DIR, dim=4)
    assert (len(every.train), len(every.test), every.num_classes) == (200, 212, 20)
    assert sum(len(v.segments) for v in every.test) == 3358
    # 99 regions in Ambiguous_test.txt, 3 of them in video_test_0001292, which the annotations do not list
    assert sum(len(spans) for spans in every.ambiguous.values()) == 96
    assert max(v.num_snippets for v in every.test) >= 2600
    held_out = make_synthetic_from_annotations(THUMOS_DIR, dim=4, max_videos_per_split=60, max_seconds=400)
    assert (len(held_out.train), len(held_out.test)) == (60, 60)
    assert all(v.duration <= 400 for v in held_out.train + held_out.test)
    for split in (
        held_out.train,
        held_out.test,
    ):  # even spacing over the class-grouped names keeps every class
        assert len(np.unique(np.concatenate([v.segment_classes for v in split]))) == 20
    by_name = {v.name: v for v in every.train + every.test}
    for video in held_out.test:
        np.testing.assert_array_equal(video.segments, by_name[video.name].segments)
        np.testing.assert_array_equal(video.rgb, by_name[video.name].rgb)


def test_the_command_line_runs_on_the_family(folder, tmp_path, capsys):
    check_annotation_family_cli(
        "--synthetic-from",
        folder,
        data="synthetic-from-annotations",
        extra=[],
        conflicting="--data-dir",
        out=tmp_path / "out",
        capsys=capsys,
    )
