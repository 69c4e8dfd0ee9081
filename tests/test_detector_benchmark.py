"""benchmarks/detector.py: its table (the Stage-3 rows worked by hand) and one tiny timed run with Stage 3."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import detector  # noqa: E402

from wstal.config import DetectorConfig  # noqa: E402
from wstal.synthetic import make_synthetic_thumos  # noqa: E402

META = {
    "machine": "test",
    "size": "2 + 2",
    "family": "builtin",
    "max_seconds": float("inf"),
    "threads": 1,
    "device": "cpu",
    "epochs_scale": 1.0,
    "command": "python benchmarks/detector.py --stage3",
}


def _row(stage3: bool) -> dict:
    seconds = {"base": 60.0, "pseudo labels": 6.0, "Stage 1": 120.0, "train proposals": 6.0, "Stage 2": 48.0}
    if stage3:
        seconds.update({"train detections": 12.0, "Stage 3": 60.0})
    seconds["test: detect + evaluate"] = 60.0
    detectors = (
        ("three_stage", "student", "two_stage", "stage1_only", "base")
        if stage3
        else ("two_stage", "stage1_only", "base")
    )
    return {
        "amp": "off (off)",
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "peak_rss_gib": {p: 1.0 for p in seconds},
        "map_avg": {d: 10.0 + i for i, d in enumerate(detectors)},
        "epoch_factor": {"base": 1.0, "Stage 1": 1.0, "Stage 2": 1.0, "Stage 3": 1.0},
    }


def test_the_table_gives_what_stage3_adds() -> None:
    table = detector.markdown([_row(True)], META)
    # 372 s in all, 300 s without its two phases: Stage 3 adds 72 / 300 = 24 %
    assert "| train detections | 12 |" in table and "| Stage 3 | 60 |" in table
    assert "| **total** | **6.2 min** |" in table
    assert "| total without Stage 3 | 5.0 min |" in table and "| Stage 3 adds | +24 % |" in table
    assert "| mAP AVG, Stage 3 | 10.0 |" in table and "| mAP AVG, two-stage | 12.0 |" in table
    # at a tenth of the epochs the training phases scale up by 10, Stage 3's among them: without it
    # 600 + 6 + 1200 + 6 + 480 + 60 = 2352 s, with it 600 + 12 more: +26 %
    scaled = _row(True)
    scaled["epoch_factor"] = {"base": 10.0, "Stage 1": 10.0, "Stage 2": 10.0, "Stage 3": 10.0}
    table = detector.markdown([scaled], {**META, "epochs_scale": 0.1})
    assert "| Stage 3 adds at the full preset (extrapolated) | +26 % |" in table
    plain = detector.markdown([_row(False)], META)
    assert "Stage 3" not in plain and "train detections" not in plain


def test_a_tiny_timed_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The phases in pipeline order, Stage 3's among them, on narrow networks and tiny data (the
    benchmark's preset replaced)."""
    monkeypatch.setattr(
        detector, "preset_config", lambda name: DetectorConfig().with_options(width=8, epochs=1)
    )
    dataset = make_synthetic_thumos(num_train=4, num_test=3, dim=8, seed=0)
    row = detector.run_once(dataset, "off", 1.0, stage3=True)
    assert list(row["seconds"]) == list(detector.PHASES) and all(s >= 0 for s in row["seconds"].values())
    assert {"three_stage", "student", "two_stage"} <= set(row["map_avg"])
    assert row["total_seconds"] == pytest.approx(sum(row["seconds"].values()))
    assert row["epoch_factor"]["Stage 3"] == 1.0
