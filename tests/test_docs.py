"""Every ``python`` code block in README.md and docs/**/*.md runs, and every docstring example passes.

A page's blocks run in order in one namespace, so later blocks may use names from earlier ones.
Blocks fenced as ``text``, ``bash`` or ``console`` are shown, not run.

The site itself: every page is in the mkdocs nav (and every nav entry exists), ``mkdocs build --strict``
passes when mkdocs and its plugins are installed (the ``[docs]`` extra), and the script that draws the
DMF figure runs.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
MODULES = ["dmf_fusion.functional", "dmf_fusion.fusion", "dmf_fusion.losses"]
MKDOCS_CONFIG = ROOT / "docs" / "_mkdocs" / "mkdocs.yml"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(BLOCK.findall(page.read_text())):
        code = compile(block, f"{page.name}[block {i}]", "exec")
        exec(code, namespace)


def test_readme_has_python_blocks():
    assert BLOCK.findall((ROOT / "README.md").read_text()), "README lost its runnable example"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0


def _nav_pages() -> list[str]:
    """The page paths of the ``nav:`` section, read without a YAML parser (PyYAML comes with mkdocs)."""
    text = MKDOCS_CONFIG.read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r"^\s*- [^:\n]+:\s*(\S+\.md)\s*$", nav, re.M)


def test_nav_lists_every_page():
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").glob("**/*.md"))
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), f"a page appears twice in the nav: {nav}"
    assert sorted(nav) == pages, (
        f"pages missing from the nav: {sorted(set(pages) - set(nav))}; "
        f"nav entries without a page: {sorted(set(nav) - set(pages))}"
    )


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


@pytest.mark.slow
@pytest.mark.skipif(
    not all(_installed(m) for m in ("mkdocs", "material", "mkdocstrings_handlers.python")),
    reason="needs the [docs] extra (mkdocs, mkdocs-material, mkdocstrings-python)",
)
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(MKDOCS_CONFIG),
        "-d",
        str(tmp_path / "site"),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "blocks" / "dmf" / "index.html").is_file()
    assert (tmp_path / "site" / "figures" / "dmf.png").is_file()


def test_dmf_figure_script_runs(tmp_path):
    pytest.importorskip("matplotlib")
    script = ROOT / "docs" / "figures" / "make_dmf_figure.py"
    out = tmp_path / "dmf.png"
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=300)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ROOT / "docs" / "figures" / "dmf.png").is_file(), "the committed figure is missing"
    assert "figures/dmf.png" in (ROOT / "docs" / "blocks" / "dmf.md").read_text()


def _quality_bars_json(folder: Path, shift: float) -> None:
    """A quality_bars.json as --quality-bars writes it, seed 0 only, from real evaluate_proposals results."""
    import numpy as np

    from wstal.data import Video
    from wstal.evaluation import Detection
    from wstal.recall import evaluate_proposals

    video = Video("v", np.zeros((40, 1)), np.zeros((40, 1)), np.ones(1), np.array([[2.0, 8.0], [20.0, 30.0]]),
                  np.array([0, 0]), duration=40.0)
    sets = {
        "stage1": [Detection(0, 0.9, 2.0, 8.0), Detection(0, 0.8, 20.0 + shift, 30.0)],
        "rpn": [Detection(0, 0.9, 2.0, 8.0)],
        "grouped": [Detection(0, 0.7, 21.0, 30.0), Detection(0, 0.6, 0.0, 5.0), Detection(0, 0.5, 9.0, 12.0)],
    }
    quality = {name: evaluate_proposals([video], {"v": rows}).as_dict() for name, rows in sets.items()}
    folder.mkdir()
    (folder / "quality_bars.json").write_text(json.dumps({"runs": {"seed0": {"proposal_quality": quality}}}))


def test_recall_figure_script_runs(tmp_path):
    pytest.importorskip("matplotlib")
    script = ROOT / "docs" / "figures" / "make_recall_figure.py"
    _quality_bars_json(tmp_path / "a", 0.0)
    _quality_bars_json(tmp_path / "b", 4.0)
    out = tmp_path / "recall.png"
    run = [sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "b"), str(out)]
    subprocess.run(run, check=True, timeout=300)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "make_recall_figure.py BUILTIN_QB" in wrong.stderr
    assert (ROOT / "docs" / "figures" / "proposal_recall.png").is_file(), "the committed figure is missing"
    assert "figures/proposal_recall.png" in (ROOT / "docs" / "detector.md").read_text()


def test_broadcast_statistics_are_the_pages():
    """The table and the probe's ranges in docs/synthetic_broadcast.md are what the script prints."""
    annotations = ROOT.parent / "shared" / "data" / "thumos14"
    if not annotations.is_dir():
        pytest.skip("../shared/data/thumos14 is not available")
    script = ROOT / "docs" / "figures" / "broadcast_statistics.py"
    run = subprocess.run(
        [sys.executable, str(script), str(annotations)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    page = (ROOT / "docs" / "synthetic_broadcast.md").read_text()
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 7, run.stdout
    stale = [row for row in rows if row not in page]
    assert not stale, f"rerun docs/figures/broadcast_statistics.py; rows not in the page: {stale}"
    probe = re.findall(r"replay snippets \(slow motion\) (\d+) %, other background (\d+) %", run.stdout)
    assert len(probe) == 3, run.stdout
    for found in zip(*probe):
        low, high = min(map(int, found)), max(map(int, found))
        assert f"{low}–{high} %" in page, (found, "rerun docs/figures/broadcast_statistics.py")


def test_config_table_is_current(tmp_path):
    """The configuration table of docs/configuration.md is the one the dataclasses give; a stale one is caught."""
    script = [sys.executable, str(ROOT / "docs" / "figures" / "make_config_table.py")]
    check = subprocess.run([*script, "--check"], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, f"{check.stdout}{check.stderr}: rerun docs/figures/make_config_table.py"

    page = tmp_path / "page.md"
    page.write_text("before\n<!-- config-table:start -->\n| stale |\n<!-- config-table:end -->\nafter\n")
    run = dict(capture_output=True, text=True, timeout=300)
    stale = subprocess.run([*script, "--check", "--page", str(page)], **run)
    assert stale.returncode == 1 and "out of date" in stale.stdout
    subprocess.run([*script, "--page", str(page)], check=True, timeout=300)
    text = page.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "stale" not in text
    assert "| `stage1.epochs` | `int` | `20` | `30` | `50` | passes over the training videos. |" in text
    subprocess.run([*script, "--check", "--page", str(page)], check=True, timeout=300)
