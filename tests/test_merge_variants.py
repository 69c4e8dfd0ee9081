"""examples/studies/merge_variants.py: the merge variants of the decision record, scored on a run's networks."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from scripts import EXAMPLES, run_script

from wstal import launch
from wstal.config import ProposalSettings
from wstal.evaluator import train_and_evaluate
from wstal.recall import recall_at_equal_budget

# the script's functions, loaded from its file (scripts are not imported as modules)
mv = type(
    "merge_variants",
    (),
    runpy.run_path(str(EXAMPLES / "studies" / "merge_variants.py"), run_name="__script__"),
)

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
    "--amp",
    "off",
]


def test_variant_names_and_grid() -> None:
    configured = ProposalSettings()
    assert mv.variant_name(configured) == "base wins, NMS 0.3, objectness >= 0.99"
    assert mv.variant_name(
        ProposalSettings(merge_base_wins=False, merge_iou=0.6, merge_min_objectness=0.0)
    ) == ("higher score wins, NMS 0.6, objectness >= 0")
    assert mv.variant_name(ProposalSettings(merge_base_segments=False)) == mv.RPN_ALONE
    grid = mv.merge_grid(configured)
    names = [mv.variant_name(d) for d in grid]
    assert len(names) == len(set(names)) == 17  # 2 x 2 x 4 and the T-RPN alone; the default is inside
    assert mv.variant_name(configured) in names and names[-1] == mv.RPN_ALONE
    outside = ProposalSettings(merge_iou=0.45)
    assert mv.variant_name(outside) in [mv.variant_name(d) for d in mv.merge_grid(outside)]


def test_the_configured_merge_scores_what_the_run_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_script(
            "studies/merge_variants.py", [*TINY, "--quiet", "--out", str(tmp_path), "--seeds", "0", "--map"]
        )
        == 0
    )
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert table == (tmp_path / "merge_variants.md").read_text().splitlines()
    assert len(table) == 2 + 17 and table[0].count("seed 0") == 3
    assert sum(line.startswith("| **base wins, NMS 0.3, objectness >= 0.99** |") for line in table) == 1

    # the same networks, evaluated by the pipeline: the configured row is the run's own result
    parser = launch.build_parser("test", "")
    args = launch.parse(parser, [*TINY, "--quiet", "--out", str(tmp_path), "--resume"])
    dataset = launch.load_data(parser, args)
    config = launch.make_config(args, seed=0)
    runner = launch.make_runner(args, dataset, config, tmp_path / "seed0")
    result = train_and_evaluate(runner)
    assert result is not None
    scores = mv.score_variants(runner.train(), dataset, mv.merge_grid(config.proposals), with_map=True)
    mine = scores[mv.variant_name(config.proposals)]
    equal = recall_at_equal_budget(result.proposal_quality, tiou=0.5, budget_from=("stage1", "grouped"))
    assert mine.budget == pytest.approx(equal.budget)
    assert (mine.recall, mine.base_recall) == pytest.approx((equal.recall["stage1"], equal.recall["grouped"]))
    assert mine.map_avg == pytest.approx(result.avg())
    alone = scores[mv.RPN_ALONE]
    assert alone.proposals_per_video == pytest.approx(result.proposal_quality["rpn"].proposals_per_video)
