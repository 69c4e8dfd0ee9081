"""Train and evaluate the reference two-stage WSTAL detector (Temporal RPN learning for WSTAL, ACML 2023).

    python examples/thumos_two_stage.py                     # synthetic THUMOS-like data, a few minutes on CPU
    python examples/thumos_two_stage.py --data-dir DATA_DIR # real THUMOS14 I3D features (1024 + 1024)
    python examples/thumos_two_stage.py --ablation          # the grid of the paper's Tables 1 and 2
    torchrun --standalone --nproc_per_node 8 examples/thumos_two_stage.py --device cuda --amp bf16 ...

A snippet-level MIL base model turns its attention into pseudo segments; Stage 1, a temporal region
proposal network on ``--stage1`` features (default ``mutual+``: DMF, then mutual fusion), learns from
them; Stage 2 classifies the proposals on ``--stage2`` features (default ``concat``). The mAP table is
printed and written to ``--out`` with the detections, the Stage-1 proposals, a checkpoint per stage and a
plot of one test video. See docs/detector.md for the design, docs/training_at_scale.md for several
GPUs or machines (``torchrun``), mixed precision (``--amp``) and ``--compile``.

This file is the command line only; the parts live in the ``wstal`` package next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from wstal.console import log
from wstal.data import WSTALDataset
from wstal.distributed import AMP_MODES, init_distributed, resolve_amp, shutdown_distributed
from wstal.io import write_activitynet_json
from wstal.layouts import load_data_dir
from wstal.model import FusionStrategy
from wstal.pipeline import DetectorConfig, DetectorRunner, EvaluationResult, ablation_config, thumos14_config
from wstal.recall import EqualBudget, format_proposal_table, recall_at_equal_budget
from wstal.synthetic import make_synthetic_thumos
from wstal.synthetic_gt import make_synthetic_from_annotations
from wstal.train import CheckpointMismatchError, StopAfter, TrainingDiverged, TrainingInterrupted

# The paper's mAP@AVG on THUMOS14 (its Tables 1 and 2), where it states them.
PAPER_TABLE1 = {"rgb": 37.9, "flow": 41.4}
PAPER_TABLE2 = {("mutual+", "concat"): 47.0, ("mutual+", "concat+"): 46.9}
GRID = ("concat", "concat+", "mutual", "mutual+")
# Printed names of the proposal sets of EvaluationResult.proposal_quality.
PROPOSAL_SETS = {
    "stage1": "Stage-1 proposals",
    "rpn": "T-RPN proposals alone",
    "base": "base grouped segments",
}


def strategy(text: str) -> str:
    """argparse type for ``--stage1`` / ``--stage2``: a fusion strategy, validated with a clear message."""
    try:
        return str(FusionStrategy.parse(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_device(text: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; anything else is kept."""
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thumos_two_stage.py",
        description="Train and evaluate the two-stage WSTAL detector (T-RPN + proposal classifier) with "
        "dmf-fusion blocks. Without --data-dir it runs on built-in synthetic THUMOS-like data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="THUMOS14 folder: Thumos14reduced-I3D-JOINTFeatures.npy with Thumos14reduced-Annotations/, or the "
        "per-video layout (annotations/thumos14.json with i3d_features/, or OpenTAD's "
        "annotations/thumos_14_anno.json), detected from the folder (default: synthetic data)",
    )
    source.add_argument(
        "--synthetic-from",
        type=Path,
        default=None,
        metavar="ANNOTATIONS_DIR",
        help="the second synthetic family: features synthesised around the ground truth of a THUMOS-layout "
        "annotation folder (docs/synthetic_from_annotations.md)",
    )
    data.add_argument(
        "--difficulty",
        type=non_negative_float,
        default=1.0,
        help="noise and distractor scale of --synthetic-from data (0 clean, 1 calibrated, 2 hard)",
    )
    data.add_argument(
        "--max-seconds",
        type=positive_float,
        default=None,
        help="--synthetic-from: keep only videos at most this long",
    )
    data.add_argument(
        "--repair-nonfinite",
        action="store_true",
        help="--data-dir: replace NaN/inf feature values with 0 (a warning names the videos) instead of "
        "refusing the folder",
    )
    data.add_argument(
        "--unused-videos",
        choices=("error", "warn"),
        default="error",
        help="--data-dir: an annotated video the run cannot use (a subset that is neither split, no feature "
        "file, no label) refuses the folder (error), or is left out with a warning naming it (warn)",
    )
    data.add_argument(
        "--feature-stride",
        type=positive_int,
        default=None,
        help="--data-dir, per-video layout: frames between two features, where the JSON does not say (default 4)",
    )
    data.add_argument(
        "--feature-window",
        type=positive_int,
        default=None,
        help="--data-dir, per-video layout: frames of one feature's clip, where the JSON does not say (default 16)",
    )
    data.add_argument(
        "--feature-fps",
        type=positive_float,
        default=None,
        help="--data-dir, per-video layout: fps of the videos the features were computed on, for videos "
        "whose JSON entry has no fps (default 30)",
    )
    data.add_argument(
        "--max-videos",
        type=positive_int,
        default=None,
        help="use only the first N videos of each split (real data) / generate N per split (synthetic)",
    )
    data.add_argument(
        "--synthetic-dim",
        type=positive_int,
        default=128,
        help="feature width per modality of the synthetic data (real I3D: 1024)",
    )
    data.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    model = parser.add_argument_group("fusion")
    model.add_argument(
        "--stage1",
        type=strategy,
        default="mutual+",
        help="Stage-1 (T-RPN) fusion: rgb, flow, concat, mutual; a trailing + applies DMF first",
    )
    model.add_argument(
        "--stage2",
        type=strategy,
        default="concat",
        help="Stage-2 (proposal classifier) fusion, same choices as --stage1",
    )
    model.add_argument("--dmf-attention", choices=("gate", "dot"), default="gate", help="DMF attention form")
    model.add_argument("--alpha", type=non_negative_float, default=0.5, help="DMF strength")
    model.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="override every network width (fused features and each stage's hidden size)",
    )
    run = parser.add_argument_group("run")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--ablation",
        action="store_true",
        help="run the grid of the paper's Tables 1 and 2 (reduced epochs, see the output)",
    )
    mode.add_argument(
        "--quality-bars",
        action="store_true",
        help="the chosen configuration with seeds 0, 1, 2 plus RGB-only and Flow-only runs, and the checks "
        "of docs/detector.md, on the data the other flags choose (built-in family, --synthetic-from, --data-dir)",
    )
    run.add_argument(
        "--seed", type=int, default=0, help="seed of the run (initialisation, data order, dropout)"
    )
    run.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...",
    )
    run.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs of each of the three stages (default: the preset's)",
    )
    run.add_argument(
        "--threads",
        type=positive_int,
        default=available_cores(),
        help="torch CPU threads (default: the cores this process may use). CPU results are "
        "bit-reproducible for a fixed thread count; --threads 1 reproduces across machines, and on a "
        "machine shared with other jobs, more threads than idle cores slow PyTorch down several-fold",
    )
    run.add_argument("--out", type=Path, default=Path("runs/two_stage"), help="output folder")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoints in --out (same configuration required)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars (epoch lines are still printed)")
    scale = parser.add_argument_group(
        "scale", "launch with torchrun for several GPUs or machines (docs/training_at_scale.md)"
    )
    scale.add_argument(
        "--amp",
        choices=("auto", *AMP_MODES),
        default="auto",
        help="mixed-precision training: auto (bf16 where the device multiplies bfloat16 in hardware: "
        "CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX; else off), off (float32), bf16, or fp16 "
        "with gradient scaling. Inference and evaluation always run in float32",
    )
    scale.add_argument("--compile", action="store_true", help="train the networks through torch.compile")
    scale.add_argument(
        "--dist-timeout",
        type=positive_int,
        default=60,
        help="minutes a rank waits for the others (they wait while rank 0 evaluates)",
    )
    run.add_argument("--stop-after-epochs", type=positive_int, default=None, help=argparse.SUPPRESS)
    return parser


def load_data(args: argparse.Namespace) -> WSTALDataset:
    if args.data_dir is not None:
        log(f"loading THUMOS14 features from {args.data_dir}")
        nonfinite = "zero" if args.repair_nonfinite else "error"
        return load_data_dir(
            args.data_dir,
            max_videos=args.max_videos,
            nonfinite=nonfinite,
            unused=args.unused_videos,
            feature_stride=args.feature_stride,
            feature_window=args.feature_window,
            feature_fps=args.feature_fps,
        )
    if args.synthetic_from is not None:
        log(
            f"synthesising {args.synthetic_dim} + {args.synthetic_dim} channels around the ground truth of "
            f"{args.synthetic_from} (difficulty {args.difficulty}, data seed {args.data_seed})"
        )
        return make_synthetic_from_annotations(
            args.synthetic_from,
            seed=args.data_seed,
            dim=args.synthetic_dim,
            difficulty=args.difficulty,
            max_videos_per_split=args.max_videos,
            max_seconds=args.max_seconds,
        )
    n_train = args.max_videos or 200
    n_test = args.max_videos or 212
    log(
        f"generating synthetic THUMOS-like data: {n_train} train / {n_test} test videos, "
        f"{args.synthetic_dim} + {args.synthetic_dim} channels, data seed {args.data_seed}"
    )
    return make_synthetic_thumos(
        num_train=n_train, num_test=n_test, dim=args.synthetic_dim, seed=args.data_seed
    )


def make_config(
    args: argparse.Namespace,
    *,
    ablation: bool = False,
    seed: Optional[int] = None,
    stage1: Optional[str] = None,
    stage2: Optional[str] = None,
) -> DetectorConfig:
    if args.data_dir is not None:
        config = thumos14_config()
    else:
        config = DetectorConfig()
    if ablation:
        config = ablation_config(config)
    config = config.with_options(
        stage1=stage1 or args.stage1,
        stage2=stage2 or args.stage2,
        dmf_attention=args.dmf_attention,
        alpha=args.alpha,
        seed=args.seed if seed is None else seed,
        epochs=args.epochs,
        width=args.width,
    )
    return config


def make_runner(
    args: argparse.Namespace,
    dataset: WSTALDataset,
    config: DetectorConfig,
    checkpoint_dir: Path,
    *,
    stop: Optional[StopAfter] = None,
) -> DetectorRunner:
    """A runner with the command line's device, resume, progress, distributed, AMP and compile options."""
    return DetectorRunner(
        dataset,
        config,
        checkpoint_dir=checkpoint_dir,
        resume=args.resume,
        device=args.device,
        stop=stop,
        show_progress=not args.quiet,
        dist=args.dist,
        amp=args.amp,
        compile=args.compile,
    )


def data_source(args: argparse.Namespace) -> str:
    """What the run's data are, for results.json: ``thumos14``, ``synthetic-from-annotations`` or
    ``synthetic``."""
    if args.data_dir is not None:
        return "thumos14"
    return "synthetic-from-annotations" if args.synthetic_from is not None else "synthetic"


def write_outputs(
    out: Path,
    data: str,
    result: EvaluationResult,
    dataset: WSTALDataset,
    runner: DetectorRunner,
    config: DetectorConfig,
    seconds: float,
) -> None:
    """Tables (markdown + JSON), ActivityNet-style detections and proposals, and the plot."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "two_stage": result.two_stage,
        "stage1_only": result.stage1_only,
        "base": result.base,
    }
    payload = {
        "stage1": result.stage1,
        "stage2": result.stage2,
        "runtime_seconds": round(seconds, 1),
        "command": " ".join(["python", "examples/thumos_two_stage.py", *sys.argv[1:]]),
        "torch_threads": torch.get_num_threads(),
        "data": data,
        "videos": dataset.video_counts(),
        "evaluation_protocol": config.evaluation_protocol,
        "results": {name: table.as_dict() for name, table in tables.items()},
        "proposal_quality": {name: r.as_dict() for name, r in result.proposal_quality.items()},
        "config": config.as_dict(),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    (out / "results.md").write_text(format_results(result) + "\n")
    write_activitynet_json(out / "detections.json", result.detections, dataset.classes)
    write_activitynet_json(out / "proposals.json", result.proposals, ("action",))
    try:
        from wstal.plot import plot_average_recall, plot_video

        plot_average_recall(
            out / "average_recall.png", {PROPOSAL_SETS[k]: v for k, v in result.proposal_quality.items()}
        )

        video = max(dataset.test[: min(20, len(dataset.test))], key=lambda v: len(v.segments))
        base_fusion = runner.base_strategy(result.stage1, result.stage2)
        base = runner.base_results(base_fusion, dataset.test, "test")[video.name]
        plot_video(
            out / "plot.png",
            video,
            base.attention.numpy(),
            result.proposals[video.name],
            result.detections[video.name],
            dataset.classes,
            snippet_seconds=dataset.snippet_seconds,
        )
    except ImportError:
        log("matplotlib is not installed: no plot (pip install 'dmf-fusion[examples]')")


def format_results(result: EvaluationResult) -> str:
    rows = [
        ("two-stage (Stage-2 detections)", result.two_stage),
        ("Stage-1 proposals x base classes (no Stage 2)", result.stage1_only),
        ("base MIL model alone", result.base),
    ]
    header = result.two_stage.table().splitlines()[:2]
    lines = [
        f"Stage 1 {result.stage1} / Stage 2 {result.stage2}, mAP (%) on the test split",
        "",
        header[0].replace("| tIoU |", "| detector |"),
        header[1],
    ]
    for name, table in rows:
        lines.append(table.table().splitlines()[2].replace("| mAP (%) |", f"| {name} |"))
    if result.proposal_quality:
        quality = {PROPOSAL_SETS[k]: v for k, v in result.proposal_quality.items()}
        lines += [
            "",
            "Proposal quality (class-agnostic, %): average recall over tIoU 0.5:0.05:0.95 at N proposals "
            "per video, recall at tIoU 0.5 / 0.7, and recall at tIoU 0.5 with every set cut to the average "
            "number of the smaller of the Stage-1 proposals and the base's segments",
            "",
            format_proposal_table(quality, budget_from=[PROPOSAL_SETS["stage1"], PROPOSAL_SETS["base"]]),
        ]
    return "\n".join(lines)


def run_single(args: argparse.Namespace, dataset: WSTALDataset) -> int:
    config = make_config(args)
    runner = make_runner(
        args, dataset, config, args.out / "checkpoints", stop=StopAfter(args.stop_after_epochs)
    )
    start = time.perf_counter()
    result = runner.evaluate()
    if result is None:  # a rank other than 0 of a distributed run: rank 0 evaluates and writes
        return 0
    seconds = time.perf_counter() - start
    write_outputs(args.out, data_source(args), result, dataset, runner, config, seconds)
    print()
    print(format_results(result))
    print(f"\ntrained and evaluated in {seconds:.0f} s; outputs in {args.out}/")
    return 0


def avg(table: Any) -> float:
    return 100 * table.averages["0.1:0.7"]


def run_ablation(args: argparse.Namespace, dataset: WSTALDataset) -> int:
    config = make_config(args, ablation=True)
    runner = make_runner(
        args, dataset, config, args.out / "checkpoints", stop=StopAfter(args.stop_after_epochs)
    )
    start = time.perf_counter()
    cells: dict[tuple[str, str], EvaluationResult] = {}
    for s1, s2 in [("rgb", "rgb"), ("flow", "flow")] + [(a, b) for a in GRID for b in GRID]:
        log(f"=== ablation cell: Stage 1 {s1} / Stage 2 {s2} ===")
        result = runner.evaluate(s1, s2)
        if result is not None:  # None on the ranks other than 0 of a distributed run
            cells[(s1, s2)] = result
    if not args.dist.is_main:
        return 0
    seconds = time.perf_counter() - start
    text = format_ablation(cells, config, dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.md").write_text(text + "\n")
    (args.out / "ablation.json").write_text(
        json.dumps(
            {
                "runtime_seconds": round(seconds, 1),
                "config": config.as_dict(),
                "cells": [
                    {
                        "stage1": a,
                        "stage2": b,
                        "two_stage": r.two_stage.as_dict(),
                        "stage1_only": r.stage1_only.as_dict(),
                        "base": r.base.as_dict(),
                    }
                    for (a, b), r in cells.items()
                ],
            },
            indent=2,
        )
    )
    print()
    print(text)
    print(f"\nablation done in {seconds:.0f} s; outputs in {args.out}/")
    return 0


def format_ablation(
    cells: dict[tuple[str, str], EvaluationResult], config: DetectorConfig, dataset: WSTALDataset
) -> str:
    e = config
    note = (
        f"Reduced schedule for the grid: {e.base.epochs}/{e.rpn.epochs}/{e.classifier.epochs} epochs "
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
        lines.append(f"| {name} | {avg(cells[(key, key)].two_stage):.1f} | {PAPER_TABLE1[key]:.1f} |")
    lines.append(
        f"| RGB + Flow (mutual+ / concat) | {avg(fusion.two_stage):.1f} | {PAPER_TABLE2[('mutual+', 'concat')]:.1f} |"
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
            row.append(
                f"{avg(cells[(s1, s2)].two_stage):.1f}" + (f" [{paper:.1f}]" if paper is not None else "")
            )
        lines.append(f"| {s1} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Stage 1 alone (its proposals classified by the base model), per Stage-1 fusion: "
        + ", ".join(f"{s1} {avg(cells[(s1, 'concat')].stage1_only):.1f}" for s1 in GRID),
        "",
        note,
    ]
    return "\n".join(lines)


def run_quality_bars(args: argparse.Namespace, dataset: WSTALDataset) -> int:
    """Seeds 0, 1, 2 of the chosen configuration, RGB-only and Flow-only (seed 0), and the checks."""
    start = time.perf_counter()
    runs: dict[str, EvaluationResult] = {}
    for seed in (0, 1, 2):
        log(f"=== {args.stage1} / {args.stage2}, seed {seed} ===")
        runner = make_runner(args, dataset, make_config(args, seed=seed), args.out / f"seed{seed}")
        result = runner.evaluate()
        if result is not None:  # None on the ranks other than 0 of a distributed run
            runs[f"seed{seed}"] = result
    for modality in ("rgb", "flow"):
        log(f"=== {modality} only, seed 0 ===")
        config = make_config(args, seed=0, stage1=modality, stage2=modality)
        runner = make_runner(args, dataset, config, args.out / "seed0")
        result = runner.evaluate()
        if result is not None:
            runs[modality] = result
    if not args.dist.is_main:
        return 0
    seconds = time.perf_counter() - start
    text, checks = format_quality_bars(runs, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality_bars.md").write_text(text + "\n")
    (args.out / "quality_bars.json").write_text(
        json.dumps(
            {
                "runtime_seconds": round(seconds, 1),
                "checks": checks,
                "runs": {
                    name: {
                        "stage1": r.stage1,
                        "stage2": r.stage2,
                        "two_stage": r.two_stage.as_dict(),
                        "stage1_only": r.stage1_only.as_dict(),
                        "base": r.base.as_dict(),
                        "proposal_quality": {k: v.as_dict() for k, v in r.proposal_quality.items()},
                    }
                    for name, r in runs.items()
                },
            },
            indent=2,
        )
    )
    print()
    print(text)
    print(f"\nquality bars measured in {seconds:.0f} s; outputs in {args.out}/")
    return 0


def stage1_recall_holds(result: EvaluationResult) -> bool:
    """Stage-1 proposals recall at least as many instances at tIoU 0.5 as the base model's grouped segments,
    both cut to the same average number per video (the smaller set's)."""
    equal = stage1_against_base(result)
    return equal.recall["stage1"] >= equal.recall["base"]


def stage1_against_base(result: EvaluationResult) -> EqualBudget:
    """Recall at tIoU 0.5 of the Stage-1 proposals and of the base model's grouped segments at the
    average number per video of the smaller of the two."""
    return recall_at_equal_budget(result.proposal_quality, tiou=0.5, budget_from=("stage1", "base"))


def format_quality_bars(
    runs: dict[str, EvaluationResult], args: argparse.Namespace
) -> tuple[str, dict[str, bool]]:
    """The quality-bar table and checks of docs/detector.md, from seeds 0, 1, 2 and the single-modality
    runs (seed 0)."""
    seeds = [runs[f"seed{s}"] for s in (0, 1, 2)]

    def spread(values: list[float]) -> str:
        t = torch.tensor(values, dtype=torch.float64)
        return f"{t.mean():.1f} ± {t.std():.1f} (min {t.min():.1f}, max {t.max():.1f})"

    two, s1, base = ([avg(getattr(r, k)) for r in seeds] for k in ("two_stage", "stage1_only", "base"))
    checks = {
        "two-stage >= base + 2 AVG (every seed)": all(a >= b + 2 for a, b in zip(two, base)),
        "two-stage > Stage-1 proposals x base classes (every seed)": all(a > b for a, b in zip(two, s1)),
        "fusion beats RGB only (seed 0)": two[0] > avg(runs["rgb"].two_stage),
        "fusion beats Flow only (seed 0)": two[0] > avg(runs["flow"].two_stage),
        "Stage-1 recall@0.5 >= base segments' at equal budget (every seed)": all(
            stage1_recall_holds(r) for r in seeds
        ),
    }
    lines = [
        f"Quality bars: Stage 1 {args.stage1} / Stage 2 {args.stage2}, mAP AVG 0.1:0.7 (%) on the test split",
        "",
        "| detector | seed 0 | seed 1 | seed 2 | mean ± std |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, values in (("two-stage", two), ("Stage 1 + base classes", s1), ("base alone", base)):
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {spread(values)} |")
    if all(r.proposal_quality for r in seeds):
        rows = []
        for name in ("stage1", "base"):
            equal = [stage1_against_base(r).recall[name] * 100 for r in seeds]
            rows.append(
                f"| R@0.5 at equal budget, {name} | "
                + " | ".join(f"{v:.1f}" for v in equal)
                + f" | {spread(equal)} |"
            )
        lines += rows
    lines += [
        "",
        "| single modality (seed 0) | two-stage | Stage 1 + base classes | base alone |",
        "| --- | --- | --- | --- |",
    ]
    for name in ("rgb", "flow"):
        r = runs[name]
        lines.append(
            f"| {name} / {name} | {avg(r.two_stage):.1f} | {avg(r.stage1_only):.1f} | {avg(r.base):.1f} |"
        )
    lines += ["", "Seed 0, full table:", "", format_results(seeds[0]), ""]
    lines += [f"- [{'x' if ok else ' '}] {name}" for name, ok in checks.items()]
    return "\n".join(lines), checks


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.device = resolve_device(args.device)
    args.amp = resolve_amp(args.amp, args.device)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device!r} requested but CUDA is not available")
    # under torchrun: join the process group (each rank takes its GPU); otherwise one process
    args.dist = init_distributed(args.device, timeout_minutes=args.dist_timeout)
    try:
        code = run(parser, args)
    except BaseException:
        shutdown_distributed(args.dist, wait=False)  # the other ranks may be anywhere: do not wait for them
        raise
    shutdown_distributed(args.dist)
    return code


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        dataset = load_data(args)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"argument {'--synthetic-from' if args.synthetic_from else '--data-dir'}: {error}")
    try:
        if args.ablation:
            return run_ablation(args, dataset)
        if args.quality_bars:
            return run_quality_bars(args, dataset)
        return run_single(args, dataset)
    except TrainingInterrupted as error:
        log(f"interrupted: {error}")
        return 3
    except CheckpointMismatchError as error:  # raised on every rank; reported once
        if args.dist.is_main:
            print(f"{parser.prog}: error: argument --resume: {error}", file=sys.stderr)
        return 2
    except (
        TrainingDiverged
    ) as error:  # raised on every rank (the losses are averaged over ranks); reported once
        if args.dist.is_main:
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
