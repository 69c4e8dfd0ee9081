"""Variants of the Stage-1 merge scored on the trained networks of a run: the decision record's tables.

    python examples/thumos_two_stage.py --quality-bars --threads 1 --out runs/qb      # trains the networks
    python examples/studies/merge_variants.py --out runs/qb --seeds 0 1 2 --map              # scores the variants

Takes the shared flags of ``thumos_two_stage.py`` (``wstal.launch``: ``--synthetic-from DIR``,
``--data-dir DIR``, ``--preset``, ...) and must be given the same ones as the run. For each seed it loads that run's base model, T-RPN and Stage 2
from ``--out/seed<N>`` (training what is missing) and detects with them
(:func:`wstal.inference.detect`, the networks run once per seed), merging the T-RPN's test proposals with the base
model's grouped segments under every combination of the merge's settings
(:class:`~wstal.config.ProposalSettings`: who wins an overlap, ``merge_iou``, ``merge_min_objectness``),
and the T-RPN's proposals alone. Per variant and seed it reports:

- the average number of proposals per video;
- recall at tIoU 0.5 at the average count per video of the smaller of the variant and the base's
  segments, minus the base's segments' recall there: the recall bar of docs/detector.md holds where
  this is ``>= 0``;
- with ``--map``, the two-stage mAP AVG 0.1:0.7 of the variant classified by the run's Stage 2, which was
  trained on the run's configured merge and is not retrained per variant (so the configured variant is
  the run's own two-stage result, and the others are what a change of merge alone does); the variant's
  proposals become Stage 2's candidates as the run's do (:func:`wstal.detect.stage2_candidates`).
  Without ``--map`` Stage 2 still classifies (detection runs whole), its mAP is just not scored.

The table is printed and written to ``--out/merge_variants.md``.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the wstal package and the studies

from wstal import launch
from wstal.config import ProposalSettings
from wstal.console import log
from wstal.data import WSTALDataset
from wstal.evaluation import Detection
from wstal.evaluator import detection_map, protocol_options
from wstal.inference import detect
from wstal.recall import ProposalResult, evaluate_proposals, recall_at_equal_budget
from wstal.trained import TrainedDetector

RPN_ALONE = "T-RPN proposals alone"


class VariantScore(NamedTuple):
    """One merge variant on one seed: ``proposals_per_video``; ``recall`` and ``base_recall`` (fractions),
    both at tIoU 0.5 and the smaller set's average count ``budget``; ``map_avg`` (percent, or None)."""

    proposals_per_video: float
    budget: float
    recall: float
    base_recall: float
    map_avg: Optional[float]


def variant_name(detection: ProposalSettings) -> str:
    """A merge's settings in words, e.g. ``base wins, NMS 0.3, objectness >= 0.99``."""
    if not detection.merge_base_segments:
        return RPN_ALONE
    winner = "base wins" if detection.merge_base_wins else "higher score wins"
    return f"{winner}, NMS {detection.merge_iou:g}, objectness >= {detection.merge_min_objectness:g}"


def merge_grid(configured: ProposalSettings) -> list[ProposalSettings]:
    """The variants: who wins x merge NMS 0.3 / 0.6 x objectness floor 0 / 0.9 / 0.97 / 0.99, the
    configured merge (if outside that grid) and the T-RPN alone."""
    grid = [
        dataclasses.replace(configured, merge_base_wins=wins, merge_iou=iou, merge_min_objectness=floor)
        for wins, iou, floor in itertools.product((False, True), (0.3, 0.6), (0.0, 0.9, 0.97, 0.99))
    ]
    if configured.merge_base_segments and configured not in grid:
        grid.append(configured)
    return [*grid, dataclasses.replace(configured, merge_base_segments=False)]


def score_variants(
    trained: TrainedDetector, dataset: WSTALDataset, variants: Sequence[ProposalSettings], *, with_map: bool
) -> dict[str, VariantScore]:
    """Every variant's proposals on the test split (:func:`~wstal.inference.detect` with the variant's
    proposal settings, the networks run once), scored against the base's grouped segments."""
    test = dataset.test
    configured = detect(trained, test, snippet_seconds=dataset.snippet_seconds)
    protocol = protocol_options(dataset)

    def quality(proposals: dict[str, list[Detection]]) -> ProposalResult:
        return evaluate_proposals(test, proposals, **protocol)

    base_quality = quality(configured.proposals("grouped"))
    scores: dict[str, VariantScore] = {}
    for det in variants:
        found = detect(
            trained, test, proposals=det, reuse=configured, snippet_seconds=dataset.snippet_seconds
        )
        variant = quality(found.proposals("stage1"))
        equal = recall_at_equal_budget({"variant": variant, "base": base_quality}, tiou=0.5)
        map_avg = 100 * detection_map(dataset, found.detections()).averages["0.1:0.7"] if with_map else None
        scores[variant_name(det)] = VariantScore(
            variant.proposals_per_video,
            equal.budget,
            equal.recall["variant"],
            equal.recall["base"],
            map_avg,
        )
    return scores


def format_variants(per_seed: dict[int, dict[str, VariantScore]], configured: str) -> str:
    """Variants as rows, seeds as column groups; the configured merge in bold."""
    seeds = list(per_seed)
    header = ["merge"]
    for s in seeds:
        header += [f"seed {s}: AN/video", f"seed {s}: R@0.5 (Δ base)"]
        if any(v.map_avg is not None for v in per_seed[s].values()):
            header.append(f"seed {s}: mAP")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for name in per_seed[seeds[0]]:
        cells = [f"**{name}**" if name == configured else name]
        for s in seeds:
            v = per_seed[s][name]
            cells += [
                f"{v.proposals_per_video:.1f}",
                f"{100 * v.recall:.1f} ({100 * (v.recall - v.base_recall):+.1f})",
            ]
            if v.map_avg is not None:
                cells.append(f"{v.map_avg:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = launch.build_parser(
        "merge_variants.py", "Score variants of the Stage-1 merge on the trained networks of a run (--out)."
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the run to score")
    parser.add_argument("--map", action="store_true", help="also the two-stage mAP (the run's Stage 2)")
    args = launch.parse(parser, argv)
    args.resume = True  # the run's networks are loaded, not retrained

    def body() -> int:
        dataset = launch.load_data(parser, args)
        configured = launch.make_config(args).proposals  # the seed does not change the proposal settings
        variants = merge_grid(configured)
        per_seed: dict[int, dict[str, VariantScore]] = {}
        for seed in args.seeds:
            config = launch.make_config(args, seed=seed)
            runner = launch.make_runner(args, dataset, config, Path(args.out) / f"seed{seed}")
            log(f"=== seed {seed}: scoring {len(variants)} merges ===")
            per_seed[seed] = score_variants(runner.train(), dataset, variants, with_map=args.map)
        text = format_variants(per_seed, variant_name(configured))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "merge_variants.md").write_text(text + "\n")
        print(text)
        return 0

    return launch.run(parser, args, body)


if __name__ == "__main__":
    sys.exit(main())
