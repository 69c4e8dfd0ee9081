"""The trained detector as one file, the one inference path and ``examples/detect.py`` on new videos.

One tiny run of ``thumos_two_stage.py`` (module fixture) gives ``detector.pt`` and the run's own
``detections.json``; the detect command, in a fresh process and in this one, must write the same bytes
from the test split's features alone, and refuse every bad input without writing anything.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scripts import EXAMPLES, run_script, two_stage

from wstal.config import DetectorConfig, from_dict, override
from wstal.inference import detect
from wstal.synthetic import make_synthetic_thumos
from wstal.thumos import ANNOTATIONS_DIR, FEATURES_FILE
from wstal.trained import FORMAT_VERSION, DetectorFileError, FeatureSpec, TrainedDetector

TINY = [
    "--max-videos",
    "6",
    "--synthetic-dim",
    "16",
    "--width",
    "16",
    "--epochs",
    "1",
    "--threads",
    "1",
    "--quiet",
]
ROOT = EXAMPLES.parent


def _test_split():
    return make_synthetic_thumos(num_train=6, num_test=6, dim=16, seed=0).test


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run: its --out folder."""
    out = tmp_path_factory.mktemp("run")
    assert two_stage([*TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def features(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's test videos as per-video feature files, and nothing else (no annotations)."""
    folder = tmp_path_factory.mktemp("features")
    for v in _test_split():
        np.save(folder / f"{v.name}.npy", np.concatenate([v.rgb, v.flow], 1))
    return folder


def detect_cli(*argv: str) -> int:
    return run_script("detect.py", [*argv, "--threads", "1", "--quiet"])


# ------------------------------------------------------------------------------ the command


def test_detect_in_a_fresh_process_reproduces_the_runs_detections(
    run: Path, features: Path, tmp_path: Path
) -> None:
    assert {p.suffix for p in features.iterdir()} == {".npy"}  # no annotation file at all
    out = tmp_path / "detected"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(EXAMPLES / "detect.py"), "--model", str(run / "detector.pt")]
    command += ["--features", str(features), "--out", str(out), "--threads", "1", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("detections.json", "proposals.json"):
        assert (out / name).read_bytes() == (run / name).read_bytes(), name
    assert json.loads((out / "detections.json").read_text())["results"]  # not trivially empty
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "proposals.json"]


def test_detect_reads_a_thumos14reduced_joint_file_and_plots(run: Path, tmp_path: Path) -> None:
    videos = _test_split()
    joint = np.empty(len(videos), dtype=object)
    for i, v in enumerate(videos):
        joint[i] = np.concatenate([v.rgb, v.flow], 1)
    np.save(tmp_path / FEATURES_FILE, joint, allow_pickle=True)
    (tmp_path / ANNOTATIONS_DIR).mkdir()
    np.save(tmp_path / ANNOTATIONS_DIR / "videoname.npy", np.array([v.name for v in videos], dtype=object))
    out = tmp_path / "out"
    name = videos[0].name
    assert (
        detect_cli(
            "--model",
            str(run / "detector.pt"),
            "--features",
            str(tmp_path / FEATURES_FILE),
            "--out",
            str(out),
            "--plot",
            name,
        )
        == 0
    )
    assert (out / "detections.json").read_bytes() == (run / "detections.json").read_bytes()
    assert (out / "plot.png").stat().st_size > 0


def test_the_clock_flags_move_every_detection(run: Path, features: Path, tmp_path: Path) -> None:
    assert (
        detect_cli(
            "--model", str(run / "detector.pt"), "--features", str(features), "--out", str(tmp_path / "a")
        )
        == 0
    )
    argv = ["--seconds-per-feature", "1.28", "--start-seconds", "3"]
    assert (
        detect_cli(
            "--model",
            str(run / "detector.pt"),
            "--features",
            str(features),
            "--out",
            str(tmp_path / "b"),
            *argv,
        )
        == 0
    )
    a, b = (json.loads((tmp_path / x / "detections.json").read_text())["results"] for x in "ab")
    for video, rows in a.items():
        for r, s in zip(rows, b[video]):
            assert s["segment"] == pytest.approx([3 + 2 * t for t in r["segment"]], abs=1e-6)


def _bad_features(kind: str, folder: Path) -> str:
    """A feature folder with one bad file, and the words its error must hold."""
    good = _test_split()[0]
    np.save(folder / "good.npy", np.concatenate([good.rgb, good.flow], 1))
    if kind == "width":
        np.save(folder / "bad.npy", np.zeros((10, 30), np.float32))
        return r"bad\.npy: expected \(T, 32\) features \(16 RGB \+ 16 Flow.*got shape \(10, 30\)"
    if kind == "short":
        np.save(folder / "bad.npy", np.zeros((0, 32), np.float32))
        return r"bad\.npy: the video is too short: 0 snippet"
    if kind == "nan":
        array = np.zeros((10, 32), np.float32)
        array[4, 3] = np.nan
        np.save(folder / "bad.npy", array)
        return r"bad\.npy: 1 NaN/inf value\(s\) in 1 snippet\(s\), the first at snippet 4"
    if kind == "pickle":
        np.save(folder / "bad.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return r"bad\.npy: holds a pickled object array"
    (folder / "bad.npy").write_bytes(b"not numpy")
    return r"bad\.npy: not a readable \.npy file"


@pytest.mark.parametrize("kind", ["width", "short", "nan", "pickle", "corrupt"])
def test_bad_features_are_refused_naming_the_file(run: Path, kind: str, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "features"
    folder.mkdir()
    expected = _bad_features(kind, folder)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        detect_cli("--model", str(run / "detector.pt"), "--features", str(folder), "--out", str(out))
    assert stop.value.code == 2
    assert re.search(r"argument --features: .*" + expected, capsys.readouterr().err), expected
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["features"]  # nothing written


def _bad_model(kind: str, run: Path, path: Path) -> str:
    if kind == "missing":
        return "no detector file"
    if kind == "corrupt":
        path.write_bytes((run / "detector.pt").read_bytes()[:500])
        return "not a readable detector file"
    state = torch.load(run / "detector.pt", weights_only=True)
    if kind == "version":
        state["version"] = FORMAT_VERSION + 1
        expected = f"format version {FORMAT_VERSION + 1}; this code reads version {FORMAT_VERSION}"
    elif kind == "part":
        del state["features"]
        expected = "missing part(s) features"
    elif kind == "network":
        del state["networks"]["stage1"]
        expected = "missing network(s) stage1"
    elif kind == "weights":
        state["networks"]["stage2"].popitem()
        expected = "network 'stage2' does not fit its configuration"
    else:  # a config field gone
        del state["config"]["scoring"]["soft_nms_sigma"]
        expected = "config.scoring: missing fields ['soft_nms_sigma']"
    torch.save(state, path)
    return expected


@pytest.mark.parametrize("kind", ["missing", "corrupt", "version", "part", "network", "weights", "config"])
def test_bad_model_files_are_refused_naming_what_is_wrong(
    run: Path, features: Path, kind: str, tmp_path: Path, capsys
) -> None:
    model = tmp_path / "detector.pt"
    expected = _bad_model(kind, run, model)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        detect_cli("--model", str(model), "--features", str(features), "--out", str(out))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --model: " in err and expected in err, err
    assert not out.exists()
    if kind not in ("missing", "corrupt"):
        with pytest.raises(DetectorFileError, match=re.escape(expected)):
            TrainedDetector.load(model)


def test_an_unknown_plot_video_is_refused(run: Path, features: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        detect_cli(
            "--model",
            str(run / "detector.pt"),
            "--features",
            str(features),
            "--out",
            str(tmp_path / "o"),
            "--plot",
            "nope",
        )
    assert stop.value.code == 2 and "argument --plot: no video 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ the trained detector


def test_save_load_round_trip_gives_identical_outputs(run: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []
    original = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    first = TrainedDetector.load(run / "detector.pt")
    second = TrainedDetector.load(first.save(tmp_path / "again.pt"))
    assert calls == [True, True]
    assert (
        first.config == second.config
        and first.classes == second.classes
        and first.features == second.features
    )
    assert first.features == FeatureSpec(16, 16, 0.64, 0.0)
    for name, net in first.networks().items():
        other = second.networks()[name].state_dict()
        assert all(torch.equal(v, other[k]) for k, v in net.state_dict().items()), name
    videos = _test_split()
    a, b = detect(first, videos), detect(second, videos)
    assert a.rows == b.rows and a.clocks == b.clocks
    assert all(torch.equal(a.candidates[n].segments, b.candidates[n].segments) for n in a.candidates)
    # the file holds plain data only: it loads with weights_only=True and nothing else is needed
    state = original(tmp_path / "again.pt", weights_only=True)
    assert set(state) == {"format", "version", "config", "classes", "features", "networks"}


def test_the_run_saved_the_detector_it_evaluated(run: Path) -> None:
    trained = TrainedDetector.load(run / "detector.pt")
    saved = json.loads((run / "results.json").read_text())
    assert json.loads(json.dumps(trained.config.as_dict())) == saved["config"]  # JSON: tuples become lists
    assert (trained.stage1_fusion, trained.stage2_fusion, trained.base_fusion) == (
        saved["stage1_fusion"],
        saved["stage2_fusion"],
        "concat",
    )


@given(
    sigma=st.floats(0.01, 5.0),
    thresholds=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=4).map(tuple),
    merge=st.booleans(),
)
def test_a_configuration_survives_its_plain_form(sigma: float, thresholds: tuple, merge: bool) -> None:
    config = override(DetectorConfig(), "scoring.soft_nms_sigma", repr(sigma))
    config = override(config, "proposals.merge_base_segments", str(merge).lower())
    config = override(config, "pseudo.grouping.thresholds", ", ".join(map(repr, thresholds)))
    plain = json.loads(json.dumps(config.as_dict()))  # lists, not tuples: as a file may hold them
    assert from_dict(DetectorConfig, plain) == config
    plain["scoring"]["soft_nms_sigma"] = "0.3"
    with pytest.raises(TypeError, match=r"ScoringSettings\.soft_nms_sigma"):
        from_dict(DetectorConfig, plain)


def test_inference_refuses_features_of_another_width(run: Path) -> None:
    trained = TrainedDetector.load(run / "detector.pt")
    other = make_synthetic_thumos(num_train=1, num_test=1, dim=8, seed=0).test
    with pytest.raises(ValueError, match=r"the detector takes 16 RGB \+ 16 Flow channels, got 8 \+ 8"):
        detect(trained, other)


# ------------------------------------------------------------------------------ the package's boundaries


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.add(("." * node.level) + (node.module or ""))
            found.update(
                f"{'.' * node.level}{node.module or ''}.{a.name}".replace("..", ".") for a in node.names
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_no_detector_module_imports_the_cli_or_a_study() -> None:
    package = ROOT / "examples" / "wstal"
    studies = {p.stem for p in (ROOT / "examples" / "studies").glob("*.py")} - {"__init__"}
    assert {"candidate_variants", "experiments", "robustness_grid"} <= studies
    for path in package.glob("*.py"):
        if path.name == "launch.py":
            continue
        for name in _imports(path):
            parts = set(name.strip(".").split("."))
            assert "launch" not in parts, f"{path.name} imports {name}"
            assert not parts & (studies | {"studies"}), f"{path.name} imports {name}"
    assert not any((package / f"{name}.py").exists() for name in studies)


def test_one_tiou_implementation() -> None:
    """tIoU is computed in one place (proposals.segment_iou): no other module divides an intersection by
    a union of its own."""
    union = re.compile(r"\bunion\s*=")
    holders = sorted(p.name for p in (ROOT / "examples").rglob("*.py") if union.search(p.read_text()))
    assert holders == ["proposals.py"], holders
