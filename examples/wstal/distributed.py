"""Training at scale: DistributedDataParallel, mixed precision and ``torch.compile`` around the detector's
training loop (:func:`wstal.train.train_stage`).

* **Processes.** :func:`init_distributed` joins the process group that ``torchrun`` describes in the
  environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): one process
  per device, NCCL on CUDA, gloo on CPU. Without ``torchrun`` it returns the single-process
  :class:`DistributedContext`, whose collectives are no-ops, so the same code runs both ways.
* **Data.** Every rank draws the *same* global batches from the stage's shared ``torch.Generator``
  (the epoch's permutation and every crop or snippet draw), then keeps its strided share of each batch
  (:func:`shard_positions`, the split of ``DistributedSampler``). A rank whose share is empty (a last
  batch smaller than the world) runs a *ghost* step on the batch's first video with weight zero, so
  every rank joins every gradient all-reduce and the result is that of the real videos only.
* **Loss normalisation.** DDP *averages* the gradients of the ranks. A loss written as
  ``local_sum / local_count`` would therefore weight the ranks equally whatever their counts, which
  differs from the single-process loss of the global batch as soon as the counts differ (snippets per
  rank always differ with variable-length videos; videos per rank differ when a batch does not split
  evenly). Inside :func:`global_batch` the losses divide their local sums by
  :func:`global_denominator` ``= global_count / world_size``; the average over ranks of
  ``local_sum_r / (N / W)`` is ``sum_r local_sum_r / N``, exactly the single-process loss (and
  gradient) of the global batch, for per-video and per-snippet normalisation alike. Outside it (one
  process, inference) the denominator is the local count and nothing changes.
* **Mixed precision.** :class:`AutocastOutputs` runs the forward under ``torch.autocast`` (bf16 or
  fp16) and returns its floating outputs as float32, so the losses are computed in float32 outside
  autocast; fp16 adds a ``torch.amp.GradScaler`` (dynamic loss scaling; steps with inf/NaN gradients are
  skipped).
* **Compile.** ``torch.compile`` of the (DDP-wrapped) model. Checkpoints are always written from the
  unwrapped model, so their keys are the same in every mode.
* :class:`TrainStep` is one optimisation step with all of the above.

Axis legend: b batch (videos), t time (snippets), c channels, w world (ranks).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "AMP_MODES",
    "AutocastOutputs",
    "DistributedContext",
    "TrainStep",
    "amp_dtype",
    "global_batch",
    "global_denominator",
    "global_mean",
    "global_rescale",
    "init_distributed",
    "native_bf16",
    "resolve_amp",
    "shard_positions",
    "shutdown_distributed",
]

T = TypeVar("T")

AMP_MODES = ("off", "bf16", "fp16")
"""Values of ``--amp``: float32, bfloat16 autocast, float16 autocast with gradient scaling."""

_AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA GPU that supports bfloat16, or
    an x86 CPU with AVX512-BF16 or AMX-BF16 (read from ``/proc/cpuinfo``; False where it is missing).
    Elsewhere bfloat16 is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(mode: str, device: torch.device | str) -> str:
    """``--amp auto``: ``bf16`` where the device has native bfloat16 matrix units, else ``off``; other
    modes are returned as they are (after validation).

    Example:
        >>> resolve_amp("off", "cpu"), resolve_amp("auto", "meta")
        ('off', 'off')
    """
    if mode == "auto":
        return "bf16" if native_bf16(device) else "off"
    amp_dtype(mode)  # validates
    return mode


def amp_dtype(mode: str) -> Optional[torch.dtype]:
    """The autocast dtype of an ``--amp`` mode (None for ``off``).

    Example:
        >>> amp_dtype("bf16"), amp_dtype("off")
        (torch.bfloat16, None)
    """
    if mode not in _AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    return _AMP_DTYPES[mode]


# --------------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) data-parallel run.

    Attributes:
        rank: global rank (0 is the main process: it logs, checkpoints and evaluates).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: this process's device.
        backend: ``"nccl"``, ``"gloo"`` or None (single process).

    Example:
        >>> ctx = DistributedContext()
        >>> ctx.enabled, ctx.is_main, ctx.broadcast_object({"a": 1})
        (False, True, {'a': 1})
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.enabled:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (pickled; for small objects such as a checkpoint or labels)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device)
        return box[0]  # type: ignore[return-value]

    def all_gather_object(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def mean(self, values: Tensor) -> Tensor:
        """The average of ``values`` over ranks (``values`` itself in a single process)."""
        if not self.enabled:
            return values
        values = values.detach().clone()
        dist.all_reduce(values)
        return values / self.world_size

    @property
    def _object_device(self) -> Optional[torch.device]:
        return self.device if self.backend == "nccl" else None


def init_distributed(device: Optional[str] = None, *, timeout_minutes: float = 60.0) -> DistributedContext:
    """Join the process group ``torchrun`` set up, or return the single-process context.

    Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment, or a process group already initialised):
    CUDA, one GPU per process (``cuda:LOCAL_RANK``) with NCCL, unless ``device`` says ``cpu`` or there
    is no GPU, in which case CPU with gloo. ``device`` is otherwise ignored (each rank takes its GPU).

    Args:
        device: the requested device (``None``: CUDA if available, else CPU).
        timeout_minutes: how long a collective waits for the other ranks; the main process evaluates
            while the others wait at a barrier, so this must exceed the evaluation time.

    Returns:
        This process's :class:`DistributedContext`.
    """
    wanted = torch.device(device) if device is not None else None
    cuda = torch.cuda.is_available() and (wanted is None or wanted.type == "cuda")
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        backend = str(dist.get_backend())
        cuda = cuda and backend == "nccl"
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1 or not dist.is_available():
            return DistributedContext(device=wanted or torch.device("cuda" if cuda else "cpu"))
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if cuda else "gloo"
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            backend, timeout=timedelta(minutes=timeout_minutes), device_id=dev if cuda else None
        )
    return DistributedContext(rank, world, local, dev, backend)


def shutdown_distributed(ctx: DistributedContext, *, wait: bool = True) -> None:
    """Leave the process group if this process joined one: after a final barrier (``wait``), so that no
    rank tears the group down while another still uses it; without it after an error."""
    if ctx.enabled and dist.is_initialized():
        if wait:
            ctx.barrier()
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# data sharding
# --------------------------------------------------------------------------------------------------


def shard_positions(count: int, rank: int, world_size: int) -> tuple[list[int], bool]:
    """This rank's positions in a global batch of ``count`` videos: the strided split of
    ``DistributedSampler`` (``rank, rank + w, ...``), and whether the share is a *ghost*.

    A rank with no video of its own (``count < world_size``, only for a short last batch) gets the
    batch's first video as a ghost: it runs the step with weight zero (:class:`TrainStep`), so it
    joins the collectives without changing the result.

    Example:
        >>> shard_positions(5, 0, 2), shard_positions(5, 1, 2), shard_positions(1, 1, 2)
        (([0, 2, 4], False), ([1, 3], False), ([0], True))
    """
    if not (0 <= rank < world_size):
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if count < 1:
        raise ValueError(f"a global batch needs at least one video, got count={count}")
    positions = list(range(rank, count, world_size))
    return (positions, False) if positions else ([0], True)


# --------------------------------------------------------------------------------------------------
# loss normalisation over the global batch
# --------------------------------------------------------------------------------------------------

_ACTIVE: ContextVar[Optional[tuple[DistributedContext, bool]]] = ContextVar(
    "wstal_global_batch", default=None
)


@contextmanager
def global_batch(ctx: DistributedContext, *, ghost: bool = False) -> Iterator[None]:
    """Within this context, :func:`global_denominator` and friends normalise over every rank's share of
    the batch (no-op in a single process). ``ghost``: this rank's videos do not count."""
    if not ctx.enabled:
        yield
        return
    token = _ACTIVE.set((ctx, ghost))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def global_denominator(count: Tensor, *, at_least: float = 0.0) -> Tensor:
    """The denominator that turns a local sum into this rank's share of a global-batch mean.

    Single process (or outside :func:`global_batch`): ``count.clamp_min(at_least)``. Inside it:
    ``max(sum over ranks of count, at_least) / world_size``, so that DDP's average over ranks of
    ``local_sum / global_denominator(local_count)`` is ``global_sum / global_count``.

    Args:
        count: this rank's count (e.g. valid snippets, videos), a scalar tensor.
        at_least: lower bound of the (global) count, e.g. 1 to avoid dividing by zero.

    Example:
        >>> global_denominator(torch.tensor(0.0), at_least=1.0)
        tensor(1.)
    """
    active = _ACTIVE.get()
    if active is None:
        return count.clamp_min(at_least) if at_least else count
    ctx, ghost = active
    total = count.detach().float().clone()
    if ghost:
        total.zero_()
    dist.all_reduce(total)
    return total.clamp_min(at_least) / ctx.world_size


def global_mean(values: Tensor) -> Tensor:
    """``values.mean()`` over the global batch (every element of every rank counts once); an empty
    selection (on every rank) gives 0, still connected to the autograd graph.

    Example:
        >>> global_mean(torch.tensor([1.0, 2.0, 6.0])), global_mean(torch.zeros(0))
        (tensor(3.), tensor(0.))
    """
    if _ACTIVE.get() is None:
        return values.mean() if values.numel() else values.sum()
    return values.sum() / global_denominator(values.new_tensor(float(values.numel())), at_least=1.0)


def global_rescale(local_mean: Tensor, local_count: Tensor) -> Tensor:
    """A mean computed over this rank's ``local_count`` items, turned into this rank's share of the mean
    over the global batch (``local_mean`` itself outside :func:`global_batch`); an empty share gives 0.

    Example:
        >>> global_rescale(torch.tensor(2.5), torch.tensor(4))
        tensor(2.5000)
    """
    if _ACTIVE.get() is None:
        return local_mean
    return local_mean * local_count.to(local_mean.dtype) / global_denominator(local_count, at_least=1.0)


# --------------------------------------------------------------------------------------------------
# mixed precision
# --------------------------------------------------------------------------------------------------


def _to_float32(x: Any) -> Any:
    """Floating tensors of a (nested) output to float32; NamedTuples, tuples, lists and dicts keep their type."""
    if isinstance(x, Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(_to_float32(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float32(v) for v in x)
    if isinstance(x, Mapping):
        return {k: _to_float32(v) for k, v in x.items()}
    return x


class AutocastOutputs(nn.Module):
    """Run ``module``'s forward under ``torch.autocast(dtype)`` and return its floating outputs as float32.

    The losses then run in float32 outside autocast (on CPU, autocast keeps softmax, sigmoid and
    reductions in the low-precision dtype), while the matrix products and convolutions of the forward
    and backward run in ``dtype``. The parameters stay float32 (the optimizer's master weights).

    Args:
        module: the network.
        dtype: ``torch.bfloat16`` or ``torch.float16``.
        device_type: ``"cpu"`` or ``"cuda"`` (default: that of the module's first parameter).

    Example:
        >>> net = AutocastOutputs(nn.Linear(4, 2), torch.bfloat16)
        >>> net(torch.randn(3, 4)).dtype
        torch.float32
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype, *, device_type: Optional[str] = None) -> None:
        super().__init__()
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype}")
        self.module = module
        self.dtype = dtype
        if device_type is None:
            first = next(module.parameters(), None)
            device_type = first.device.type if first is not None else "cpu"
        self.device_type = device_type

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, device_type={self.device_type!r}"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.module(*args, **kwargs)
        return _to_float32(out)


# --------------------------------------------------------------------------------------------------
# one training step
# --------------------------------------------------------------------------------------------------


class TrainStep:
    """One optimisation step of a stage, in any combination of DDP, AMP and ``torch.compile``.

    ``step(module, batch)`` (the stage's forward + losses, which must call ``module(...)``) runs inside
    :func:`global_batch`; then ``zero_grad``, (scaled) backward, gradient all-reduce by DDP, unscale,
    gradient-norm clipping, optimizer step and scaler update.

    Args:
        model: the network, already on its device. It is trained in place; checkpoint *it*, not
            :attr:`module`.
        optimizer: its optimizer.
        dist: the process context (default: single process).
        amp: ``"off"``, ``"bf16"`` or ``"fp16"``.
        compile: wrap the (DDP) module with ``torch.compile``.
        compile_options: keyword arguments of ``torch.compile`` (e.g. ``{"backend": "aot_eager"}``).
        grad_clip: max gradient norm (None: no clipping).

    Attributes:
        module: what ``step`` receives: ``compile(DDP(AutocastOutputs(model)))``, each layer only when
            asked for.
        scaler: the fp16 gradient scaler (disabled otherwise).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        dist: Optional[DistributedContext] = None,
        amp: str = "off",
        compile: bool = False,
        compile_options: Optional[dict[str, Any]] = None,
        grad_clip: Optional[float] = 10.0,
    ) -> None:
        first = next(model.parameters())
        self.model = model
        self.optimizer = optimizer
        self.dist = dist if dist is not None else DistributedContext(device=first.device)
        self.amp = amp
        self.grad_clip = grad_clip
        dtype = amp_dtype(amp)
        module: nn.Module = (
            model if dtype is None else AutocastOutputs(model, dtype, device_type=first.device.type)
        )
        if self.dist.enabled:
            cuda = first.device.type == "cuda"
            # every parameter of every fusion strategy takes part in each step's loss (tested), so DDP
            # does not need the extra graph traversal of find_unused_parameters=True
            module = nn.parallel.DistributedDataParallel(
                module, device_ids=[first.device] if cuda else None, find_unused_parameters=False
            )
        self.module: Callable[..., Any] = (
            torch.compile(module, **(compile_options or {})) if compile else module
        )
        self.scaler = torch.amp.GradScaler(first.device.type, enabled=amp == "fp16")

    def __call__(
        self, step: Callable[[Any, Any], dict[str, Tensor]], batch: Any, *, ghost: bool = False
    ) -> dict[str, float]:
        """Run one step on this rank's share of a global batch; return the global batch's losses.

        Args:
            step: forward + losses; returns named scalar losses including ``"total"``.
            batch: this rank's share of the global batch, on the model's device.
            ghost: the share is a stand-in (:func:`shard_positions`): its loss is multiplied by zero.

        Returns:
            Each loss of the global batch (the average over ranks of the rank shares), as floats.
        """
        with global_batch(self.dist, ghost=ghost):
            losses = step(self.module, batch)
        total = losses["total"] * 0.0 if ghost else losses["total"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        names = list(losses)
        values = torch.stack([losses[k].detach().float() for k in names])
        if ghost:
            values = values * 0.0
        return dict(zip(names, self.dist.mean(values).tolist()))

    def state_dict(self) -> dict[str, Any]:
        """The gradient scaler's state (for checkpoints)."""
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
