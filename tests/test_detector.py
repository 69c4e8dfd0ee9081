"""The reference two-stage detector (examples/thumos_two_stage.py and its wstal parts).

A tiny end-to-end run (a few small synthetic videos, narrow networks, one epoch per stage), resume
equivalence (an interrupted run resumed from its checkpoints ends exactly where an uninterrupted one
does), the command line's error messages, and the small pieces the detector is built from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scripts import two_stage
from thumos_folder import thumos_format_folder

from wstal.config import GroupingSettings
from wstal.model import FusionEmbed, FusionStrategy, masked_topk_mean, roi_features
from wstal.pseudo_labels import dense_targets, segments_from_scores
from wstal.train import CheckpointMismatchError, load_checkpoint, sample_snippets, save_checkpoint

TINY = ["--max-videos", "6", "--synthetic-dim", "16", "--width", "16", "--threads", "1", "--quiet"]


def run_cli(tmp: Path, *extra: str) -> int:
    return two_stage([*TINY, "--out", str(tmp), *extra])


def read(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def test_tiny_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(tmp_path, "--epochs", "1") == 0
    printed = capsys.readouterr().out
    assert "| two-stage (Stage-2 detections) |" in printed and "AVG 0.1:0.7" in printed
    results = read(tmp_path, "results.json")
    assert (results["stage1_fusion"], results["stage2_fusion"]) == ("concat+", "concat+")
    assert results["data"] == "synthetic"
    for detector in ("two_stage", "stage1_only", "base"):
        averages = results["results"][detector]["averages"]
        assert set(averages) == {"0.1:0.5", "0.3:0.7", "0.1:0.7"}
        assert all(0.0 <= v <= 1.0 for v in averages.values())
    detections = read(tmp_path, "detections.json")["results"]
    proposals = read(tmp_path, "proposals.json")["results"]
    assert len(detections) == len(proposals) == 6
    assert all(0 <= d["segment"][0] <= d["segment"][1] for dets in detections.values() for d in dets)
    assert {d["label"] for dets in proposals.values() for d in dets} <= {"action"}
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert checkpoints == ["base_concat.pt", "stage1_concat_concat+.pt", "stage2_concat_concat+_concat+.pt"]
    assert (tmp_path / "plot.png").stat().st_size > 0
    assert (tmp_path / "average_recall.png").stat().st_size > 0
    assert not list(tmp_path.rglob("*.tmp"))
    quality = results["proposal_quality"]
    assert set(quality) == {"candidates", "stage1", "rpn", "grouped", "base_detections"}
    for name in quality:
        assert all(0.0 <= r <= 1.0 for r in quality[name]["average_recall"] if r is not None)
    for name in (
        "Stage-2 candidates",
        "Stage-1 proposals",
        "T-RPN proposals alone",
        "base grouped segments",
        "base detections, class-agnostic",
    ):
        assert printed.count(f"| {name} |") == 2  # the proposal table and the recall-against-count table
    assert "| proposals | R@0.5 / R@0.7 at 10 per video |" in printed and "at 200 per video |" in printed
    # the equal-budget column is the smaller count of the Stage-1 proposals and the base's segments
    budget = min(quality[name]["proposals_per_video"] for name in ("stage1", "grouped"))
    assert f"R@0.5 @{budget:.1f} (equal)" in printed


def test_resume_reaches_the_uninterrupted_result(tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_cli(whole, "--epochs", "2", "--seed", "3") == 0
    # killed after 3 epochs: the base model (2 epochs) is done, Stage 1 has one epoch checkpointed
    assert run_cli(parts, "--epochs", "2", "--seed", "3", "--stop-after-epochs", "3") == 3
    assert not (parts / "results.json").exists()
    state = torch.load(parts / "checkpoints" / "stage1_concat_concat+.pt", weights_only=True)
    assert state["epoch"] == 1
    assert run_cli(parts, "--epochs", "2", "--seed", "3", "--resume") == 0
    for name in ("detections.json", "proposals.json"):
        assert read(parts, name) == read(whole, name)
    assert read(parts, "results.json")["results"] == read(whole, "results.json")["results"]
    for stage in ("base_concat", "stage1_concat_concat+", "stage2_concat_concat+_concat+"):
        a = torch.load(whole / "checkpoints" / f"{stage}.pt", weights_only=True)["model"]
        b = torch.load(parts / "checkpoints" / f"{stage}.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(tmp_path, "--epochs", "1", "--stop-after-epochs", "1") == 3
    capsys.readouterr()
    assert run_cli(tmp_path, "--epochs", "2", "--resume") == 2
    err = capsys.readouterr().err
    assert "argument --resume" in err and "different configuration" in err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--stage1", "bogus", "unknown fusion strategy 'bogus'"),
        ("--stage2", "mutal", "unknown fusion strategy 'mutal'"),
        ("--stage1", "rgb+", "'rgb+' is not defined"),
        ("--dmf-attention", "softmax", "invalid choice: 'softmax'"),
        ("--alpha", "-1", "expected a finite number >= 0, got '-1'"),
        ("--epochs", "0", "expected a positive integer, got '0'"),
    ],
)
def test_cli_rejects_bad_flags(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        two_stage([flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and message in err


def test_cli_runs_on_a_folder_in_the_real_thumos_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--data-dir end to end: the real layout and widths, the THUMOS settings (narrowed by --width),
    the THUMOS evaluation protocol."""
    data = thumos_format_folder(tmp_path / "thumos")
    out = tmp_path / "out"
    args = [
        "--data-dir",
        str(data),
        "--width",
        "16",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--out",
        str(out),
    ]
    assert two_stage(args) == 0
    assert "| two-stage (Stage-2 detections) |" in capsys.readouterr().out
    results = read(out, "results.json")
    assert results["data"] == "thumos14" and results["evaluation_protocol"] == "thumos"
    assert results["config"]["stage1_fusion"] == "concat+" and results["config"]["stage2_fusion"] == "concat+"
    assert set(read(out, "detections.json")["results"]) == {f"video_test_{i}" for i in range(3)}


# ------------------------------------------------------------------------------------------ pieces


def test_fusion_strategy_parsing() -> None:
    assert FusionStrategy.parse("concat+") == FusionStrategy("concat", True)
    assert FusionStrategy.parse("flow").modalities == ("flow",)
    with pytest.raises(ValueError, match="unknown fusion strategy"):
        FusionStrategy.parse("concat++")


@pytest.mark.parametrize("strategy", ["rgb", "flow", "concat", "concat+", "mutual", "mutual+"])
def test_fusion_embed_ignores_padding(strategy: str) -> None:
    torch.manual_seed(0)
    embed = FusionEmbed(strategy, 6, 5, 4)
    rgb, flow = torch.randn(1, 7, 6), torch.randn(1, 7, 5)
    mask = torch.tensor([[True] * 5 + [False] * 2])
    padded = embed(rgb, flow, mask)
    alone = embed(rgb[:, :5], flow[:, :5])
    torch.testing.assert_close(padded.features[:, :5], alone.features)
    assert padded.features[:, 5:].eq(0).all()
    torch.testing.assert_close(padded.aux_loss, alone.aux_loss)
    assert (padded.aux_loss > 0) == strategy.startswith("mutual")


@pytest.mark.parametrize("through", [True, False], ids=["mutual loss trains DMF", "mutual loss detached"])
def test_the_mutual_loss_reaches_dmf_only_when_asked(through: bool) -> None:
    """``mutual_loss_through_dmf=False`` keeps the features and the loss's value and stops the loss's
    gradient at DMF, while the mutual embeddings still learn from it."""
    torch.manual_seed(0)
    reference = FusionEmbed("mutual+", 6, 5, 4)
    embed = FusionEmbed("mutual+", 6, 5, 4, mutual_loss_through_dmf=through)
    embed.load_state_dict(reference.state_dict())
    rgb, flow = torch.randn(2, 7, 6), torch.randn(2, 7, 5)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    out, expected = embed(rgb, flow, mask), reference(rgb, flow, mask)
    torch.testing.assert_close(out.features, expected.features)
    torch.testing.assert_close(out.aux_loss, expected.aux_loss)
    assert embed.dmf is not None
    dmf = list(embed.dmf.parameters())
    from_loss = torch.autograd.grad(out.aux_loss, dmf, allow_unused=True, retain_graph=True)
    reached = any(g is not None and g.abs().sum() > 0 for g in from_loss)
    assert reached == through
    embeddings = list(embed.fuse.parameters())
    from_loss = torch.autograd.grad(out.aux_loss, embeddings, allow_unused=True, retain_graph=True)
    assert any(g is not None and g.abs().sum() > 0 for g in from_loss)
    from_features = torch.autograd.grad(out.features.square().sum(), dmf, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in from_features)  # the task losses still train DMF
    assert ("mutual_loss_through_dmf=False" in repr(embed)) != through


def test_masked_topk_mean_matches_a_loop() -> None:
    torch.manual_seed(1)
    x, lengths = torch.randn(3, 9, 4), torch.tensor([9, 5, 2])
    mask = torch.arange(9) < lengths[:, None]
    k = torch.tensor([3, 2, 1])
    expected = torch.stack([x[b, : lengths[b]].topk(int(k[b]), dim=0).values.mean(0) for b in range(3)])
    torch.testing.assert_close(masked_topk_mean(x, mask, k), expected)
    key = torch.randn(3, 9)
    expected = torch.stack([x[b, key[b, : lengths[b]].topk(int(k[b])).indices].mean(0) for b in range(3)])
    torch.testing.assert_close(masked_topk_mean(x, mask, k, key=key), expected)


def test_pseudo_segments_and_dense_targets() -> None:
    scores = torch.zeros(30)
    scores[5:10] = 0.9
    scores[20:24] = 0.7
    found = segments_from_scores(scores, GroupingSettings(nms_iou=0.5))
    assert sorted(found.segments.tolist()) == [[5.0, 10.0], [20.0, 24.0]]
    objectness, assigned = dense_targets(found.segments, 30)
    assert objectness.nonzero().flatten().tolist() == [*range(5, 10), *range(20, 24)]
    assert assigned[7].tolist() == [5.0, 10.0] and assigned[0].tolist() == [0.0, 0.0]


def test_roi_features_see_each_side_of_a_proposal() -> None:
    features = torch.zeros(20, 1)
    features[8:12] = 1.0
    exact, padded_left = roi_features(features, torch.tensor([[8.0, 12.0], [6.0, 12.0]]), bins=2).unbind(0)
    # layout: 2 inner bins, left context, right context, mean - left, mean - right (snippets are
    # interpolated between their centres, so the edges are soft)
    inner, left, right, contrast = exact[:2], exact[2], exact[3], exact[4:]
    assert inner.min() > 0.9 and max(left, right) < 0.2 and contrast.min() > 0.75
    assert padded_left[0] < 0.5 < padded_left[1] and padded_left[2] < 0.05 and padded_left[4] < contrast[0]


def test_sample_snippets_spans_the_video() -> None:
    idx = sample_snippets(1000, 50, torch.Generator().manual_seed(0))
    assert idx.shape == (50,) and idx.min() < 20 and idx.max() > 980 and bool((idx.diff() > 0).all())


def test_checkpoints_are_atomic_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "stage.pt"
    save_checkpoint(path, {"fingerprint": "abc", "epoch": 1, "model": {"w": torch.ones(2)}})
    assert not list(tmp_path.glob("*.tmp"))
    assert load_checkpoint(path, "abc")["epoch"] == 1
    with pytest.raises(CheckpointMismatchError, match="rerun without --resume"):
        load_checkpoint(path, "other")


@pytest.mark.parametrize(
    "name",
    ["wstal.model", "wstal.pseudo_labels", "wstal.train", "wstal.detect", "wstal.student", "wstal.stages"],
)
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0


def test_quality_bar_checks_follow_the_numbers() -> None:
    """The checks of --quality-bars, on hand-made results: each one flips when its comparison does."""

    import numpy as np

    from studies.experiments import format_quality_bars
    from wstal.evaluation import Detection, MAPResult
    from wstal.evaluator import EvaluationResult
    from wstal.recall import evaluate_proposals
    from wstal.synthetic import make_synthetic_thumos

    videos = make_synthetic_thumos(num_train=1, num_test=3, dim=4, seed=0).test
    exact = {v.name: [Detection(0, 1.0, float(a), float(b)) for a, b in v.segments] for v in videos}
    shifted = {v.name: [Detection(0, 1.0, float(b), float(2 * b - a)) for a, b in v.segments] for v in videos}
    good = {"stage1": evaluate_proposals(videos, exact), "grouped": evaluate_proposals(videos, shifted)}
    # the candidates recall everything, the base's detections nothing
    good["candidates"], good["base_detections"] = good["stage1"], good["grouped"]
    bad = {
        "stage1": good["grouped"],
        "grouped": good["stage1"],
        "candidates": good["grouped"],
        "base_detections": good["stage1"],
    }

    def table(avg: float) -> MAPResult:
        return MAPResult(np.array([0.5]), np.array([[avg]]), np.array([avg]), {"0.1:0.7": avg / 100})

    def result(two: float, s1: float, base: float, quality=good) -> EvaluationResult:
        return EvaluationResult("mutual+", "concat", table(base), table(s1), table(two), {}, {}, quality)

    runs = {"seed0": result(50, 30, 48), "seed1": result(52, 31, 36), "seed2": result(48, 49, 40, bad)}
    runs |= {"rgb": result(20, 10, 15), "flow": result(51, 20, 15)}
    text, checks = format_quality_bars(runs, "mutual+", "concat")
    assert checks == {
        "two-stage >= base + 2 AVG (every seed)": True,  # 50 >= 48 + 2, 52 >= 38, 48 >= 42
        "two-stage > Stage-1 proposals x base classes (every seed)": False,  # 48 < 49 on seed 2
        "fusion beats RGB only (seed 0)": True,  # 50 > 20
        "fusion beats Flow only (seed 0)": False,  # 50 < 51
        "Stage-1 recall@0.5 >= base segments' at equal budget (every seed)": False,  # swapped on seed 2
        "Stage-2 candidates recall@0.7 >= base detections' (every seed)": False,  # swapped on seed 2
    }
    runs["seed0"] = result(50, 30, 48.5)
    assert not format_quality_bars(runs, "mutual+", "concat")[1]["two-stage >= base + 2 AVG (every seed)"]
    runs["seed2"] = result(48, 47, 40)
    checks = format_quality_bars(runs, "mutual+", "concat")[1]
    assert checks["two-stage > Stage-1 proposals x base classes (every seed)"]
    assert checks["Stage-1 recall@0.5 >= base segments' at equal budget (every seed)"]
    assert checks["Stage-2 candidates recall@0.7 >= base detections' (every seed)"]
    assert "| two-stage | 50.0 | 52.0 | 48.0 | 50.0 ± 2.0 (min 48.0, max 52.0) |" in text
    assert "| R@0.5 at equal budget, stage1 | 100.0 | 100.0 | 0.0 |" in text
    assert "| R@0.7, Stage-2 candidates, all | 100.0 | 100.0 | 0.0 |" in text
    assert "| R@0.7, base detections, all | 0.0 | 0.0 | 100.0 |" in text
    assert "- [ ] fusion beats Flow only (seed 0)" in text and "- [x] fusion beats RGB only (seed 0)" in text
