"""What every command of the detector shares: the parser's common flags, the data, the configuration
(the one method with a preset's capacity), the runner, the machine (threads, device, AMP, distributed
process group) and the exit codes.

``examples/thumos_two_stage.py``, the experiment scripts next to it and ``benchmarks/detector.py`` are
built from these parts, so a flag means the same in each and no script imports another::

    parser = launch.build_parser("my_script.py", "what it does")
    parser.add_argument(...)                      # the script's own flags
    args = launch.parse(parser, argv)             # threads, device, AMP, process group
    return launch.run(parser, args, lambda: body(args))

Exit codes: 0 done, 2 bad input (argparse's), 3 interrupted (resume with ``--resume``), 4 training
diverged.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import torch

from .config import PRESETS, DetectorConfig, ablation_config, override, preset_config
from .console import Parser, log, short_warnings
from .data import WSTALDataset
from .distributed import AMP_MODES, init_distributed, resolve_amp, shutdown_distributed
from .layouts import load_data_dir
from .model import FusionStrategy
from .per_video import DEFAULT_TIMING
from .pipeline import DetectorRunner
from .synthetic import SYNTHETIC_DIM, make_synthetic_thumos
from .synthetic_broadcast import make_synthetic_broadcast
from .synthetic_context import make_synthetic_context
from .synthetic_gt import make_synthetic_from_annotations
from .train import CHECKPOINT_EVERY, CheckpointMismatchError, StopAfter, TrainingDiverged, TrainingInterrupted

__all__ = [
    "ANNOTATION_FAMILIES",
    "DATA_SOURCES",
    "QUICK_MAX_VIDEOS",
    "add_data_arguments",
    "add_method_arguments",
    "add_run_arguments",
    "available_cores",
    "build_parser",
    "busy_cpus",
    "data_source",
    "default_threads",
    "load_data",
    "make_config",
    "make_runner",
    "non_negative_float",
    "parse",
    "positive_float",
    "positive_int",
    "preset_name",
    "resolve_device",
    "run",
    "source_stamp",
    "strategy",
]


ANNOTATION_FAMILIES = {
    "ground-truth": make_synthetic_from_annotations,
    "context": make_synthetic_context,
    "broadcast": make_synthetic_broadcast,
}
"""The synthetic families laid around the ground truth of an annotation folder, by name: each takes
``(annotation_dir, *, seed, dim, difficulty, max_videos_per_split, max_seconds)``."""

_ANNOTATION_SOURCES = {  # data source: its flag, what it synthesises (for the log), its family
    "synthetic-from-annotations": ("--synthetic-from", "", "ground-truth"),
    "synthetic-context": ("--synthetic-context", " of action-context confusion", "context"),
    "synthetic-broadcast": ("--synthetic-broadcast", " of broadcast video", "broadcast"),
}


# -------------------------------------------------------------------------------- argparse types


def strategy(text: str) -> str:
    """argparse type for ``--stage1-fusion`` / ``--stage2-fusion``: a fusion strategy, validated with a clear message."""
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


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


# -------------------------------------------------------------------------------- the machine


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


def source_stamp() -> str:
    """Which code and command made a result: ``Commit <hash>[ with local changes]: python <argv>``."""
    root = Path(__file__).resolve().parents[2]

    def git(*command: str) -> str:
        try:
            return subprocess.run(
                ["git", *command], cwd=root, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " with local changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    # the script's path from the project root (examples/studies/... for a study), its name if elsewhere
    name = "?"
    if sys.argv and sys.argv[0]:
        script = Path(sys.argv[0]).resolve()
        name = script.relative_to(root).as_posix() if script.is_relative_to(root) else script.name
    return f"Commit {commit}{dirty}: `python {name} {' '.join(sys.argv[1:])}`"


# -------------------------------------------------------------------------------- the parser

DATA_SOURCES = ("--data-dir", *(flag for flag, _, _ in _ANNOTATION_SOURCES.values()))
"""The flags that choose the data (at most one; none: the built-in synthetic family)."""


def _flag_value(args: argparse.Namespace, flag: str) -> object:
    """The parsed value of ``flag`` (``--synthetic-from`` -> ``args.synthetic_from``), None if absent."""
    return getattr(args, flag[2:].replace("-", "_"), None)


def busy_cpus(samples: int = 10, interval: float = 0.02) -> float:
    """How many CPUs other jobs keep busy now: on Linux the mean count of runnable threads other than
    this one over ``samples`` reads of ``/proc/stat`` (``procs_running``), which, unlike the load
    average, does not lag a minute behind; elsewhere the one-minute load average; 0 when neither exists."""
    counts = []
    try:
        for i in range(samples):
            with open("/proc/stat") as stat:
                counts += [int(line.split()[1]) - 1 for line in stat if line.startswith("procs_running")]
            if i + 1 < samples:
                time.sleep(interval)
    except (OSError, ValueError, IndexError):
        counts = []
    if counts:
        return max(0.0, sum(counts) / len(counts))
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        return 0.0


def default_threads() -> int:
    """The torch CPU threads a run takes unless ``--threads`` says: the cores this process may use less
    those other jobs keep busy (:func:`busy_cpus`, rounded), at least one. On a machine shared with a
    busy job, threads beyond the idle cores add no speed: they wait on each other
    (docs/benchmarks.md, the detector's default run)."""
    return _threads_beside(busy_cpus())


def _threads_beside(busy: float) -> int:
    cores = available_cores()
    return max(1, min(cores, cores - round(busy)))


def _config_default(name: str) -> object:
    """The method's default of :class:`DetectorConfig` field ``name``: the command line shows and uses
    the dataclass's value, never a copy of it."""
    return next(f.default for f in dataclasses.fields(DetectorConfig) if f.name == name)


def build_parser(prog: str, description: str, *, data: bool = True) -> argparse.ArgumentParser:
    """A parser with the flags every detector command shares, the common ones first in ``--help``: the
    data (unless ``data`` is False, for a command that makes its own), the output, threads and resume,
    then the data options, the method, the run and the scale."""
    parser = Parser(prog=prog, description=description)
    common = parser.add_argument_group("common options")
    if data:
        common.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            metavar="DIR",
            help="a THUMOS14 features folder, Thumos14reduced or per-video layout (ActionFormer, OpenTAD), "
            "detected from its files (docs/data_and_evaluation.md). Default: built-in synthetic data",
        )
    common.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of every stage in about a minute on 2 cores, on any data: the 'quick' preset "
        "(narrow networks, few epochs) and at most 40 videos per split unless --max-videos says",
    )
    common.add_argument(
        "--out", type=Path, default=Path("runs/two_stage"), metavar="DIR", help="output folder"
    )
    common.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoints in --out (same configuration required)",
    )
    common.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="torch CPU threads. Default: the cores this process may use less those other jobs keep busy "
        "(at least 1). CPU results are bit-reproducible for a fixed thread count; --threads 1 reproduces "
        "across machines",
    )
    common.add_argument(
        "--quiet", action="store_true", help="no progress bars even on a terminal (epoch lines are printed)"
    )
    common.add_argument(
        "--seed", type=int, default=0, help="seed of the run (initialisation, data order, dropout)"
    )
    if data:
        add_data_arguments(parser)
    add_method_arguments(parser)
    add_run_arguments(parser)
    return parser


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The synthetic families' flags and the data options (``--data-dir`` is a common option)."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--synthetic-from",
        type=Path,
        default=None,
        metavar="ANNOTATIONS_DIR",
        help="the second synthetic family: features synthesised around the ground truth of a THUMOS-layout "
        "annotation folder (docs/synthetic_from_annotations.md)",
    )
    data.add_argument(
        "--synthetic-context",
        type=Path,
        default=None,
        metavar="ANNOTATIONS_DIR",
        help="the third synthetic family: action-context confusion in RGB and class-agnostic motion in Flow "
        "around the same ground truth (docs/synthetic_context.md)",
    )
    data.add_argument(
        "--synthetic-broadcast",
        type=Path,
        default=None,
        metavar="ANNOTATIONS_DIR",
        help="the fourth synthetic family: the third with broadcast structure, unannotated slow-motion replays "
        "and graphics overlays switching at shot cuts (docs/synthetic_broadcast.md)",
    )
    data.add_argument(
        "--difficulty",
        type=non_negative_float,
        default=1.0,
        help="difficulty of --synthetic-from data (noise and distractors: 0 clean, 1 calibrated, 2 hard) and "
        "of --synthetic-context data (the confusion: 0, 0.5 and 0.75 are the grid's levels); of "
        "--synthetic-broadcast data the confusion and the replays' and overlays' scale",
    )
    data.add_argument(
        "--max-seconds",
        type=positive_float,
        default=None,
        help="--synthetic-from, --synthetic-context, --synthetic-broadcast: keep only videos at most this long",
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
        help="--data-dir, per-video layout: frames between two features, where the JSON does not say "
        f"(default {DEFAULT_TIMING.stride})",
    )
    data.add_argument(
        "--feature-window",
        type=positive_int,
        default=None,
        help="--data-dir, per-video layout: frames of one feature's clip, where the JSON does not say "
        f"(default {DEFAULT_TIMING.window})",
    )
    data.add_argument(
        "--feature-fps",
        type=positive_float,
        default=None,
        help="--data-dir, per-video layout: fps of the videos the features were computed on, for videos "
        f"whose JSON entry has no fps (default {DEFAULT_TIMING.fps:g})",
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
        default=SYNTHETIC_DIM,
        help="feature width per modality of the synthetic data (real I3D: 1024)",
    )
    data.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset``, the fusion of each stage and ``--set``; the method's defaults are the
    :class:`DetectorConfig` dataclass's."""
    model = parser.add_argument_group("method and capacity")
    model.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help="capacity and schedule (widths, epochs, learning rates, batch sizes, clip lengths, dropout); "
        "the method is the same under every preset. Default: thumos14 with --data-dir, else default",
    )
    model.add_argument(
        "--stage1-fusion",
        "--stage1",
        type=strategy,
        default=None,
        help="Stage-1 (T-RPN) fusion: rgb, flow, concat, mutual; a trailing + applies DMF first "
        f"(default {_config_default('stage1_fusion')})",
    )
    model.add_argument(
        "--stage2-fusion",
        "--stage2",
        type=strategy,
        default=None,
        help="Stage-2 (proposal classifier) fusion, same choices as --stage1-fusion "
        f"(default {_config_default('stage2_fusion')})",
    )
    model.add_argument(
        "--stage3",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train Stage 3, a student that regresses boundaries from the two stages' detections on the "
        "training videos; the two stages' detections refined by it are the output "
        f"(default {'on' if DetectorConfig().student.enabled else 'off'}; docs/detector.md, Stage 3)",
    )
    model.add_argument(
        "--stage3-fusion",
        type=strategy,
        default=None,
        help="Stage-3 (student) fusion, same choices as --stage1-fusion "
        f"(default {_config_default('stage3_fusion')})",
    )
    model.add_argument(
        "--dmf-attention",
        choices=("gate", "dot"),
        default=None,
        help=f"DMF attention form (default {_config_default('dmf_attention')})",
    )
    model.add_argument(
        "--alpha",
        type=non_negative_float,
        default=None,
        help=f"DMF strength (default {_config_default('alpha')})",
    )
    model.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set any configuration field by its dotted name, e.g. --set proposals.class_segments=true "
        "(docs/configuration.md); repeatable; applied after the preset and the other flags",
    )
    model.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="override every network width (fused features and each stage's hidden size)",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Device and epochs; AMP, compile and the process group (seed, threads, output, resume and progress
    are common options)."""
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...",
    )
    run_group.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs of each of the three stages (default: the preset's)",
    )
    run_group.add_argument(
        "--checkpoint-every",
        type=non_negative_float,
        default=CHECKPOINT_EVERY,
        metavar="SECONDS",
        help="write a stage's checkpoint after an epoch once this many seconds have passed since the last "
        "write (0: after every epoch); the last epoch is always written, so an interrupted run loses at "
        f"most this long plus one epoch (default: {CHECKPOINT_EVERY:g})",
    )
    run_group.add_argument("--stop-after-epochs", type=positive_int, default=None, help=argparse.SUPPRESS)
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


QUICK_MAX_VIDEOS = 40
"""``--quick``: videos per split unless ``--max-videos`` says."""


def parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` and set the machine up: torch threads (:func:`default_threads` unless
    ``--threads``), the device and AMP resolved from ``auto``, and under ``torchrun`` the process group
    (each rank takes its GPU); ``args.dist`` is its context. Warnings print as one line from here on."""
    short_warnings(parser.prog)
    args = parser.parse_args(argv)
    given = [flag for flag in DATA_SOURCES if _flag_value(args, flag) is not None]
    if len(given) > 1:
        parser.error(f"argument {given[1]}: not allowed with argument {given[0]} (one data source a run)")
    if args.quick:
        if args.preset is not None:
            parser.error(
                f"argument --quick: not allowed with --preset {args.preset} (--quick is the 'quick' preset)"
            )
        if hasattr(args, "max_videos") and args.max_videos is None:
            args.max_videos = QUICK_MAX_VIDEOS
    if args.threads is None:
        busy = busy_cpus()
        args.threads = _threads_beside(busy)
        log(
            f"torch threads: {args.threads} ({available_cores()} cores, {busy:.1f} busy with other jobs; "
            "--threads N to choose)"
        )
    torch.set_num_threads(args.threads)
    args.device = resolve_device(args.device)
    args.amp = resolve_amp(args.amp, args.device)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device!r} requested but CUDA is not available")
    for item in args.overrides:
        if "=" not in item:
            parser.error(f"argument --set: expected FIELD=VALUE, got {item!r}")
    try:
        make_config(args)
    except (TypeError, ValueError) as error:
        parser.error(f"argument --set: {error}")
    args.dist = init_distributed(args.device, timeout_minutes=args.dist_timeout)
    return args


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run a command's ``body`` with the shared exit codes and leave the process group either way."""
    try:
        code = _exit_code(parser, args, body)
    except BaseException:
        shutdown_distributed(args.dist, wait=False)  # the other ranks may be anywhere: do not wait for them
        raise
    shutdown_distributed(args.dist)
    return code


def _exit_code(parser: argparse.ArgumentParser, args: argparse.Namespace, body: Callable[[], int]) -> int:
    try:
        return body()
    except TrainingInterrupted as error:
        log(f"interrupted: {error}")
        return 3
    except CheckpointMismatchError as error:  # raised on every rank; reported once
        if args.dist.is_main:
            print(f"{parser.prog}: error: argument --resume: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:  # raised on every rank (the losses are averaged); reported once
        if args.dist.is_main:
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 4


# -------------------------------------------------------------------------------- data, config, runner


def data_source(args: argparse.Namespace) -> str:
    """What the run's data are, for results.json: ``thumos14``, ``synthetic-from-annotations``,
    ``synthetic-context``, ``synthetic-broadcast`` or ``synthetic``."""
    if args.data_dir is not None:
        return "thumos14"
    if args.synthetic_context is not None:
        return "synthetic-context"
    if args.synthetic_broadcast is not None:
        return "synthetic-broadcast"
    return "synthetic-from-annotations" if args.synthetic_from is not None else "synthetic"


def load_data(parser: argparse.ArgumentParser, args: argparse.Namespace) -> WSTALDataset:
    """The data the flags choose; a folder that cannot be read is refused through ``parser.error`` (exit
    code 2) with the flag named."""
    try:
        return _load(args)
    except (FileNotFoundError, ValueError) as error:
        flag = _ANNOTATION_SOURCES.get(data_source(args), ("--data-dir",))[0]
        parser.error(f"argument {flag}: {error}")


def _load(args: argparse.Namespace) -> WSTALDataset:
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
    if data_source(args) in _ANNOTATION_SOURCES:
        flag, what, family = _ANNOTATION_SOURCES[data_source(args)]
        folder, make = _flag_value(args, flag), ANNOTATION_FAMILIES[family]
        log(
            f"synthesising {args.synthetic_dim} + {args.synthetic_dim} channels{what} around the ground truth of "
            f"{folder} (difficulty {args.difficulty}, data seed {args.data_seed})"
        )
        return make(
            folder,
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


def preset_name(args: argparse.Namespace) -> str:
    """``--preset``; ``quick`` under ``--quick``; by default ``thumos14`` for a ``--data-dir`` folder and
    ``default`` otherwise."""
    if args.preset is not None:
        return args.preset
    if getattr(args, "quick", False):
        return "quick"
    return "thumos14" if getattr(args, "data_dir", None) is not None else "default"


def make_config(
    args: argparse.Namespace,
    *,
    ablation: bool = False,
    seed: Optional[int] = None,
    stage1_fusion: Optional[str] = None,
    stage2_fusion: Optional[str] = None,
) -> DetectorConfig:
    """The preset's configuration with the command line's fusion, seed, epochs and width applied."""
    config = preset_config(preset_name(args))
    if ablation:
        config = ablation_config(config)
    config = config.with_options(
        stage1_fusion=stage1_fusion or args.stage1_fusion,
        stage2_fusion=stage2_fusion or args.stage2_fusion,
        stage3_fusion=args.stage3_fusion,
        stage3=args.stage3,
        dmf_attention=args.dmf_attention,
        alpha=args.alpha,
        seed=args.seed if seed is None else seed,
        epochs=args.epochs,
        width=args.width,
    )
    for item in args.overrides:
        name, _, value = item.partition("=")
        config = override(config, name.strip(), value.strip())
    return config


def make_runner(
    args: argparse.Namespace,
    dataset: WSTALDataset,
    config: DetectorConfig,
    checkpoint_dir: Path,
    *,
    stop: Optional[StopAfter] = None,
) -> DetectorRunner:
    """A runner with the command line's device, resume, progress, distributed, AMP, compile and
    checkpoint options."""
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
        checkpoint_every=args.checkpoint_every,
    )
