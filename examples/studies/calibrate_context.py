"""Calibrate the difficulty of the action-context family: the base MIL model's mAP per difficulty.

Builds :func:`wstal.synthetic_context.make_synthetic_context` at THUMOS width (1024 + 1024 channels by
default) on the real THUMOS14 ground truth, trains only the base model of the detector under the
``thumos14`` preset (``--epochs`` shortens its schedule) through
:class:`wstal.pipeline.DetectorRunner`, detects with it (:func:`wstal.inference.detect_base`), and prints the base model's detection mAP (THUMOS protocol) per
difficulty as a markdown table, with the minutes each difficulty took. docs/synthetic_context.md holds
the calibration it produced.

    python examples/studies/calibrate_context.py --difficulty 0 1 2 --epochs 25 --threads 1
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the wstal package and the studies

import torch

from wstal.config import preset_config
from wstal.console import Parser
from wstal.evaluator import detection_map
from wstal.inference import detect_base
from wstal.launch import ANNOTATION_FAMILIES as FAMILIES
from wstal.pipeline import DetectorRunner, base_strategy_for

DEFAULT_ANNOTATIONS = Path(__file__).resolve().parents[3] / "shared" / "data" / "thumos14"


def base_map(data, *, epochs: int | None, seed: int) -> dict[str, float]:
    """Base-model mAP averages (percent) on ``data``'s test split, trained on its train split."""
    data = replace(data, evaluation_protocol="thumos")  # scored as a THUMOS14 folder is
    config = preset_config("thumos14").with_options(seed=seed, epochs=epochs)
    runner = DetectorRunner(data, config, show_progress=False)
    fusion = base_strategy_for(config.stage1_fusion, config.stage2_fusion)
    model = runner.train_stage(runner.base_stage(fusion))
    found = detect_base(model, data.test, config, snippet_seconds=data.snippet_seconds)
    table = detection_map(data, found.detections("base"))
    return {name: 100 * value for name, value in table.averages.items()}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="calibrate_context.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("annotations", nargs="?", type=Path, default=DEFAULT_ANNOTATIONS)
    parser.add_argument("--difficulty", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    parser.add_argument("--family", choices=sorted(FAMILIES), default="context")
    parser.add_argument("--epochs", type=int, default=None, help="base epochs (default: the preset's 100)")
    parser.add_argument("--dim", type=int, default=1024, help="feature width per modality")
    parser.add_argument("--max-videos", type=int, default=60, help="videos per split")
    parser.add_argument("--max-seconds", type=float, default=400.0)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    epochs = args.epochs or preset_config("thumos14").base.epochs
    print(
        f"{args.family} family, {args.dim} + {args.dim} channels, {args.max_videos} + {args.max_videos} videos "
        f"of at most {args.max_seconds:g} s, thumos14 preset's base model, {epochs} epochs, seed {args.seed}, "
        f"data seed {args.data_seed}, {args.threads} thread(s)",
        flush=True,
    )
    print("| difficulty | base AVG 0.1:0.5 | 0.3:0.7 | 0.1:0.7 | minutes |", flush=True)
    print("| --- | --- | --- | --- | --- |", flush=True)
    for difficulty in args.difficulty:
        start = time.perf_counter()
        data = FAMILIES[args.family](
            args.annotations,
            seed=args.data_seed,
            dim=args.dim,
            difficulty=difficulty,
            max_videos_per_split=args.max_videos,
            max_seconds=args.max_seconds,
        )
        averages = base_map(data, epochs=args.epochs, seed=args.seed)
        minutes = (time.perf_counter() - start) / 60
        row = " | ".join(f"{averages[r]:.1f}" for r in ("0.1:0.5", "0.3:0.7", "0.1:0.7"))
        print(f"| {difficulty:g} | {row} | {minutes:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
