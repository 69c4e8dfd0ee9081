"""The detector's experiments, run from ``examples/thumos_two_stage.py``: the paper's fusion ablation
(``--ablation``: the grid of its Tables 1 and 2) and the quality bars (``--quality-bars``: three seeds,
RGB-only and Flow-only, and the checks of docs/detector.md).

Each takes the parsed command line and the data, trains through :mod:`wstal.launch`'s runner, writes its
table (markdown) and its results (JSON, each configuration as :meth:`EvaluationResult.as_dict`) to
``--out`` and prints the table; the quality bars save each seed's trained detector as
``--out/seed<N>/detector.pt``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from wstal.config import DetectorConfig
from wstal.console import log
from wstal.data import WSTALDataset
from wstal.evaluator import EvaluationResult, train_and_evaluate
from wstal.launch import make_config, make_runner, source_stamp
from wstal.recall import EqualBudget, recall_at_equal_budget
from wstal.train import StopAfter

__all__ = [
    "GRID",
    "candidate_recall",
    "format_ablation",
    "format_quality_bars",
    "run_ablation",
    "run_quality_bars",
    "stage1_against_base",
    "write_json",
]

# The paper's mAP@AVG on THUMOS14 (its Tables 1 and 2), where it states them.
PAPER_TABLE1 = {"rgb": 37.9, "flow": 41.4}
PAPER_TABLE2 = {("mutual+", "concat"): 47.0, ("mutual+", "concat+"): 46.9}
GRID = ("concat", "concat+", "mutual", "mutual+")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON at ``path`` (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


def run_ablation(args: argparse.Namespace, dataset: WSTALDataset) -> int:
    """The paper's fusion grid: RGB-only, Flow-only and every Stage-1 x Stage-2 fusion of :data:`GRID`, on a
    halved schedule (the base model and each T-RPN shared between cells)."""
    config = make_config(args, ablation=True)
    runner = make_runner(
        args, dataset, config, args.out / "checkpoints", stop=StopAfter(args.stop_after_epochs)
    )
    start = time.perf_counter()
    cells: dict[tuple[str, str], EvaluationResult] = {}
    for s1, s2 in [("rgb", "rgb"), ("flow", "flow")] + [(a, b) for a in GRID for b in GRID]:
        log(f"=== ablation cell: Stage 1 {s1} / Stage 2 {s2} ===")
        result = train_and_evaluate(runner, s1, s2)
        if result is not None:  # None on the ranks other than 0 of a distributed run
            cells[(s1, s2)] = result
    if not args.dist.is_main:
        return 0
    seconds = time.perf_counter() - start
    text = format_ablation(cells, config, dataset)
    write_json(
        args.out / "ablation.json",
        {
            "runtime_seconds": round(seconds, 1),
            "config": config.as_dict(),
            "cells": [r.as_dict() for r in cells.values()],
        },
    )
    (args.out / "ablation.md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nablation done in {seconds:.0f} s; outputs in {args.out}/")
    return 0


def format_ablation(
    cells: dict[tuple[str, str], EvaluationResult], config: DetectorConfig, dataset: WSTALDataset
) -> str:
    e = config
    note = (
        f"Reduced schedule for the grid: {e.base.epochs}/{e.stage1.epochs}/{e.stage2.epochs} epochs "
        f"(base / Stage 1 / Stage 2), {len(dataset.train)} train and {len(dataset.test)} test videos. "
        "Ours: mAP AVG 0.1:0.7 (%) of the two-stage detections; paper: mAP@AVG on THUMOS14, in brackets "
        "where the paper states it. Synthetic-data numbers are not comparable with the paper's."
    )
    fusion = cells[("mutual+", "concat")]
    lines = [
        "Table 1: single modality vs fusion (ours / [paper])",
        "",
        "| input | ours | paper |",
        "| --- | --- | --- |",
    ]
    for name, key in (("RGB only", "rgb"), ("Flow only", "flow")):
        lines.append(f"| {name} | {cells[(key, key)].avg():.1f} | {PAPER_TABLE1[key]:.1f} |")
    lines.append(
        f"| RGB + Flow (mutual+ / concat) | {fusion.avg():.1f} | {PAPER_TABLE2[('mutual+', 'concat')]:.1f} |"
    )
    lines += [
        "",
        "Table 2: fusion per stage, rows Stage 1 (T-RPN), columns Stage 2 (classifier); '+' = with DMF",
        "",
        "| Stage 1 \\ Stage 2 | " + " | ".join(GRID) + " |",
        "| --- |" + " --- |" * len(GRID),
    ]
    for s1 in GRID:
        row = []
        for s2 in GRID:
            paper = PAPER_TABLE2.get((s1, s2))
            row.append(f"{cells[(s1, s2)].avg():.1f}" + (f" [{paper:.1f}]" if paper is not None else ""))
        lines.append(f"| {s1} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Stage 1 alone (its proposals classified by the base model), per Stage-1 fusion: "
        + ", ".join(f"{s1} {cells[(s1, 'concat')].avg('stage1_only'):.1f}" for s1 in GRID),
        "",
        note,
    ]
    return "\n".join(lines)


def run_quality_bars(args: argparse.Namespace, dataset: WSTALDataset) -> int:
    """Seeds 0, 1, 2 of the chosen configuration, RGB-only and Flow-only (seed 0), and the checks."""
    start, stamp = (
        time.perf_counter(),
        source_stamp(),
    )  # the code that runs, not what is checked out at the end
    runs: dict[str, EvaluationResult] = {}
    configs = {seed: make_config(args, seed=seed) for seed in (0, 1, 2)}
    fusions = (configs[0].stage1_fusion, configs[0].stage2_fusion)  # in force: the flags or the defaults
    for seed, config in configs.items():
        log(f"=== {fusions[0]} / {fusions[1]}, seed {seed} ===")
        runner = make_runner(args, dataset, config, args.out / f"seed{seed}")
        result = train_and_evaluate(runner, save_to=args.out / f"seed{seed}" / "detector.pt")
        if result is not None:  # None on the ranks other than 0 of a distributed run
            runs[f"seed{seed}"] = result
    for modality in ("rgb", "flow"):
        log(f"=== {modality} only, seed 0 ===")
        config = make_config(args, seed=0, stage1_fusion=modality, stage2_fusion=modality)
        runner = make_runner(args, dataset, config, args.out / "seed0")
        result = train_and_evaluate(runner)
        if result is not None:
            runs[modality] = result
    if not args.dist.is_main:
        return 0
    seconds = time.perf_counter() - start
    text, checks = format_quality_bars(runs, *fusions)
    text = f"{stamp}\n\n{text}"
    write_json(
        args.out / "quality_bars.json",
        {
            "runtime_seconds": round(seconds, 1),
            "checks": checks,
            "runs": {name: r.as_dict() for name, r in runs.items()},
        },
    )
    (args.out / "quality_bars.md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nquality bars measured in {seconds:.0f} s; outputs in {args.out}/")
    return 0


def stage1_recall_holds(result: EvaluationResult) -> bool:
    """Stage-1 proposals recall at least as many instances at tIoU 0.5 as the base model's grouped segments,
    both cut to the same average number per video (the smaller set's)."""
    equal = stage1_against_base(result)
    return equal.recall["stage1"] >= equal.recall["grouped"]


def candidate_recall(result: EvaluationResult, tiou: float = 0.7) -> dict[str, float]:
    """Recall at ``tiou`` of all the candidates handed to Stage 2 (``candidates``) and of all the base
    model's own detections, classes ignored (``base_detections``): Stage 2 only re-scores its candidates,
    so where they recall less than the base's detections they cap it below the base."""
    return {
        name: result.proposal_quality[name].recall_at_budget(
            result.proposal_quality[name].proposals_per_video, tiou
        )
        for name in ("candidates", "base_detections")
    }


def stage1_against_base(result: EvaluationResult) -> EqualBudget:
    """Recall at tIoU 0.5 of the Stage-1 proposals and of the base model's grouped segments at the
    average number per video of the smaller of the two."""
    return recall_at_equal_budget(result.proposal_quality, tiou=0.5, budget_from=("stage1", "grouped"))


def format_quality_bars(
    runs: dict[str, EvaluationResult], stage1: str, stage2: str
) -> tuple[str, dict[str, bool]]:
    """The quality-bar table and checks of docs/detector.md, from seeds 0, 1, 2 and the single-modality
    runs (seed 0)."""
    seeds = [runs[f"seed{s}"] for s in (0, 1, 2)]

    def spread(values: list[float]) -> str:
        t = torch.tensor(values, dtype=torch.float64)
        return f"{t.mean():.1f} ± {t.std():.1f} (min {t.min():.1f}, max {t.max():.1f})"

    two, s1, base = ([r.avg(k) for r in seeds] for k in ("two_stage", "stage1_only", "base"))
    checks = {
        "two-stage >= base + 2 AVG (every seed)": all(a >= b + 2 for a, b in zip(two, base)),
        "two-stage > Stage-1 proposals x base classes (every seed)": all(a > b for a, b in zip(two, s1)),
        "fusion beats RGB only (seed 0)": two[0] > runs["rgb"].avg(),
        "fusion beats Flow only (seed 0)": two[0] > runs["flow"].avg(),
        "Stage-1 recall@0.5 >= base segments' at equal budget (every seed)": all(
            stage1_recall_holds(r) for r in seeds
        ),
    }
    with_detections = all("base_detections" in r.proposal_quality for r in seeds)
    if with_detections:
        recall = [candidate_recall(r) for r in seeds]
        checks["Stage-2 candidates recall@0.7 >= base detections' (every seed)"] = all(
            r["candidates"] >= r["base_detections"] for r in recall
        )
    lines = [
        f"Quality bars: Stage 1 {stage1} / Stage 2 {stage2}, mAP AVG 0.1:0.7 (%) on the test split",
        "",
        "| detector | seed 0 | seed 1 | seed 2 | mean ± std |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, values in (("two-stage", two), ("Stage 1 + base classes", s1), ("base alone", base)):
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {spread(values)} |")
    if all(r.proposal_quality for r in seeds):
        rows = []
        for name in ("stage1", "grouped"):
            equal = [stage1_against_base(r).recall[name] * 100 for r in seeds]
            rows.append(
                f"| R@0.5 at equal budget, {name} | "
                + " | ".join(f"{v:.1f}" for v in equal)
                + f" | {spread(equal)} |"
            )
        lines += rows
    if with_detections:
        for name, label in (
            ("candidates", "Stage-2 candidates, all"),
            ("base_detections", "base detections, all"),
        ):
            values = [100 * r[name] for r in recall]
            lines.append(
                f"| R@0.7, {label} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {spread(values)} |"
            )
    lines += [
        "",
        "| single modality (seed 0) | two-stage | Stage 1 + base classes | base alone |",
        "| --- | --- | --- | --- |",
    ]
    for name in ("rgb", "flow"):
        r = runs[name]
        lines.append(
            f"| {name} / {name} | {r.avg():.1f} | {r.avg('stage1_only'):.1f} | {r.avg('base'):.1f} |"
        )
    lines += ["", "Seed 0, full table:", "", seeds[0].table(), ""]
    lines += [f"- [{'x' if ok else ' '}] {name}" for name, ok in checks.items()]
    return "\n".join(lines), checks
