"""examples/studies/robustness_grid.py: its cells, its bars worked out by hand, and a tiny grid end to end."""

from __future__ import annotations

import argparse
import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scripts import EXAMPLES, run_script

from studies import dmf_attention

THUMOS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14"
grid = type(
    "robustness_grid",
    (),
    runpy.run_path(str(EXAMPLES / "studies" / "robustness_grid.py"), run_name="__script__"),
)


def row(base: float, two: float, base7: float, two7: float, cand: float = 50.0, det: float = 40.0) -> dict:
    return {
        "base": base,
        "two_stage": two,
        "base@0.7": base7,
        "two_stage@0.7": two7,
        "candidates R@0.7": cand,
        "base detections R@0.7": det,
    }


def test_cells_parse_and_refuse_bad_text() -> None:
    assert grid.Cell.parse("built-in").name == "built-in"
    assert grid.Cell.parse("context:1.5") == grid.Cell("context", 1.5)
    assert grid.Cell.parse("ground-truth:2").name == "ground-truth:2"
    for text, message in (
        ("imagenet:1", "family must be one of"),
        ("built-in:1", "the built-in family has no difficulty"),
        ("context", "expected FAMILY:DIFFICULTY"),
        ("context:-1", "difficulty must be a finite number >= 0"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            grid.Cell.parse(text)


def test_the_bars_over_the_seeds_means_by_hand() -> None:
    cells = {
        # means: base 40, two 43; base@0.7 10, two@0.7 11: both per-cell bars hold
        "a": [row(38, 44, 9, 12), row(42, 42, 11, 10)],
        # means: base 50, two 49 (fails); @0.7 20 vs 20 (holds, equal); candidates 30 < 40 (fails)
        "b": [row(50, 49, 20, 20, cand=30), row(50, 49, 20, 20, cand=30)],
    }
    checks = grid.bars(cells)
    assert checks == {
        "a: two-stage >= base AVG": True,
        "a: two-stage >= base at tIoU 0.7": True,
        "a: candidates R@0.7 >= base detections'": True,
        "b: two-stage >= base AVG": False,
        "b: two-stage >= base at tIoU 0.7": True,
        "b: candidates R@0.7 >= base detections'": False,
        "grid mean: two-stage >= base + 2": False,  # (43 + 49) / 2 = 46 < (40 + 50) / 2 + 2 = 47
    }
    cells["b"] = [row(50, 51, 20, 20), row(50, 51, 20, 20)]
    assert grid.bars(cells)["grid mean: two-stage >= base + 2"]  # 47 >= 47
    text, _ = grid.format_grid(cells, [0, 1])
    assert "| a | 40.0 ± 2.8 (38.0 / 42.0) | 43.0 ± 1.4 (44.0 / 42.0) |" in text


@pytest.mark.skipif(not THUMOS_DIR.is_dir(), reason="needs ../shared/data/thumos14")
def test_a_tiny_grid_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--cells", "built-in", "ground-truth:1", "context:1", "--seeds", "0", "--videos", "4"]
    argv += [
        "--annotations",
        str(THUMOS_DIR),
        "--dim",
        "8",
        "--width",
        "16",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--out",
        str(tmp_path),
        "--diagnostics",
    ]
    assert run_script("studies/robustness_grid.py", argv) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "grid.json").read_text())
    assert list(saved["cells"]) == ["built-in", "ground-truth:1", "context:1"]
    assert saved["preset"] == "thumos14" and saved["seeds"] == [0]
    assert set(saved["checks"]) == set(grid.bars(saved["cells"]))
    assert (tmp_path / "grid.md").read_text().startswith("Commit ")
    assert "| context:1 |" in printed and "- [" in printed
    assert (tmp_path / "context-1" / "seed0" / "base_concat.pt").exists()  # resumable per cell and seed
    # the diagnostics' "two-stage" and "base" columns are the grid's own numbers, on the same networks
    diagnostics = (tmp_path / "diagnostics.md").read_text().splitlines()
    assert diagnostics[0].startswith("Commit ")
    for name, (run,) in saved["cells"].items():
        variants, sources = (line.split(" | ") for line in diagnostics if line.startswith(f"| {name} |"))
        assert variants[1] == f"{run['two_stage']:.1f} / {run['two_stage@0.7']:.1f}", name
        assert variants[2] == f"{run['base']:.1f} / {run['base@0.7']:.1f}", name
        recalls = [
            [float(v) for v in x.strip(" |").replace("(", "").replace(")", "").split()] for x in sources[1:]
        ]
        assert len(recalls) == 4 and all(0 <= r <= 100 and count >= 0 for r, count in recalls), name
    # the same diagnostics rank their variants alike: compare_schedules finds tau 1 on every cell
    saved_variants = json.loads((tmp_path / "diagnostics.json").read_text())["variants"]
    assert list(saved_variants) == list(saved["cells"])
    assert run_script("studies/compare_schedules.py", [str(tmp_path), str(tmp_path)]) == 0
    ranking = (tmp_path / "schedule_ranking.md").read_text()
    assert ranking.startswith("Commit ")
    rows = [line.split(" | ") for line in ranking.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r[0].strip("| ") for r in rows[1:]] == list(saved["cells"])
    # the same order everywhere (nan where every variant ties, as an untrained tiny cell can)
    assert all(r[3] in ("1.00", "nan") and r[4] == "yes |" for r in rows[1:])


def test_compare_schedules_refuses_a_grid_without_diagnostics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        run_script("studies/compare_schedules.py", [str(tmp_path), str(tmp_path)])
    assert stop.value.code == 2 and "diagnostics.json" in capsys.readouterr().err


def test_rank_agreement_worked_by_hand() -> None:
    from studies.candidate_variants import compare_rankings, kendall_tau

    # 4 variants; the second grid swaps the two middle ones: 5 of 6 pairs agree, tau = (5 - 1) / 6
    short = {"c": [{"a": (4.0, 0.0), "b": (3.0, 0.0), "c": (2.0, 0.0), "d": (1.0, 0.0)}]}
    full = {"c": [{"a": (8.0, 0.0), "b": (5.0, 0.0), "c": (6.0, 0.0), "d": (1.0, 0.0)}]}
    table, taus = compare_rankings(short, full)
    assert taus == {"c": pytest.approx(4 / 6)}
    assert (
        "| c | 1 (4.0) > 2 (3.0) > 3 (2.0) > 4 (1.0) | 1 (8.0) > 3 (6.0) > 2 (5.0) > 4 (1.0) | 0.67 | yes |"
        in table
    )
    # seed means decide the order: two seeds of the second grid average b above a
    two_seeds = {"c": [{"a": (8.0, 0.0), "b": (9.0, 0.0)}, {"a": (2.0, 0.0), "b": (3.0, 0.0)}]}
    one = {"c": [{"a": (2.0, 0.0), "b": (1.0, 0.0)}]}
    assert (
        compare_rankings(one, two_seeds)[1] == {"c": -1.0} and "| no |" in compare_rankings(one, two_seeds)[0]
    )
    assert compare_rankings(one, {"other": one["c"]})[1] == {}
    with pytest.raises(ValueError, match="same >= 2 items"):
        kendall_tau([1.0], [1.0])


def test_candidate_variants_docstring_examples() -> None:
    import doctest

    from studies import candidate_variants

    result = doctest.testmod(candidate_variants)
    assert result.attempted > 0 and result.failed == 0


def test_jobs_run_each_cell_and_seed_in_a_process_of_its_own(tmp_path: Path) -> None:
    """``--jobs 2`` (built-in cells only, so it needs no annotations): the grid of separate processes
    equals the grid of one process at the same thread count, and every run left its ``run.json``."""
    argv = ["--cells", "built-in", "--seeds", "0", "1", "--videos", "4", "--dim", "8", "--width", "16"]
    argv += ["--epochs", "1", "--threads", "1", "--quiet", "--diagnostics"]
    assert run_script("studies/robustness_grid.py", [*argv, "--out", str(tmp_path / "one")]) == 0
    assert (
        run_script("studies/robustness_grid.py", [*argv, "--out", str(tmp_path / "two"), "--jobs", "2"]) == 0
    )
    one, two = (json.loads((tmp_path / name / "grid.json").read_text()) for name in ("one", "two"))
    assert two["cells"] == one["cells"] and len(two["cells"]["built-in"]) == 2
    diagnostics = [json.loads((tmp_path / n / "diagnostics.json").read_text()) for n in ("one", "two")]
    assert diagnostics[0]["variants"] == diagnostics[1]["variants"]
    assert (tmp_path / "two" / "built-in" / "seed1" / "run.json").is_file()
    assert not (tmp_path / "one" / "built-in" / "seed1" / "run.json").exists()  # only --jobs writes them


def test_jobs_report_a_failed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run that fails in its process fails the grid with its exit code, naming the cell and seed: here
    ``--resume`` over a checkpoint of another configuration (exit code 2)."""
    argv = ["--cells", "built-in", "--seeds", "0", "--videos", "4", "--dim", "8", "--epochs", "1"]
    argv += ["--threads", "1", "--quiet", "--out", str(tmp_path)]
    assert run_script("studies/robustness_grid.py", [*argv, "--width", "16"]) == 0
    code = run_script("studies/robustness_grid.py", [*argv, "--width", "8", "--resume", "--jobs", "2"])
    assert code == 2 and "built-in seed 0 (exit code 2)" in capsys.readouterr().err


def test_fusion_pairs_parse_and_refuse_bad_text() -> None:
    assert grid.fusion_pair("mutual+/concat") == ("mutual+", "concat")
    assert grid.pair_name(grid.fusion_pair("concat/concat+")) == "concat/concat+"
    for text, message in (
        ("mutual+", "expected STAGE1/STAGE2"),
        ("mutal/concat", "unknown fusion strategy 'mutal'"),
        ("mutual/rgb+", "is not defined"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            grid.fusion_pair(text)


def test_the_fusion_table_by_hand() -> None:
    fusions = {
        "mutual+/concat": {
            "a": [row(40, 44, 9, 12) | {"stage1_only": 30}, row(42, 42, 11, 10) | {"stage1_only": 32}]
        },
        "concat/concat": {
            "a": [row(40, 46, 9, 12) | {"stage1_only": 33}, row(42, 48, 11, 10) | {"stage1_only": 35}]
        },
    }
    statistics = {  # cell a: seed means 0.5 and 2.0; cell b: 0.1 and 1.0
        "mutual+": {
            "a": [{"temporal gate": 0.25, "mutual loss": 1.0}, {"temporal gate": 0.75, "mutual loss": 3.0}],
            "b": [{"temporal gate": 0.1, "mutual loss": 1.0}, {"temporal gate": 0.1, "mutual loss": 1.0}],
        },
        "concat": {"a": [{"temporal gate": None, "mutual loss": None}] * 2},
    }
    for runs in (*statistics["mutual+"].values(), statistics["concat"]["a"]):
        for numbers in runs:
            numbers.update({k: numbers.get(k) for k in dmf_attention.STATISTICS})
    text = grid.format_fusions(fusions, statistics, [0, 1])
    assert "| a | 41.0 ± 1.4 | 43.0 ± 1.4 | 47.0 ± 1.4 |" in text  # the two stages
    assert "| a | 41.0 ± 1.4 | 31.0 ± 1.4 | 34.0 ± 1.4 |" in text  # Stage 1 x base classes
    assert "Order by the grid's mean: concat/concat (47.0) > mutual+/concat (43.0)" in text
    # the bars pair by pair: mutual+/concat's two stages are exactly 2 above its base (43 against 41)
    assert "- concat/concat: every bar holds" in text and "- mutual+/concat: every bar holds" in text
    fusions["mutual+/concat"]["a"][0]["two_stage"] = 43.9  # mean 42.95 < 41 + 2
    text = grid.format_fusions(fusions, statistics, [0, 1])
    assert "- mutual+/concat: missed: grid mean: two-stage >= base + 2" in text
    # the mean over the cells' seed means, [the lowest, the highest cell]
    assert "| temporal gate | 0.300 [0.100, 0.500] | — |" in text
    assert "| mutual loss | 1.500 [1.000, 2.000] | — |" in text


def test_rank_auc_against_every_pair_counted() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, size=rng.integers(2, 30)).astype(float)  # many ties
        positive = rng.random(len(scores)) < 0.4
        if positive.all() or not positive.any():
            assert np.isnan(dmf_attention.rank_auc(scores, positive))
            continue
        pos, neg = scores[positive], scores[~positive]
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
        assert dmf_attention.rank_auc(scores, positive) == pytest.approx(wins / (len(pos) * len(neg)))


def test_fusion_statistics_against_the_attentions_read_directly() -> None:
    """On an untrained mutual+ fusion: the statistics are the DMF module's own attentions, summarised in
    float64 by hand; a fusion without DMF reports only its mutual loss."""
    import torch

    from wstal.data import Video
    from wstal.model import FusionEmbed

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    videos = [
        Video(
            f"v{i}", rng.normal(size=(t, 6)), rng.normal(size=(t, 5)), np.ones(2), [[1.0, 3.0]], [0], t * 0.64
        )
        for i, t in enumerate((9, 14))
    ]
    fusion = FusionEmbed("mutual+", 6, 5, 4, alpha=0.5)
    trained = SimpleNamespace(rpn=SimpleNamespace(fusion=fusion))  # what fusion_statistics reads
    found = dmf_attention.fusion_statistics(trained, videos, 0.64)
    assert list(found) == list(dmf_attention.STATISTICS)
    with torch.no_grad():
        outs = [
            fusion.dmf(torch.tensor(v.rgb)[None], torch.tensor(v.flow)[None], return_attention=True)
            for v in videos
        ]
        losses = [
            float(fusion(torch.tensor(v.rgb)[None], torch.tensor(v.flow)[None]).aux_loss) for v in videos
        ]
    a_t = [o.temporal_attention[0].double().numpy() for o in outs]
    a_c = np.stack([o.channel_attention[0].double().numpy() for o in outs])
    fg = [dmf_attention.foreground_snippets(v, 0.64) for v in videos]
    assert found["temporal gate"] == pytest.approx(np.concatenate(a_t).mean())
    assert found["temporal spread"] == pytest.approx(np.mean([a.std() for a in a_t]))
    assert found["temporal fg - bg"] == pytest.approx(
        np.mean([a[f].mean() - a[~f].mean() for a, f in zip(a_t, fg)])
    )
    assert found["channel across videos"] == pytest.approx(a_c.std(axis=0).mean())
    scale = [1 + 0.5 * a for a in a_t]
    assert found["RGB modulation (%)"] == pytest.approx(np.mean([100 * s.std() / s.mean() for s in scale]))
    assert found["mutual loss"] == pytest.approx(np.mean(losses))
    assert 0 <= found["temporal AUC"] <= 1 and 0 < found["gate entropy (bits)"] <= 1
    plain = dmf_attention.fusion_statistics(
        SimpleNamespace(rpn=SimpleNamespace(fusion=FusionEmbed("concat", 6, 5, 4))), videos, 0.64
    )
    assert plain == dict.fromkeys(dmf_attention.STATISTICS)


def test_one_fusion_pair_still_records_what_dmf_learned(tmp_path: Path) -> None:
    """``--fusions`` with one pair writes fusions.md and the DMF statistics (a variant of the block on
    every cell, e.g. ``--dmf-attention dot``, needs them); without ``--fusions`` the grid writes neither."""
    argv = ["--cells", "built-in", "--seeds", "0", "--videos", "4", "--dim", "8", "--width", "16"]
    argv += ["--epochs", "1", "--threads", "1", "--quiet"]
    assert run_script("studies/robustness_grid.py", [*argv, "--out", str(tmp_path / "plain")]) == 0
    assert "fusions" not in json.loads((tmp_path / "plain" / "grid.json").read_text())
    assert not (tmp_path / "plain" / "fusions.md").exists()
    argv += ["--out", str(tmp_path / "one"), "--fusions", "mutual+/concat"]
    assert run_script("studies/robustness_grid.py", argv) == 0
    saved = json.loads((tmp_path / "one" / "grid.json").read_text())
    assert 0 < saved["fusion_statistics"]["mutual+"]["built-in"][0]["temporal gate"] < 1
    assert "| temporal gate |" in (tmp_path / "one" / "fusions.md").read_text()


def test_foreground_snippets_by_hand() -> None:
    from wstal.data import Video

    video = Video("v", np.zeros((6, 2)), np.zeros((6, 2)), np.ones(1), [[0.0, 0.7], [2.5, 9.0]], [0, 0], 3.84)
    # centres 0.32, 0.96, 1.6, 2.24, 2.88, 3.52 s
    assert dmf_attention.foreground_snippets(video, 0.64).tolist() == [True, False, False, False, True, True]


def test_a_fusion_axis_trains_one_base_per_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--fusions``: each pair is a column of fusions.md over one shared base model; the first pair is the
    one the bars read; DMF statistics exist for the DMF fusion only."""
    argv = ["--cells", "built-in", "--seeds", "0", "--videos", "4", "--dim", "8", "--width", "16"]
    argv += ["--epochs", "1", "--threads", "1", "--quiet", "--out", str(tmp_path)]
    argv += ["--fusions", "concat/concat", "mutual+/concat"]
    assert run_script("studies/robustness_grid.py", argv) == 0
    saved = json.loads((tmp_path / "grid.json").read_text())
    first, second = (saved["fusions"][p]["built-in"][0] for p in ("concat/concat", "mutual+/concat"))
    assert saved["cells"]["built-in"][0] == first  # the bars read the first pair
    assert first["base"] == second["base"]  # one base model per run
    assert sorted(p.name for p in (tmp_path / "built-in" / "seed0").glob("base_*.pt")) == ["base_concat.pt"]
    stats = saved["fusion_statistics"]
    assert stats["concat"]["built-in"][0]["temporal gate"] is None
    assert 0 < stats["mutual+"]["built-in"][0]["temporal gate"] < 1
    assert stats["mutual+"]["built-in"][0]["mutual loss"] >= 0
    text = (tmp_path / "fusions.md").read_text()
    assert text.startswith("Commit ") and "| cell | base | concat/concat | mutual+/concat |" in text
    assert "| temporal gate | — |" in text
    assert "Order by the grid's mean:" in capsys.readouterr().out
    # --report rewrites both tables from grid.json alone, stamped with the run's commit and command
    grid_md = (tmp_path / "grid.md").read_text()
    for name in ("grid.md", "fusions.md"):
        (tmp_path / name).unlink()
    assert run_script("studies/robustness_grid.py", ["--report", str(tmp_path)]) == 0
    assert (tmp_path / "fusions.md").read_text() == text and (tmp_path / "grid.md").read_text() == grid_md
    assert text.splitlines()[0] == saved["stamp"]
    assert run_script("studies/robustness_grid.py", ["--report", str(tmp_path / "nothing")]) == 2
    with pytest.raises(SystemExit) as stop:  # beside other flags it would have trained nothing silently
        run_script("studies/robustness_grid.py", ["--seeds", "0", "--report", str(tmp_path)])
    assert stop.value.code == 2
    assert "no grid.json in" in capsys.readouterr().err


def fusion_grid(cells: dict[str, tuple[float, float]], seeds=(0,), stamp: str = "Commit abc: one") -> dict:
    """A finished grid's payload with a two-pair fusion axis: per cell (base, two-stage of the second pair)."""
    runs = {c: [dict(row(b, b + 1, 5.0, 6.0), stage1_only=b - 1) for _ in seeds] for c, (b, _) in cells.items()}
    second = {c: [dict(row(b, t, 5.0, 6.0), stage1_only=b - 1) for _ in seeds] for c, (b, t) in cells.items()}
    stats = {c: [{name: None for name in dmf_attention.STATISTICS} for _ in seeds] for c in cells}
    return {
        "stamp": stamp,
        "runtime_seconds": 60.0,
        "seeds": list(seeds),
        "epochs_scale": 0.4,
        "preset": "thumos14",
        "checks": grid.bars(runs),
        "cells": runs,
        "fusions": {"concat/concat": runs, "concat+/concat+": second},
        "fusion_statistics": {"concat": stats, "concat+": stats},
    }


def test_report_combines_grids_with_disjoint_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--report OUT A B``: one table over the cells of both grids, every mean over all of them, each
    grid's stamp kept; grids that cannot be put side by side are refused, naming why."""
    for name, payload in {
        "a": fusion_grid({"built-in": (10.0, 20.0), "context:0": (30.0, 30.0)}),
        "b": fusion_grid({"broadcast:1": (20.0, 40.0)}, stamp="Commit def: two"),
        "seeds": fusion_grid({"broadcast:1": (20.0, 40.0)}, seeds=(0, 1)),
        "again": fusion_grid({"context:0": (30.0, 30.0)}),
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "grid.json").write_text(json.dumps(payload))
    out = tmp_path / "both"
    assert run_script("studies/robustness_grid.py", ["--report", str(out), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    saved = json.loads((out / "grid.json").read_text())
    assert list(saved["cells"]) == ["built-in", "context:0", "broadcast:1"]
    assert saved["runtime_seconds"] == 120.0
    text = (out / "fusions.md").read_text()
    assert "- " + str(tmp_path / "a") + ": Commit abc: one" in text and "Commit def: two" in text
    # concat+/concat+: (20 + 30 + 40) / 3; base: (10 + 30 + 20) / 3
    assert "| grid mean | 20.0 | 21.0 | 30.0 |" in text
    assert "Grids run in 2.0 min in all." in (out / "grid.md").read_text()
    for other, words in (("seeds", "seeds differ"), ("again", "cell 'context:0' is in both")):
        argv = ["--report", str(tmp_path / "x"), str(tmp_path / "a"), str(tmp_path / other)]
        assert run_script("studies/robustness_grid.py", argv) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as stop:  # one grid to combine is a mistake, not a copy
        run_script("studies/robustness_grid.py", ["--report", str(out), str(tmp_path / "a")])
    assert stop.value.code == 2


def stage3_row(three: tuple[float, float, float], **rows: tuple[float, float, float]) -> dict:
    """A grid row with Stage 3: each detector's (AVG, @0.1, @0.7)."""
    found = row(rows["base"][0], rows["two_stage"][0], rows["base"][2], rows["two_stage"][2])
    for name, (avg, at1, at7) in {"three_stage": three, **rows}.items():
        found.update({name: avg, f"{name}@0.1": at1, f"{name}@0.7": at7})
    return found


def test_the_stage3_bars_by_hand() -> None:
    inputs = {"two_stage": (44.0, 60.0, 20.0), "stage1_only": (30.0, 50.0, 10.0), "base": (40.0, 62.0, 15.0)}
    cells = {
        # Stage 3 above every row it is built from, on every measure
        "a": [stage3_row((46.0, 63.0, 22.0), **inputs)],
        # above on AVG, below the base at tIoU 0.1 (61 < 62) and equal to the two stages at 0.7
        "b": [stage3_row((47.0, 61.0, 20.0), **inputs)],
    }
    checks = grid.bars(cells)
    stage3 = {k: v for k, v in checks.items() if "Stage 3" in k}
    assert len(stage3) == 2 * 9 + 1
    assert [k for k, ok in stage3.items() if not ok] == ["b: Stage 3 >= base at tIoU 0.1"]
    assert stage3["grid mean: Stage 3 >= base + 5"]  # (46 + 47) / 2 = 46.5 >= 40 + 5
    cells["a"] = [stage3_row((42.0, 63.0, 22.0), **inputs)]  # (42 + 47) / 2 = 44.5 < 45; below the two stages
    checks = grid.bars(cells)
    assert not checks["grid mean: Stage 3 >= base + 5"] and not checks["a: Stage 3 >= two-stage AVG"]
    text, _ = grid.format_grid(cells, [0])
    assert "| cell | Stage 3 | two-stage | Stage-1 x base classes | base |" in text
    assert "| b | 47.0 / 61.0 / 20.0 | 44.0 / 60.0 / 20.0 | 30.0 / 50.0 / 10.0 | 40.0 / 62.0 / 15.0 |" in text
    assert "| grid mean | 44.5 / 62.0 / 21.0 |" in text
    # a grid without Stage 3 has neither its bars nor its table
    plain = {"a": [row(40, 44, 10, 12)]}
    assert (
        not any("Stage 3" in k for k in grid.bars(plain)) and "Stage 3" not in grid.format_grid(plain, [0])[0]
    )


def test_stage3_outputs_score_the_grid_networks_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiny grid with Stage 3, then the output variants on its networks: the two-stage and the Stage-3
    rows are the grid's own numbers, nothing is retrained."""
    argv = ["--cells", "built-in", "--seeds", "0", "1", "--videos", "8", "--dim", "16", "--width", "16"]
    argv += ["--epochs", "10", "--threads", "1", "--quiet", "--out", str(tmp_path), "--stage3"]
    argv += [
        item for stage in ("base", "stage1", "stage2", "stage3") for item in ("--set", f"{stage}.lr=0.01")
    ]
    assert run_script("studies/robustness_grid.py", argv) == 0
    saved = json.loads((tmp_path / "grid.json").read_text())
    runs = saved["cells"]["built-in"]
    assert all({"three_stage", "student", "three_stage@0.1", "stage1_only@0.7"} <= set(r) for r in runs)
    assert any(r["three_stage"] > 0 for r in runs)  # the tiny networks detect something
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    capsys.readouterr()
    assert run_script("studies/stage3_outputs.py", argv) == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamp  # nothing retrained
    scores = json.loads((tmp_path / "stage3_outputs.json").read_text())["cells"]["built-in"]
    for run, found in zip(runs, scores):
        assert found["two-stage"][0] == pytest.approx(run["two_stage"])
        assert found["refined: voted and rescored (Stage 3)"] == pytest.approx(
            [run["three_stage"], run["three_stage@0.1"], run["three_stage@0.7"]]
        )
        assert found["student alone"][0] == pytest.approx(run["student"])
    text = (tmp_path / "stage3_outputs.md").read_text()
    assert text.startswith("Commit ") and "| union, fused scores (w 0.3) |" in text
    # without --stage3 there are no Stage-3 outputs to score
    with pytest.raises(SystemExit) as refused:
        run_script("studies/stage3_outputs.py", [a for a in argv if a != "--stage3"])
    assert refused.value.code == 2 and "argument --stage3" in capsys.readouterr().err
