"""Broken data is refused, and training cannot silently diverge.

Two catalogues of broken THUMOS14 folders (tests/thumos_folder.py, then one thing broken), one per layout:
each is refused by its loader with a message naming the video, split, file or field, and by the command
line with exit code 2 and no traceback, before any training. An annotated video that a run cannot use is
refused by default and named in a warning on request. Then the real annotations' own errata still load, the
explicit repair of non-finite features, and the stop of a stage whose loss turns NaN or inf with its last
good checkpoint kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from scripts import two_stage
from thumos_folder import object_array, per_video_folder, thumos_format_folder
from torch import nn

from wstal.batching import Batch, collate
from wstal.layouts import load_data_dir
from wstal.per_video import ACTIONFORMER_JSON, CLASS_FILE
from wstal.thumos import ANNOTATIONS_DIR, FEATURES_FILE, load_thumos14, safe_load_object_array
from wstal.train import TrainingDiverged, train_stage

THUMOS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14"

# the folder: video_validation_0..3 (entries 0-3, the training split), video_test_0..2 (entries 4-6)


def annotation(root: Path, name: str) -> np.ndarray:
    return safe_load_object_array(root / ANNOTATIONS_DIR / f"{name}.npy")


def save_annotation(root: Path, name: str, array: np.ndarray) -> None:
    np.save(root / ANNOTATIONS_DIR / f"{name}.npy", array, allow_pickle=True)


def edit_annotation(name: str, edit: Callable[[np.ndarray], None]) -> Callable[[Path], None]:
    def breaks(root: Path) -> None:
        array = annotation(root, name)
        edit(array)
        save_annotation(root, name, array)

    return breaks


def edit_features(edit: Callable[[np.ndarray], np.ndarray | None]) -> Callable[[Path], None]:
    def breaks(root: Path) -> None:
        features = safe_load_object_array(root / FEATURES_FILE)
        edited = edit(features)
        np.save(root / FEATURES_FILE, features if edited is None else edited, allow_pickle=True)

    return breaks


def set_value(entry: int, snippet: int, channel: int, value: float) -> Callable[[np.ndarray], None]:
    def edit(features: np.ndarray) -> None:
        features[entry][snippet, channel] = value

    return edit


def replace(entry: int, value: object) -> Callable[[np.ndarray], None]:
    def edit(array: np.ndarray) -> None:
        array[entry] = value

    return edit


def set_segment(entry: int, segment: Callable[[float], list[float]]) -> Callable[[Path], None]:
    """Replace video ``entry``'s one segment by ``segment(duration)``."""

    def breaks(root: Path) -> None:
        duration = float(annotation(root, "duration")[entry, 0])
        segments = annotation(root, "segments")
        segments[entry] = [segment(duration)]
        save_annotation(root, "segments", segments)

    return breaks


def truncate(root: Path) -> None:
    path = root / FEATURES_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def remove(*files: str) -> Callable[[Path], None]:
    def breaks(root: Path) -> None:
        for file in files:
            (root / file).unlink()

    return breaks


def remove_everything(root: Path) -> None:
    remove(FEATURES_FILE)(root)
    for file in (root / ANNOTATIONS_DIR).iterdir():
        file.unlink()
    (root / ANNOTATIONS_DIR).rmdir()


def remove_folder(root: Path) -> None:
    remove_everything(root)
    root.rmdir()


CATALOGUE = [
    pytest.param(
        edit_features(set_value(5, 3, 10, np.nan)),
        r"video 'video_test_1' \(entry 5\) has 1 non-finite feature value\(s\) "
        r"\(NaN or inf; the first in snippet 3\)",
        id="nan-features",
    ),
    pytest.param(
        edit_features(set_value(1, 0, 2000, -np.inf)),
        r"video 'video_validation_1' \(entry 1\) has 1 non-finite",
        id="inf-features",
    ),
    pytest.param(
        edit_annotation("subset", lambda s: s.fill(b"validation")),
        r"subset\.npy: no test videos: no video is in the 'test' subset \(subsets found: \['validation'\]\)",
        id="no-test-videos",
    ),
    pytest.param(
        edit_annotation("subset", lambda s: s.fill(b"test")),
        r"subset\.npy: no training videos: no video is in the 'validation' subset",
        id="no-training-videos",
    ),
    pytest.param(
        edit_features(lambda f: replace(2, np.zeros((30, 2000), np.float32))(f)),
        r"video 'video_validation_2' \(entry 2\) must be a \(T, 2048\) array, got shape \(30, 2000\)",
        id="width-mismatch",
    ),
    pytest.param(
        edit_features(lambda f: f[:-1]),
        r"one feature array per annotated video \(7 in .*videoname\.npy\), got an array of shape \(6,\)",
        id="count-mismatch",
    ),
    pytest.param(truncate, rf"{FEATURES_FILE}: pickle data was truncated", id="truncated-file"),
    pytest.param(
        remove(f"{ANNOTATIONS_DIR}/labels_all.npy"),
        r"missing annotation file\(s\) labels_all\.npy",
        id="missing-labels-all",
    ),
    pytest.param(
        edit_annotation("labels", replace(3, ["Jumping"])),
        r"video 'video_validation_3' uses labels \['Jumping'\] that are not in classlist\.npy",
        id="unknown-class",
    ),
    pytest.param(
        set_segment(6, lambda duration: [5.0, 2.0]),
        r"segments\.npy: video 'video_test_2': segment 0 \[5\.0, 2\.0\] ends before it starts",
        id="reversed-segment",
    ),
    pytest.param(
        edit_features(replace(0, np.zeros((0, 2048), np.float32))),
        r"video 'video_validation_0' \(entry 0\) has zero snippets",
        id="empty-video",
    ),
    pytest.param(
        edit_annotation("videoname", replace(6, b"video_test_1")),
        r"videoname\.npy: 1 video name\(s\) appear more than once, e\.g\. \['video_test_1'\]",
        id="duplicate-names",
    ),
    pytest.param(
        set_segment(4, lambda duration: [duration + 5, duration + 8]),
        r"video 'video_test_0': segment 0 \[.*\] ends past the video's duration .* s "
        r"\(duration\.npy; tolerance 0\.64 s\)",
        id="segment-past-duration",
    ),
    pytest.param(
        set_segment(4, lambda duration: [-1.0, 2.0]),
        r"video 'video_test_0': segment 0 \[-1\.0, 2\.0\] starts before 0 s",
        id="negative-segment",
    ),
    pytest.param(
        set_segment(5, lambda duration: [1.0, math.nan]),
        r"video 'video_test_1': segment 0 \[1\.0, nan\] is not finite",
        id="nan-segment",
    ),
    pytest.param(
        set_segment(5, lambda duration: [1.0, 2.0, 3.0]),
        r"segments\.npy: video 'video_test_1' must list \[start, end\] pairs in seconds",
        id="segment-not-a-pair",
    ),
    pytest.param(
        edit_annotation("duration", replace(2, 0.0)),
        r"duration\.npy: video 'video_validation_2' has duration 0\.0",
        id="zero-duration",
    ),
    pytest.param(
        lambda root: save_annotation(root, "labels", annotation(root, "labels")[:-1]),
        r"annotation files disagree on the number of videos: .*'labels': 6",
        id="annotation-count-mismatch",
    ),
    pytest.param(
        edit_annotation("subset", replace(2, b"training")),
        r"1 annotated video\(s\) would not be used: video_validation_2 \(subset 'training' is neither "
        r"'validation' \(training\) nor 'test' \(test\)\); .* --unused-videos warn",
        id="unknown-subset",
    ),
    pytest.param(
        lambda root: [
            edit_annotation(name, replace(1, []))(root) for name in ("segments", "labels", "labels_all")
        ],
        r"would not be used: video_validation_1 \(no label: labels_all\.npy lists no class and it has no "
        r"segment\)",
        id="no-label",
    ),
    pytest.param(remove_everything, rf"{FEATURES_FILE}: feature file not found", id="empty-folder"),
    pytest.param(remove_folder, r"THUMOS14 data folder not found", id="no-folder"),
]


# ------------------------------------------------------------------------ the per-video layout
# the folder: video_validation_0..3 ("Validation"), video_test_0..2 ("Test"); classes CliffDiving, Diving,
# LongJump by i % 3; video_test_0 has an Ambiguous region


def edit_json(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def breaks(root: Path) -> None:
        path = root / ACTIONFORMER_JSON
        document = json.loads(path.read_text())
        edit(document)
        path.write_text(json.dumps(document))

    return breaks


def edit_entry(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    return edit_json(lambda document: edit(document["database"][name]))


def write_json_text(text: str) -> Callable[[Path], None]:
    return lambda root: (root / ACTIONFORMER_JSON).write_text(text)


def save_features(name: str, array: object, *, allow_pickle: bool = False) -> Callable[[Path], None]:
    return lambda root: np.save(root / "i3d_features" / f"{name}.npy", array, allow_pickle=allow_pickle)


def truncate_file(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def nan_features(root: Path) -> None:
    path = root / "i3d_features" / "video_test_1.npy"
    features = np.load(path)
    features[7, 100] = np.nan
    np.save(path, features)


def duplicate_video(root: Path) -> None:
    path = root / ACTIONFORMER_JSON
    text = path.read_text()
    entry = json.dumps(json.loads(text)["database"]["video_test_2"])
    path.write_text(text.replace('"database": {', f'"database": {{"video_test_2": {entry}, ', 1))


def set_label_id(name: str, label_id: int) -> Callable[[Path], None]:
    def breaks(root: Path) -> None:
        (root / CLASS_FILE).unlink()  # without a class file, label_id orders the classes
        edit_entry(name, lambda e: e["annotations"][0].update(label_id=label_id))(root)

    return breaks


def del_key(key: str) -> Callable[[dict], None]:
    return lambda entry: entry.pop(key)


def set_key(key: str, value: object) -> Callable[[dict], None]:
    return lambda entry: entry.update({key: value})


def set_first_segment(segment: object) -> Callable[[dict], None]:
    return lambda entry: entry["annotations"][0].update(segment=segment)


PER_VIDEO_CATALOGUE = [
    pytest.param(
        remove("i3d_features/video_test_1.npy"),
        r"thumos14\.json: 1 annotated video\(s\) would not be used: video_test_1 \(no feature file "
        r"i3d_features/video_test_1\.npy\)",
        id="missing-feature-file",
    ),
    pytest.param(
        edit_entry("video_validation_2", set_key("subset", "training")),
        r"would not be used: video_validation_2 \(subset 'training' is neither 'validation' \(training\) "
        r"nor 'test' \(test\) of the actionformer layout\)",
        id="unknown-subset",
    ),
    pytest.param(
        edit_entry("video_validation_1", set_key("annotations", [])),
        r"would not be used: video_validation_1 \(no label: no action annotated\)",
        id="no-label",
    ),
    pytest.param(
        write_json_text("[]"),
        r"thumos14\.json: not an ActivityNet-style annotation file: expected an ActivityNet-style object with "
        r"a 'database' object .*, got a JSON list",
        id="json-a-list",
    ),
    pytest.param(
        write_json_text('{"version": "x", "results": {}}'),
        r"not an ActivityNet-style annotation file \(this looks like a detection results file\)",
        id="json-results-file",
    ),
    pytest.param(write_json_text('{"database": '), r"thumos14\.json: not valid JSON", id="json-truncated"),
    pytest.param(
        edit_entry("video_test_0", set_key("annotations", {"label": "Diving"})),
        r"video 'video_test_0': 'annotations' must be a list, got dict",
        id="annotations-not-a-list",
    ),
    pytest.param(
        edit_entry("video_test_0", del_key("duration")),
        r"video 'video_test_0' has no 'duration'; ActivityNet-style entries state both",
        id="duration-missing",
    ),
    pytest.param(
        edit_entry("video_test_0", del_key("fps")),
        r"video 'video_test_0' has no 'fps' \(nor 'frame'\), while 6 other video\(s\) state theirs",
        id="fps-missing",
    ),
    pytest.param(
        edit_entry("video_test_2", set_key("fps", 0)),
        r"video 'video_test_2': 'fps' must be a positive number, got 0",
        id="fps-zero",
    ),
    pytest.param(
        edit_entry("video_validation_3", lambda e: e["annotations"][0].update(label="Jumping")),
        r"video 'video_validation_3': annotation 0 has the label 'Jumping', which is not in "
        r"annotations/category_idx\.txt",
        id="label-outside-class-list",
    ),
    pytest.param(
        set_label_id("video_validation_3", 1),
        r"video 'video_validation_3' annotation 0: the label 'CliffDiving' has label_id 1, elsewhere 0",
        id="label-id-disagrees",
    ),
    pytest.param(
        duplicate_video,
        r"thumos14\.json: key\(s\) \['video_test_2'\] appear more than once in one object",
        id="duplicate-video",
    ),
    pytest.param(
        edit_entry("video_test_1", set_first_segment([60, 135])),
        r"video 'video_test_1': segment 0 \[60\.0, 135\.0\] ends past the video's duration .* s \(its "
        r"'duration'; tolerance 0\.64 s\); are the times in frames, not seconds\?",
        id="segment-in-frames",
    ),
    pytest.param(
        edit_entry("video_test_1", set_first_segment([5.0, 2.0])),
        r"video 'video_test_1': segment 0 \[5\.0, 2\.0\] ends before it starts",
        id="reversed-segment",
    ),
    pytest.param(
        edit_entry("video_test_1", set_first_segment([1.0])),
        r"video 'video_test_1': annotation 0 'segment' must be \[start, end\] in seconds, got \[1\.0\]",
        id="segment-not-a-pair",
    ),
    pytest.param(
        edit_json(lambda d: [e.update(subset="Test") for e in d["database"].values()]),
        r"no training videos: no usable video is in the 'validation' subset \(subsets found: \['Test'\]\)",
        id="no-training-videos",
    ),
    pytest.param(
        edit_json(lambda d: d.update(feature_stride=0)),
        r"thumos14\.json: 'feature_stride' must be a positive int \(frames\), got 0",
        id="bad-stride",
    ),
    pytest.param(
        save_features("video_validation_2", np.zeros((30, 2000), np.float32)),
        r"i3d_features/video_validation_2\.npy must be a \(T, 2048\) array, got shape \(30, 2000\)",
        id="width-mismatch",
    ),
    pytest.param(
        save_features("video_validation_2", np.zeros(2048, np.float32)),
        r"i3d_features/video_validation_2\.npy must be a \(T, 2048\) array, got shape \(2048,\)",
        id="one-dimensional",
    ),
    pytest.param(
        save_features("video_validation_0", np.zeros((0, 2048), np.float32)),
        r"i3d_features/video_validation_0\.npy has zero snippets",
        id="empty-video",
    ),
    pytest.param(
        save_features("video_test_0", object_array([np.zeros((5, 2048))] * 2), allow_pickle=True),
        r"i3d_features/video_test_0\.npy: holds a pickled object array; a per-video feature file must be a "
        r"plain \(T, 2048\) numeric array",
        id="pickled-array",
    ),
    pytest.param(
        lambda root: (root / "i3d_features" / "video_test_0.npy").write_bytes(b"not a numpy file"),
        r"i3d_features/video_test_0\.npy: not a readable \.npy file",
        id="not-npy",
    ),
    pytest.param(
        lambda root: truncate_file(root / "i3d_features" / "video_test_2.npy"),
        r"i3d_features/video_test_2\.npy: not a readable \.npy file \(",
        id="truncated-file",
    ),
    pytest.param(
        nan_features,
        r"i3d_features/video_test_1\.npy has 1 non-finite feature value\(s\) \(NaN or inf; the first in "
        r"snippet 7\)",
        id="nan-features",
    ),
    pytest.param(
        lambda root: (root / "i3d_features").rename(root / "feats"),
        r"no feature folder: expected one of i3d_features/, features/i3d_actionformer_stride4_thumos/, "
        r"features/",
        id="no-feature-folder",
    ),
    pytest.param(
        lambda root: (root / ANNOTATIONS_DIR).mkdir(),
        r"holds both the Thumos14reduced layout .* and the per-video layout \(annotations/thumos14\.json\)",
        id="both-layouts",
    ),
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return thumos_format_folder(tmp_path / "thumos")


@pytest.fixture
def pv_folder(tmp_path: Path) -> Path:
    return per_video_folder(tmp_path / "per_video")


def test_the_folder_loads_before_it_is_broken(folder: Path) -> None:
    data = load_thumos14(folder)
    assert (len(data.train), len(data.test), data.num_classes) == (4, 3, 3)


@pytest.mark.parametrize(("breaks", "message"), CATALOGUE)
def test_loader_refuses_a_broken_folder(folder: Path, breaks: Callable[[Path], None], message: str) -> None:
    breaks(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_thumos14(folder)


@pytest.mark.parametrize(("breaks", "message"), CATALOGUE)
def test_cli_refuses_a_broken_folder(
    folder: Path,
    tmp_path: Path,
    breaks: Callable[[Path], None],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    breaks(folder)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        two_stage(["--data-dir", str(folder), "--threads", "1", "--quiet", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: argument --data-dir: " in err
    assert re.search(message, err), err
    assert not out.exists()  # refused before anything was trained or written


def test_the_per_video_folder_loads_before_it_is_broken(pv_folder: Path) -> None:
    data = load_data_dir(pv_folder)
    assert (len(data.train), len(data.test), data.classes) == (4, 3, ("CliffDiving", "Diving", "LongJump"))


@pytest.mark.parametrize(("breaks", "message"), PER_VIDEO_CATALOGUE)
def test_loader_refuses_a_broken_per_video_folder(
    pv_folder: Path, breaks: Callable[[Path], None], message: str
) -> None:
    breaks(pv_folder)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_data_dir(pv_folder)


@pytest.mark.parametrize(("breaks", "message"), PER_VIDEO_CATALOGUE)
def test_cli_refuses_a_broken_per_video_folder(
    pv_folder: Path,
    tmp_path: Path,
    breaks: Callable[[Path], None],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    breaks(pv_folder)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        two_stage(["--data-dir", str(pv_folder), "--threads", "1", "--quiet", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: argument --data-dir: " in err
    assert re.search(message, err), err
    assert not out.exists()


@pytest.mark.parametrize("layout", ["thumos14reduced", "per-video"])
def test_unusable_videos_are_left_out_by_name_only_when_asked(tmp_path: Path, layout: str) -> None:
    """The issue's case: one training video's subset reads 'training'. Refused by default (above); with
    unused='warn' it is left out with a warning that names it and counts it, and listed in not_used."""
    if layout == "thumos14reduced":
        root = thumos_format_folder(tmp_path / "thumos")
        edit_annotation("subset", replace(2, b"training"))(root)
    else:
        root = per_video_folder(tmp_path / "thumos")
        edit_entry("video_validation_2", set_key("subset", "training"))(root)
        remove("i3d_features/video_test_1.npy")(root)
    with pytest.warns(
        UserWarning,
        match=r"leaving out \d annotated video\(s\) that cannot be used: video_validation_2 \(subset 'training'",
    ):
        data = load_data_dir(root, unused="warn")
    assert [v.name for v in data.train] == ["video_validation_0", "video_validation_1", "video_validation_3"]
    expected = {"video_validation_2"} | ({"video_test_1"} if layout == "per-video" else set())
    assert set(data.not_used) == expected
    assert data.video_counts()["train"] == 3 and data.video_counts()["test"] == 3 - (layout == "per-video")
    with pytest.raises(ValueError, match="unused must be 'error' or 'warn', got 'skip'"):
        load_data_dir(root, unused="skip")


def test_leaving_out_every_training_video_is_still_refused(pv_folder: Path) -> None:
    edit_json(
        lambda d: [e.update(subset="training") for e in d["database"].values() if e["subset"] != "Test"]
    )(pv_folder)
    with (
        pytest.warns(UserWarning, match="leaving out 4"),
        pytest.raises(ValueError, match="no training videos"),
    ):
        load_data_dir(pv_folder, unused="warn")


def test_nonfinite_features_repaired_only_when_asked(folder: Path) -> None:
    edit_features(set_value(5, 3, 10, np.nan))(folder)
    edit_features(set_value(1, 0, 2000, np.inf))(folder)
    with pytest.warns(
        UserWarning,
        match=r"replaced NaN/inf feature values with 0 in 2 video\(s\): video_validation_1, video_test_1",
    ):
        data = load_thumos14(folder, nonfinite="zero")
    assert data.test[1].rgb[3, 10] == 0 and data.train[1].flow[0, 2000 - 1024] == 0
    assert all(np.isfinite(v.rgb).all() and np.isfinite(v.flow).all() for v in [*data.train, *data.test])
    with pytest.raises(ValueError, match="nonfinite must be 'error' or 'zero', got 'skip'"):
        load_thumos14(folder, nonfinite="skip")


def test_float64_features_that_overflow_float32_are_refused(folder: Path) -> None:
    def edit(features: np.ndarray) -> None:
        features[2] = features[2].astype(np.float64)
        features[2][0, 0] = 1e300  # finite in float64, inf once cast to the float32 the model reads

    edit_features(edit)(folder)
    with pytest.raises(ValueError, match=r"'video_validation_2'.*non-finite"):
        load_thumos14(folder)


@pytest.mark.skipif(not THUMOS_DIR.is_dir(), reason="../shared/data/thumos14 is not available")
def test_real_annotations_with_segments_past_the_duration_still_load(tmp_path: Path) -> None:
    """30 segments of 5 videos of the public annotations lie past their video's stated duration (errata
    of the files); they load as they are, the check is there for everything else."""
    annotations = tmp_path / ANNOTATIONS_DIR
    annotations.mkdir()
    for file in THUMOS_DIR.iterdir():
        (annotations / file.name).symlink_to(file)
    count = len(np.load(THUMOS_DIR / "videoname.npy"))
    np.save(
        tmp_path / FEATURES_FILE, object_array([np.zeros((1, 2048), np.float32)] * count), allow_pickle=True
    )
    data = load_thumos14(tmp_path)
    past = {v.name: int((v.segments[:, 1] > v.duration).sum()) for v in [*data.train, *data.test]}
    past = {name: n for name, n in past.items() if n}
    assert sum(past.values()) == 30 and len(past) == 5 and past["video_test_0000270"] == 22


# ------------------------------------------------------------------------------------------ divergence


class Poisoned:
    """Epochs of two one-video batches; from epoch ``poison_epoch`` (1-based) on, the label is ``value``."""

    def __init__(self, poison_epoch: int, value: float) -> None:
        self.poison_epoch, self.value, self.epoch = poison_epoch, value, 0

    def __call__(self, generator: torch.Generator) -> Iterator[Batch]:
        self.epoch += 1
        for _ in range(2):
            rgb = torch.randn(3, 2, generator=generator)
            label = torch.full((1,), self.value if self.epoch >= self.poison_epoch else 1.0)
            yield collate(["v"], [rgb], [rgb], [label])


def squared_output(module: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    return {"total": module(batch.rgb).pow(2).mean() * batch.labels.mean()}


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_diverged_stage_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, value: float) -> None:
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    path = tmp_path / "toy.pt"
    with pytest.raises(TrainingDiverged) as info:
        train_stage(
            "toy",
            model,
            Poisoned(2, value),
            torch.optim.SGD(model.parameters(), lr=0.1),
            squared_output,
            epochs=3,
            generator=torch.Generator().manual_seed(0),
            checkpoint=path,
            config_fingerprint="abc",
            show_progress=False,
        )
    error = info.value
    assert (error.stage, error.epoch, error.step, error.checkpoint, error.checkpoint_epoch) == (
        "toy",
        2,
        1,
        path,
        1,
    )
    assert f"stage 'toy' diverged in epoch 2, step 1: non-finite loss (total {value})" in str(error)
    assert f"kept the last good checkpoint {path} (epoch 1)" in str(error)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1 and math.isfinite(state["history"][0]["total"])
    assert all(torch.isfinite(p).all() for p in state["model"].values())
    assert not list(tmp_path.glob("*.tmp"))


def test_a_stage_diverged_in_its_first_epoch_says_no_checkpoint_was_written(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    with pytest.raises(
        TrainingDiverged, match=r"epoch 1, step 1: .*; no checkpoint of this stage was written"
    ):
        train_stage(
            "toy",
            model,
            Poisoned(1, math.nan),
            torch.optim.SGD(model.parameters(), lr=0.1),
            squared_output,
            epochs=2,
            generator=torch.Generator().manual_seed(0),
            checkpoint=tmp_path / "toy.pt",
            show_progress=False,
        )
    assert not (tmp_path / "toy.pt").exists()
