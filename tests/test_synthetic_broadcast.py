"""Tests of the broadcast synthetic family (wstal.synthetic_broadcast).

The replay placement, the slow motion and the snippet cover run on hand-made inputs worked out by hand;
the family itself runs on the real THUMOS14 annotations in ../shared/data/thumos14 and skips when that
folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import wstal.synthetic_broadcast as broadcast
import wstal.synthetic_context as context
from wstal import launch
from wstal.data import SNIPPET_SECONDS, Video, WSTALDataset
from wstal.synthetic_broadcast import (
    _Broadcast,
    _broadcast_model,
    _covered,
    _place_replays,
    _slow_motion,
    make_synthetic_broadcast,
)
from wstal.synthetic_context import make_synthetic_context
from wstal.synthetic_gt import _read_folder
from wstal.thumos import GroundTruth

THUMOS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14"
needs_thumos = pytest.mark.skipif(not THUMOS_DIR.is_dir(), reason="../shared/data/thumos14 is not available")
SMALL = {"dim": 16, "max_videos_per_split": 4, "max_seconds": 400}


# --------------------------------------------------------------------------------------------------------------
# the pure parts, by hand


def test_replays_take_the_first_free_start_of_their_window_in_request_order():
    occupied = np.zeros(20, dtype=bool)
    occupied[[2, 3, 4, 10, 11]] = True
    requests = np.array(
        [
            [5, 8, 3],  # 5, 6, 7 free: 5
            [5, 9, 3],  # 5-7 now taken, 8-10 and 9-11 hit 10: none before the window ends at 9
            [12, 30, 4],  # 12-15 free: 12
            [14, 30, 4],  # 14, 15 taken by the previous: 16-19
            [0, 30, 2],  # 0, 1 free: 0
            [17, 30, 1],  # 17-19 taken, nothing after the video's end: none
            [0, 30, 25],  # longer than the video: none
        ]
    )
    assert _place_replays(occupied, requests).tolist() == [5, -1, 12, 16, 0, -1, -1]
    assert occupied.sum() == 5  # the caller's array is left alone
    assert _place_replays(occupied, np.zeros((0, 3), dtype=np.int64)).shape == (0,)


def test_slow_motion_interpolates_linearly_and_keeps_the_ends():
    x = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 13.0]])
    np.testing.assert_allclose(_slow_motion(x, 5), [[0, 10], [1, 10], [2, 10], [3, 11.5], [4, 13]])
    np.testing.assert_allclose(_slow_motion(x, 3), x)
    np.testing.assert_allclose(_slow_motion(x[:1], 4), np.repeat(x[:1], 4, axis=0))


def test_covered_marks_every_touched_snippet_and_one_for_an_empty_span():
    spans = np.array([[1.5, 3.0], [6.0, 6.0], [8.2, 12.0], [-1.0, 0.3]])
    assert _covered(spans, 10).astype(int).tolist() == [1, 1, 1, 0, 0, 0, 1, 0, 1, 1]


def test_refuses_bad_arguments_naming_them(tmp_path):
    for kwargs, message in (
        ({"dim": 0}, "dim"),
        ({"difficulty": -0.5}, "difficulty"),
        ({"difficulty": float("nan")}, "difficulty"),
        ({"seed": 1.5}, "seed"),
        ({"max_videos_per_split": 0}, "max_videos_per_split"),
        ({"max_seconds": "400"}, "max_seconds"),
    ):
        with pytest.raises(ValueError, match=message):
            make_synthetic_broadcast(tmp_path, **kwargs)
    with pytest.raises(FileNotFoundError):
        make_synthetic_broadcast(tmp_path / "nowhere")


def test_registered_as_an_annotation_family():
    assert launch.ANNOTATION_FAMILIES["broadcast"] is make_synthetic_broadcast
    assert "--synthetic-broadcast" in launch.DATA_SOURCES


# --------------------------------------------------------------------------------------------------------------
# the family on the real THUMOS14 annotations

_data: dict[tuple[str, float, int], WSTALDataset] = {}


def data(difficulty: float, family: str = "broadcast", seed: int = 0) -> WSTALDataset:
    """The small selection, built once per (family, difficulty, seed)."""
    key = (family, difficulty, seed)
    if key not in _data:
        make = make_synthetic_broadcast if family == "broadcast" else make_synthetic_context
        _data[key] = make(THUMOS_DIR, seed=seed, difficulty=difficulty, **SMALL)
    return _data[key]


def structures(dataset: WSTALDataset, difficulty: float) -> list[tuple[GroundTruth, np.ndarray, _Broadcast]]:
    """Per video of ``dataset`` (made at ``difficulty``, seed 0): its ground truth, ambiguous regions
    (seconds) and broadcast structure, from the generator ``make_synthetic_broadcast`` uses (checked: the
    same features)."""
    _, classes, truths, ambiguous = _read_folder(THUMOS_DIR)
    by_name = {truth.name: truth for truth in truths}
    draw = _broadcast_model(0, classes, dataset.rgb_dim, difficulty)
    found = []
    for video in dataset.train + dataset.test:
        regions = ambiguous.get(video.name, np.zeros((0, 2)))
        again, structure = draw(by_name[video.name], regions)
        np.testing.assert_array_equal(again.rgb, video.rgb)
        np.testing.assert_array_equal(again.flow, video.flow)
        found.append((by_name[video.name], regions, structure))
    return found


def videos(dataset: WSTALDataset) -> dict[str, Video]:
    return {video.name: video for video in dataset.train + dataset.test}


@needs_thumos
def test_ground_truth_labels_and_ambiguous_regions_are_the_context_familys():
    here, there = data(1.0), data(1.0, "context")
    assert here.classes == there.classes and here.snippet_seconds == there.snippet_seconds
    assert sorted(here.ambiguous) == sorted(there.ambiguous) != []
    for name, regions in here.ambiguous.items():
        np.testing.assert_array_equal(regions, there.ambiguous[name])
    assert len(here.train) == len(here.test) == 4
    differs = 0
    for a, b in zip(here.train + here.test, there.train + there.test):
        assert a.name == b.name and a.duration == b.duration
        np.testing.assert_array_equal(a.segments, b.segments)
        np.testing.assert_array_equal(a.segment_classes, b.segment_classes)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.rgb.shape == a.flow.shape == b.rgb.shape == (b.num_snippets, 16)
        assert a.rgb.dtype == a.flow.dtype == np.float32
        differs += not np.array_equal(a.rgb, b.rgb)
    assert differs > 0  # the broadcast structure is there


@needs_thumos
def test_difficulty_zero_is_the_context_family_without_replays_or_overlay():
    for a, b in zip(data(0.0).train + data(0.0).test, data(0.0, "context").train + data(0.0, "context").test):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.flow, b.flow)
    for _, _, structure in structures(data(0.0), 0.0):
        assert len(structure.replays) == 0 and not structure.overlay.any()


@needs_thumos
def test_deterministic_per_seed_and_per_video():
    again = make_synthetic_broadcast(THUMOS_DIR, difficulty=1.0, **SMALL)
    for x, y in zip(data(1.0).train + data(1.0).test, again.train + again.test):
        np.testing.assert_array_equal(x.rgb, y.rgb)
        np.testing.assert_array_equal(x.flow, y.flow)
    assert not np.array_equal(data(1.0).train[0].rgb, data(1.0, seed=1).train[0].rgb)
    few = make_synthetic_broadcast(THUMOS_DIR, difficulty=1.0, **{**SMALL, "max_videos_per_split": 2})
    by_name = {v.name: v for v in data(1.0).train + data(1.0).test}
    shared = [v for v in few.train + few.test if v.name in by_name]
    assert len(shared) == 4  # the first and last of each split are in both selections
    for video in shared:  # a video does not depend on which others are selected
        np.testing.assert_array_equal(video.rgb, by_name[video.name].rgb)
        np.testing.assert_array_equal(video.flow, by_name[video.name].flow)


@needs_thumos
def test_replays_exist_and_avoid_every_instance_and_ambiguous_region():
    replays = 0
    for truth, regions, structure in structures(data(2.0), 2.0):
        t = len(structure.shot)
        spans = np.concatenate([truth.segments, regions]) / SNIPPET_SECONDS
        spans = spans[spans[:, 0] < t]
        taken = np.zeros(t, dtype=int)
        for start, stop, wipe, source_start, source_stop in structure.replays:
            assert 0 < start and stop <= t and stop - start > 2 * wipe and wipe in (1, 2)
            assert start >= source_stop > source_start  # after the instance it replays
            assert not np.any((spans[:, 0] < stop) & (spans[:, 1] > start)), (truth.name, start, stop)
            taken[start:stop] += 1
        assert taken.max(initial=0) <= 1  # replays do not overlap
        replays += len(structure.replays)
    assert replays >= 3


@needs_thumos
def test_a_replay_is_its_source_in_slow_motion_with_half_the_flow(monkeypatch):
    """With the noise on, a replay's RGB correlates with its slowed-down source; with it off, a replay is
    exactly the context features of its source, slowed down, with half the Flow."""
    correlations = []
    for truth, _, structure in structures(data(2.0), 2.0):
        video = videos(data(2.0))[truth.name]
        centred = video.rgb - video.rgb.mean(axis=0)
        for start, stop, wipe, source_start, source_stop in structure.replays:
            replay = centred[start + wipe : stop - wipe]
            source = _slow_motion(centred[source_start:source_stop], len(replay))
            correlations.append(np.corrcoef(replay.ravel(), source.ravel())[0, 1])
    assert len(correlations) >= 3 and min(correlations) > 0.5, correlations

    silent = lambda rng, t, dim: np.zeros((t, dim), np.float32)  # noqa: E731
    monkeypatch.setattr(context, "_noise", silent)
    monkeypatch.setattr(broadcast, "_noise", silent)
    clean = make_synthetic_broadcast(THUMOS_DIR, difficulty=2.0, **SMALL)
    plain = videos(make_synthetic_context(THUMOS_DIR, difficulty=2.0, **SMALL))
    checked = 0
    for truth, _, structure in structures(clean, 2.0):
        video, source = videos(clean)[truth.name], plain[truth.name]
        for start, stop, wipe, source_start, source_stop in structure.replays:
            inside, length = slice(start + wipe, stop - wipe), stop - start - 2 * wipe
            expected_rgb = _slow_motion(source.rgb[source_start:source_stop].astype(np.float64), length)
            expected_flow = 0.5 * _slow_motion(
                source.flow[source_start:source_stop].astype(np.float64), length
            )
            np.testing.assert_allclose(video.rgb[inside], expected_rgb, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(video.flow[inside], expected_flow, rtol=1e-6, atol=1e-6)
            checked += 1
    assert checked >= 3


@needs_thumos
def test_outside_replays_the_features_are_the_context_familys_plus_an_overlay_that_switches_at_cuts():
    _, classes, _, _ = _read_folder(THUMOS_DIR)
    shots = context._video_model(0, classes, SMALL["dim"], 1.0)
    switches = 0
    for truth, regions, structure in structures(data(1.0), 1.0):
        video, plain = videos(data(1.0))[truth.name], videos(data(1.0, "context"))[truth.name]
        outside = np.ones(len(structure.shot), dtype=bool)
        for start, stop, *_ in structure.replays:
            outside[start:stop] = False
        np.testing.assert_array_equal(video.flow[outside], plain.flow[outside])
        # RGB: the context family's plus one code times the overlay's strength
        extra = (video.rgb - plain.rgb).astype(np.float64)[outside]
        strength = structure.overlay[outside]
        np.testing.assert_allclose(extra[strength == 0], 0.0, atol=1e-5)
        if (strength > 0).any():
            code = extra[strength > 0] / strength[strength > 0, None]
            np.testing.assert_allclose(code, np.broadcast_to(code[0], code.shape), atol=1e-4)
            np.testing.assert_allclose(np.linalg.norm(code[0]), 1.0, rtol=1e-4)
        # the overlay switches only at shot cuts: the context family's, and each replay's edges
        cuts = set(np.flatnonzero(np.diff(structure.shot)) + 1)
        assert set(np.flatnonzero(np.diff(shots(truth, regions).shot)) + 1) <= cuts
        assert {int(edge) for row in structure.replays for edge in row[:2] if edge < len(outside)} <= cuts
        changes = set(np.flatnonzero(np.diff(structure.overlay)) + 1)
        assert changes <= cuts, (truth.name, sorted(changes - cuts))
        switches += len(changes)
    assert switches >= 4  # long stretches, not always on or off


@needs_thumos
def test_the_command_line_flag_loads_the_family(capsys):
    parser = launch.build_parser("test", "")
    flags = ["--difficulty", "1", "--synthetic-dim", "16", "--max-videos", "4", "--max-seconds", "400"]
    args = parser.parse_args(["--synthetic-broadcast", str(THUMOS_DIR), *flags])
    assert launch.data_source(args) == "synthetic-broadcast"
    loaded = launch.load_data(parser, args)
    for a, b in zip(loaded.train + loaded.test, data(1.0).train + data(1.0).test):
        np.testing.assert_array_equal(a.rgb, b.rgb)
    with pytest.raises(SystemExit):
        launch.parse(
            parser, ["--synthetic-broadcast", str(THUMOS_DIR), "--synthetic-context", str(THUMOS_DIR)]
        )
    assert "not allowed with argument" in capsys.readouterr().err
    args = parser.parse_args(["--synthetic-broadcast", str(THUMOS_DIR / "missing")])
    with pytest.raises(SystemExit) as exit_info:
        launch.load_data(parser, args)
    assert exit_info.value.code == 2 and "argument --synthetic-broadcast:" in capsys.readouterr().err
