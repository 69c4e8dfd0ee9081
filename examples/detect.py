"""Detect actions in new videos with a trained detector (``OUT/detector.pt`` of ``thumos_two_stage.py``).

    python examples/thumos_two_stage.py --out runs/two_stage                      # trains, writes detector.pt
    python examples/detect.py --model runs/two_stage/detector.pt --features FEATURES --out runs/detect

``FEATURES`` is a folder of ``<video>.npy`` files, each ``(T, c_rgb + c_flow)`` with RGB first (the
per-video layout's arrays; a per-video layout's root is read through its ``i3d_features/``), or a
Thumos14reduced ``Thumos14reduced-I3D-JOINTFeatures.npy``. No annotations are read. The features must
have the width the detector was trained on; times are the detector's seconds per feature from its
first snippet's time, unless ``--seconds-per-feature`` / ``--start-seconds`` say otherwise.

Writes ``--out/detections.json`` (ActivityNet style, class names) and ``--out/proposals.json`` (the
Stage-1 proposals, label ``action``), and with ``--plot VIDEO`` ``--out/plot.png``. Every input is checked
before anything is written, and the files are written into a temporary folder and moved into ``--out``
at the end, so a refused or interrupted run leaves nothing half written. Exit codes: 0 done, 2 bad input
(a message names the file and what was expected).

The detection is :func:`wstal.inference.detect`, the function the training run's evaluation uses.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch

from wstal.console import Parser, log, short_warnings
from wstal.inference import detect
from wstal.io import write_activitynet_json
from wstal.launch import default_threads, positive_float, positive_int, resolve_device
from wstal.new_videos import read_videos
from wstal.trained import DetectorFileError, TrainedDetector


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="detect.py",
        description="Detect actions in videos without annotations with a trained detector (detector.pt).",
    )
    parser.add_argument("--model", type=Path, required=True, help="a trained detector, OUT/detector.pt")
    parser.add_argument(
        "--features",
        type=Path,
        required=True,
        help="a folder of <video>.npy files (T, c_rgb + c_flow), RGB first, or a Thumos14reduced joint .npy file",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--plot", metavar="VIDEO", default=None, help="also plot this video to --out/plot.png"
    )
    parser.add_argument(
        "--seconds-per-feature",
        type=positive_float,
        default=None,
        help="seconds between two features (default: the detector's, from its training data)",
    )
    parser.add_argument(
        "--start-seconds",
        type=float,
        default=None,
        help="time of the first feature's snippet start (default: the detector's, or 0 with --seconds-per-feature)",
    )
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: the cores this process may use less those other jobs keep busy)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars even on a terminal")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    short_warnings(parser.prog)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or default_threads())
    device = resolve_device(args.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"argument --device: {device!r} requested but CUDA is not available")
    try:
        trained = TrainedDetector.load(args.model, device=device)
    except (FileNotFoundError, DetectorFileError) as error:
        parser.error(f"argument --model: {error}")
    try:
        videos = read_videos(args.features, trained.features)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"argument --features: {error}")
    if args.plot is not None and args.plot not in {v.name for v in videos}:
        parser.error(f"argument --plot: no video {args.plot!r} in {args.features}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"argument --out: {args.out} exists and is not a folder")
    if args.start_seconds is not None and not abs(args.start_seconds) < float("inf"):
        parser.error(f"argument --start-seconds: expected a finite number, got {args.start_seconds!r}")
    log(f"detecting in {len(videos)} video(s) of {args.features} with {args.model}")
    found = detect(
        trained,
        videos,
        snippet_seconds=args.seconds_per_feature,
        start_seconds=args.start_seconds,
        show_progress=not args.quiet and len(videos) > 1,
    )
    write_outputs(args.out, trained, videos, found, args.plot)
    count = sum(len(rows) for rows in found.rows[found.final].values())
    log(f"{count} detections in {len(videos)} video(s); outputs in {args.out}/")
    return 0


def write_outputs(out: Path, trained: TrainedDetector, videos, found, plot: Optional[str]) -> None:
    """detections.json, proposals.json (and plot.png) written in a temporary folder beside ``out``, then
    moved into it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        detections = found.detections()
        write_activitynet_json(staging / "detections.json", detections, trained.classes)
        write_activitynet_json(staging / "proposals.json", found.proposals("stage1"), ("action",))
        if plot is not None:
            try:
                from wstal.plot import plot_video
            except ImportError:
                log("matplotlib is not installed: no plot (pip install 'dmf-fusion[examples]')")
            else:
                video = next(v for v in videos if v.name == plot)
                plot_video(
                    staging / "plot.png",
                    video,
                    found.base[plot].attention.numpy(),
                    found.proposals("stage1")[plot],
                    detections[plot],
                    trained.classes,
                    snippet_seconds=found.clocks[plot][0],
                )
        out.mkdir(exist_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
