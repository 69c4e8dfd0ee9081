"""Run the example scripts in this process, as ``python examples/NAME ARGS`` would.

The scripts are commands, not modules: nothing imports them (their parts live in ``wstal`` and, for the
studies, ``studies``), so the tests load each one's ``main`` from its file, with a run name that keeps its
``__main__`` block from running. ``NAME`` is relative to ``examples/``, e.g. ``studies/robustness_grid.py``.
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_script(name: str, argv: Sequence[str]) -> int:
    """``main(argv)`` of ``examples/<name>``: its exit code (argparse errors raise ``SystemExit``)."""
    return runpy.run_path(str(EXAMPLES / name), run_name="__script__")["main"](list(argv))


def two_stage(argv: Sequence[str]) -> int:
    """``python examples/thumos_two_stage.py ARGV`` in this process."""
    return run_script("thumos_two_stage.py", argv)


def check_annotation_family_cli(
    flag: str, folder: Path, *, data: str, extra: Sequence[str], conflicting: str, out: Path, capsys: Any
) -> None:
    """``thumos_two_stage.py`` on an annotation-driven family (``flag FOLDER``): a tiny run prints its
    table and records ``data`` as its source; a missing folder exits with code 2 naming ``flag``; the
    family's flag with ``conflicting`` is refused."""
    argv = [flag, str(folder), *extra, "--synthetic-dim", "8", "--width", "16", "--epochs", "1"]
    assert two_stage([*argv, "--threads", "1", "--quiet", "--out", str(out)]) == 0
    assert "| two-stage (Stage-2 detections) |" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["data"] == data
    with pytest.raises(SystemExit) as exit_info:
        two_stage([flag, str(out.parent / "missing"), "--out", str(out)])
    assert exit_info.value.code == 2
    assert f"argument {flag}:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        two_stage([flag, str(folder), conflicting, str(folder)])
    assert "not allowed with argument" in capsys.readouterr().err
