"""Draw docs/figures/proposal_recall.png: proposal recall against the number kept per video, both families.

    python docs/figures/make_recall_figure.py BUILTIN_QB GROUND_TRUTH_QB [OUTPUT.png]

BUILTIN_QB and GROUND_TRUTH_QB are the ``--out`` folders of the two ``--quality-bars`` runs of
docs/detector.md (their ``quality_bars.json``); the figure shows seed 0 of each: recall at tIoU 0.5 (top)
and 0.7 (bottom) of the candidates Stage 2 classifies, the Stage-1 proposals, the base model's grouped
segments and the base's own detections with their classes ignored, against the average number kept per
video (each video's best ``N``), with the base grouped segments' own count marked.
Needs matplotlib (the ``[examples]`` extra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SETS = {
    "candidates": "Stage-2 candidates",
    "stage1": "Stage-1 proposals",
    "grouped": "base grouped segments",
    "base_detections": "base detections, classes ignored",
}
STYLE = {
    "candidates": ("#1f6fb4", "-"),
    "stage1": ("#d9730d", "--"),
    "grouped": ("#222222", ":"),
    "base_detections": ("#2a9d3a", "-."),
}


def draw(runs: dict[str, Path], output: Path) -> None:
    """One column per family (name -> quality-bars folder), seed 0."""
    fig, axes = plt.subplots(2, len(runs), figsize=(5 * len(runs), 6.5), squeeze=False)
    for column, (family, folder) in enumerate(runs.items()):
        quality = json.loads((folder / "quality_bars.json").read_text())["runs"]["seed0"]["proposal_quality"]
        for key, label in SETS.items():
            if key not in quality:
                continue
            curve = quality[key]["curve"]
            colour, line = STYLE[key]
            tious = [round(t, 2) for t in quality[key]["recall_tiou"]]
            for row, tiou in enumerate((0.5, 0.7)):
                values = curve["recall"][tious.index(tiou)]
                axes[row, column].plot(
                    curve["kept_per_video"], [100 * v for v in values], line, color=colour, label=label
                )
        base_count = quality["grouped"]["proposals_per_video"]
        for row, ylabel in enumerate(("recall at tIoU 0.5 (%)", "recall at tIoU 0.7 (%)")):
            ax = axes[row, column]
            ax.axvline(base_count, color="#888888", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        axes[0, column].set_title(f"{family}, seed 0")
        axes[1, column].set_xlabel("proposals kept per video (average)")
    axes[0, 0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(output, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    output = Path(argv[2]) if len(argv) == 3 else Path(__file__).with_name("proposal_recall.png")
    draw({"built-in family": Path(argv[0]), "ground-truth family": Path(argv[1])}, output)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
