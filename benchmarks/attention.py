"""Microbenchmarks of the DMF attention core and the fusion blocks against this machine's ceilings.

    python benchmarks/attention.py                    # THUMOS size (16 x 750 x 1024), fp32 CPU + long videos
    python benchmarks/attention.py --quick            # small grid, < 1 minute, writes no docs
    python benchmarks/attention.py --device cuda --dtype bfloat16
    python benchmarks/attention.py --batch 1 16 --time 128 750 4096 --channels 256 1024 2048

One run measures, in order: the two ceilings (the fastest large GEMM of the benchmark's dtype on
every GEMM engine torch offers here, and large-copy bandwidth); then every row, forward and
forward+backward, fused path beside the plain reference path and a CO2-Net-style gating block of the
same size; then the long-video rows (one video, DMF dot, fused vs plain, each in a fresh process);
then the ceilings again (the best of the two measurements is used, which gives the strictest
floors). Each row: median time, hand-counted FLOPs and bytes, achieved GFLOP/s and GB/s, roofline
floor = FLOPs / matmul rate + bytes / copy bandwidth, measured / floor, and peak extra memory.

Results: JSON under benchmarks/results/, a markdown table in docs/benchmarks.md (between the
``<!-- results: DEVICE DTYPE -->`` markers of that device and dtype), and the target check on stdout.

Forward rows run under ``torch.no_grad()`` (inference); forward+backward rows compute the gradients of
every input and parameter with ``torch.autograd.grad`` against fixed random output gradients.

Axis legend: b batch, t time (snippets), c channels per modality, d attention dim.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT)):  # the working tree's library and the helpers next to this file
    if path not in sys.path:
        sys.path.insert(0, path)

import roofline  # noqa: E402
import torch  # noqa: E402
from co2net import CrossModalGating  # noqa: E402
from torch import Tensor  # noqa: E402
from torch.utils import benchmark  # noqa: E402

from dmf_fusion import ConcatFusion, DualModalityFusion, MutualFusion, MutualLoss  # noqa: E402
from dmf_fusion import functional as DF  # noqa: E402

THUMOS = (16, 750, 1024)
ATTN_DIM = 64
REDUCTION = 4
KERNEL = 3


# --------------------------------------------------------------------------------------------------
# cases: what each row runs, and its FLOPs and bytes counted by hand


@dataclass(frozen=True)
class Size:
    b: int
    t: int
    c: int

    def __str__(self) -> str:
        return f"{self.b}x{self.t}x{self.c}"


@dataclass
class Work:
    """Hand-counted matrix-multiply FLOPs and compulsory memory traffic of one row, per pass."""

    flops_fwd: float
    bytes_fwd: float
    flops_fwdbwd: float
    bytes_fwdbwd: float


def work_for(block: str, s: Size, e: int) -> Work:
    """FLOPs: 2 m n k per matrix product of the math as written (no symmetry exploited), backward
    = 2x forward per product. Bytes: inputs read and outputs written once, plus what a global
    reduction forces through memory (hidden activations, the (b, c, c) Gram and attention matrices,
    q and k); elementwise work is counted in bytes only. ``e`` is the element size."""
    n, c, b, t = s.b * s.t, s.c, s.b, s.t
    d, h, k = ATTN_DIM, max(c // REDUCTION, 1), KERNEL
    if block == "DMF gate":
        f = 2 * n * k * c * h + 2 * n * k * h
        # fwd: rgb read once (pool + output in one pass), flow twice (conv, output), 2 outputs, hidden
        fwd = 5 * n * c + 2 * n * h + k * c * h
        # bwd: read 2 output grads, rgb, flow; write 2 input grads; hidden grads; weight grads
        return Work(f, e * fwd, 3 * f, e * (fwd + 6 * n * c + 4 * n * h + k * c * h))
    if block == "DMF dot, channel half":
        f = 4 * n * c * c
        fwd = 3 * n * c + 4 * b * c * c
        return Work(f, e * fwd, 3 * f, e * (fwd + 5 * n * c + 6 * b * c * c))
    if block == "DMF dot, temporal half":
        proj = 2 * n * c * 2 * d
        fwd = 3 * n * c + 4 * n * d + 2 * c * d
        # fwd+bwd attention: 2 b t^2 (d + c) forward, (2c + 2d) backward, + d for the recomputed q k^T
        # that a method without the (t, s) matrix needs
        return Work(
            proj + 2 * b * t * t * (d + c),
            e * fwd,
            3 * proj + 2 * b * t * t * (3 * c + 4 * d),
            e * (fwd + 5 * n * c + 6 * n * d + 2 * c * d),
        )
    if block == "DMF dot":
        ch, tm = work_for("DMF dot, channel half", s, e), work_for("DMF dot, temporal half", s, e)
        return Work(*(getattr(ch, f.name) + getattr(tm, f.name) for f in Work.__dataclass_fields__.values()))
    if block in ("ConcatFusion", "one GEMM, same FLOPs"):
        o = 2 * c
        f = 2 * n * 2 * c * o
        fwd = 2 * n * c + n * o + 2 * c * o
        return Work(f, e * fwd, 3 * f, e * (fwd + n * o + 4 * n * c + 2 * c * o))
    if block == "MutualFusion + MutualLoss":
        dim = c
        f = 2 * n * c * dim * 2 + 2 * n * dim * dim * 2
        fwd = 2 * n * c + 5 * n * dim + 2 * (c * dim + dim * dim)
        return Work(f, e * fwd, 3 * f, e * (fwd + 5 * n * dim + 4 * n * c + 2 * (c * dim + dim * dim)))
    if block == "CO2-Net-style gating":
        f = 2 * (2 * n * k * c * c + 2 * b * c * c)
        fwd = 12 * n * c + 4 * k * c * c
        return Work(f, e * fwd, 3 * f, e * (fwd + 16 * n * c + 4 * k * c * c))
    raise KeyError(block)


@dataclass
class Case:
    block: str
    path: str  # "fused" | "plain" | "reference"
    build: Callable[[], tuple[Callable[..., Sequence[Tensor]], torch.nn.Module]]


def _dmf(attention: str, fused: bool, s: Size, **factory) -> DualModalityFusion:
    options = {"reduction": REDUCTION, "kernel_size": KERNEL} if attention == "gate" else {"attn_dim": ATTN_DIM}
    return DualModalityFusion(s.c, s.c, attention=attention, fused=fused, **options, **factory)


def cases(s: Size, device: torch.device, dtype: torch.dtype, mask: Optional[Tensor]) -> list[Case]:
    factory = {"device": device, "dtype": dtype}
    out: list[Case] = []

    def dmf(attention: str, fused: bool):
        def build():
            m = _dmf(attention, fused, s, **factory)
            return (lambda r, f: tuple(m(r, f, mask))), m

        return build

    def dot_half(which: str, fused: bool):
        # each half of the dot form is its own public op, on the module's parameters
        def build():
            m = _dmf("dot", fused, s, **factory)
            if which == "channel":
                kw = {"alpha": m.alpha, "temperature": m.temperature, "fused": fused}
                return (lambda r, f: (DF.channel_enhance_dot(r, f, mask, **kw),)), m
            wq, wk = m.to_q.weight, m.to_k.weight
            return (lambda r, f: (DF.temporal_enhance_dot(r, f, wq, wk, mask, alpha=m.alpha, fused=fused),)), m

        return build

    def concat(fused: bool):
        def build():
            m = ConcatFusion(s.c, s.c, fused=fused, **factory)
            return (lambda r, f: (m(r, f, mask),)), m

        return build

    def one_gemm():
        # the split-weight concat's FLOPs as one GEMM of the library's fastest route: x (b, t, 2c) @ W.T
        m = torch.nn.Linear(2 * s.c, 2 * s.c, **factory)
        return (lambda x, _f: (DF.linear(x, m.weight, m.bias),)), m

    def mutual(fused: bool):
        def build():
            m = MutualFusion(s.c, s.c, s.c, fused=fused, **factory)
            loss = MutualLoss()

            def fn(r, f):
                o = m(r, f, mask)
                return o.fused, loss(o.rgb_embed, o.flow_embed, mask)

            return fn, m

        return build

    def co2():
        m = CrossModalGating(s.c, KERNEL).to(**factory)
        return (lambda r, f: m(r, f)), m

    for attention, block in (("gate", "DMF gate"), ("dot", "DMF dot")):
        out += [Case(block, "fused", dmf(attention, True)), Case(block, "plain", dmf(attention, False))]
    for which in ("channel", "temporal"):
        block = f"DMF dot, {which} half"
        out += [Case(block, "fused", dot_half(which, True)), Case(block, "plain", dot_half(which, False))]
    out += [Case("ConcatFusion", "fused", concat(True)), Case("ConcatFusion", "plain", concat(False))]
    out += [Case("one GEMM, same FLOPs", "reference", one_gemm)]
    out += [Case("MutualFusion + MutualLoss", "fused", mutual(True)), Case("MutualFusion + MutualLoss", "plain", mutual(False))]
    out += [Case("CO2-Net-style gating", "reference", co2)]
    return out


# --------------------------------------------------------------------------------------------------
# running rows


@dataclass
class Row:
    size: str
    block: str
    path: str
    mode: str  # "fwd" | "fwd+bwd"
    median_s: float
    iqr_s: float
    runs: int
    flops: float
    bytes: float
    floor_s: float = 0.0
    ratio: float = 0.0
    peak_extra_bytes: Optional[int] = None
    gflops: float = 0.0
    gbs: float = 0.0
    extra: dict = field(default_factory=dict)


def _inputs(s: Size, block: str, device: torch.device, dtype: torch.dtype, grad: bool) -> list[Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    if block == "one GEMM, same FLOPs":
        x = torch.randn(s.b, s.t, 2 * s.c, device=device, dtype=dtype, generator=g)
        return [x.requires_grad_(grad), torch.empty(0, device=device)]
    return [torch.randn(s.b, s.t, s.c, device=device, dtype=dtype, generator=g).requires_grad_(grad) for _ in range(2)]


def make_step(fn, module: torch.nn.Module, inputs: list[Tensor], mode: str) -> Callable[[], None]:
    if mode == "fwd":

        def forward() -> None:
            with torch.no_grad():
                fn(*inputs)

        return forward
    targets = [x for x in inputs if x.requires_grad] + [p for p in module.parameters() if p.requires_grad]
    outs = fn(*inputs)
    g = torch.Generator(device=outs[0].device).manual_seed(1)
    grads = [torch.randn(o.shape, device=o.device, dtype=o.dtype, generator=g) for o in outs]
    del outs

    def forward_backward() -> None:
        torch.autograd.grad(fn(*inputs), targets, grads, allow_unused=True)

    return forward_backward


def run_case(
    case: Case, s: Size, device, dtype, mode: str, min_run_time: float, memory: bool, probe: roofline.Probe
) -> tuple[benchmark.Measurement, list[float], Optional[int]]:
    """Time one row: calls of the row, each followed by the two ceiling probes (paired timing), until
    ``min_run_time`` of the row has run (at least 3 calls). Returns the timings as a Measurement (for
    ``Compare``), each call's measured / floor against the ceilings probed right after it, and the
    peak memory."""
    fn, module = case.build()
    inputs = _inputs(s, case.block, device, dtype, grad=mode != "fwd")
    step = make_step(fn, module, inputs, mode)
    step()  # warm-up: kernel JIT, primitive caches, allocator
    w = work_for(case.block, s, torch.empty((), dtype=dtype).element_size())
    flops, nbytes = (w.flops_fwd, w.bytes_fwd) if mode == "fwd" else (w.flops_fwdbwd, w.bytes_fwdbwd)
    times: list[float] = []
    ratios: list[float] = []
    while len(times) < 3 or (sum(times) < min_run_time and len(times) < 100):
        seconds = probe._seconds(step)
        gemm_rate, copy_rate = probe.rates()
        times.append(seconds)
        ratios.append(seconds / (flops / gemm_rate + nbytes / copy_rate))
    task = benchmark.utils.common.TaskSpec(
        stmt="step()",
        setup="",
        label=f"dmf-fusion blocks, {dtype_name(dtype)} {device.type}",
        sub_label=f"{case.block} [{case.path}] {s}",
        description=mode,
        num_threads=torch.get_num_threads(),
    )
    m = benchmark.Measurement(number_per_run=1, raw_times=times, task_spec=task)
    return m, ratios, (roofline.peak_extra_allocated(step, device) if memory else None)


def make_row(case: Case, s: Size, dtype: torch.dtype, mode: str, m: benchmark.Measurement, peak: Optional[int]) -> Row:
    w = work_for(case.block, s, torch.empty((), dtype=dtype).element_size())
    flops, nbytes = (w.flops_fwd, w.bytes_fwd) if mode == "fwd" else (w.flops_fwdbwd, w.bytes_fwdbwd)
    row = Row(str(s), case.block, case.path, mode, m.median, m.iqr, len(m.times) * m.number_per_run, flops, nbytes)
    row.peak_extra_bytes = peak
    row.gflops, row.gbs = flops / m.median / 1e9, nbytes / m.median / 1e9
    return row


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# --------------------------------------------------------------------------------------------------
# long videos: one video, DMF dot fused vs plain, forward+backward, each in a fresh process


def long_probe(path: str, t: int, c: int, dtype_s: str, device_s: str) -> dict:
    """Run in a child process: one forward+backward of DMF dot on one video; time and peak memory."""
    device, dtype = torch.device(device_s), getattr(torch, dtype_s)
    s = Size(1, t, c)
    m = _dmf("dot", path == "fused", s, device=device, dtype=dtype)
    rgb, flow = _inputs(s, "DMF dot", device, dtype, grad=True)
    step = make_step(lambda r, f: tuple(m(r, f)), m, [rgb, flow], "fwd+bwd")
    if t <= 4096 or device.type == "cuda":
        step()  # warm-up where it is cheap; above, one run is seconds and first-call costs are noise
    # ceiling probes right before and right after the run: its floor on the machine as it was
    n = 1024 if t <= 1024 else 2048
    probe = roofline.Probe(device, dtype, "oneDNN conv1x1" if roofline._onednn_engine(device, dtype) else "torch.mm", n, 128 * roofline.MiB)
    before = probe.rates()
    result = roofline.measure_once(step, device)
    after = probe.rates()
    w = work_for("DMF dot", s, torch.empty((), dtype=dtype).element_size())
    gemm, copy = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    result["paired_ratio"] = result["seconds"] / (w.flops_fwdbwd / gemm + w.bytes_fwdbwd / copy)
    result["probe_gflops"] = [before[0] / 1e9, after[0] / 1e9]
    return result


def plain_long_bytes(t: int) -> float:
    """Rough peak of the plain path's fwd+bwd: 3.2 float32 (t, t) matrices measured at t = 16384, 3.5 taken."""
    return 3.5 * 4.0 * t * t


def mem_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_long(times: Sequence[int], c: int, plain_max: int, device, dtype, timeout: float) -> list[dict]:
    rows = []
    for t in times:
        for path in ("fused", "plain"):
            row = {"t": t, "c": c, "path": path, "seconds": None, "peak_extra_allocated": None, "peak_extra_rss": None, "note": ""}
            rows.append(row)
            if path == "plain" and t > plain_max:
                row["note"] = f"not run (> --long-plain-max {plain_max})"
                continue
            avail = mem_available() if device.type == "cpu" else torch.cuda.mem_get_info(device)[0]
            if path == "plain" and avail is not None and plain_long_bytes(t) > 0.8 * avail:
                row["note"] = f"not run: needs ~{plain_long_bytes(t) / roofline.GiB:.0f} GiB, {avail / roofline.GiB:.0f} GiB available"
                continue
            arg = f"{path},{t},{c},{dtype_name(dtype)},{device.type}"
            try:
                done = subprocess.run(
                    [sys.executable, __file__, "--_long-probe", arg], capture_output=True, text=True, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                row["note"] = f"timed out after {timeout:.0f} s"
                continue
            if done.returncode != 0:
                if done.returncode in (-9, 137):
                    row["note"] = "killed: out of memory"
                else:
                    errors = [line for line in done.stderr.strip().splitlines() if not line.startswith("USDT")]
                    row["note"] = f"failed (exit {done.returncode}): {errors[-1:] or ''}"
                continue
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
            print(
                f"  long video t={t:>6} {path:>5}: {row['seconds']:8.2f} s, peak extra "
                f"{_gib(row['peak_extra_allocated'])} allocated, {_gib(row['peak_extra_rss'])} resident",
                flush=True,
            )
    return rows


def long_flops(t: int, c: int) -> float:
    """DMF dot fwd+bwd FLOPs of one video (same counting as the table)."""
    w = work_for("DMF dot", Size(1, t, c), 4)
    return w.flops_fwdbwd


# --------------------------------------------------------------------------------------------------
# targets


def check_targets(rows: list[Row], long_rows: list[dict], size: str, cached_malloc: bool = False) -> list[dict]:
    """The issue's targets, evaluated on this run's rows of ``size``. Peak memory: the larger of the
    allocator's and the resident set's view, except under the cached malloc, whose resident set holds
    freed memory on purpose (the allocator's view is then the live memory)."""
    at = [r for r in rows if r.size == size]
    get = {(r.block, r.path, r.mode): r for r in at}
    out = []
    def paired(r: Row) -> float:
        return r.extra.get("paired_ratio", r.ratio)

    for r in at:
        if r.path == "fused":
            out.append(
                {
                    "target": f"fused within 1.5x of roofline: {r.block}, {r.mode} (against the run-best floor: {r.ratio:.2f})",
                    "value": paired(r),
                    "limit": 1.5,
                    "met": paired(r) <= 1.5,
                }
            )
    for block in ("DMF gate", "DMF dot"):
        f, p = get.get((block, "fused", "fwd+bwd")), get.get((block, "plain", "fwd+bwd"))
        if f and p:
            speedup = paired(p) / paired(f)  # same floor: the load-matched time ratio
            out.append({"target": f"{block} fused >= 2x faster than plain, fwd+bwd", "value": speedup, "limit": 2.0, "met": speedup >= 2.0})
    ref = {m: get.get(("one GEMM, same FLOPs", "reference", m)) for m in ("fwd", "fwd+bwd")}
    for mode, g in ref.items():
        split = get.get(("ConcatFusion", "fused", mode))
        if g and split:
            ratio = paired(split) / paired(g)
            out.append({"target": f"ConcatFusion split / one GEMM, {mode}", "value": ratio, "limit": 1.1, "met": ratio <= 1.1})
    fused = [r for r in long_rows if r["path"] == "fused" and r["seconds"]]
    if fused:
        big = max(fused, key=lambda r: r["t"])
        views = (big["peak_extra_allocated"],) if cached_malloc else (big["peak_extra_allocated"], big["peak_extra_rss"])
        peaks = [x for x in views if x is not None]
        if peaks:
            which = "the allocator's view" if cached_malloc else "the larger of the two views"
            out.append(
                {
                    "target": f"DMF dot fused fwd+bwd, one video of t={big['t']}: peak extra memory < 2 GiB (GiB, {which})",
                    "value": max(peaks) / roofline.GiB,
                    "limit": 2.0,
                    "met": max(peaks) < 2 * roofline.GiB,
                }
            )
        small = min(fused, key=lambda r: r["t"])
        if big["t"] > small["t"]:
            # time grows no faster than the FLOPs (which grow like t^2): (time ratio) / (FLOPs ratio),
            # each time taken relative to the ceiling probed around its run (the paired ratio)
            raw = (big["seconds"] / small["seconds"]) / (long_flops(big["t"], big["c"]) / long_flops(small["t"], small["c"]))
            paired = "paired_ratio" in big and "paired_ratio" in small  # results written before pairing have none
            growth = big["paired_ratio"] / small["paired_ratio"] if paired else raw
            out.append(
                {
                    "target": f"DMF dot fused time grows no faster than its FLOPs, t={small['t']} -> {big['t']} "
                    f"(paired; unpaired {raw:.2f})",
                    "value": growth,
                    "limit": 1.0,
                    "met": growth <= 1.0,
                }
            )
    return out


# --------------------------------------------------------------------------------------------------
# output


def _gib(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x / roofline.GiB:.2f} GiB"


def _ratio(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.2f}"


def _mib(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x / roofline.MiB:,.0f}"


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| size b×t×c | block | path | pass | median ms | GFLOP | GB | GFLOP/s | GB/s | floor ms | measured / floor | measured / paired floor | peak extra MiB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size} | {r.block} | {r.path} | {r.mode} | {r.median_s * 1e3:,.1f} | {r.flops / 1e9:,.1f} | "
            f"{r.bytes / 1e9:.2f} | {r.gflops:,.0f} | {r.gbs:.1f} | {r.floor_s * 1e3:,.1f} | {r.ratio:.2f} | "
            f"**{r.extra.get('paired_ratio', float('nan')):.2f}** | {_mib(r.peak_extra_bytes)} |"
        )
    return lines


def long_table(long_rows: list[dict]) -> list[str]:
    lines = [
        "| video t | c | path | fwd+bwd s | GFLOP | GFLOP/s | measured / paired floor | peak extra, allocator | peak extra, resident set | note |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in long_rows:
        fl = long_flops(r["t"], r["c"])
        sec = r["seconds"]
        lines.append(
            f"| {r['t']:,} | {r['c']} | {r['path']} | {'' if sec is None else f'{sec:.2f}'} | {fl / 1e9:,.0f} | "
            f"{'' if sec is None else f'{fl / sec / 1e9:.0f}'} | "
            f"{_ratio(r.get('paired_ratio'))} | {_gib(r['peak_extra_allocated'])} | "
            f"{_gib(r['peak_extra_rss'])} | {r['note']} |"
        )
    return lines


def target_table(targets: list[dict]) -> list[str]:
    lines = ["| target | value | limit | met |", "|---|---:|---:|---|"]
    for t in targets:
        met = "yes" if t["met"] else "**no**"
        lines.append(f"| {t['target']} | {t['value']:.2f} | {t['limit']} | {met} |")
    return lines


def markdown(report: dict) -> str:
    m, c = report["machine"], report["ceilings"]
    rates = ", ".join(f"{k} {max(v) / 1e9:.0f}" for k, v in c["matmul_rates"].items())
    lines = [
        f"Measured {report['finished']} on **{m['name']}** ({m.get('isa', '')}, {m.get('blas', '')}, oneDNN "
        f"{m.get('onednn', '')}), torch {m['torch']}, **{report['dtype']}** on {report['device']}, "
        f"{'glibc malloc keeping freed memory (MALLOC_MMAP_MAX_=0)' if report['malloc'] == 'cached' else 'system malloc'}, "
        f"OMP_WAIT_POLICY {report['omp_wait_policy']}, "
        f"{report['repeat']} repeat(s); load average "
        f"{report['load_before']} before, {report['load_after']} after. Command: `{report['command']}`.",
        "",
        f"Ceilings (the best of the measurements at the start and the end of the run): matmul **{c['matmul_flops'] / 1e9:.0f} GFLOP/s** "
        f"({c['matmul_engine']}; every engine: {rates} GFLOP/s), copy **{c['copy_bytes'] / 1e9:.1f} GB/s** (read + write; "
        f"measured {', '.join(f'{x / 1e9:.1f}' for x in c['copy_rates'])}).",
        "",
        "**measured / floor** uses those run-best ceilings; **measured / paired floor** compares every timed call "
        "with a GEMM and a copy probe timed right after it (the machine as it was at that moment: the load of a "
        "shared machine drifts) and takes the median; the targets use the paired figure.",
        "",
        *table([Row(**r) for r in report["rows"]]),
        "",
    ]
    if report["long"]:
        lines += ["Long videos (one video, DMF dot, forward+backward, each in a fresh process):", "", *long_table(report["long"]), ""]
    if report["targets"]:
        note = "" if report["target_size"] == str(Size(*THUMOS)) else f" (the issue defines them at {Size(*THUMOS)}; smaller sizes are overhead-bound)"
        lines += [f"Targets at {report['target_size']}{note}:", "", *target_table(report["targets"]), ""]
    return "\n".join(lines)


def summary_table(reports: dict[str, dict]) -> str:
    """The targets of several runs side by side (one column per run), in the order of the first run."""
    names = list(reports)
    values: dict[str, dict[str, dict]] = {}
    for name, report in reports.items():
        for t in report["targets"]:
            key = t["target"].split(" (")[0]  # drop the per-run detail in parentheses
            values.setdefault(key, {})[name] = t
    lines = [
        "| target | limit | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for key, by_run in values.items():
        limit = next(iter(by_run.values()))["limit"]
        cells = []
        for name in names:
            t = by_run.get(name)
            cells.append("" if t is None else f"{t['value']:.2f}" + (" ✓" if t["met"] else " **✗**"))
        lines.append(f"| {key} | {limit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(markdown_path: Path, results_dir: Path, device: str, dtype: str) -> bool:
    """Refresh the ``summary`` block of the page from the system-malloc and cached-malloc JSON of a device
    and dtype, when both exist and were measured at the THUMOS size."""
    reports = {}
    for label, variant in (("system malloc", f"{device}-{dtype}"), ("cached malloc", f"{device}-{dtype}-cached-malloc")):
        path = results_dir / f"{variant}.json"
        if not path.exists():
            return False
        report = json.loads(path.read_text())
        if report["target_size"] != str(Size(*THUMOS)):
            return False
        reports[f"{label} ({report['finished'][:16]})"] = report
    roofline.write_markdown(markdown_path, "summary", summary_table(reports), title="Benchmarks")
    return True


# --------------------------------------------------------------------------------------------------
# main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: cuda if present)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help=f"batch sizes (default {THUMOS[0]})")
    p.add_argument("--time", type=int, nargs="+", default=None, help=f"snippets per video (default {THUMOS[1]})")
    p.add_argument("--channels", type=int, nargs="+", default=None, help=f"channels per modality (default {THUMOS[2]})")
    p.add_argument("--blocks", nargs="+", default=None, help="only rows whose block name contains one of these words")
    p.add_argument("--quick", action="store_true", help="small grid and short timings (< 1 minute); writes no docs")
    p.add_argument("--min-run-time", type=float, default=None, help="seconds of timing per row (default 1.0; quick 0.1)")
    p.add_argument("--long-times", type=int, nargs="*", default=None, help="long-video lengths (default 4096 8192 16384 32768)")
    p.add_argument("--long-channels", type=int, default=None, help="channels of the long-video rows (default 1024)")
    p.add_argument("--long-plain-max", type=int, default=None, help="longest video the plain path runs (default 16384)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement of the grid rows")
    p.add_argument("--repeat", type=int, default=1, help="measure every row this many times (timings merged)")
    p.add_argument(
        "--malloc",
        choices=("system", "cached"),
        default="system",
        help="cached: rerun under glibc settings that keep freed memory for reuse (MALLOC_MMAP_MAX_=0, "
        "MALLOC_TRIM_THRESHOLD_ huge), as jemalloc / tcmalloc setups do; system: the environment as it is",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/DEVICE-DTYPE[-quick].json)")
    p.add_argument("--markdown", type=Path, default=None, help="markdown page to update (default docs/benchmarks.md; quick: none)")
    p.add_argument("--no-markdown", action="store_true", help="do not touch the markdown page")
    p.add_argument(
        "--omp-passive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CPU: run with OMP_WAIT_POLICY=PASSIVE (default): idle OpenMP threads sleep instead of spinning, "
        "which on a machine shared with other jobs keeps a spinning thread from taking the CPU its sibling "
        "waits for (4x on small ops measured here); --no-omp-passive keeps the environment's policy",
    )
    p.add_argument("--_long-probe", dest="long_probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dtype is None:
        args.dtype = "float32" if args.device == "cpu" else "bfloat16"
    q = args.quick
    args.batch = args.batch or ([2] if q else [THUMOS[0]])
    args.time = args.time or ([128] if q else [THUMOS[1]])
    args.channels = args.channels or ([256] if q else [THUMOS[2]])
    args.min_run_time = args.min_run_time if args.min_run_time is not None else (0.1 if q else 1.0)
    if args.long_times is None:
        args.long_times = [1024] if q else [4096, 8192, 16384, 32768]
    args.long_channels = args.long_channels or (256 if q else 1024)
    args.long_plain_max = args.long_plain_max or (1024 if q else 16384)
    if args.markdown is None and not q:
        args.markdown = ROOT / "docs" / "benchmarks.md"
    if args.no_markdown:
        args.markdown = None
    return args


CACHED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    env = dict(CACHED_MALLOC) if args.malloc == "cached" else {}
    if args.omp_passive and args.device == "cpu":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if any(os.environ.get(k) != v for k, v in env.items()):
        os.environ.update(env)  # glibc and OpenMP read these at start-up: run again under them
        os.execv(sys.executable, [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])])
    if args.long_probe:
        path, t, c, dtype_s, device_s = args.long_probe.split(",")
        print(json.dumps(long_probe(path, int(t), int(c), dtype_s, device_s)))
        return 0
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    command = " ".join(["python", "benchmarks/attention.py", *(argv if argv is not None else sys.argv[1:])])
    load_before = roofline.load_average()
    gemm_n, copy_bytes = (1024, 64 * roofline.MiB) if args.quick else (4096, 512 * roofline.MiB)
    if device.type == "cuda" and not args.quick:
        gemm_n, copy_bytes = 8192, 2 * roofline.GiB
    print(f"{roofline.now()}  {roofline.machine(device)['name']}, torch {torch.__version__}, {args.dtype}", flush=True)
    ceilings = roofline.measure_ceilings(device, dtype, n=gemm_n, copy_bytes=copy_bytes, min_run_time=args.min_run_time)
    print(
        f"ceilings: matmul {ceilings.matmul_flops / 1e9:.0f} GFLOP/s ({ceilings.matmul_engine}; "
        + ", ".join(f"{k} {v[-1] / 1e9:.0f}" for k, v in ceilings.matmul_rates.items())
        + f"), copy {ceilings.copy_bytes / 1e9:.1f} GB/s",
        flush=True,
    )

    # every row once per repeat, the repeats one after another (the timings of a row are merged over
    # the repeats, so a burst of load on the shared machine is spread over all rows)
    runs: dict[tuple, list[benchmark.Measurement]] = {}
    paired: dict[tuple, list[float]] = {}
    peaks: dict[tuple, Optional[int]] = {}
    keys: dict[tuple, tuple[Case, Size, str]] = {}
    # the paired probes: a 2048^3 GEMM runs at the 4096^3 rate on this class of machine, in a quarter of the time
    probe = roofline.Probe(device, dtype, ceilings.matmul_engine, gemm_n if args.quick else gemm_n // 2, copy_bytes // 4)
    for repeat in range(args.repeat):
        for b in args.batch:
            for t in args.time:
                for c in args.channels:
                    s = Size(b, t, c)
                    for case in cases(s, device, dtype, None):
                        if args.blocks and not any(w.lower() in case.block.lower() for w in args.blocks):
                            continue
                        for mode in ("fwd", "fwd+bwd"):
                            key = (str(s), case.block, case.path, mode)
                            memory = not args.no_memory and repeat == 0
                            m, ratios, peak = run_case(case, s, device, dtype, mode, args.min_run_time, memory, probe)
                            runs.setdefault(key, []).append(m)
                            paired.setdefault(key, []).extend(ratios)
                            if repeat == 0:
                                peaks[key], keys[key] = peak, (case, s, mode)
                            print(
                                f"  [{repeat + 1}/{args.repeat}] {s} {case.block:<28} {case.path:<9} {mode:<8} "
                                f"{m.median * 1e3:9.1f} ms  x{statistics.median(ratios):5.2f} of the paired floor  "
                                f"peak {_mib(peaks[key])} MiB",
                                flush=True,
                            )
    measurements = [benchmark.Measurement.merge(ms)[0] for ms in runs.values()]
    rows = [make_row(*keys[key][:2], dtype, keys[key][2], m, peaks[key]) for key, m in zip(runs, measurements)]

    long_rows = []
    if args.long_times:
        long_rows = run_long(args.long_times, args.long_channels, args.long_plain_max, device, dtype, timeout=600)

    ceilings = roofline.measure_ceilings(
        device, dtype, n=gemm_n, copy_bytes=copy_bytes, min_run_time=args.min_run_time, previous=ceilings
    )
    for key, r in zip(runs, rows):
        r.floor_s = ceilings.floor(r.flops, r.bytes)
        r.ratio = r.median_s / r.floor_s
        r.extra["paired_ratio"] = statistics.median(paired[key])
        r.extra["paired_ratios"] = paired[key]

    benchmark.Compare(measurements).print()
    target_size = str(Size(*THUMOS)) if str(Size(*THUMOS)) in {r.size for r in rows} else (rows[-1].size if rows else "")
    targets = check_targets(rows, long_rows, target_size, args.malloc == "cached")
    report = {
        "command": command,
        "finished": roofline.now(),
        "device": device.type,
        "dtype": args.dtype,
        "malloc": args.malloc,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "repeat": args.repeat,
        "machine": roofline.machine(device),
        "load_before": load_before,
        "load_after": roofline.load_average(),
        "ceilings": ceilings.as_dict(),
        "rows": [asdict(r) for r in rows],
        "long": long_rows,
        "target_size": target_size,
        "targets": targets,
    }
    text = markdown(report)
    print("\n" + text)
    variant = f"{device.type}-{args.dtype}" + ("-cached-malloc" if args.malloc == "cached" else "")
    out = args.out or HERE / "results" / f"{variant}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    if args.markdown:
        roofline.write_markdown(args.markdown, variant, text, title="Benchmarks")
        if not args.quick and args.out is None and write_summary(args.markdown, out.parent, device.type, args.dtype):
            print(f"updated the summary of {args.markdown}")
        print(f"updated {args.markdown}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
