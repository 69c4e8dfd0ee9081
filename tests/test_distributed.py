"""Training at scale (examples/wstal/distributed.py): data sharding, global-batch loss normalisation,
DistributedDataParallel equivalence with one process, mixed precision and torch.compile.

The DDP tests run 2 gloo processes on CPU (``torch.multiprocessing.spawn``) and compare them with a
single process that trains on the same global batches.
"""

from __future__ import annotations

import faulthandler
import functools
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

from wstal.distributed import (
    AutocastOutputs,
    DistributedContext,
    TrainStep,
    amp_dtype,
    global_batch,
    global_denominator,
    global_mean,
    global_rescale,
    init_distributed,
    shard_positions,
    shutdown_distributed,
)
from wstal.model import (
    FusionEmbed,
    MILBaseModel,
    ProposalClassifier,
    TemporalRPN,
    base_losses,
    proposal_mil_losses,
    rpn_losses,
)
from wstal.pseudo_labels import dense_targets

ROOT = Path(__file__).resolve().parents[1]
TINY_CLI = ["--max-videos", "6", "--synthetic-dim", "16", "--width", "16", "--threads", "1", "--quiet", "--device", "cpu"]

STRATEGIES = ["rgb", "flow", "concat", "mutual", "concat+", "mutual+"]
STAGES = ["base", "stage1", "stage2"]
B, T, C, K = 3, 20, 16, 5


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: with several threads on a busy machine, OpenMP's synchronisation dominates (a step
    of the tiny base model takes ~0.9 s on 2 threads and ~10 ms on 1); every process here uses 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# helpers: a tiny model of each stage with its step


def _stage(
    stage: str, strategy: str, *, attention: str = "gate", alpha: float = 0.5, scale: float = 1.0, seed: int = 0
):
    """A tiny network of ``stage``, a step function ``step(module, batch)`` and a batch of B videos."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    fusion = FusionEmbed(strategy, C, C, 8, alpha=alpha, attention=attention)
    rgb, flow = scale * torch.randn(B, T, C, generator=g), scale * torch.randn(B, T, C, generator=g)
    mask = torch.arange(T) < torch.tensor([T, 15, 9]).unsqueeze(1)
    labels = torch.zeros(B, K)
    labels[0, 1] = labels[1, 2] = labels[2, 3] = labels[2, 0] = 1.0
    model: nn.Module
    if stage == "base":
        model = MILBaseModel(fusion, K, hidden=16, dropout=0.0)

        def step(m: Any, x: tuple) -> dict[str, Tensor]:
            return base_losses(m(x[0], x[1], x[2]), x[3], x[2])

        return model, step, (rgb, flow, mask, labels)
    if stage == "stage1":
        model = TemporalRPN(fusion, hidden=16, dilations=(1, 2), dropout=0.0)
        targets = [dense_targets(torch.tensor([[2.0, 6.0], [8.0, 9.0]]) + i, T) for i in range(B)]
        obj, seg = torch.stack([o for o, _ in targets]), torch.stack([s for _, s in targets])

        def step(m: Any, x: tuple) -> dict[str, Tensor]:
            return rpn_losses(m(x[0], x[1], x[2]), x[3], x[4], x[2])

        return model, step, (rgb, flow, mask, obj, seg)
    model = ProposalClassifier(fusion, K, hidden=16, dropout=0.0)
    proposals = [torch.tensor([[0.0, 4.0], [2.0, 9.0]]), torch.tensor([[1.0, 5.0]]), torch.tensor([[0.0, 3.0], [4.0, 8.0], [1.0, 2.0]])]
    completeness = [torch.rand(len(p), generator=g) for p in proposals]
    classes = [torch.tensor([1, 1]), torch.tensor([2]), torch.tensor([3, 0, 3])]

    def step(m: Any, x: tuple) -> dict[str, Tensor]:
        logits, aux = m(x[0], x[1], x[2], x[4])
        return proposal_mil_losses(logits, x[3], aux, mask=x[2], completeness=x[5], proposal_classes=x[6])

    return model, step, (rgb, flow, mask, labels, proposals, completeness, classes)


# --------------------------------------------------------------------------------------------------
# sharding and normalisation


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [1, 2, 5, 16])
def test_shard_positions_partition_the_batch(count, world):
    shares = [shard_positions(count, r, world) for r in range(world)]
    real = [p for p, ghost in shares if not ghost]
    assert sorted(i for p in real for i in p) == list(range(count))  # each video exactly once
    assert max(map(len, real)) - min(map(len, real)) <= 1
    assert sum(ghost for _, ghost in shares) == max(world - count, 0)
    assert all(p == [0] for p, ghost in shares if ghost)


def test_shard_positions_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        shard_positions(4, 2, 2)
    with pytest.raises(ValueError, match="count"):
        shard_positions(0, 0, 2)


def test_global_helpers_are_plain_ops_in_one_process():
    x, n = torch.randn(7), torch.tensor(3.0)
    with global_batch(DistributedContext()):  # a single-process context activates nothing
        assert torch.equal(global_mean(x), x.mean())
        assert torch.equal(global_denominator(n, at_least=1.0), n.clamp_min(1.0))
        assert torch.equal(global_rescale(x.mean(), n), x.mean())
    assert torch.equal(global_denominator(torch.tensor(0.0), at_least=1.0), torch.tensor(1.0))


def test_docstring_examples():
    import doctest

    import wstal.distributed

    result = doctest.testmod(wstal.distributed, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0


def test_amp_dtype():
    assert amp_dtype("off") is None and amp_dtype("fp16") is torch.float16
    with pytest.raises(ValueError, match="amp"):
        amp_dtype("fp8")


# --------------------------------------------------------------------------------------------------
# DDP needs no find_unused_parameters: every parameter gets a gradient in every step


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(
    ("strategy", "attention", "alpha"),
    [(s, "gate", 0.5) for s in STRATEGIES]
    + [("concat+", "dot", 0.5), ("mutual+", "dot", 0.5), ("mutual+", "dot", 0.0), ("mutual+", "gate", 0.0)],
)
def test_every_parameter_receives_a_gradient(stage, strategy, attention, alpha):
    model, step, batch = _stage(stage, strategy, attention=attention, alpha=alpha)
    step(model, batch)["total"].backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{stage} {strategy}: no gradient for {missing}; DDP would need find_unused_parameters"


# --------------------------------------------------------------------------------------------------
# mixed precision


def test_autocast_outputs_returns_float32_and_keeps_structure():
    class Pair(nn.Module):
        def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
            y = x @ x.T
            return y, [y.sum(), y > 0]

    y, (total, positive) = AutocastOutputs(Pair(), torch.bfloat16, device_type="cpu")(torch.randn(3, 4))
    assert y.dtype == total.dtype == torch.float32 and positive.dtype == torch.bool
    with pytest.raises(ValueError, match="dtype"):
        AutocastOutputs(Pair(), torch.float32)


AMP_CASES = [
    ("bf16", "gate"),
    ("bf16", "dot"),
    ("fp16", "gate"),
    ("fp16", "dot"),
]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(("amp", "attention"), AMP_CASES)
def test_amp_training_step_on_large_features(stage, amp, attention):
    """Features of magnitude ~1000 through DMF, mutual fusion and the mutual loss (``mutual+``, every
    stage): losses stay finite, and within a few steps the (fp16: scaled) optimizer takes a step with
    finite gradients."""
    model, step, batch = _stage(stage, "mutual+", attention=attention, scale=1000.0)
    runner = TrainStep(model, torch.optim.Adam(model.parameters(), lr=1e-3), amp=amp)
    for _ in range(40):  # fp16: each overflow halves the scale from 2**16; the MSE of 1000-sized inputs needs ~17
        before = [p.detach().clone() for p in model.parameters()]
        losses = runner(step, batch)
        assert all(math.isfinite(v) for v in losses.values()), losses
        if any(not torch.equal(a, p) for a, p in zip(before, model.parameters())):
            break
    else:
        pytest.fail(f"{amp}: the optimizer never stepped (scale {runner.scaler.get_scale()})")
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if amp == "bf16":
        assert not runner.scaler.is_enabled()
    else:
        assert runner.scaler.is_enabled() and runner.scaler.get_scale() <= 2.0**16


# --------------------------------------------------------------------------------------------------
# torch.compile (the eager backend: what is tested is the wrapping, not inductor's code generation)


def test_compiled_step_trains_the_unwrapped_model():
    model, step, batch = _stage("stage1", "mutual+")
    eager_model, *_ = _stage("stage1", "mutual+")
    keys = list(model.state_dict())
    compiled = TrainStep(model, torch.optim.Adam(model.parameters(), lr=1e-3), compile=True, compile_options={"backend": "eager"})
    eager = TrainStep(eager_model, torch.optim.Adam(eager_model.parameters(), lr=1e-3))
    for _ in range(2):
        a, b = compiled(step, batch), eager(step, batch)
    assert a == pytest.approx(b, rel=1e-5)
    assert list(model.state_dict()) == keys  # checkpoints keep the plain keys
    for p, q in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# DistributedDataParallel on 2 gloo processes == one process on the same global batches


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, fn: Callable[[DistributedContext], Any], out: str) -> None:
    """One rank: ``fn(ctx)``, rank 0 saves its result, every rank leaves the group, then the process ends
    at once. Skipping the interpreter's teardown matters: a CI run once lost rank 1 to a C++ abort
    ("terminate called without an active exception") after the work was done, which 190 local runs did
    not reproduce; faulthandler prints the Python stack should any rank abort again."""
    faulthandler.enable()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        result = fn(ctx)
        if ctx.is_main:
            torch.save(result, out)
    except BaseException:
        shutdown_distributed(ctx, wait=False)
        raise  # spawn reports the traceback
    shutdown_distributed(ctx)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_distributed(fn: Callable[[DistributedContext], Any], tmp_path, world: int = 2) -> Any:
    """``fn(ctx)`` on ``world`` gloo processes; rank 0's result."""
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_ddp_worker, args=(world, _free_port(), fn, out), nprocs=world, join=True)
    return torch.load(out, weights_only=False)


def _train_steps(ctx: DistributedContext) -> dict[str, Any]:
    """Every stage (mutual+ and concat), 3 steps over global batches of 3, 3 and 1 videos: shares of
    2 + 1 videos and a ghost share, so per-video and per-snippet normalisation both meet uneven splits."""
    results: dict[str, Any] = {}
    for stage, strategy in [("base", "mutual+"), ("stage1", "mutual+"), ("stage1", "concat"), ("stage2", "concat"), ("stage2", "mutual+")]:
        model, step, batch = _stage(stage, strategy)
        runner = TrainStep(model, torch.optim.Adam(model.parameters(), lr=1e-2), dist=ctx)
        history = []
        for videos in ([0, 1, 2], [2, 0, 1], [1]):
            positions, ghost = shard_positions(len(videos), ctx.rank, ctx.world_size)
            local = [videos[p] for p in positions]
            history.append(runner(step, tuple(_rows(x, local) for x in batch), ghost=ghost))
        results[f"{stage}-{strategy}"] = {"history": history, "state": model.state_dict()}
    return results


def _rows(x: Any, rows: list[int]) -> Any:
    """The videos ``rows`` of a batch field (padded tensors keep the global padding: padded snippets
    change nothing, by the library's contract)."""
    return [x[i] for i in rows] if isinstance(x, list) else x[rows]


def test_ddp_steps_equal_one_process(tmp_path):
    one = _train_steps(DistributedContext())
    two = run_distributed(_train_steps, tmp_path)
    worst = 0.0
    for key, ref in one.items():
        for a, b in zip(ref["history"], two[key]["history"]):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-6), key
        for name, p in ref["state"].items():
            torch.testing.assert_close(two[key]["state"][name], p, rtol=1e-5, atol=1e-6, msg=f"{key}: {name}")
            worst = max(worst, float((two[key]["state"][name] - p).abs().max()))
    print(f"max |DDP - one process| over parameters: {worst:.2e}")


# --------------------------------------------------------------------------------------------------
# the whole detector: DetectorRunner in 2 gloo processes == in one process


def _runner(ctx: DistributedContext, out: str) -> dict[str, Any]:
    """The three stages on 7 tiny synthetic videos, global batches of 3 (3, 3, 1: uneven shares and a
    ghost), 2 epochs, no dropout (dropout masks differ per rank by design); rank 0's checkpoints."""
    import dataclasses

    from wstal.config import DetectorConfig
    from wstal.evaluator import train_and_evaluate
    from wstal.pipeline import DetectorRunner
    from wstal.synthetic import make_synthetic_thumos

    config = DetectorConfig().with_options(width=16, epochs=2)
    config = dataclasses.replace(
        config, **{s: dataclasses.replace(getattr(config, s), dropout=0.0, batch_size=3) for s in ("base", "stage1", "stage2")}
    )
    data = make_synthetic_thumos(num_train=7, num_test=3, dim=16)
    runner = DetectorRunner(data, config, checkpoint_dir=Path(out), dist=ctx, show_progress=False)
    result = train_and_evaluate(runner)
    if not ctx.is_main:
        return {}
    assert result is not None
    checkpoints = {p.name: torch.load(p, weights_only=True) for p in sorted(Path(out).glob("*.pt"))}
    return {"checkpoints": checkpoints, "avg": {k: getattr(result, k).averages for k in ("base", "stage1_only", "two_stage")}}


def _runner_in(out: str) -> Callable[[DistributedContext], dict[str, Any]]:
    return functools.partial(_runner, out=out)


def test_ddp_detector_equals_one_process(tmp_path):
    one = _runner(DistributedContext(), str(tmp_path / "one"))
    two = run_distributed(_runner_in(str(tmp_path / "two")), tmp_path)
    assert sorted(one["checkpoints"]) == sorted(two["checkpoints"]) and len(one["checkpoints"]) == 3
    worst = 0.0
    for name, ref in one["checkpoints"].items():
        got = two["checkpoints"][name]
        for a, b in zip(ref["history"], got["history"]):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-6), name
        for key, p in ref["model"].items():
            # float32 sums in another order (each rank pads its share to its own longest video) reach the
            # weights through Adam's normalisation: measured up to 1.04e-5 on one weight of 512
            torch.testing.assert_close(got["model"][key], p, rtol=1e-5, atol=5e-5, msg=f"{name}: {key}")
            worst = max(worst, float((got["model"][key] - p).abs().max()))
        assert len(got["rng"]["ranks"]) == 2  # every rank's RNG state is saved
    for detector, averages in one["avg"].items():
        assert averages == pytest.approx(two["avg"][detector], abs=1e-4), detector
    print(f"max |DDP - one process| over the three stages' parameters: {worst:.2e}")


# --------------------------------------------------------------------------------------------------
# the command line under torchrun: rank-0 outputs, resume with every rank's RNG state


def _torchrun(out, *extra: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 examples/thumos_two_stage.py`` on a tiny configuration."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(ROOT / "examples" / "thumos_two_stage.py"), *TINY_CLI, "--out", str(out), *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_cli_resume_reaches_the_uninterrupted_result(tmp_path):
    """2 processes with dropout (a different mask per rank): interrupted after 3 epochs and resumed, the
    run ends exactly where an uninterrupted one does; rank 0 alone prints and writes."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    done = _torchrun(whole, "--epochs", "2", "--seed", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| two-stage (Stage-2 detections) |") == 1  # printed by rank 0 only
    assert done.stdout.count("[base_concat] epoch 1/2") == 1
    stopped = _torchrun(parts, "--epochs", "2", "--seed", "3", "--stop-after-epochs", "3")
    assert stopped.returncode != 0 and not (parts / "results.json").exists()  # torchrun reports exit code 3
    assert torch.load(parts / "checkpoints" / "stage1_concat_concat+.pt", weights_only=True)["epoch"] == 1
    resumed = _torchrun(parts, "--epochs", "2", "--seed", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((parts / "results.json").read_text())["results"] == json.loads((whole / "results.json").read_text())["results"]
    for stage in ("base_concat", "stage1_concat_concat+", "stage2_concat_concat+_concat+"):
        a = torch.load(whole / "checkpoints" / f"{stage}.pt", weights_only=True)
        b = torch.load(parts / "checkpoints" / f"{stage}.pt", weights_only=True)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), stage
        assert a["history"] == b["history"]
