"""Run the example scripts in this process, as ``python examples/NAME ARGS`` would.

The scripts are commands, not modules: nothing imports them (their parts live in ``wstal``), so the tests
load each one's ``main`` from its file, with a run name that keeps its ``__main__`` block from running.
"""

from __future__ import annotations

import runpy
from collections.abc import Sequence
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_script(name: str, argv: Sequence[str]) -> int:
    """``main(argv)`` of ``examples/<name>``: its exit code (argparse errors raise ``SystemExit``)."""
    return runpy.run_path(str(EXAMPLES / name), run_name="__script__")["main"](list(argv))


def two_stage(argv: Sequence[str]) -> int:
    """``python examples/thumos_two_stage.py ARGV`` in this process."""
    return run_script("thumos_two_stage.py", argv)
