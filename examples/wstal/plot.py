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

__all__ = ["plot_average_recall", "plot_video"]


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

    Proposals and detections are drawn best first, the top ``max_*`` of each, with opacity by score.
    Requires matplotlib (the ``[examples]`` extra); it uses the non-interactive Agg backend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, start = snippet_clock(video, snippet_seconds)  # the video's own feature timing, if it has one
    times = start + (np.arange(len(attention)) + 0.5) * scale
    fig, axes = plt.subplots(
        4, 1, figsize=(12, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 2, 2, 1]}
    )
    axes[0].plot(times, attention, color="tab:blue", lw=1)
    axes[0].set_ylim(0, 1.02)
    axes[0].set_ylabel("base\nattention")
    colours = plt.get_cmap("tab20")

    def draw(ax, items: Sequence[Detection], limit: int, label: str, by_class: bool) -> None:
        ranked = sorted(items, key=lambda d: -d.score)[:limit]
        top = max((d.score for d in ranked), default=1.0) or 1.0
        for row, det in enumerate(ranked):
            colour = colours(det.label % 20) if by_class else "tab:orange"
            ax.barh(
                row,
                det.end - det.start,
                left=det.start,
                height=0.8,
                color=colour,
                alpha=0.3 + 0.7 * det.score / top,
            )
        ax.set_ylim(-0.5, max(len(ranked), 1) - 0.5)
        ax.invert_yaxis()
        ax.set_yticks([])
        ax.set_ylabel(label)

    draw(axes[1], proposals, max_proposals, f"Stage-1\nproposals\n(top {max_proposals})", by_class=False)
    draw(axes[2], detections, max_detections, f"detections\n(top {max_detections})", by_class=True)
    for (start, end), c in zip(video.segments, video.segment_classes):
        axes[3].axvspan(start, end, color=colours(int(c) % 20), alpha=0.9)
    axes[3].set_yticks([])
    axes[3].set_ylabel("ground\ntruth")
    axes[3].set_xlabel("time (s)")
    axes[3].set_xlim(0, video.duration)
    present = sorted({int(c) for c in video.segment_classes} | {d.label for d in detections[:max_detections]})
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(c % 20)) for c in present]
    axes[3].legend(
        handles,
        [classes[c] for c in present],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.9),
        ncol=max(1, min(len(present), 5)),  # a video without detections or ground truth has no entry
        frameon=False,
        fontsize=8,
    )
    axes[0].set_title(
        f"{video.name}: base attention, proposals, detections (colour = class) and ground truth"
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
