"""Variants of the Stage-1 merge scored on the trained networks of a run: the decision record's tables.

    python examples/thumos_two_stage.py --quality-bars --threads 1 --out runs/qb      # trains the networks
    python examples/merge_variants.py --out runs/qb --seeds 0 1 2 --map              # scores the variants

Takes the shared flags of ``thumos_two_stage.py`` (``wstal.launch``: ``--synthetic-from DIR``,
``--data-dir DIR``, ``--preset``, ...) and must be given the same ones as the run. For each seed it loads that run's base model, T-RPN and Stage 2
from ``--out/seed<N>`` (training what is missing), then merges the T-RPN's test proposals with the base
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

The table is printed and written to ``--out/merge_variants.md``.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Optional

from wstal import launch
from wstal.config import ProposalSettings
from wstal.console import log
from wstal.data import WSTALDataset, snippet_clock
from wstal.detect import stage1_proposals, stage2_candidates
from wstal.evaluation import evaluate_detections
from wstal.evaluator import protocol_options, two_stage_detections
from wstal.pipeline import DetectorRunner, base_strategy_for
from wstal.pseudo_labels import Segments
from wstal.recall import ProposalResult, evaluate_proposals, proposals_from_segments, recall_at_equal_budget

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
    runner: DetectorRunner, dataset: WSTALDataset, variants: Sequence[ProposalSettings], *, with_map: bool
) -> dict[str, VariantScore]:
    """Every variant's proposals on the test split, scored against the base's grouped segments."""
    c = runner.config
    s1, s2 = c.stage1, c.stage2
    base = base_strategy_for(s1, s2)
    test, sec = dataset.test, dataset.snippet_seconds
    clocks = {v.name: snippet_clock(v, sec) for v in test}
    base_out = runner.base_outputs(base, "test")
    found = runner.proposals(s1, base, "test")
    detected = runner.base_detections(base, "test")
    grouped, rpn = base_out.segments, found.rpn
    classifier = runner.train(s1, s2).classifier if with_map else None
    protocol = protocol_options(dataset)

    def quality(sets: dict[str, Segments]) -> ProposalResult:
        return evaluate_proposals(test, proposals_from_segments(sets, sec, clocks=clocks), **protocol)

    base_quality = quality(grouped)
    scores: dict[str, VariantScore] = {}
    for det in variants:
        sets = {
            name: stage1_proposals(p, grouped[name], det, base_out.results[name]) for name, p in rpn.items()
        }
        variant = quality(sets)
        equal = recall_at_equal_budget({"variant": variant, "base": base_quality}, tiou=0.5)
        map_avg = None
        if classifier is not None:
            candidates = {
                name: stage2_candidates(
                    p, base_out.results[name], detected[name], found.snippets[name], c.scoring
                )
                for name, p in sets.items()
            }
            detections = two_stage_detections(
                classifier, test, candidates, base_out.results, c, snippet_seconds=sec, device=runner.device
            )
            map_avg = (
                100
                * evaluate_detections(test, detections, dataset.num_classes, **protocol).averages["0.1:0.7"]
            )
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
            per_seed[seed] = score_variants(runner, dataset, variants, with_map=args.map)
        text = format_variants(per_seed, variant_name(configured))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "merge_variants.md").write_text(text + "\n")
        print(text)
        return 0

    return launch.run(parser, args, body)


if __name__ == "__main__":
    sys.exit(main())
