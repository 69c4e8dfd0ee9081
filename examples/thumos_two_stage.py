"""Train and evaluate the reference two-stage WSTAL detector (Temporal RPN learning for WSTAL, ACML 2023).

    python examples/thumos_two_stage.py                     # synthetic THUMOS-like data, a few minutes on CPU
    python examples/thumos_two_stage.py --data-dir DATA_DIR # real THUMOS14 I3D features (1024 + 1024)
    python examples/thumos_two_stage.py --ablation          # the grid of the paper's Tables 1 and 2
    torchrun --standalone --nproc_per_node 8 examples/thumos_two_stage.py --device cuda --amp bf16 ...

A snippet-level MIL base model turns its attention into pseudo segments; Stage 1, a temporal region
proposal network on ``--stage1-fusion`` features (default ``concat+``: DMF, then concat), learns from
them; Stage 2, trained on the proposals, classifies them and the base model's detected segments on
``--stage2-fusion`` features (default ``concat+``: DMF, then concat), each scored by the T-RPN's support. The mAP table is
printed and written to ``--out`` with the detections, the Stage-1 proposals, a checkpoint per stage, the
trained detector and a plot of one test video. See docs/detector.md for the design, docs/training_at_scale.md for several
GPUs or machines (``torchrun``), mixed precision (``--amp``) and ``--compile``.

This file is the command line only: the flags it shares with the other scripts, the data, the preset and
the machine come from ``wstal.launch``, the experiments from ``studies.experiments``, and the detector's
parts from the rest of the ``wstal`` package next to it. The trained detector is saved as
``--out/detector.pt``; ``examples/detect.py`` applies it to new videos (docs/detect.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch

from studies.experiments import run_ablation, run_quality_bars, write_json
from wstal import launch
from wstal.console import log
from wstal.data import WSTALDataset
from wstal.evaluator import PROPOSAL_SETS, EvaluationResult, train_and_evaluate
from wstal.io import write_activitynet_json
from wstal.pipeline import DetectorRunner
from wstal.train import StopAfter


def build_parser() -> argparse.ArgumentParser:
    parser = launch.build_parser(
        "thumos_two_stage.py",
        "Train and evaluate the two-stage WSTAL detector (T-RPN + proposal classifier) with dmf-fusion "
        "blocks. Without --data-dir it runs on built-in synthetic THUMOS-like data.",
    )
    mode = parser.add_argument_group("experiments").add_mutually_exclusive_group()
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
    return parser


def write_outputs(
    out: Path,
    data: str,
    preset: str,
    result: EvaluationResult,
    dataset: WSTALDataset,
    runner: DetectorRunner,
    seconds: float,
) -> None:
    """Tables (markdown + JSON), ActivityNet-style detections and proposals, and the plot."""
    config = runner.config
    payload = {
        **result.as_dict(),
        "runtime_seconds": round(seconds, 1),
        "command": " ".join(["python", "examples/thumos_two_stage.py", *sys.argv[1:]]),
        "torch_threads": torch.get_num_threads(),
        "data": data,
        "videos": dataset.video_counts(),
        "evaluation_protocol": dataset.evaluation_protocol,
        "preset": preset,
        "config": config.as_dict(),
    }
    write_json(out / "results.json", payload)
    (out / "results.md").write_text(result.table() + "\n")
    write_activitynet_json(out / "detections.json", result.detections, dataset.classes)
    write_activitynet_json(out / "proposals.json", result.proposals, ("action",))
    try:
        from wstal.plot import plot_average_recall, plot_video

        plot_average_recall(
            out / "average_recall.png", {PROPOSAL_SETS[k]: v for k, v in result.proposal_quality.items()}
        )

        video = max(dataset.test[: min(20, len(dataset.test))], key=lambda v: len(v.segments))
        base = result.inference.base[video.name]
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


def run_single(args: argparse.Namespace, dataset: WSTALDataset) -> int:
    """Train and evaluate the configuration, write the outputs, print the tables."""
    config = launch.make_config(args)
    runner = launch.make_runner(
        args, dataset, config, args.out / "checkpoints", stop=StopAfter(args.stop_after_epochs)
    )
    start = time.perf_counter()
    result = train_and_evaluate(runner, save_to=args.out / "detector.pt")
    if result is None:  # a rank other than 0 of a distributed run: rank 0 evaluates and writes
        return 0
    seconds = time.perf_counter() - start
    write_outputs(
        args.out, launch.data_source(args), launch.preset_name(args), result, dataset, runner, seconds
    )
    print()
    print(result.table())
    print(f"\ntrained and evaluated in {seconds:.0f} s; outputs in {args.out}/")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = launch.parse(parser, argv)

    def body() -> int:
        dataset = launch.load_data(parser, args)
        if args.ablation:
            return run_ablation(args, dataset)
        if args.quality_bars:
            return run_quality_bars(args, dataset)
        return run_single(args, dataset)

    return launch.run(parser, args, body)


if __name__ == "__main__":
    sys.exit(main())
