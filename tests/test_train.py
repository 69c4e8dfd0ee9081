"""The training loop's checkpoint schedule and optimizer (examples/wstal/train.py).

How often a stage writes its checkpoint (``checkpoint_every``) is checked on a clock the test moves by
one second per epoch; the optimizer against plain Adam written out in float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import wstal.train as train
from wstal.batching import Batch, collate
from wstal.train import StopAfter, TrainingInterrupted, adam, train_stage


class Clock:
    """A monotonic clock that the data of each epoch moves on by one second."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def one_batch_per_epoch(clock: Clock):
    def data(generator: torch.Generator) -> Iterator[Batch]:
        clock.now += 1.0
        rgb = torch.randn(3, 2, generator=generator)
        yield collate(["v"], [rgb], [rgb], [torch.ones(1)])

    return data


def squared_output(module: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    return {"total": module(batch.rgb).pow(2).mean()}


def written_epochs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    epochs: int,
    every: float,
    stop: StopAfter | None = None,
    written: list[int] | None = None,
) -> list[int]:
    """The epochs after which ``train_stage`` wrote its checkpoint (appended to ``written``)."""
    clock, written = Clock(), [] if written is None else written
    monkeypatch.setattr(train.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(train, "save_checkpoint", lambda path, state: written.append(state["epoch"]))
    model = nn.Linear(2, 1)
    train_stage(
        "toy",
        model,
        one_batch_per_epoch(clock),
        torch.optim.SGD(model.parameters(), lr=0.1),
        squared_output,
        epochs=epochs,
        generator=torch.Generator().manual_seed(0),
        checkpoint=tmp_path / "toy.pt",
        show_progress=False,
        stop=stop,
        checkpoint_every=every,
    )
    return written


@pytest.mark.parametrize(
    ("epochs", "every", "expected"),
    [
        (4, 0.0, [1, 2, 3, 4]),  # every epoch
        (6, 2.5, [3, 6]),  # 3 s after the start, then the last epoch (3 s later)
        (7, 2.0, [2, 4, 6, 7]),
        (3, 1e9, [3]),  # never due: the last epoch only
    ],
)
def test_a_stage_writes_its_checkpoint_once_the_interval_passed_and_after_its_last_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epochs: int, every: float, expected: list[int]
) -> None:
    assert written_epochs(tmp_path, monkeypatch, epochs, every) == expected


def test_the_epoch_after_which_a_run_is_interrupted_is_always_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[int] = []
    with pytest.raises(TrainingInterrupted):
        written_epochs(tmp_path, monkeypatch, 5, 1e9, stop=StopAfter(2), written=written)
    assert written == [2]


def test_an_interrupted_stage_resumes_from_the_epoch_it_stopped_after(tmp_path: Path) -> None:
    path, model = tmp_path / "toy.pt", nn.Linear(2, 1)

    def run(epochs: int, stop: StopAfter | None, resume: bool) -> None:
        train_stage(
            "toy",
            model,
            one_batch_per_epoch(Clock()),
            torch.optim.SGD(model.parameters(), lr=0.1),
            squared_output,
            epochs=epochs,
            generator=torch.Generator().manual_seed(0),
            checkpoint=path,
            show_progress=False,
            stop=stop,
            resume=resume,
            checkpoint_every=1e9,
        )

    with pytest.raises(TrainingInterrupted):
        run(5, StopAfter(2), resume=False)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    run(5, None, resume=True)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 5 and len(state["history"]) == 5


def plain_adam(params: list[torch.Tensor], grads: list[list[torch.Tensor]], lr: float, wd: float):
    """Adam (Kingma and Ba, 2015) with L2 weight decay, written out in float64."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    params = [p.double().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for step, step_grads in enumerate(grads, start=1):
        for i, (p, g) in enumerate(zip(params, step_grads)):
            g = g.double() + wd * p
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1**step), v[i] / (1 - beta2**step)
            params[i] = p - lr * m_hat / (v_hat.sqrt() + eps)
    return params


ADAM = torch.optim.Adam


def without_fused_adam(params, **kwargs):
    """``torch.optim.Adam`` as in a torch with no fused kernel for these parameters (torch < 2.4 on the CPU)."""
    if kwargs.get("fused"):
        raise RuntimeError("`fused=True` requires all the params to be on a supported device")
    return ADAM(params, **kwargs)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "for-each fallback"])
def test_the_stages_optimizer_computes_plain_adam(fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fused:
        monkeypatch.setattr(torch.optim, "Adam", without_fused_adam)
    generator = torch.Generator().manual_seed(0)
    params = [
        nn.Parameter(torch.randn(5, 3, generator=generator)),
        nn.Parameter(torch.randn(3, generator=generator)),
    ]
    start = [p.detach().clone() for p in params]
    grads = [[torch.randn(p.shape, generator=generator) for p in params] for _ in range(4)]
    optimizer = adam(params, lr=1e-2, weight_decay=1e-3)
    if fused:
        assert optimizer.defaults["fused"] or optimizer.defaults["foreach"]
    else:
        assert optimizer.defaults["foreach"] and not optimizer.defaults["fused"]
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    expected = plain_adam(start, grads, lr=1e-2, wd=1e-3)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach().double(), e, rtol=1e-5, atol=1e-6)
