"""What a new user sees of the detector's commands: short argument errors, a ``--help`` whose first
screen holds the common options with each default said once, no progress-bar frames in a log that is
not a terminal, one-line warnings, and a plot whose classes and weakest bars can be read."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from wstal import console
from wstal.plot import MIN_OPACITY, PROPOSAL_COLOUR, class_colours, score_opacity

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "thumos_two_stage.py"
TINY = ["--max-videos", "4", "--synthetic-dim", "8", "--width", "8", "--epochs", "1", "--threads", "1"]


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, env=env, timeout=300, **kwargs
    )


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--preset", "nope"], ["--preset", "'nope'"]),
        (["--epochs", "0"], ["--epochs", "'0'"]),
        (["--stage1", "mutal"], ["--stage1", "mutal"]),
        (["--data-dir", "/no/such/folder"], ["--data-dir", "/no/such/folder"]),
        (["--data-dir", "a", "--synthetic-from", "b"], ["--synthetic-from", "--data-dir"]),
        (["--quick", "--preset", "default"], ["--quick", "--preset"]),
        (["--set", "nonsense"], ["--set", "'nonsense'"]),
    ],
)
def test_an_argument_error_is_a_usage_line_and_the_message(argv, names) -> None:
    done = run(*argv)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 3, done.stderr
    assert lines[0].startswith("usage: thumos_two_stage.py") and len(lines[0]) < 100
    assert lines[-1].startswith("thumos_two_stage.py: error: argument ")
    assert all(name in lines[-1] for name in names), lines[-1]


def test_help_shows_the_common_options_first_and_each_default_once() -> None:
    done = run("--help")
    assert done.returncode == 0
    text = done.stdout
    first_screen = "\n".join(text.splitlines()[:40])
    for flag in ("--data-dir", "--quick", "--out", "--resume", "--threads", "--quiet"):
        assert flag in first_screen, flag
    assert "(default: None)" not in text and "(default: False)" not in text
    # one entry per option: from its flag to the next option's
    entries = re.split(r"\n  (?=-)", text)
    for entry in entries:
        assert len(re.findall(r"\(default", entry)) <= 1, entry
    assert "(default: runs/two_stage)" in text  # a real default is still said


def test_the_cli_takes_the_method_defaults_from_the_configuration() -> None:
    """A default changed in config.py reaches the command line: the parser holds None and the help
    quotes the dataclass."""
    from wstal import launch
    from wstal.config import DetectorConfig

    args = launch.build_parser("test", "").parse_args([])
    assert (args.stage1_fusion, args.stage2_fusion, args.alpha, args.dmf_attention) == (
        None,
        None,
        None,
        None,
    )
    config = launch.make_config(args)
    default = DetectorConfig()
    assert (config.stage1_fusion, config.stage2_fusion, config.alpha, config.dmf_attention) == (
        default.stage1_fusion,
        default.stage2_fusion,
        default.alpha,
        default.dmf_attention,
    )
    help_text = launch.build_parser("test", "").format_help()
    assert f"(default {default.stage1_fusion})" in help_text and f"(default {default.alpha})" in help_text


def test_quality_bars_name_the_fusions_in_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--quality-bars`` without fusion flags names the configuration's defaults (it printed "None"), and
    a flag where one is given."""
    from scripts import two_stage

    from wstal.config import DetectorConfig

    default = DetectorConfig()
    for flags, stage1 in (([], default.stage1_fusion), (["--stage1-fusion", "mutual"], "mutual")):
        out = tmp_path / stage1
        assert two_stage(["--quality-bars", *TINY, "--quiet", *flags, "--out", str(out)]) == 0
        header = f"Quality bars: Stage 1 {stage1} / Stage 2 {default.stage2_fusion},"
        assert header in (out / "quality_bars.md").read_text()
        printed = capsys.readouterr()
        assert f"=== {stage1} / {default.stage2_fusion}, seed 0 ===" in printed.out + printed.err


def test_a_log_that_is_not_a_terminal_has_no_progress_frames(tmp_path: Path) -> None:
    """Without ``--quiet``, a run whose output goes to a file writes its epoch lines and no bar."""
    log = tmp_path / "run.log"
    with log.open("w") as handle:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), *TINY, "--out", str(tmp_path / "out")],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "epoch 1/1" in text and "AVG 0.1:0.7" in text
    assert "\r" not in text and "it/s" not in text and "s/it" not in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "bar"), [(_Terminal, True), (io.StringIO, False)])
def test_progress_draws_a_bar_only_on_a_terminal(monkeypatch, stream, bar) -> None:
    pytest.importorskip("tqdm")
    monkeypatch.setattr(console.sys, "stderr", stream())
    items = list(console.progress(range(3), desc="work"))
    assert items == [0, 1, 2]
    drawn = console.sys.stderr.getvalue()
    assert ("work" in drawn) is bar
    assert list(console.progress(range(3), desc="work", enabled=False)) == [0, 1, 2]


def test_warnings_print_as_one_line_without_the_source(monkeypatch) -> None:
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    console.short_warnings("prog.py")
    text = warnings.formatwarning(
        UserWarning("2 videos left out; pass --unused-videos error"), UserWarning, "x.py", 3
    )
    assert text == "prog.py: warning: 2 videos left out; pass --unused-videos error\n"


def test_plot_colours_are_distinct_per_class_and_weak_bars_stay_visible() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib
    from matplotlib.colors import rgb_to_hsv

    colours = class_colours([0, 1, 2, 3, 1, 19, 18, 4, 5, 6, 7, 8])
    assert list(colours) == [0, 1, 2, 3, 19, 18, 4, 5, 6, 7, 8]  # one per class, in the order given
    hsv = rgb_to_hsv(np.array([c[:3] for c in colours.values()][:10]))
    hues = hsv[hsv[:, 1] > 0.2, 0]  # the chromatic ones (a grey has no hue)
    gap = np.abs(hues[:, None] - hues[None])
    gap = np.minimum(gap, 1 - gap) + np.eye(len(hues))
    assert len(hues) == 10 and gap.min() >= 0.02  # tab20 gave classes 0 and 1 two shades of one blue
    assert matplotlib.colors.to_rgba(PROPOSAL_COLOUR) not in colours.values()  # proposals have no class colour
    assert score_opacity(0.0, 1.0) == MIN_OPACITY >= 0.4
    assert score_opacity(1.0, 1.0) == 1.0
    assert score_opacity(0.5, 1.0) == pytest.approx(MIN_OPACITY + (1 - MIN_OPACITY) / 2)
    assert score_opacity(0.3, 0.0) == 1.0


def test_the_documented_quick_example_scores_in_its_documented_range(tmp_path: Path) -> None:
    """docs/reproduce_thumos14.md's bring-your-own-features example: the built-in data written as 12 + 12
    per-video files, then ``--data-dir FOLDER --quick``; its two-stage AVG lies in the range the page
    states (read from the page, so the page and the check cannot drift apart)."""
    page = (ROOT / "docs" / "reproduce_thumos14.md").read_text()
    low, high = map(float, re.search(r"AVG 0\.1:0\.7 between (\d+) and (\d+)", page).groups())
    assert (
        "--max-videos 12 synthetic_per_video/" in page and "--data-dir synthetic_per_video/ --quick" in page
    )
    folder, out = tmp_path / "synthetic_per_video", tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    convert = [
        sys.executable,
        str(ROOT / "examples" / "convert_thumos14.py"),
        "--synthetic",
        "--max-videos",
        "12",
    ]
    subprocess.run([*convert, str(folder)], check=True, capture_output=True, env=env, timeout=300)
    done = run("--data-dir", str(folder), "--quick", "--threads", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["preset"] == "quick" and (results["videos"]["train"], results["videos"]["test"]) == (
        12,
        12,
    )
    avg = 100 * results["results"]["two_stage"]["averages"]["0.1:0.7"]
    assert low <= avg <= high, f"two-stage AVG {avg:.1f} outside the documented {low:g}-{high:g}"
    assert f"{avg:.1f} |" in done.stdout  # and it is what the run printed
    # the converted folder has no Ambiguous regions: one warning line that says so, no Python source line
    assert "thumos_two_stage.py: warning: " in done.stderr and "Ambiguous filter is off" in done.stderr
    assert "warnings.warn" not in done.stderr and "UserWarning" not in done.stderr
