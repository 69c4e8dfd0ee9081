"""Pictures of a run: one test video (base attention, Stage-1 proposals, Stage-2 detections and ground
truth), and the average-recall curves of the proposal sets.

Axis legend: t snippets (the x axis is in seconds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .data import Video, snippet_clock
from .evaluation import Detection
from .recall import ProposalResult

__all__ = [
    "MIN_OPACITY",
    "PROPOSAL_COLOUR",
    "class_colours",
    "plot_average_recall",
    "plot_video",
    "score_opacity",
]


PROPOSAL_COLOUR = "#4d4d4d"
"""The class-agnostic proposals' colour: a grey, which no class takes."""

MIN_OPACITY = 0.45
"""The opacity of the lowest-scored bar drawn; the best is opaque (every bar also has a solid edge)."""


def class_colours(classes: Sequence[int]) -> dict[int, tuple[float, float, float, float]]:
    """A distinct colour for each class of one picture, in the order given: the nine hues of matplotlib's
    ``tab10`` first, then ``Dark2``'s (``tab20``'s neighbours are two shades of one hue, so two classes of
    one video could not be told apart). Greys are left out: they draw the class-agnostic proposals."""
    import matplotlib

    colours = [*matplotlib.colormaps["tab10"].colors, *matplotlib.colormaps["Dark2"].colors]
    palette = [c for c in colours if max(c) - min(c) > 0.05]  # no grey
    return {c: (*palette[i % len(palette)], 1.0) for i, c in enumerate(dict.fromkeys(classes))}


def score_opacity(score: float, top: float) -> float:
    """Opacity of a bar by its score relative to the best one drawn: from :data:`MIN_OPACITY` to 1."""
    ratio = min(max(score / top, 0.0), 1.0) if top > 0 else 1.0
    return MIN_OPACITY + (1 - MIN_OPACITY) * ratio


def plot_video(
    path: Path,
    video: Video,
    attention: np.ndarray,
    proposals: Sequence[Detection],
    detections: Sequence[Detection],
    classes: Sequence[str],
    *,
    snippet_seconds: float,
    max_proposals: int = 15,
    max_detections: int = 15,
) -> None:
    """Write a PNG with four aligned rows: attention, proposals, detections, ground truth.

    Proposals and detections are drawn best first from the top, the top ``max_*`` of each, each row
    labelled with its rank and score; opacity follows the score (:func:`score_opacity`) and every bar has
    a solid edge, so the weakest stays visible. Each class of the picture has its own colour
    (:func:`class_colours`), named in the legend. A video without annotations (no ground truth) leaves
    its last row empty. Requires matplotlib (the ``[examples]`` extra); it uses the non-interactive Agg
    backend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, start = snippet_clock(video, snippet_seconds)  # the video's own feature timing, if it has one
    times = start + (np.arange(len(attention)) + 0.5) * scale
    fig, axes = plt.subplots(
        4, 1, figsize=(12, 8), sharex=True, gridspec_kw={"height_ratios": [1.5, 2.5, 2.5, 0.8]}
    )
    axes[0].plot(times, attention, color="tab:blue", lw=1)
    axes[0].set_ylim(0, 1.02)
    axes[0].set_ylabel("base\nattention")
    shown = sorted(detections, key=lambda d: -d.score)[:max_detections]
    truth = [int(c) for c in video.segment_classes]
    colours = class_colours([*truth, *(d.label for d in shown)])

    def draw(ax, items: Sequence[Detection], limit: int, label: str, by_class: bool) -> None:
        ranked = sorted(items, key=lambda d: -d.score)[:limit]
        top = max((d.score for d in ranked), default=1.0)
        for row, det in enumerate(ranked):
            colour = colours[det.label] if by_class else matplotlib.colors.to_rgba(PROPOSAL_COLOUR)
            ax.barh(
                row,
                det.end - det.start,
                left=det.start,
                height=0.75,
                color=(*colour[:3], score_opacity(det.score, top)),
                edgecolor=colour,
                linewidth=1.0,
            )
        ax.set_ylim(-0.5, max(len(ranked), 1) - 0.5)
        ax.invert_yaxis()
        ax.set_yticks(
            range(len(ranked)), [f"{i + 1}. {d.score:.2f}" for i, d in enumerate(ranked)], fontsize=6
        )
        ax.set_ylabel(label)

    draw(axes[1], proposals, max_proposals, f"Stage-1 proposals\n(top {max_proposals},\nbest first)", False)
    draw(axes[2], detections, max_detections, f"detections\n(top {max_detections},\nbest first)", True)
    for (start, end), c in zip(video.segments, truth):
        axes[3].axvspan(start, end, color=colours[c], alpha=0.9)
    axes[3].set_yticks([])
    axes[3].set_ylabel("ground\ntruth")
    axes[3].set_xlabel("time (s)")
    axes[3].set_xlim(0, video.duration)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in colours.values()]
    axes[3].legend(
        handles,
        [classes[c] for c in colours],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.9),
        ncol=max(1, min(len(colours), 5)),  # a video without detections or ground truth has no entry
        frameon=False,
        fontsize=8,
    )
    axes[0].set_title(
        f"{video.name}: base attention, proposals and detections (rank. score; colour = class), ground truth"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_average_recall(path: Path, rows: Mapping[str, ProposalResult]) -> None:
    """Write a PNG of average recall (tIoU 0.5:0.05:0.95) against the average number of proposals per
    video, one curve per proposal set (see :func:`wstal.recall.evaluate_proposals`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, result in rows.items():
        ax.plot(result.curve_kept, 100 * np.asarray(result.curve_average_recall), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("average number of proposals per video")
    ax.set_ylabel("average recall (%)")
    ax.set_title("AR@AN, tIoU 0.5:0.05:0.95")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
