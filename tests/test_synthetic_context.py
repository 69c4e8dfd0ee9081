"""Tests of the action-context synthetic family (wstal.synthetic_context).

Selection, determinism and validation run on a tiny THUMOS-layout folder written here; the ground truth
and the probes of the feature model run on the real THUMOS14 annotations in ../shared/data/thumos14 and
skip when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scripts import check_annotation_family_cli
from thumos_folder import thumos_format_folder

from wstal.data import SNIPPET_SECONDS, WSTALDataset
from wstal.synthetic_context import confusion, make_synthetic_context
from wstal.synthetic_gt import make_synthetic_from_annotations

THUMOS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14"
needs_thumos = pytest.mark.skipif(not THUMOS_DIR.is_dir(), reason="../shared/data/thumos14 is not available")
HELD_OUT = {"max_videos_per_split": 60, "max_seconds": 400}  # the grid's 60 + 60 videos
PROBE_DIM = 128


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return thumos_format_folder(tmp_path_factory.mktemp("context"), num_train=5, num_test=4)


_probe_data: dict[tuple[str, float], WSTALDataset] = {}


def probe_data(difficulty: float, family: str = "context") -> WSTALDataset:
    """The held-out selection at ``PROBE_DIM`` channels, built once per (family, difficulty)."""
    key = (family, difficulty)
    if key not in _probe_data:
        make = make_synthetic_context if family == "context" else make_synthetic_from_annotations
        _probe_data[key] = make(THUMOS_DIR, dim=PROBE_DIM, difficulty=difficulty, **HELD_OUT)
    return _probe_data[key]


# --------------------------------------------------------------------------------------------------------------
# probes


def regions(video, near: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per snippet: inside an instance; within ``near`` snippets before one; within ``near`` after one
    (never inside any)."""
    t = video.num_snippets
    inside, before, after = np.zeros(t, bool), np.zeros(t, bool), np.zeros(t, bool)
    for a, b in np.round(video.segments / SNIPPET_SECONDS).astype(int):
        inside[max(0, a) : min(b, t)] = True
        before[max(0, a - near) : max(0, min(a, t))] = True
        after[min(max(b, 0), t) : min(b + near, t)] = True
    return inside, before & ~inside, after & ~inside


def ridge(x: np.ndarray, y: np.ndarray, penalty: float = 1.0) -> np.ndarray:
    """Closed-form ridge regression with a bias column; returns the weights."""
    x = np.hstack([x, np.ones((len(x), 1))])
    return np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ y)


def apply(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))]) @ weights


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    ranks = np.argsort(np.argsort(np.concatenate([positive, negative]), kind="stable")) + 1.0
    return float(
        (ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2)
        / (len(positive) * len(negative))
    )


def pooled_classifier_firing(data: WSTALDataset) -> dict[str, float]:
    """A weakly supervised classifier that pools on everything: ridge from each training video's mean RGB
    to its label, applied to every test snippet. Per labelled class of a test video, the share of
    snippets just before (4) / just after (4) / far from (> 4 snippets) its instances that score above
    the median of the instances' own snippets, and the mean score in the near windows and inside."""
    weights = ridge(
        np.stack([v.rgb.mean(axis=0) for v in data.train]), np.stack([v.label for v in data.train])
    )
    rates: dict[str, list[float]] = {"before": [], "after": [], "far": [], "near_mean": [], "inside_mean": []}
    for video in data.test:
        scores = apply(weights, video.rgb)
        inside, before, after = regions(video, near=4)
        _, wide_before, wide_after = regions(video, near=8)
        far = ~(inside | wide_before | wide_after)
        if not inside.any():
            continue
        for k in np.flatnonzero(video.label):
            median = np.median(scores[inside, k])
            for name, where in (("before", before), ("after", after), ("far", far)):
                if where.any():
                    rates[name].append(float(np.mean(scores[where, k] > median)))
            rates["near_mean"].append(float(scores[before | after, k].mean()))
            rates["inside_mean"].append(float(scores[inside, k].mean()))
    return {name: float(np.mean(values)) for name, values in rates.items()}


def snippet_rows(videos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB, Flow and class (-1 = background; overlapping copies keep the first class) of every snippet."""
    classes = []
    for video in videos:
        cls = np.full(video.num_snippets, -1)
        for (a, b), k in zip(np.round(video.segments / SNIPPET_SECONDS).astype(int), video.segment_classes):
            span = cls[max(0, a) : min(b, video.num_snippets)]
            span[span < 0] = k
        classes.append(cls)
    return (
        np.concatenate([v.rgb for v in videos]),
        np.concatenate([v.flow for v in videos]),
        np.concatenate(classes),
    )


def class_probe(data: WSTALDataset, modality: str) -> float:
    """Accuracy of a one-vs-rest ridge probe that names the class of an action snippet."""
    train, test = snippet_rows(data.train), snippet_rows(data.test)
    pick = {"rgb": lambda r: r[0], "flow": lambda r: r[1], "both": lambda r: np.hstack(r[:2])}[modality]
    on_train, on_test = train[2] >= 0, test[2] >= 0
    weights = ridge(pick(train)[on_train], np.eye(data.num_classes)[train[2][on_train]])
    return float(np.mean(apply(weights, pick(test)[on_test]).argmax(axis=1) == test[2][on_test]))


# --------------------------------------------------------------------------------------------------------------
# ground truth, selection, determinism, validation


def test_ground_truth_and_selection_are_the_ground_truth_familys(folder):
    here = make_synthetic_context(folder, dim=8, max_videos_per_split=3)
    there = make_synthetic_from_annotations(folder, dim=8, max_videos_per_split=3)
    assert here.classes == there.classes
    assert sorted(here.ambiguous) == sorted(there.ambiguous)
    assert len(here.train + here.test) == len(there.train + there.test) == 6
    for a, b in zip(here.train + here.test, there.train + there.test):
        assert a.name == b.name and a.duration == b.duration
        np.testing.assert_array_equal(a.segments, b.segments)
        np.testing.assert_array_equal(a.segment_classes, b.segment_classes)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.rgb.shape == a.flow.shape == (max(1, round(a.duration / SNIPPET_SECONDS)), 8)
        assert a.rgb.dtype == a.flow.dtype == np.float32
        assert np.isfinite(a.rgb).all() and np.isfinite(a.flow).all()
        assert not np.allclose(a.rgb, b.rgb)  # a different feature model


def test_deterministic_per_seed_and_per_video(folder):
    a = make_synthetic_context(folder, dim=16, seed=3)
    b = make_synthetic_context(folder, dim=16, seed=3)
    other = make_synthetic_context(folder, dim=16, seed=4)
    few = make_synthetic_context(
        folder / "Thumos14reduced-Annotations", dim=16, seed=3, max_videos_per_split=2
    )
    for x, y in zip(a.train + a.test, b.train + b.test):
        np.testing.assert_array_equal(x.rgb, y.rgb)
        np.testing.assert_array_equal(x.flow, y.flow)
    assert not np.array_equal(a.train[0].rgb, other.train[0].rgb)
    by_name = {v.name: v for v in a.train + a.test}
    for video in few.train + few.test:  # a video does not depend on which others are selected
        np.testing.assert_array_equal(video.flow, by_name[video.name].flow)


def test_refuses_bad_arguments_and_missing_folders(folder, tmp_path):
    for kwargs, message in (
        ({"dim": 0}, "dim"),
        ({"difficulty": -0.5}, "difficulty"),
        ({"difficulty": float("inf")}, "difficulty"),
        ({"seed": -1}, "seed"),
        ({"max_videos_per_split": 0}, "max_videos_per_split"),
        ({"max_seconds": "400"}, "max_seconds"),
    ):
        with pytest.raises(ValueError, match=message):
            make_synthetic_context(folder, **kwargs)
    with pytest.raises(ValueError, match="no 'validation' or 'test' video left"):
        make_synthetic_context(folder, max_seconds=1)
    with pytest.raises(FileNotFoundError):
        make_synthetic_context(tmp_path / "nowhere")


def test_difficulty_sets_more_confusion():
    easy, default, hard = confusion(0.0), confusion(1.0), confusion(2.0)
    for field in (
        "free_scene",
        "cross_scene",
        "window",
        "window_motion",
        "family_share",
        "camera",
        "background",
    ):
        assert getattr(easy, field) <= getattr(default, field) <= getattr(hard, field), field
        assert getattr(easy, field) < getattr(hard, field), field
    assert easy.action_look > default.action_look > hard.action_look


def test_the_calibration_script_runs(folder, capsys):
    from studies import calibrate_context

    argv = [str(folder), "--difficulty", "0", "1", "--epochs", "1", "--dim", "8", "--max-videos", "3"]
    assert calibrate_context.main(argv) == 0
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| 0 |") or line.startswith("| 1 |")
    ]
    assert len(rows) == 2 and all(len(row.split("|")) == 7 for row in rows)


# --------------------------------------------------------------------------------------------------------------
# the real THUMOS14 annotations: ground truth, widths


@needs_thumos
def test_real_annotations_at_thumos_width():
    data = make_synthetic_context(THUMOS_DIR, dim=1024, max_videos_per_split=2, max_seconds=400)
    reference = make_synthetic_from_annotations(THUMOS_DIR, dim=4, max_videos_per_split=2, max_seconds=400)
    assert (data.rgb_dim, data.flow_dim, len(data.train), len(data.test)) == (1024, 1024, 2, 2)
    for a, b in zip(data.train + data.test, reference.train + reference.test):
        assert a.name == b.name
        np.testing.assert_array_equal(a.segments, b.segments)
        np.testing.assert_array_equal(a.label, b.label)
    held_out = probe_data(1.0)
    assert (len(held_out.train), len(held_out.test)) == (60, 60)
    for split in (held_out.train, held_out.test):
        assert len(np.unique(np.concatenate([v.segment_classes for v in split]))) == 20


# --------------------------------------------------------------------------------------------------------------
# the feature model, on the real annotations


@needs_thumos
def test_context_makes_a_pooled_classifier_fire_outside_actions_more_with_difficulty():
    """Context before and after each instance and in action-free shots: a classifier trained on pooled
    video features fires there, increasingly with difficulty; at difficulty 2 (above 1.77 the context is
    the stronger class evidence) it scores the context next to an action above the action itself, at
    difficulty 0 below."""
    firing = {d: pooled_classifier_firing(probe_data(d)) for d in (0.0, 1.0, 2.0)}
    for easy, hard in ((0.0, 1.0), (1.0, 2.0)):
        for where in ("before", "after", "far"):
            assert firing[hard][where] > firing[easy][where] + 0.03, firing
    for d in (1.0, 2.0):
        assert firing[d]["before"] > firing[d]["far"] and firing[d]["after"] > firing[d]["far"], firing
    ratio = {d: firing[d]["near_mean"] / firing[d]["inside_mean"] for d in firing}
    assert ratio[0.0] < ratio[1.0] < ratio[2.0], ratio
    assert ratio[0.0] < 1 < ratio[2.0], ratio  # the context outscores the action only when it is the stronger
    # the ground-truth family at its default difficulty has no such context: its classifier fires less
    other = pooled_classifier_firing(probe_data(1.0, "ground-truth"))
    assert max(other["before"], other["after"]) < min(firing[1.0]["before"], firing[1.0]["after"]), (
        other,
        firing,
    )


@needs_thumos
def test_flow_energy_does_not_separate_action_from_background(monkeypatch):
    """The motion laid into Flow (noise off): camera and background motion make its energy a weak
    detector of actions, weaker with difficulty; the direction of the noisy Flow (a linear probe)
    separates them far better than the energy of the clean one."""
    import wstal.synthetic_context as module

    noisy = probe_data(1.0)
    train_flow, train_cls = np.concatenate([v.flow for v in noisy.train]), snippet_rows(noisy.train)[2]
    test_flow, test_cls = np.concatenate([v.flow for v in noisy.test]), snippet_rows(noisy.test)[2]
    weights = ridge(train_flow, (train_cls >= 0).astype(float))
    scores = apply(weights, test_flow)
    probe_auc = auc(scores[test_cls >= 0], scores[test_cls < 0])

    monkeypatch.setattr(module, "_noise", lambda rng, t, dim: np.zeros((t, dim), np.float32))
    energy_auc = {}
    for d in (0.0, 1.0, 2.0):
        clean = make_synthetic_context(THUMOS_DIR, dim=PROBE_DIM, difficulty=d, **HELD_OUT)
        energy = np.linalg.norm(np.concatenate([v.flow for v in clean.test]), axis=1)
        cls = snippet_rows(clean.test)[2]
        energy_auc[d] = auc(energy[cls >= 0], energy[cls < 0])
    assert energy_auc[0.0] > energy_auc[1.0] > energy_auc[2.0], energy_auc
    assert energy_auc[1.0] < 0.7, energy_auc
    assert probe_auc > energy_auc[1.0] + 0.15, (probe_auc, energy_auc)


@needs_thumos
def test_class_probe_falls_with_difficulty_and_flow_names_the_class_less_than_rgb():
    accuracy = {
        d: {m: class_probe(probe_data(d), m) for m in ("rgb", "flow", "both")} for d in (0.0, 1.0, 2.0)
    }
    for easy, hard in ((0.0, 1.0), (1.0, 2.0)):
        assert accuracy[easy]["both"] > accuracy[hard]["both"] + 0.03, accuracy
        assert accuracy[easy]["rgb"] > accuracy[hard]["rgb"] + 0.03, accuracy
    assert accuracy[0.0]["rgb"] > accuracy[0.0]["flow"] + 0.15, accuracy


@needs_thumos
def test_noise_is_correlated_in_time_unlike_the_ground_truth_family():
    """Feature noise drifts (a smoothed part): consecutive background snippets correlate here, not in the
    ground-truth family, whose noise is independent per snippet."""

    def lag_one(data: WSTALDataset) -> float:
        values = []
        for video in data.test[:20]:
            inside, _, _ = regions(video, near=0)
            x = video.rgb - video.rgb.mean(axis=0)
            quiet = ~inside[:-1] & ~inside[1:]
            values.append(
                np.mean(np.sum(x[:-1][quiet] * x[1:][quiet], axis=1) / np.sum(x[:-1][quiet] ** 2, axis=1))
            )
        return float(np.mean(values))

    from wstal.synthetic_context import _NOISE_SMOOTH, _NOISE_TIME

    expected = _NOISE_SMOOTH**2 * np.exp(-1 / _NOISE_TIME)  # the smoothed part's lag-one covariance
    assert lag_one(probe_data(0.0)) > 0.75 * expected
    assert abs(lag_one(probe_data(1.0, "ground-truth"))) < 0.25 * expected


def test_the_command_line_runs_on_the_family(folder, tmp_path, capsys):
    check_annotation_family_cli(
        "--synthetic-context",
        folder,
        data="synthetic-context",
        extra=["--difficulty", "0.5"],
        conflicting="--synthetic-from",
        out=tmp_path / "out",
        capsys=capsys,
    )
