"""Draw docs/figures/dmf.png: the two halves of Dual-Modality Fusion (gate form).

    python docs/figures/make_dmf_figure.py [OUTPUT.png]

Needs matplotlib (the ``[examples]`` extra). Deterministic: fixed seed, no timestamp in the PNG, so
re-running it only changes the file when the drawing changes.

Tensors are drawn channel-last as the library stores them, turned so that time runs to the right and
channels run up; the hatched columns are padded snippets (mask False), which never feed the attention
and come out as zeros.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patheffects
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

CHANNEL = "#d9730d"  # channel half: RGB -> a_c -> Flow
TEMPORAL = "#1f6fb4"  # temporal half: Flow -> a_t -> RGB
INK = "#222222"
T, C, VALID = 24, 10, 18  # snippets, channels, valid snippets in the drawing


def tensor(ax, x, y, w, h, data, label, cmap, valid=VALID):
    """A (c, t) feature map at (x, y) with width w (time) and height h (channels)."""
    shown = np.ma.masked_array(data, mask=np.zeros_like(data, dtype=bool))
    shown.mask[:, valid:] = True
    ax.imshow(shown, extent=(x, x + w, y, y + h), cmap=cmap, vmin=0, vmax=1, aspect="auto", zorder=2)
    pad_x = x + w * valid / data.shape[1]
    ax.add_patch(
        Rectangle(
            (pad_x, y), x + w - pad_x, h, facecolor="white", edgecolor="#9a9a9a", hatch="///", lw=0, zorder=2
        )
    )
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=INK, lw=1.0, zorder=3))
    ax.text(x + w / 2, y + h + 0.18, label, ha="center", va="bottom", fontsize=11, color=INK)


def strip(ax, x, y, w, h, values, cmap, vertical):
    """An attention vector: a column over channels (vertical) or a row over time."""
    data = values[:, None] if vertical else values[None, :]
    ax.imshow(
        data[::-1] if vertical else data,
        extent=(x, x + w, y, y + h),
        cmap=cmap,
        vmin=0,
        vmax=1,
        aspect="auto",
        zorder=2,
    )
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=INK, lw=1.0, zorder=3))


def box(ax, x, y, w, h, text, color):
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.06,rounding_size=0.15",
            facecolor="white",
            edgecolor=color,
            lw=1.6,
            zorder=3,
        )
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=10, color=INK, zorder=4)


def arrow(ax, start, end, color=INK, lw=1.4, style="-|>", **kw):
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color, lw=lw, zorder=1, **kw)
    )


def op(ax, x, y, symbol, color=INK):
    ax.add_patch(Circle((x, y), 0.27, facecolor="white", edgecolor=color, lw=1.4, zorder=4))
    ax.text(x, y - 0.02, symbol, ha="center", va="center", fontsize=13, color=color, zorder=5)


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    smooth = lambda a: np.clip(0.5 + 0.5 * np.tanh(a), 0, 1)  # noqa: E731
    time_profile = np.sin(np.linspace(0, 3 * np.pi, T))
    rgb = smooth(rng.normal(0, 0.8, (C, T)) + 0.6 * time_profile)
    flow = smooth(rng.normal(0, 0.8, (C, T)) + 1.2 * np.sign(time_profile) * (np.abs(time_profile) > 0.5))
    a_c = smooth(rng.normal(0, 1.4, C))
    a_t = smooth(2.2 * np.sign(time_profile) * (np.abs(time_profile) > 0.5) + rng.normal(0, 0.3, T))
    a_t[VALID:] = 0
    rgb_plus = np.clip(rgb * (1 + 0.5 * a_t[None, :]) / 1.5, 0, 1)
    flow_plus = np.clip(flow * (1 + 0.5 * a_c[:, None]) / 1.5, 0, 1)

    fig, ax = plt.subplots(figsize=(13.3, 7.4))
    ax.set_xlim(0, 16.6)
    ax.set_ylim(-1.3, 9.6)
    ax.axis("off")

    top, bottom, h = 6.2, 0.7, 1.7  # rows: RGB on top, Flow below
    mid_top, mid_bottom = top + h / 2, bottom + h / 2
    # both attentions are computed from the *inputs*: the taps sit before either multiply
    x_tap, x_flow_mul, x_rgb_mul, x_add, x_out = 3.9, 10.0, 11.0, 12.5, 13.3

    # inputs and outputs
    tensor(ax, 0.3, top, 3.0, h, rgb, r"RGB  $X_r$   $(t \times c_r)$", "Greys")
    tensor(ax, 0.3, bottom, 3.0, h, flow, r"Flow  $X_f$   $(t \times c_f)$", "Greys")
    tensor(ax, x_out, top, 3.0, h, rgb_plus, r"RGB$^+ = X_r + \alpha\, a_t \odot X_r$", "Greys")
    tensor(ax, x_out, bottom, 3.0, h, flow_plus, r"Flow$^+ = X_f + \alpha\, a_c \odot X_f$", "Greys")

    # main lines: multiply by the attention, scale by alpha, add the residual
    for y, x_mul, color in ((mid_top, x_rgb_mul, TEMPORAL), (mid_bottom, x_flow_mul, CHANNEL)):
        arrow(ax, (3.3, y), (x_mul - 0.27, y), style="-")
        op(ax, x_mul, y, r"$\odot$", color)
        arrow(ax, (x_mul + 0.27, y), (x_add - 0.27, y), style="-")
        ax.text(
            (x_mul + x_add) / 2,
            y + 0.1,
            r"$\times\,\alpha$",
            ha="center",
            va="bottom",
            fontsize=12,
            color=INK,
        )
        op(ax, x_add, y, "+")
        arrow(ax, (x_add + 0.27, y), (x_out, y))

    # residual (identity) paths: alpha = 0 returns the input bit for bit
    y_res_top, y_res_bottom = top + h + 0.7, bottom - 0.45
    ax.plot([1.8, 1.8, x_add], [top + h + 0.55, y_res_top, y_res_top], color=INK, lw=1.3, ls="--")
    arrow(ax, (x_add, y_res_top), (x_add, mid_top + 0.27), lw=1.3, ls="--")
    ax.plot([1.8, 1.8, x_add], [bottom, y_res_bottom, y_res_bottom], color=INK, lw=1.3, ls="--")
    arrow(ax, (x_add, y_res_bottom), (x_add, mid_bottom - 0.27), lw=1.3, ls="--")
    ax.text(
        5.6,
        y_res_top + 0.06,
        r"identity (residual): $\alpha = 0$ returns $X_r$ bit for bit",
        ha="center",
        va="bottom",
        fontsize=9.5,
        color="#555555",
    )
    ax.text(
        5.6,
        y_res_bottom - 0.06,
        r"identity (residual): $\alpha = 0$ returns $X_f$ bit for bit",
        ha="center",
        va="top",
        fontsize=9.5,
        color="#555555",
    )

    # channel half (orange): RGB -> masked mean over valid t -> MLP, sigmoid -> a_c -> multiplies Flow
    arrow(ax, (x_tap, mid_top), (x_tap, 5.72), color=CHANNEL, lw=1.8)
    box(ax, 3.0, 4.9, 1.8, 0.8, "masked mean\nover valid $t$", CHANNEL)
    arrow(ax, (4.86, 5.3), (5.2, 5.3), color=CHANNEL, lw=1.8)
    box(ax, 5.25, 4.9, 2.0, 0.8, "MLP $c_r{\\to}c_r/r{\\to}c_f$\nsigmoid", CHANNEL)
    ax.plot([7.31, x_flow_mul], [5.3, 5.3], color=CHANNEL, lw=1.8, zorder=1)
    arrow(ax, (x_flow_mul, 5.3), (x_flow_mul, 4.87), color=CHANNEL, lw=1.8)
    strip(ax, x_flow_mul - 0.16, 3.55, 0.32, 1.3, a_c, "Oranges", vertical=True)
    ax.text(x_flow_mul - 0.3, 4.2, r"$a_c$  $(c_f)$", ha="right", va="center", fontsize=13, color=CHANNEL)
    arrow(ax, (x_flow_mul, 3.53), (x_flow_mul, mid_bottom + 0.27), color=CHANNEL, lw=1.8)

    # temporal half (blue): Flow -> masked temporal convs, sigmoid -> a_t -> multiplies RGB
    x_tap_t = 4.4
    arrow(ax, (x_tap_t, mid_bottom), (x_tap_t, 2.66), color=TEMPORAL, lw=1.8)
    box(ax, 2.95, 2.7, 2.95, 0.8, "2 masked temporal convs\n(kernel 3), ReLU, sigmoid", TEMPORAL)
    arrow(ax, (5.96, 3.1), (6.38, 3.1), color=TEMPORAL, lw=1.8)
    strip(ax, 6.4, 2.94, 2.8, 0.32, a_t, "Blues", vertical=False)
    ax.text(7.8, 3.33, r"$a_t$  $(t)$", ha="center", va="bottom", fontsize=13, color=TEMPORAL)
    # it crosses the channel half once (unavoidable: each half feeds the other row); drawn as a bridge
    bridge = [patheffects.withStroke(linewidth=7, foreground="white")]
    ax.plot(
        [9.22, x_rgb_mul],
        [3.1, 3.1],
        color=TEMPORAL,
        lw=1.8,
        zorder=3,
        path_effects=bridge,
        solid_capstyle="butt",
    )
    ax.plot([9.22, x_rgb_mul], [3.1, 3.1], color=TEMPORAL, lw=1.8, zorder=3, solid_capstyle="butt")
    arrow(ax, (x_rgb_mul, 3.1), (x_rgb_mul, mid_top - 0.27), color=TEMPORAL, lw=1.8)

    ax.text(0.3, 9.55, "Dual-Modality Fusion (gate form)", fontsize=14, weight="bold", color=INK, va="top")
    ax.text(
        16.3,
        9.55,
        "channel half: RGB generates $a_c$, which enhances Flow",
        fontsize=11,
        color=CHANNEL,
        va="top",
        ha="right",
    )
    ax.text(
        16.3,
        9.1,
        "temporal half: Flow generates $a_t$, which enhances RGB",
        fontsize=11,
        color=TEMPORAL,
        va="top",
        ha="right",
    )
    ax.text(
        0.3,
        -1.25,
        "Hatched: padded snippets (mask False); they never reach the mean, the convolutions or the keys, and "
        "come out as zeros.\nDot form: $a_c$ becomes $A_c$ ($c \\times c$, softmax of the RGB Gram matrix), "
        "$a_t$ becomes $A_t$ ($t \\times s$, softmax of $q\\cdot k$ from Flow).",
        fontsize=9.5,
        color="#444444",
        va="bottom",
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("dmf.png"))
