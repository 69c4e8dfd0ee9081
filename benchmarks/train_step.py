"""Throughput of one training step of the reference detector: forward, losses, backward and Adam step.

    python benchmarks/train_step.py                  # THUMOS size: Stage 1 (T-RPN on mutual+, 1024 + 1024
                                                     # channels), batch 16 x 750, eager and compiled, fp32;
                                                     # updates docs/training_at_scale.md
    python benchmarks/train_step.py --quick          # 4 x 128 snippets, 256 channels, < 1 minute, JSON only
    python benchmarks/train_step.py --stage base stage1 stage2 --compile off on
    python benchmarks/train_step.py --device cuda --amp off bf16 fp16 --compile off on

Each row builds the stage's network with the default :class:`wstal.config.DetectorConfig` (fusion
strategy, widths, dropout, learning rate, loss weights), wraps it in :class:`wstal.distributed.TrainStep`
(the step ``train_stage`` runs: autocast when ``--amp`` asks for it, ``torch.compile`` when ``--compile``
does, gradient clipping, fp16 loss scaling) and times whole steps on a fixed batch of random features
with every snippet valid: ``--warmup`` steps first (the first one, which includes compilation, is
reported on its own; inductor compiles into a fresh cache folder unless ``--compile-cache``, so it
is a cold compilation), then ``--repeat`` rounds of ``--steps`` steps timed one by one, the compile modes taking
turns each round (the machine's load changes; taking turns exposes every mode to it alike); the
median over all timed steps is reported, with the interquartile range. Throughput is
``batch x time / median`` snippets per second.

The FLOPs of a step (matrix products and convolutions of the forward and the backward) are counted by
``torch.utils.flop_counter.FlopCounterMode`` on one eager step, and the achieved rate is set beside this
machine's matrix-multiply ceiling, measured in the same run (``benchmarks/roofline.py``). Peak memory is
that of one step above what was allocated before it (torch allocator's view, and on CPU the resident
set's).

Results: JSON under benchmarks/results/ and, for the full run, a markdown table in
docs/training_at_scale.md between the ``<!-- results: train-step-DEVICE -->`` markers.

Axis legend: b batch (videos), t time (snippets), c channels per modality, n proposals, k classes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT), str(ROOT / "examples")):  # helpers, the library, the example package
    if path not in sys.path:
        sys.path.insert(0, path)

import roofline  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from wstal.config import DetectorConfig, StageSettings  # noqa: E402
from wstal.distributed import AMP_MODES, TrainStep  # noqa: E402
from wstal.model import (  # noqa: E402
    FusionEmbed,
    MILBaseModel,
    ProposalClassifier,
    TemporalRPN,
    base_losses,
    proposal_mil_losses,
    rpn_losses,
)
from wstal.pseudo_labels import dense_targets  # noqa: E402
from wstal.trained import base_strategy_for  # noqa: E402

STAGES = ("base", "stage1", "stage2")
THUMOS = (16, 750, 1024)  # batch, snippets, channels per modality: I3D features, THUMOS14's mean length
QUICK = (4, 128, 256)
NUM_CLASSES = 20
DOCS = ROOT / "docs" / "training_at_scale.md"


# --------------------------------------------------------------------------------------------------
# one stage's model, batch and step


@dataclass
class Workload:
    """A stage's network, its step function and a fixed batch."""

    stage: str
    strategy: str
    settings: StageSettings
    model: nn.Module
    step: Callable[[Any, Any], dict[str, Tensor]]
    batch: tuple[Any, ...]


def _segments(t: int, generator: torch.Generator, count: int) -> Tensor:
    """``count`` random segments ``[start, end)`` inside ``[0, t)``, 2 to t/8 snippets long."""
    length = torch.randint(2, max(3, t // 8), (count,), generator=generator).float()
    start = (torch.rand(count, generator=generator) * (t - length)).floor()
    return torch.stack([start, start + length], -1)


def workload(stage: str, b: int, t: int, c: int, device: torch.device, *, proposals: int = 60, seed: int = 0) -> Workload:
    """The default configuration's network for ``stage`` and a batch of ``b`` videos of ``t`` snippets."""
    config = DetectorConfig()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    strategy = {"base": base_strategy_for(config.stage1_fusion, config.stage2_fusion), "stage1": config.stage1_fusion, "stage2": config.stage2_fusion}[stage]
    settings = {"base": config.base, "stage1": config.stage1, "stage2": config.stage2}[stage]
    fusion = FusionEmbed(strategy, c, c, config.embed_dim, alpha=config.alpha, attention=config.dmf_attention)
    rgb, flow = torch.randn(b, t, c, generator=g), torch.randn(b, t, c, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    labels = torch.zeros(b, NUM_CLASSES)
    labels[torch.arange(b), torch.randint(0, NUM_CLASSES, (b,), generator=g)] = 1.0
    model: nn.Module
    if stage == "base":
        model = MILBaseModel(fusion, NUM_CLASSES, hidden=settings.hidden, dropout=settings.dropout)

        def step(m: Any, x: tuple[Any, ...]) -> dict[str, Tensor]:
            r, f, mk, y = x
            return base_losses(
                m(r, f, mk), y, mk, topk_ratio=config.base_topk_ratio, bottomk_ratio=config.base_bottomk_ratio,
                mutual_weight=config.mutual_weight,
            )

        batch: tuple[Any, ...] = (rgb, flow, mask, labels)
    elif stage == "stage1":
        model = TemporalRPN(fusion, hidden=settings.hidden, dropout=settings.dropout)
        targets = [dense_targets(_segments(t, g, 8), t) for _ in range(b)]
        objectness = torch.stack([o for o, _ in targets])
        segment = torch.stack([s for _, s in targets])

        def step(m: Any, x: tuple[Any, ...]) -> dict[str, Tensor]:
            r, f, mk, obj, seg = x
            return rpn_losses(m(r, f, mk), obj, seg, mk, mutual_weight=config.mutual_weight)

        batch = (rgb, flow, mask, objectness, segment)
    elif stage == "stage2":
        model = ProposalClassifier(fusion, NUM_CLASSES, hidden=settings.hidden, dropout=settings.dropout)
        boxes = [_segments(t, g, proposals) for _ in range(b)]
        completeness = [torch.rand(proposals, generator=g) for _ in range(b)]
        classes = [labels[i].nonzero()[:1, 0].expand(proposals).clone() for i in range(b)]

        def step(m: Any, x: tuple[Any, ...]) -> dict[str, Tensor]:
            r, f, mk, y, props, q, cls = x
            logits, aux = m(r, f, mk, props)
            return proposal_mil_losses(
                logits, y, aux, mask=mk, completeness=q, proposal_classes=cls,
                topk_ratio=config.proposal_topk_ratio, completeness_weight=config.completeness_weight,
                mutual_weight=config.mutual_weight,
            )

        batch = (rgb, flow, mask, labels, boxes, completeness, classes)
    else:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")

    def to(x: Any) -> Any:
        return [to(v) for v in x] if isinstance(x, list) else x.to(device)

    return Workload(stage, strategy, settings, model.to(device), step, tuple(to(x) for x in batch))


# --------------------------------------------------------------------------------------------------
# timing


@dataclass
class Row:
    """One measured configuration."""

    stage: str
    strategy: str
    size: str
    amp: str
    compile: bool
    snippets: int
    first_step_s: float
    median_s: float
    iqr_s: float
    mean_s: float
    steps: int
    snippets_per_s: float
    flops: Optional[float]
    gflops: Optional[float]
    ratio_to_matmul: Optional[float]
    peak_extra_allocated: Optional[int]
    peak_extra_rss: Optional[int]
    extra: dict[str, Any] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(work: Workload) -> float:
    """FLOPs of one eager fp32 step (forward + losses + backward), by ``FlopCounterMode``."""
    runner = TrainStep(work.model, torch.optim.Adam(work.model.parameters(), lr=0.0), grad_clip=10.0)
    counter = FlopCounterMode(display=False)
    with counter:
        runner(work.step, work.batch)
    return float(counter.get_total_flops())


@dataclass
class Prepared:
    """A configuration ready to step: its runner, warmed up, and the step times measured so far."""

    stage: str
    strategy: str
    size: tuple[int, int, int]
    amp: str
    compile: bool
    one: Callable[[], None]
    first_step_s: float
    times: list[float] = field(default_factory=list)


def prepare(stage: str, size: tuple[int, int, int], amp: str, compile_: bool, device: torch.device, *, warmup: int) -> Prepared:
    """Build one configuration and run its ``warmup`` steps (the first one timed on its own)."""
    b, t, c = size
    work = workload(stage, b, t, c, device)
    optimizer = torch.optim.Adam(work.model.parameters(), lr=work.settings.lr, weight_decay=work.settings.weight_decay)
    runner = TrainStep(work.model, optimizer, amp=amp, compile=compile_, grad_clip=10.0)

    def one() -> None:
        runner(work.step, work.batch)  # returns floats: the step has finished when it returns
        _sync(device)

    start = time.perf_counter()
    one()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        one()
    return Prepared(stage, work.strategy, size, amp, compile_, one, first)


def measure(p: Prepared, steps: int) -> None:
    """Time ``steps`` more steps of ``p``, one by one."""
    for _ in range(steps):
        start = time.perf_counter()
        p.one()
        p.times.append(time.perf_counter() - start)


def finish(p: Prepared, device: torch.device, *, flops: Optional[float], matmul_flops: float, memory: bool) -> Row:
    """The row of a measured configuration (and its peak memory over one more step)."""
    b, t, c = p.size
    times = sorted(p.times)
    median = statistics.median(times)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [median, median, median]
    mem = roofline.measure_once(p.one, device) if memory else {}
    gflops = flops / median / 1e9 if flops else None
    return Row(
        p.stage, p.strategy, f"{b}x{t}x{c}", p.amp, p.compile, b * t, p.first_step_s, median, q[2] - q[0],
        statistics.fmean(times), len(times), b * t / median, flops, gflops,
        flops / median / matmul_flops if flops else None, mem.get("peak_extra_allocated"), mem.get("peak_extra_rss"),
    )


# --------------------------------------------------------------------------------------------------
# output


def _fmt(x: Optional[float], spec: str) -> str:
    return "–" if x is None else format(x, spec)


def table(rows: list[Row]) -> list[str]:
    """Markdown table of the rows, each compiled row with its speed-up over the eager row beside it."""
    eager = {(r.stage, r.size, r.amp): r.median_s for r in rows if not r.compile}
    lines = [
        "| stage | fusion | b × t × c | amp | compile | first step (s) | step median (s) | IQR (s) "
        "| snippets/s | vs eager | GFLOP/s | of matmul ceiling | peak extra memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = eager.get((r.stage, r.size, r.amp))
        speedup = f"{base / r.median_s:.2f}×" if base and r.compile else "–"
        mem = r.peak_extra_allocated if r.peak_extra_allocated is not None else r.peak_extra_rss
        lines.append(
            f"| {r.stage} | {r.strategy} | {r.size.replace('x', ' × ')} | {r.amp} | {'on' if r.compile else 'off'} "
            f"| {r.first_step_s:.1f} | {r.median_s:.3f} | {r.iqr_s:.3f} | {r.snippets_per_s:,.0f} | {speedup} "
            f"| {_fmt(r.gflops, '.1f')} | {_fmt(None if r.ratio_to_matmul is None else 100 * r.ratio_to_matmul, '.0f')}% "
            f"| {'–' if mem is None else f'{mem / roofline.MiB:,.0f} MiB'} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    c = report["ceilings"]
    lines = [
        f"Measured {report['finished']} with `{report['command']}`: {m['name']}, torch {m['torch']}"
        + (f", {m.get('blas', '?')}, oneDNN {m.get('onednn', '?')}" if m["device"] == "cpu" else f", CUDA {m.get('cuda')}")
        + f"; load average {_fmt(report['load_before'], '.1f')} before, {_fmt(report['load_after'], '.1f')} after. "
        f"Matrix-multiply ceiling {c['matmul_flops'] / 1e9:.0f} GFLOP/s ({c['matmul_engine']}). "
        f"{report['warmup']} warm-up steps, then {report['repeat']} rounds of {report['steps']} timed steps per row "
        "(the compile modes take turns).",
        "",
        *table([Row(**r) for r in report["rows"]]),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: cuda if present)")
    p.add_argument("--stage", nargs="+", default=["stage1"], choices=STAGES, help="stages to time (default: stage1)")
    p.add_argument("--amp", nargs="+", default=["off"], choices=AMP_MODES, help="autocast modes (default: off)")
    p.add_argument("--compile", nargs="+", default=["off", "on"], choices=("off", "on"), help="torch.compile off and/or on")
    p.add_argument("--batch", type=int, default=None, help=f"videos per step (default {THUMOS[0]}; quick {QUICK[0]})")
    p.add_argument("--time", type=int, default=None, help=f"snippets per video (default {THUMOS[1]}; quick {QUICK[1]})")
    p.add_argument("--channels", type=int, default=None, help=f"channels per modality (default {THUMOS[2]}; quick {QUICK[2]})")
    p.add_argument("--warmup", type=int, default=None, help="steps before timing, the first includes compilation (default 3; quick 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row and round (default 5; quick 3)")
    p.add_argument("--repeat", type=int, default=None, help="rounds; the compile modes take turns each round (default 3; quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    p.add_argument("--compile-cache", action="store_true",
                   help="use torch.compile's usual on-disk caches (default: a fresh one, so the first step shows a cold compilation)")
    p.add_argument("--quick", action="store_true", help="small size, few steps, writes no docs")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    p.add_argument("--no-markdown", action="store_true", help="do not update docs/training_at_scale.md")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/train_step-DEVICE[-quick].json)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cold_cache = None
    if not args.compile_cache:  # a cold compilation, as a first run on a fresh machine sees it
        cold_cache = tempfile.mkdtemp(prefix="train_step_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cold_cache  # read by inductor at each compilation
        torch._inductor.config.fx_graph_cache = False
        torch._functorch.config.enable_autograd_cache = False
    default = QUICK if args.quick else THUMOS
    size = (args.batch or default[0], args.time or default[1], args.channels or default[2])
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    steps = args.steps if args.steps is not None else (3 if args.quick else 5)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    ceiling_args = {"n": 1024 if args.quick else 4096, "copy_bytes": (64 if args.quick else 512) * roofline.MiB,
                    "min_run_time": 0.2 if args.quick else 1.0}
    load_before = roofline.load_average()
    ceilings = roofline.measure_ceilings(device, torch.float32, **ceiling_args)
    print(f"{roofline.machine(device)['name']}: matmul {ceilings.matmul_flops / 1e9:.0f} GFLOP/s", flush=True)
    rows: list[Row] = []
    for stage in args.stage:
        flops = count_flops(workload(stage, *size, device))
        for amp in args.amp:
            if amp == "fp16" and device.type == "cpu":
                print("note: fp16 autocast on CPU runs, but CPUs without AVX512-FP16/AMX-FP16 compute it slowly")
            prepared = []
            for mode in args.compile:
                if mode == "on":
                    torch._dynamo.reset()  # a fresh compilation, so the first step includes it
                prepared.append(prepare(stage, size, amp, mode == "on", device, warmup=warmup))
            # the compile modes take turns, so a change in the machine's load hits all of them alike
            for _ in range(args.repeat):
                for p in prepared:
                    measure(p, steps)
            for p in prepared:
                row = finish(p, device, flops=flops, matmul_flops=ceilings.matmul_flops, memory=not args.no_memory)
                rows.append(row)
                print(
                    f"{row.stage:7s} {row.strategy:8s} {row.size} amp={row.amp:4s} compile={'on' if row.compile else 'off':3s} "
                    f"first {row.first_step_s:6.1f} s  step {row.median_s:.3f} s (IQR {row.iqr_s:.3f})  "
                    f"{row.snippets_per_s:,.0f} snippets/s  {_fmt(row.gflops, '.1f')} GFLOP/s",
                    flush=True,
                )
            del prepared
    if cold_cache is not None:
        shutil.rmtree(cold_cache, ignore_errors=True)
    ceilings = roofline.measure_ceilings(device, torch.float32, previous=ceilings, **ceiling_args)
    report = {
        "command": "python benchmarks/train_step.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "finished": roofline.now(),
        "device": device.type,
        "machine": roofline.machine(device),
        "load_before": load_before,
        "load_after": roofline.load_average(),
        "ceilings": ceilings.as_dict(),
        "warmup": warmup,
        "steps": steps,
        "repeat": args.repeat,
        "rows": [asdict(r) for r in rows],
    }
    out = args.out or HERE / "results" / f"train_step-{device.type}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    text = markdown(report)
    print(text)
    if not args.quick and not args.no_markdown:
        roofline.write_markdown(DOCS, f"train-step-{device.type}", text, title="Training at scale")
        print(f"updated {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
