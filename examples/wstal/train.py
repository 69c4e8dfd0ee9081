"""Training machinery of the two-stage detector: seeding, batching with padding + mask, one generic
training loop per stage, and atomic, resumable checkpoints.

The loop is plain; distributed data parallel, mixed precision and ``torch.compile`` wrap each step
(:class:`~wstal.distributed.TrainStep`, see docs/training_at_scale.md):

* :func:`train_stage` takes a model, a data iterable factory and an optimizer, and calls
  ``step(module, batch)``, which must go through ``module(...)`` (the forward a DDP wrapper hooks);
* every random draw of the data pipeline comes from one ``torch.Generator`` per stage, shared by all
  ranks (each keeps its share of every global batch, :func:`collate` with ``shard``), and the global
  torch RNG (dropout) is seeded per stage and rank, so a stage's result does not depend on what ran
  before it;
* a checkpoint holds the model, optimizer, scheduler, gradient scaler, epoch, the RNG states (of every
  rank) and the loss history; rank 0 writes it after an epoch (after every epoch, or once
  ``checkpoint_every`` seconds have passed since the last write, and always after the last) to a
  temporary file and moves it into place with ``os.replace`` (atomic on POSIX), so an interrupted run
  always leaves a complete epoch behind;
* a NaN or inf loss stops the stage at once with :class:`TrainingDiverged`, before the diverged epoch's
  checkpoint is written, so the last good epoch's checkpoint is what stays on disk;
* only rank 0 logs and shows progress bars.

Axis legend: b batch, t time (snippets), c channels, k classes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed
from torch import Tensor, nn

from .batching import Batch
from .console import log, progress
from .distributed import DistributedContext, TrainStep

__all__ = [
    "CHECKPOINT_EVERY",
    "CheckpointMismatchError",
    "StopAfter",
    "TrainingDiverged",
    "TrainingInterrupted",
    "adam",
    "batch_indices",
    "fingerprint",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "stage_seed",
    "train_stage",
]


# --------------------------------------------------------------------------------------------------
# seeding
# --------------------------------------------------------------------------------------------------


def stage_seed(seed: int, stage: str) -> int:
    """A 63-bit seed for one stage, derived from the run seed and the stage name (stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_everything(seed: int, rank: int = 0) -> torch.Generator:
    """Seed the global torch RNG (parameter init, dropout) with ``seed + rank`` and return a fresh
    ``torch.Generator`` for the data, seeded with ``seed`` on every rank (all ranks draw the same
    batches; DDP broadcasts rank 0's initial parameters). Nothing in the detector draws from Python's or
    NumPy's global RNGs."""
    torch.manual_seed(seed + rank)
    return torch.Generator().manual_seed(seed)


def fingerprint(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable configuration (written into checkpoints)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------------


def batch_indices(
    count: int,
    batch_size: int,
    generator: torch.Generator,
    *,
    shuffle: bool = True,
    lengths: Optional[Sequence[int]] = None,
    pool: int = 4,
) -> Iterator[list[int]]:
    """Index lists of one epoch, shuffled with ``generator``; the last batch may be smaller.

    With ``lengths`` (each item's padded length), batches are bucketed by length: the shuffled order is
    cut into pools of ``pool * batch_size`` items, each pool is sorted by length and cut into batches,
    and the batches are shuffled. A batch is padded to its longest item, so similar lengths waste less
    compute on padding (THUMOS videos run from a few seconds to half an hour); the pools keep the
    composition of the batches random from epoch to epoch.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> batches = list(batch_indices(8, 2, g, lengths=[5, 100, 7, 90, 6, 95, 8, 99]))
        >>> sorted(i for b in batches for i in b), all(len({i % 2 for i in b}) == 1 for b in batches)
        ([0, 1, 2, 3, 4, 5, 6, 7], True)
    """
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    if lengths is None:
        for start in range(0, count, batch_size):
            yield order[start : start + batch_size].tolist()
        return
    size = torch.as_tensor(lengths)
    batches = []
    for part in order.split(pool * batch_size):
        part = part[size[part].argsort(descending=True, stable=True)]
        batches.extend(part.split(batch_size))
    for i in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[i].tolist()


def sample_snippets(length: int, max_len: int, generator: torch.Generator) -> Tensor:
    """Indices of ``max_len`` snippets spread over the whole video, one drawn at random in each of ``max_len``
    equal parts (W-TALC / CO2-Net style); all snippets when the video is short enough.

    Example:
        >>> idx = sample_snippets(100, 10, torch.Generator().manual_seed(0))
        >>> idx.shape, bool((idx.diff() > 0).all())
        (torch.Size([10]), True)
    """
    if length <= max_len:
        return torch.arange(length)
    edges = torch.linspace(0, length, max_len + 1)
    jitter = torch.rand(max_len, generator=generator)
    return (edges[:-1] + jitter * (edges[1:] - edges[:-1])).long().clamp(max=length - 1)


def crop_window(length: int, max_len: int, generator: torch.Generator) -> tuple[int, int]:
    """A random contiguous window ``[start, end)`` of at most ``max_len`` snippets."""
    if length <= max_len:
        return 0, length
    start = int(torch.randint(0, length - max_len + 1, (1,), generator=generator))
    return start, start + max_len


def adam(params: Iterable[nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.Adam:
    """The stages' optimizer: Adam, in its fused form (one kernel for every parameter) where this torch
    has it for the parameters' device (CUDA; the CPU from torch 2.4), else its for-each form. Both compute
    the update of the plain loop, several times faster on the CPU than its per-tensor default.

    Example:
        >>> optimizer = adam(nn.Linear(2, 1).parameters(), lr=1e-3, weight_decay=0.0)
        >>> optimizer.defaults["fused"] or optimizer.defaults["foreach"]
        True
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # no fused kernel for this device in this torch
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------

CHECKPOINT_EVERY = 60.0
"""Seconds between two checkpoints of a stage in a detector run (``--checkpoint-every``)."""


class CheckpointMismatchError(RuntimeError):
    """``--resume`` found a checkpoint written by a different configuration."""


class TrainingInterrupted(RuntimeError):
    """Raised by :class:`StopAfter` to simulate a killed run (after a checkpoint was written)."""


class TrainingDiverged(RuntimeError):
    """A loss turned NaN or inf; the stage stopped and its last good checkpoint was kept.

    Attributes:
        stage: the stage's name.
        epoch: the epoch (1-based) whose step diverged.
        step: the step (1-based) within that epoch.
        checkpoint: the last good checkpoint, left on disk; None when this run wrote or resumed none.
        checkpoint_epoch: the epoch that checkpoint holds (None with it).
    """

    def __init__(
        self,
        stage: str,
        epoch: int,
        step: int,
        losses: dict[str, float],
        checkpoint: Optional[Path] = None,
        checkpoint_epoch: Optional[int] = None,
    ) -> None:
        self.stage, self.epoch, self.step = stage, epoch, step
        self.checkpoint, self.checkpoint_epoch = checkpoint, checkpoint_epoch
        bad = ", ".join(f"{k} {v}" for k, v in losses.items() if not math.isfinite(v))
        if checkpoint is not None:
            kept = f"kept the last good checkpoint {checkpoint} (epoch {checkpoint_epoch})"
        else:
            kept = "no checkpoint of this stage was written"
        super().__init__(
            f"stage {stage!r} diverged in epoch {epoch}, step {step}: non-finite loss ({bad}); {kept}. "
            "Lower the learning rate or check the data"
        )


class StopAfter:
    """Stop training after ``epochs`` epochs in this process, counted over all stages (for tests)."""

    def __init__(self, epochs: Optional[int]) -> None:
        self.remaining = epochs

    @property
    def last_epoch(self) -> bool:
        """Whether the next :meth:`epoch_done` interrupts (the epoch before it is always checkpointed)."""
        return self.remaining is not None and self.remaining <= 1

    def epoch_done(self) -> None:
        if self.remaining is None:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            raise TrainingInterrupted(
                "stopped on request after a checkpoint; rerun with --resume to continue"
            )


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, expected_fingerprint: str) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check it belongs to this configuration."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != expected_fingerprint:
        raise CheckpointMismatchError(
            f"{path} was written by a different configuration (fingerprint {state.get('fingerprint')!r}, "
            f"this run {expected_fingerprint!r}); rerun without --resume or choose another --out"
        )
    return state


def _rng_state(generator: torch.Generator, ctx: DistributedContext) -> dict[str, Any]:
    """The data generator's state and the global RNG states; distributed: every rank's (a collective)."""
    state: dict[str, Any] = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    if ctx.enabled:
        own = torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None
        state["ranks"] = ctx.all_gather_object({"torch": torch.get_rng_state(), "cuda": own})
    return state


def _restore_rng(state: dict[str, Any], generator: torch.Generator, ctx: DistributedContext) -> None:
    """Restore :func:`_rng_state`. A distributed run with the number of processes of the checkpoint
    takes its rank's states; with another number, rank 0's state with each rank's seed offset."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and not ctx.enabled:
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    if not ctx.enabled:
        return
    ranks = state.get("ranks")
    if ranks is not None and len(ranks) == ctx.world_size:
        torch.set_rng_state(ranks[ctx.rank]["torch"])
        if ranks[ctx.rank]["cuda"] is not None and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(ranks[ctx.rank]["cuda"], ctx.device)
    else:
        torch.manual_seed(int(torch.randint(2**62, (1,))) + ctx.rank)


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------

StepFn = Callable[[nn.Module, Batch], dict[str, Tensor]]


def _load_shared(path: Path, expected_fingerprint: str, ctx: DistributedContext) -> Optional[dict[str, Any]]:
    """Rank 0 reads the checkpoint at ``path`` (None if there is none) and sends it to the other ranks,
    so that they need not see rank 0's file system; an error (e.g. a configuration mismatch) is raised
    on every rank."""
    message: tuple[Optional[dict[str, Any]], Optional[BaseException]] = (None, None)
    if ctx.is_main and path.exists():
        try:
            message = (load_checkpoint(path, expected_fingerprint), None)
        except Exception as error:  # re-raised below, on every rank
            message = (None, error)
    state, error = ctx.broadcast_object(message)
    if error is not None:
        raise error
    return state


def train_stage(
    name: str,
    model: nn.Module,
    data: Callable[[torch.Generator], Iterable[Batch]],
    optimizer: torch.optim.Optimizer,
    step: StepFn,
    *,
    epochs: int,
    generator: torch.Generator,
    checkpoint: Optional[Path] = None,
    config_fingerprint: str = "",
    resume: bool = False,
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
    grad_clip: Optional[float] = 10.0,
    stop: Optional[StopAfter] = None,
    show_progress: bool = True,
    dist: Optional[DistributedContext] = None,
    amp: str = "off",
    compile: bool = False,
    checkpoint_every: float = 0.0,
) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs`` epochs, checkpointing after epochs; resume from ``checkpoint`` if asked.

    Args:
        name: stage name, for progress lines.
        model: the network (already on the context's device).
        data: ``data(generator)`` returns the batches of one epoch (all randomness from ``generator``);
            in a distributed run, each rank's share of the global batches (:func:`collate` with ``shard``).
        optimizer: its optimizer.
        step: ``step(module, batch)`` returns named scalar losses including ``"total"``; ``module`` is
            ``model``, wrapped for DDP / autocast / compile as asked.
        epochs: number of epochs of the stage.
        generator: the stage's data generator (its state is checkpointed).
        checkpoint: where to write the stage checkpoint (None: no checkpointing).
        config_fingerprint: identifies the configuration; a resumed checkpoint must carry the same.
        resume: continue from ``checkpoint`` if it exists (a finished stage is just loaded).
        scheduler: optional learning-rate scheduler stepped once per epoch.
        grad_clip: max gradient norm (None: no clipping).
        stop: test hook that interrupts the run after a number of epochs.
        show_progress: show a per-batch tqdm bar.
        dist: the distributed context (None: one process on the CPU); batches go to its ``device``. Rank 0 writes the checkpoints and reads them
            for every rank.
        amp: mixed precision, ``"off"``, ``"bf16"`` or ``"fp16"`` (with gradient scaling).
        compile: train through ``torch.compile(model)``.
        checkpoint_every: write the checkpoint after an epoch only when at least this many seconds have
            passed since this call started or last wrote it (0: after every epoch); the last epoch and an
            epoch after which ``stop`` interrupts are always written. An interrupted run loses at most
            this long plus one epoch.

    Returns:
        The per-epoch mean losses of the global batches (the whole history, also across a resume).

    Raises:
        TrainingDiverged: a step's loss was NaN or inf. Raised on every rank (the losses are averaged
            over ranks first), before that epoch's checkpoint is written.
        CheckpointMismatchError: ``resume`` found a checkpoint of another configuration.
    """
    ctx = dist if dist is not None else DistributedContext()
    history: list[dict[str, float]] = []
    first_epoch = 0
    good_epoch: Optional[int] = None  # the epoch of the checkpoint this run wrote or resumed from
    state = _load_shared(checkpoint, config_fingerprint, ctx) if resume and checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state["rng"], generator, ctx)
        history = list(state["history"])
        first_epoch = good_epoch = int(state["epoch"])
        verb = "loaded finished" if first_epoch >= epochs else f"resumed after epoch {first_epoch} of"
        log(f"[{name}] {verb} {checkpoint}")
    runner = TrainStep(model, optimizer, dist=ctx, amp=amp, compile=compile, grad_clip=grad_clip)
    if state is not None:
        runner.load_state_dict(state.get("train_step", {}))
    written = time.monotonic()  # the stage's start counts as its last write
    for epoch in range(first_epoch, epochs):
        model.train()
        sums: dict[str, float] = {}
        count = 0
        for batch in progress(data(generator), desc=f"{name} {epoch + 1}/{epochs}", enabled=show_progress):
            losses = runner(step, batch.to(ctx.device), ghost=batch.ghost)
            # the losses are floats already averaged over ranks: every rank sees the same and stops
            if not all(math.isfinite(value) for value in losses.values()):
                kept = checkpoint if good_epoch is not None else None
                raise TrainingDiverged(name, epoch + 1, count + 1, losses, kept, good_epoch)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
        if scheduler is not None:
            scheduler.step()
        means = {k: v / max(count, 1) for k, v in sums.items()}
        history.append(means)
        log(f"[{name}] epoch {epoch + 1}/{epochs} " + " ".join(f"{k} {v:.4f}" for k, v in means.items()))
        write = checkpoint is not None and (
            epoch + 1 == epochs
            or (stop is not None and stop.last_epoch)
            # rank 0's clock decides for every rank, since writing the checkpoint is a collective
            or ctx.broadcast_object(time.monotonic() - written >= checkpoint_every)
        )
        if write:
            rng = _rng_state(generator, ctx)  # a collective: every rank takes part
            if ctx.is_main:
                state = {
                    "stage": name,
                    "epoch": epoch + 1,
                    "epochs": epochs,
                    "fingerprint": config_fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng,
                    "history": history,
                    "train_step": runner.state_dict(),
                }
                if scheduler is not None:
                    state["scheduler"] = scheduler.state_dict()
                save_checkpoint(checkpoint, state)
            good_epoch, written = epoch + 1, time.monotonic()
        if stop is not None:
            stop.epoch_done()
    model.eval()
    return history
