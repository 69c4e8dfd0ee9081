"""Shared helpers of the benchmarks: this machine's two ceilings, peak memory, the machine's name.

* ``matmul_rate``: FLOP/s of a large square GEMM in the benchmark's dtype, measured on every GEMM
  engine torch offers on the device (CPU: the BLAS behind ``torch.mm`` *and* oneDNN behind a 1x1
  channel-last ``conv2d``; CUDA: ``torch.mm``), the fastest taken as the ceiling.
* ``copy_bandwidth``: bytes/s of a large tensor copy, counting bytes read + bytes written.
* ``roofline floor`` of a row: ``flops / matmul_rate + bytes / copy_bandwidth``.
* ``peak extra memory`` of a call, two views: the torch allocator's (the peak of bytes allocated
  during the call above those allocated before it: CUDA allocator statistics, or on CPU the
  allocation counter of the profiler's memory trace), and on CPU also the operating system's (peak
  resident set during the call above the resident set before it, Linux ``VmHWM`` reset through
  ``/proc/self/clear_refs``), which adds BLAS / oneDNN scratch and heap fragmentation.

Axis legend: b batch, t time, c channels.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils import benchmark

MiB = 1 << 20
GiB = 1 << 30


# --------------------------------------------------------------------------------------------------
# ceilings


@dataclass
class Ceilings:
    """Measured ceilings; ``*_rates`` hold every measurement (start and end of the run, each engine)."""

    matmul_flops: float  # FLOP/s, the best measured
    copy_bytes: float  # B/s (read + write), the best measured
    matmul_engine: str
    matmul_rates: dict[str, list[float]]
    copy_rates: list[float]

    def floor(self, flops: float, nbytes: float) -> float:
        return flops / self.matmul_flops + nbytes / self.copy_bytes

    def as_dict(self) -> dict:
        return asdict(self)


def _time(fn: Callable[[], object], min_run_time: float) -> float:
    """Median seconds per call of ``fn`` (``blocked_autorange``)."""
    return benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_run_time
    ).median


def gemm_engines(device: torch.device, dtype: torch.dtype) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """``x @ w.T`` on each GEMM engine torch offers for this device and dtype."""

    def blas(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.mm(x, w.t())

    engines = {"torch.mm": blas}
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and dtype == torch.float32:

        def onednn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            # 1x1 convolution over a channel-last view of x, (16, c, 1, n / 16) when n allows: oneDNN's
            # brgemm kernels (the batched view is the layout the library's GEMMs use, and ~5% faster)
            images = 16 if x.shape[0] % 16 == 0 else 1
            xv = x.view(images, x.shape[0] // images, x.shape[1]).transpose(1, 2).unsqueeze(2)
            return F.conv2d(xv, w[:, :, None, None])

        engines["oneDNN conv1x1"] = onednn
    return engines


def _onednn_engine(device: torch.device, dtype: torch.dtype) -> bool:
    return "oneDNN conv1x1" in gemm_engines(device, dtype)


def measure_matmul(device: torch.device, dtype: torch.dtype, n: int, min_run_time: float) -> dict[str, float]:
    """FLOP/s of an ``n x n x n`` GEMM on each engine."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    w = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    rates = {}
    for name, fn in gemm_engines(device, dtype).items():
        fn(x, w)  # warm-up (JIT, packing buffers)
        rates[name] = 2 * n**3 / _time(lambda fn=fn: fn(x, w), min_run_time)
    return rates


def measure_copy(device: torch.device, dtype: torch.dtype, nbytes: int, min_run_time: float) -> float:
    """Bytes/s (read + write) of ``dst.copy_(src)`` for a ``nbytes`` tensor."""
    numel = nbytes // torch.empty((), dtype=dtype).element_size()
    src = torch.ones(numel, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * src.numel() * src.element_size() / _time(lambda: dst.copy_(src), min_run_time)


class Probe:
    """The two ceilings as quick probes timed right next to each call of a row (one GEMM of the best
    engine, one copy), so that each call is compared with the machine as it was at that moment."""

    def __init__(self, device: torch.device, dtype: torch.dtype, engine: str, n: int, copy_bytes: int) -> None:
        self.device = device
        g = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        self.w = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        self.gemm = gemm_engines(device, dtype)[engine]
        self.flops = 2.0 * n**3
        numel = copy_bytes // torch.empty((), dtype=dtype).element_size()
        self.src = torch.ones(numel, device=device, dtype=dtype)
        self.dst = torch.empty_like(self.src)
        self.bytes = 2.0 * numel * self.src.element_size()
        self.gemm(self.x, self.w)
        self.dst.copy_(self.src)

    def _seconds(self, fn: Callable[[], object]) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def rates(self) -> tuple[float, float]:
        """(FLOP/s, bytes/s) right now."""
        return self.flops / self._seconds(lambda: self.gemm(self.x, self.w)), self.bytes / self._seconds(
            lambda: self.dst.copy_(self.src)
        )


def _merge(previous: Optional[Ceilings], rates: dict[str, list[float]], copies: list[float]) -> Ceilings:
    rates = {k: list(v) for k, v in rates.items()}
    copies = list(copies)
    if previous is not None:
        for k, v in previous.matmul_rates.items():
            rates.setdefault(k, [])[:0] = v
        copies[:0] = previous.copy_rates
    engine = max(rates, key=lambda k: max(rates[k]))
    return Ceilings(max(rates[engine]), max(copies), engine, rates, copies)


def measure_ceilings(
    device: torch.device, dtype: torch.dtype, *, n: int, copy_bytes: int, min_run_time: float, previous: Optional[Ceilings] = None
) -> Ceilings:
    """Measure both ceilings; with ``previous``, merge (the best of all measurements wins)."""
    matmul = measure_matmul(device, dtype, n, min_run_time)
    copy = measure_copy(device, dtype, copy_bytes, min_run_time)
    return _merge(previous, {k: [v] for k, v in matmul.items()}, [copy])



def merge_ceilings(previous: Optional[Ceilings], new: Ceilings) -> Ceilings:
    """All measurements of both; the best of each is the ceiling."""
    return _merge(previous, new.matmul_rates, new.copy_rates)


# --------------------------------------------------------------------------------------------------
# peak memory


def _libc() -> Optional[ctypes.CDLL]:
    if platform.system() != "Linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1))  # type: ignore[union-attr]


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the high-water mark VmHWM := the current resident set
        return True
    except OSError:
        return False


def peak_extra_rss(fn: Callable[[], object]) -> Optional[int]:
    """Operating-system view: the process's peak resident set during ``fn`` above its resident set
    before it (Linux ``VmHWM`` after a reset), after returning free heap pages to the system
    (``malloc_trim``) so that the baseline is the live memory. Counts what torch's allocator does not
    see (BLAS / oneDNN scratch, heap fragmentation), so it is an upper bound of the live peak."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        before = _status_kib("VmRSS")
    except (OSError, AttributeError):
        return None
    if not _reset_peak_rss():
        return None
    fn()
    return max(0, _status_kib("VmHWM") - before) * 1024


def measure_once(fn: Callable[[], object], device: torch.device) -> dict:
    """One call of ``fn``: seconds, and both views of its peak extra memory (the allocator's, and on
    CPU the resident set's), measured together."""
    holder: dict = {}

    def timed() -> None:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        holder["seconds"] = time.perf_counter() - start

    if device.type == "cpu":
        holder["peak_extra_allocated"] = peak_extra_allocated(lambda: holder.update(rss=peak_extra_rss(timed)), device)
        holder["peak_extra_rss"] = holder.pop("rss")
    else:
        holder["peak_extra_allocated"] = peak_extra_allocated(timed, device)
        holder["peak_extra_rss"] = None
    return holder


def peak_extra_allocated(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """torch allocator's view: the peak of bytes allocated during ``fn`` above those allocated before.

    CUDA: the caching allocator's statistics. CPU: the ``Total Allocated`` counter that the profiler
    attaches to every allocation and free (``profile_memory=True``), read from the trace."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        return None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})]
    return max([0, *totals])


# --------------------------------------------------------------------------------------------------
# the machine


def machine(device: torch.device) -> dict[str, str]:
    """A short description of the machine, for the tables."""
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": device.type}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
        return info
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        if found:
            model = found.group(1).strip()
    except OSError:
        pass
    config = torch.__config__.show()
    isa = re.search(r"CPU capability usage: (\S+)", config)
    info["name"] = f"{model}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"
    info["isa"] = isa.group(1) if isa else "?"
    blas = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    dnn = re.search(r"MKL-DNN v([\d.]+)", config)
    info["blas"] = f"MKL {blas.group(1)}" if blas else "?"
    info["onednn"] = dnn.group(1) if dnn else "?"
    return info


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def write_markdown(path: Path, key: str, body: str, *, title: str) -> None:
    """Replace the text between ``<!-- results: KEY -->`` and ``<!-- /results: KEY -->`` of a docs page
    (appended at the end of the page when the markers are missing; a missing page starts with
    ``# title``)."""
    start, end = f"<!-- results: {key} -->", f"<!-- /results: {key} -->"
    text = path.read_text() if path.exists() else f"# {title}\n"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
