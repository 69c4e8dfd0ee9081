"""Bad input raises ValueError/TypeError naming the argument and what was received."""

from __future__ import annotations

import pytest
import torch

from dmf_fusion import ConcatFusion, DualModalityFusion, MutualFusion, MutualLoss

MODULES = {
    "gate": lambda: DualModalityFusion(8, 6),
    "dot": lambda: DualModalityFusion(8, 6, attention="dot"),
    "concat": lambda: ConcatFusion(8, 6),
    "mutual": lambda: MutualFusion(8, 6, 4),
    "mutual.embed": lambda: MutualFusion(8, 6, 4).embed,  # validates as forward does
}
rgb, flow = torch.randn(2, 5, 8), torch.randn(2, 5, 6)

BAD_INPUTS = [
    # (rgb, flow, mask, exception, words the message must contain)
    (torch.randn(5, 8), flow, None, ValueError, ["rgb", "(batch, time, channels)", "(5, 8)"]),
    (rgb, torch.randn(2, 5, 6, 1), None, ValueError, ["flow", "4-d", "(2, 5, 6, 1)"]),
    (torch.randn(3, 5, 8), flow, None, ValueError, ["rgb and flow", "(3, 5, 8)", "(2, 5, 6)"]),
    (rgb, torch.randn(2, 4, 6), None, ValueError, ["(batch, time)", "(2, 4, 6)"]),
    (torch.randn(2, 5, 7), flow, None, ValueError, ["rgb", "8 channels", "(2, 5, 7)"]),
    (rgb, torch.randn(2, 5, 8), None, ValueError, ["flow", "6 channels", "(2, 5, 8)"]),
    (rgb, flow, torch.ones(2, 4, dtype=torch.bool), ValueError, ["mask", "(2, 5)", "(2, 4)"]),
    (rgb, flow, torch.ones(2, 5), TypeError, ["mask", "torch.bool", "torch.float32"]),
    (rgb, flow, [[True] * 5] * 2, TypeError, ["mask", "list"]),
    (torch.ones(2, 5, 8, dtype=torch.int64), flow, None, TypeError, ["rgb", "torch.int64"]),
    (rgb.numpy(), flow, None, TypeError, ["rgb", "ndarray"]),
    (torch.randn(2, 0, 8), torch.randn(2, 0, 6), None, ValueError, ["rgb", "empty time axis"]),
    (rgb.double(), flow, None, TypeError, ["same dtype", "torch.float64", "torch.float32"]),
]


@pytest.mark.parametrize("kind", list(MODULES))
@pytest.mark.parametrize("case", range(len(BAD_INPUTS)))
def test_bad_input_is_named(kind, case):
    r, f, mask, exc, words = BAD_INPUTS[case]
    with pytest.raises(exc) as info:
        MODULES[kind]()(r, f, mask)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: DualModalityFusion(8, 8, alpha=-0.1), ["alpha", "-0.1"]),
        (lambda: DualModalityFusion(8, 8, alpha=float("nan")), ["alpha", "nan"]),
        (lambda: DualModalityFusion(8, 8, attention="cross"), ["attention", "'gate'", "'dot'", "'cross'"]),
        (lambda: DualModalityFusion(8, 8, kernel_size=4), ["kernel_size", "odd", "4"]),
        (lambda: DualModalityFusion(0, 8), ["dim_rgb", "positive", "0"]),
        (lambda: DualModalityFusion(8, 8, attention="dot", temperature=0), ["temperature", "> 0", "0"]),
        (lambda: ConcatFusion(8, 8, dim_out=-3), ["dim_out", "-3"]),
        (lambda: MutualFusion(8, 8, 4, dropout=1.5), ["dropout", "1.5"]),
        (lambda: MutualLoss(reduction="avg"), ["reduction", "'avg'"]),
    ],
)
def test_bad_options_are_named(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_mutual_loss_bad_input():
    a = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"flow_embed must have 4 channels.*\(2, 5, 3\)"):
        MutualLoss()(a, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"rgb_embed and flow_embed must share"):
        MutualLoss()(a, torch.randn(2, 6, 4))
    with pytest.raises(TypeError, match=r"mask must have dtype torch\.bool"):
        MutualLoss()(a, a, torch.ones(2, 5, dtype=torch.int64))
