"""Convert a THUMOS14 folder between the Thumos14reduced layout and the per-video layout, or write the
built-in synthetic data in either.

    PYTHONPATH=examples python -m wstal.convert --data-dir Thumos14reduced/ thumos_per_video/
    PYTHONPATH=examples python -m wstal.convert --data-dir thumos_per_video/ Thumos14reduced/
    PYTHONPATH=examples python -m wstal.convert --synthetic --to thumos14reduced synthetic_thumos/

(``python examples/convert_thumos14.py ...`` is the same command.) The source is read by the loader of
its layout, with every check (:func:`~.layouts.load_data_dir`), and written by the other layout's writer
(:func:`~.thumos.write_thumos14`, :func:`~.per_video.write_per_video`): the same videos, in the same order,
with the same features (float32), labels, segments, durations, ambiguous regions and feature timing, so
``examples/thumos_two_stage.py --data-dir`` gives identical results on either folder. Written from the
Thumos14reduced layout, the per-video JSON states 16-frame clips every 16 frames at 25 fps; the other way
round, only features with that timing can be written (the Thumos14reduced layout cannot state another:
ActionFormer's stride-4 features are refused, not resampled).

Axis legend: none (no tensors here).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

from .console import Parser, short_warnings
from .data import WSTALDataset
from .layouts import detect_layout, load_data_dir
from .per_video import write_per_video
from .synthetic import SYNTHETIC_DIM, make_synthetic_thumos
from .thumos import write_thumos14

__all__ = ["TARGETS", "convert", "main", "write_layout"]

PathLike = Union[str, Path]

TARGETS = ("per-video", "thumos14reduced")


def write_layout(dataset: WSTALDataset, out_dir: PathLike, to: str) -> Path:
    """Write ``dataset`` to the new or empty folder ``out_dir`` in the layout ``to`` (one of :data:`TARGETS`)."""
    if to == "per-video":
        return write_per_video(dataset, out_dir)
    if to == "thumos14reduced":
        return write_thumos14(dataset, out_dir)
    raise ValueError(f"to must be one of {TARGETS}, got {to!r}")


def convert(data_dir: PathLike, out_dir: PathLike, *, to: Optional[str] = None, **load_options) -> str:
    """Read the THUMOS14 folder ``data_dir`` and write it to ``out_dir`` in the other layout (or ``to``).

    Args:
        data_dir: a folder in any layout :func:`~.layouts.detect_layout` recognises.
        out_dir: a new or empty folder.
        to: ``"per-video"`` or ``"thumos14reduced"``; ``None``: the layout ``data_dir`` is not in.
        load_options: keyword arguments of :func:`~.layouts.load_data_dir` (``unused``, ``nonfinite``,
            ``max_videos``, the feature timing, ...).

    Returns:
        The layout written.

    Raises:
        FileExistsError: ``out_dir`` is not empty.
        FileNotFoundError, ValueError: what the source's loader refuses, or (to ``thumos14reduced``) features
            whose timing that layout cannot state.
    """
    target = to or ("per-video" if detect_layout(data_dir) == "thumos14reduced" else "thumos14reduced")
    if target not in TARGETS:
        raise ValueError(f"to must be one of {TARGETS}, got {target!r}")
    if Path(out_dir).exists() and any(Path(out_dir).iterdir()):  # before the (long) load
        raise FileExistsError(f"{out_dir}: the output folder exists and is not empty; choose a new folder")
    write_layout(load_data_dir(data_dir, **load_options), out_dir, target)
    return target


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m wstal.convert",
        description="Convert a THUMOS14 folder between the Thumos14reduced layout and the per-video layout "
        "(ActionFormer's), or write the built-in synthetic data in either.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", type=Path, help="the folder to convert (either layout, detected)")
    source.add_argument(
        "--synthetic", action="store_true", help="write the built-in synthetic THUMOS-like data instead"
    )
    parser.add_argument("out", type=Path, help="the output folder (new or empty)")
    parser.add_argument(
        "--to",
        choices=TARGETS,
        default=None,
        help="the layout to write (default: the other one; per-video for --synthetic)",
    )
    parser.add_argument(
        "--max-videos",
        type=int,
        default=None,
        help="only the first N videos of each split (synthetic: N each)",
    )
    parser.add_argument(
        "--unused-videos",
        choices=("error", "warn"),
        default="error",
        help="--data-dir: refuse a folder with annotated videos that cannot be used, or leave them out with "
        "a warning",
    )
    parser.add_argument(
        "--repair-nonfinite", action="store_true", help="--data-dir: write NaN/inf feature values as 0"
    )
    parser.add_argument("--feature-stride", type=int, default=None, help="--data-dir, per-video source")
    parser.add_argument("--feature-window", type=int, default=None, help="--data-dir, per-video source")
    parser.add_argument("--feature-fps", type=float, default=None, help="--data-dir, per-video source")
    parser.add_argument(
        "--feature-dim",
        type=int,
        default=None,
        help="--data-dir: width of a feature row (RGB half + Flow half; default: the first video's, which "
        "every other must have)",
    )
    parser.add_argument(
        "--synthetic-dim",
        type=int,
        default=SYNTHETIC_DIM,
        help="--synthetic: channels per modality (real I3D: 1024)",
    )
    parser.add_argument("--data-seed", type=int, default=0, help="--synthetic: seed of the data")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    short_warnings(parser.prog)
    args = parser.parse_args(argv)
    if args.max_videos is not None and args.max_videos < 1:
        parser.error(f"argument --max-videos: expected a positive integer, got {args.max_videos}")
    try:
        if args.synthetic:
            n_train, n_test = args.max_videos or 200, args.max_videos or 212
            to = args.to or "per-video"
            if args.out.exists() and any(args.out.iterdir()):
                raise FileExistsError(
                    f"{args.out}: the output folder exists and is not empty; choose a new folder"
                )
            dataset = make_synthetic_thumos(
                num_train=n_train, num_test=n_test, dim=args.synthetic_dim, seed=args.data_seed
            )
            write_layout(dataset, args.out, to)
            what = f"the synthetic data ({n_train} + {n_test} videos, {args.synthetic_dim} + {args.synthetic_dim} channels)"
        else:
            to = convert(
                args.data_dir,
                args.out,
                to=args.to,
                max_videos=args.max_videos,
                nonfinite="zero" if args.repair_nonfinite else "error",
                unused=args.unused_videos,
                feature_stride=args.feature_stride,
                feature_window=args.feature_window,
                feature_fps=args.feature_fps,
                feature_dim=args.feature_dim,
            )
            what = str(args.data_dir)
    except FileExistsError as error:
        parser.error(f"argument out: {error}")
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"argument {'--data-dir' if args.data_dir else 'out'}: {error}")
    print(f"wrote {what} in the {to} layout to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
