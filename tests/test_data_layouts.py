"""The per-video THUMOS14 layout (ActionFormer's and OpenTAD's), its feature timing, and the converter.

The snippet-time conversions are checked against values worked out by hand; the converter by round trips
and by the command line giving identical results files on the same videos in either layout. Broken
per-video folders are catalogued in tests/test_broken_data.py.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scripts import two_stage
from thumos_folder import CLASSES, per_video_folder, thumos_format_folder

from wstal.convert import convert
from wstal.convert import main as convert_main
from wstal.data import SNIPPET_SECONDS, FeatureTiming, Video, snippet_clock
from wstal.detect import to_detections
from wstal.evaluation import Detection, evaluate_detections
from wstal.layouts import detect_layout, load_data_dir
from wstal.per_video import OPENTAD_JSON, load_per_video, write_per_video
from wstal.recall import evaluate_proposals, proposals_from_segments
from wstal.synthetic import make_synthetic_thumos
from wstal.thumos import ANNOTATIONS_DIR, FEATURES_FILE, load_thumos14, safe_load_object_array, write_thumos14

TINY_RUN = ["--width", "16", "--epochs", "1", "--threads", "1", "--quiet"]


def quiet_load(root: Path, **options) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no ambiguous regions in synthetic data
        return load_data_dir(root, **options)


# --------------------------------------------------------------------------------------------------------------
# snippet time, by hand


def test_feature_timing_by_hand() -> None:
    """ActionFormer's THUMOS14 features: a 16-frame clip every 4 frames at 30 fps. Feature i covers frames
    [4i, 4i + 16), centred on frame 4i + 8, i.e. (4i + 8) / 30 s; snippet i's centre i + 0.5 must land there.
    So one snippet is 4/30 = 0.1333 s and position 0 is at (16 - 4) / 2 / 30 = 0.2 s."""
    timing = FeatureTiming(fps=30.0, stride=4, window=16)
    assert timing.snippet_seconds == pytest.approx(0.133333333)
    assert timing.start_seconds == pytest.approx(0.2)
    for i in (0, 10, 99):
        assert timing.start_seconds + (i + 0.5) * timing.snippet_seconds == pytest.approx((4 * i + 8) / 30)
    # Thumos14reduced: 16 frames at 25 fps, non-overlapping: 0.64 s from 0 s, exactly the old constant
    assert FeatureTiming(25.0, 16, 16).snippet_seconds == SNIPPET_SECONDS
    assert FeatureTiming(25.0, 16, 16).start_seconds == 0.0

    video = Video("v", np.zeros((30, 2)), np.zeros((30, 2)), np.ones(1), [], [], duration=4.4, timing=timing)
    # snippets [10, 25): 0.2 + 10 * 4/30 = 1.5333 s to 0.2 + 25 * 4/30 = 3.5333 s
    (found,) = to_detections([(0, 0.9, 10.0, 25.0)], *snippet_clock(video))
    assert (found.start, found.end) == (pytest.approx(1.533333333), pytest.approx(3.533333333))
    segments = type("S", (), {"segments": np.array([[10.0, 25.0]]), "scores": np.array([0.5])})()
    (proposal,) = proposals_from_segments({"v": segments}, clocks={"v": snippet_clock(video)})["v"]
    assert (proposal.start, proposal.end) == (found.start, found.end)
    with pytest.raises(
        ValueError, match=r"video 'v': timing.stride must be a positive int \(frames\), got 0"
    ):
        Video(
            "v",
            np.zeros((3, 2)),
            np.zeros((3, 2)),
            np.ones(1),
            [],
            [],
            duration=1.0,
            timing=FeatureTiming(30.0, 0, 16),
        )


def test_snippet_unit_evaluation_uses_each_videos_clock() -> None:
    """Features every 4 frames over 16-frame clips at 32 fps (dyadic, so every value below is exact): a
    snippet is 0.125 s and position 0 is at 0.1875 s. Ground truth [2.0, 3.0] s is at positions 14.5 and
    22.5, rounded half to even to [14, 22]; the detection [1.9375, 2.9375] s is exactly [14, 22], a tIoU of
    1 in snippet units but 0.9375 / 1.0625 = 0.882 in seconds. The ambiguous region [1.0, 1.5] s becomes
    [round(6.5), round(10.5)] = [6, 10] and drops the false positive at [7, 9] = [1.0625, 1.3125] s.
    Read with the Thumos14reduced clock (0.64 s from 0 s), the detection would miss (tIoU 0.78) and the
    false positive would stay."""
    timing = FeatureTiming(32.0, 4, 16)
    assert (timing.snippet_seconds, timing.start_seconds) == (0.125, 0.1875)
    video = Video(
        "a", np.zeros((40, 2)), np.zeros((40, 2)), np.ones(1), [[2.0, 3.0]], [0], 5.0, timing=timing
    )
    plain = Video("b", np.zeros((10, 2)), np.zeros((10, 2)), np.ones(1), [[3.2, 5.12]], [0], duration=6.4)
    detections = {
        "a": [Detection(0, 0.9, 1.0625, 1.3125), Detection(0, 0.8, 1.9375, 2.9375)],
        "b": [Detection(0, 0.7, 3.2, 5.12)],
    }
    ambiguous = {"a": np.array([[1.0, 1.5]])}
    thumos = {"snippet_units": True, "ambiguous": ambiguous}
    result = evaluate_detections([video, plain], detections, 1, tiou_thresholds=(0.9,), **thumos)
    assert result.mean_ap.tolist() == [1.0]
    seconds = evaluate_detections([video, plain], detections, 1, tiou_thresholds=(0.9,), ambiguous=ambiguous)
    # in seconds the detection in 'a' misses: ranked FP (0.8), TP (0.7) for 2 ground truths, AP 1/2 * 1/2
    assert seconds.mean_ap.tolist() == [0.25]
    proposals = {"a": [Detection(0, 0.8, 1.9375, 2.9375)], "b": [Detection(0, 0.7, 3.2, 5.12)]}
    recall = evaluate_proposals([video, plain], proposals, max_proposals=(1,), recall_tiou=(0.9,), **thumos)
    assert recall.recall.tolist() == [[1.0]]


# --------------------------------------------------------------------------------------------------------------
# reading the per-video layout


def test_per_video_loader_reads_the_hand_made_folder(tmp_path: Path) -> None:
    root = per_video_folder(tmp_path / "pv")
    assert detect_layout(root) == "actionformer"
    data = load_data_dir(root)
    assert data.classes == tuple(CLASSES) and data.not_used == {}
    assert [v.name for v in data.train] == [f"video_validation_{i}" for i in range(4)]
    assert [v.name for v in data.test] == [f"video_test_{i}" for i in range(3)]
    document = json.loads((root / "annotations/thumos14.json").read_text())["database"]
    for index, video in enumerate([*data.train, *data.test]):
        entry = document[video.name]
        features = np.load(root / "i3d_features" / f"{video.name}.npy")
        np.testing.assert_array_equal(video.rgb, features[:, :1024])
        np.testing.assert_array_equal(video.flow, features[:, 1024:])
        assert video.timing == FeatureTiming(30.0, 4, 16) and video.duration == entry["duration"]
        assert video.segments.tolist() == [entry["annotations"][0]["segment"]]
        assert (
            video.segment_classes.tolist() == [index % 3]
            and video.label.tolist() == np.eye(3)[index % 3].tolist()
        )
    assert data.snippet_seconds == 4 / 30.0
    assert {k: v.tolist() for k, v in data.ambiguous.items()} == {"video_test_0": [[0.0, 0.5]]}


def test_opentad_variant(tmp_path: Path) -> None:
    """OpenTAD's file: subsets 'training' (THUMOS validation videos) and 'validation' (THUMOS test videos),
    'frame' instead of 'fps', its class file, Ambiguous annotations, features under features/<name>/."""
    root = tmp_path / "thumos-14"
    (root / "annotations").mkdir(parents=True)
    folder = root / "features" / "i3d_actionformer_stride4_thumos"
    folder.mkdir(parents=True)
    database = {}
    for i, (name, subset) in enumerate([("video_validation_1", "training"), ("video_test_1", "validation")]):
        np.save(folder / f"{name}.npy", np.full((70, 2048), i, np.float32))
        database[name] = {
            "subset": subset,
            "duration": 10.0,
            "frame": 250,
            "annotations": [
                {"label": "LongJump", "segment": [1.0, 2.0]},
                {"label": "Ambiguous", "segment": [3.0, 4.0]},
            ],
        }
    (root / OPENTAD_JSON).write_text(json.dumps({"database": database}))
    (root / "annotations/category_idx.txt").write_text("HighJump\nLongJump\n")
    assert detect_layout(root) == "opentad"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fps stated (as frames), ambiguous regions present: no warning
        data = load_data_dir(root)
    assert data.classes == ("HighJump", "LongJump")
    assert [v.name for v in data.train] == ["video_validation_1"] and [v.name for v in data.test] == [
        "video_test_1"
    ]
    assert data.test[0].timing == FeatureTiming(25.0, 4, 16) and data.test[0].rgb[0, 0] == 1
    assert data.test[0].label.tolist() == [0.0, 1.0] and data.ambiguous["video_test_1"].tolist() == [
        [3.0, 4.0]
    ]


def test_timing_from_the_json_else_from_the_arguments(tmp_path: Path) -> None:
    root = per_video_folder(tmp_path / "pv")
    path = root / "annotations/thumos14.json"
    document = json.loads(path.read_text())
    document["feature_stride"] = 16
    path.write_text(json.dumps(document))
    with pytest.warns(UserWarning, match="7 video.* span less than half or more than twice their duration"):
        data = load_per_video(root)  # the features were made every 4 frames: the check says so
    assert data.train[0].timing == FeatureTiming(30.0, 16, 16)
    with pytest.raises(
        ValueError, match=r"feature_stride=4 \(--feature-stride\) contradicts thumos14\.json's"
    ):
        load_per_video(root, feature_stride=4)
    del document["feature_stride"]
    path.write_text(json.dumps(document))
    # not in the JSON: the argument's, else the published default
    assert load_per_video(root, feature_window=32).train[0].timing == FeatureTiming(30.0, 4, 32)
    with pytest.raises(
        ValueError, match=r"feature_fps=25 \(--feature-fps\) contradicts the fps thumos14\.json states for 7"
    ):
        load_per_video(root, feature_fps=25.0)
    for entry in document["database"].values():
        del entry["fps"]
    path.write_text(json.dumps(document))
    with pytest.warns(UserWarning, match="states no fps: assuming 30 fps for every video"):
        assert load_per_video(root).test[0].timing == FeatureTiming(30.0, 4, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_per_video(root, feature_fps=29.97).test[0].timing == FeatureTiming(29.97, 4, 16)


def test_timing_arguments_are_refused_for_the_thumos14reduced_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = thumos_format_folder(tmp_path / "thumos")
    assert load_data_dir(root, feature_stride=16).test[0].timing == FeatureTiming(
        25.0, 16, 16
    )  # its own: fine
    with pytest.raises(SystemExit) as info:
        two_stage(
            ["--data-dir", str(root), "--feature-stride", "4", "--out", str(tmp_path / "out"), "--quiet"]
        )
    assert info.value.code == 2
    assert "feature_stride=4 (--feature-stride): the Thumos14reduced layout's features are 16-frame" in (
        capsys.readouterr().err
    )


# --------------------------------------------------------------------------------------------------------------
# the converter


def test_round_trip_keeps_every_file(tmp_path: Path) -> None:
    """Thumos14reduced -> per-video -> Thumos14reduced: the same arrays (labels as multi-hot: order within
    labels_all is not meaningful) and the same features, bit for bit."""
    source = thumos_format_folder(tmp_path / "thumos")
    assert convert(source, tmp_path / "pv") == "per-video"
    assert detect_layout(tmp_path / "pv") == "actionformer"
    assert convert(tmp_path / "pv", tmp_path / "back") == "thumos14reduced"
    for name in ("videoname", "subset", "classlist", "duration", "segments", "labels", "labels_all"):
        a = safe_load_object_array(source / ANNOTATIONS_DIR / f"{name}.npy")
        b = safe_load_object_array(tmp_path / "back" / ANNOTATIONS_DIR / f"{name}.npy")
        decode = lambda x: x.decode() if isinstance(x, bytes) else x  # noqa: E731
        assert [decode(x) for x in a.ravel().tolist()] == [decode(x) for x in b.ravel().tolist()], name
    for a, b in zip(*(safe_load_object_array(r / FEATURES_FILE) for r in (source, tmp_path / "back"))):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    text = (tmp_path / "back" / ANNOTATIONS_DIR / "Ambiguous_test.txt").read_text().split()
    assert text[0] == "video_test_0" and [float(x) for x in text[1:]] == [0.0, 0.5]
    json_file = tmp_path / "pv/annotations/thumos14.json"
    assert json.loads(json_file.read_text())["database"]["video_test_0"]["fps"] == 25.0


def test_stride_4_features_are_not_written_as_thumos14reduced(tmp_path: Path) -> None:
    root = per_video_folder(tmp_path / "pv")
    with pytest.raises(
        ValueError, match=r"video 'video_validation_0': its features have one snippet every 0\.133333 s"
    ):
        convert(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_converter_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = thumos_format_folder(tmp_path / "thumos")
    assert convert_main(["--data-dir", str(source), str(tmp_path / "pv")]) == 0
    assert "in the per-video layout to" in capsys.readouterr().out
    for argv, message in [
        (["--data-dir", str(source), str(tmp_path / "pv")], "argument out: .* exists and is not empty"),
        (["--data-dir", str(tmp_path / "nothing"), str(tmp_path / "x")], "argument --data-dir: .* not found"),
        (["--data-dir", str(source), "--to", "csv", str(tmp_path / "y")], "invalid choice: 'csv'"),
    ]:
        with pytest.raises(SystemExit) as info:
            convert_main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and pytest.importorskip("re").search(message, err), err


def test_built_in_data_written_in_both_layouts_loads_the_same(tmp_path: Path) -> None:
    """The README's built-in data, written out in each layout, reads back as the same dataset."""
    assert (
        convert_main(["--synthetic", "--max-videos", "3", "--synthetic-dim", "8", str(tmp_path / "pv")]) == 0
    )
    argv = ["--synthetic", "--max-videos", "3", "--synthetic-dim", "8", "--to", "thumos14reduced"]
    assert convert_main([*argv, str(tmp_path / "wt")]) == 0
    original = make_synthetic_thumos(num_train=3, num_test=3, dim=8, seed=0)
    pv, wt = (quiet_load(tmp_path / name, feature_dim=16) for name in ("pv", "wt"))
    for dataset in (pv, wt):
        assert dataset.classes == original.classes
        for a, b in zip([*original.train, *original.test], [*dataset.train, *dataset.test]):
            assert a.name == b.name and a.duration == b.duration
            np.testing.assert_array_equal(a.rgb, b.rgb)
            np.testing.assert_array_equal(a.flow, b.flow)
            np.testing.assert_array_equal(a.label, b.label)
            np.testing.assert_array_equal(a.segments, b.segments)
            np.testing.assert_array_equal(a.segment_classes, b.segment_classes)
            assert snippet_clock(b) == (SNIPPET_SECONDS, 0.0)


def run_outputs(data_dir: Path, out: Path, *extra: str) -> dict[str, object]:
    assert two_stage(["--data-dir", str(data_dir), *TINY_RUN, "--out", str(out), *extra]) == 0
    results = json.loads((out / "results.json").read_text())
    for varying in ("command", "runtime_seconds"):
        del results[varying]
    files = {name: (out / name).read_text() for name in ("detections.json", "proposals.json", "results.md")}
    return {"results.json": results, **files}


def test_the_same_videos_in_either_layout_give_identical_results(tmp_path: Path) -> None:
    """The issue's bar: a per-video folder written by the converter from a Thumos14reduced folder runs end
    to end through --data-dir and gives the original folder's results files (run time and command aside)."""
    source = thumos_format_folder(tmp_path / "thumos")
    convert(source, tmp_path / "pv")
    original = run_outputs(source, tmp_path / "out_original")
    converted = run_outputs(tmp_path / "pv", tmp_path / "out_converted")
    assert original["results.json"]["videos"] == {"train": 4, "test": 3, "not_used": {}}
    assert converted == original


def test_cli_on_stride_4_features_with_a_video_left_out(tmp_path: Path) -> None:
    """ActionFormer-style features at their own rate: detections come out in seconds inside each video, and
    results.json counts the videos used and names the one left out."""
    root = per_video_folder(tmp_path / "pv")
    (root / "i3d_features/video_test_1.npy").unlink()
    with pytest.warns(
        UserWarning, match=r"leaving out 1 annotated video\(s\) .*video_test_1 \(no feature file"
    ):
        outputs = run_outputs(root, tmp_path / "out", "--unused-videos", "warn")
    assert outputs["results.json"]["videos"] == {
        "train": 4,
        "test": 2,
        "not_used": {"video_test_1": "no feature file i3d_features/video_test_1.npy"},
    }
    detections = json.loads(outputs["detections.json"])["results"]
    assert set(detections) == {"video_test_0", "video_test_2"}
    with pytest.warns(UserWarning, match="leaving out 1"):
        durations = {v.name: v.duration for v in load_per_video(root, unused="warn").test}
    for name, rows in detections.items():
        assert rows and all(
            0.2 - 1e-9 <= r["segment"][0] <= r["segment"][1] <= durations[name] + 1 for r in rows
        )


def test_written_folders_refuse_to_overwrite(tmp_path: Path) -> None:
    data = make_synthetic_thumos(num_train=1, num_test=1, dim=4, seed=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for write in (write_per_video, write_thumos14):
        with pytest.raises(FileExistsError, match="exists and is not empty"):
            write(data, tmp_path / "full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(load_thumos14(write_thumos14(data, tmp_path / "wt"), feature_dim=8).train) == 1
