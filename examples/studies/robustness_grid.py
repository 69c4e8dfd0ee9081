"""The robustness grid: the detector at THUMOS width on three feature models and several difficulties.

    python examples/studies/robustness_grid.py --out runs/grid                          # every cell, seeds 0 1 2
    python examples/studies/robustness_grid.py --out runs/grid --epochs-scale 0.4 --jobs 2   # shortened, 2 cores
    python examples/studies/robustness_grid.py --out runs/grid --cells ground-truth:0.5 context:1
    python examples/studies/robustness_grid.py --out runs/grid --fusions mutual+/concat mutual/concat concat/concat

Every cell is 60 + 60 videos (``--videos``) of 1024 + 1024 channels under the ``thumos14`` preset and the
THUMOS evaluation protocol, so it reads like a THUMOS14 folder of I3D features: the built-in family
(its own THUMOS-like lengths), and two families laid around the real THUMOS14 ground truth of
``--annotations`` (real durations up to ``--max-seconds``): the ground-truth family
(docs/synthetic_from_annotations.md) and the action-context family (docs/synthetic_context.md), each at
the difficulties the cells name. Per cell and seed it trains the detector (checkpointed under
``--out/<cell>/seed<N>``, so ``--resume`` continues an interrupted grid) and records the base model's and
the two stages' mAP, at tIoU 0.7 too, and the recall at tIoU 0.7 of the candidates handed to Stage 2 and
of the base model's own detections. ``--jobs N`` runs N of the (cell, seed) runs at a time, each in a
process of its own with ``--threads / N`` threads. The bars (issue: one detector that holds on data nobody tuned it on),
checked on every cell over the seeds' means: two-stage >= base AVG, two-stage >= base at tIoU 0.7,
candidates recall at tIoU 0.7 >= the base detections'; over the grid's mean: two-stage >= base + 2.

Writes ``--out/grid.md`` (stamped with the commit) and ``--out/grid.json``; exit code 0 whether or not the
bars hold (the table says which), 2/3/4 as ``thumos_two_stage.py``. With ``--diagnostics`` it also scores,
on every run's networks and without retraining them, the candidate variants of decision record 0016
(what Stage 2 classifies at inference, and with which objectness) and the recall of the segment sources
a pseudo-label rule could trust (:mod:`studies.candidate_variants`), into ``--out/diagnostics.md`` (and
``.json``); with ``--resume`` on a finished grid that costs only the evaluation.
``examples/studies/compare_schedules.py`` compares two grids' diagnostics: does a shortened schedule rank the
variants as the full one does?

``--fusions S1/S2 ...`` (one pair or more) adds a fusion axis (issue: the library's headline block must earn its place): every
run trains its base model once and the two stages once per Stage-1 / Stage-2 fusion pair, and the grid
writes ``--out/fusions.md`` (and the ``fusions`` of ``grid.json``): per cell and pair the two stages' and
the Stage-1-alone AVG (mean ± std over the seeds), the grid's mean, and what each Stage-1 fusion learned
(:mod:`studies.dmf_attention`). The bars and the diagnostics read the first pair.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the wstal package and the studies

import numpy as np

from studies import candidate_variants, dmf_attention
from studies.experiments import candidate_recall, write_json
from wstal import launch
from wstal.config import DetectorConfig
from wstal.console import log
from wstal.data import WSTALDataset
from wstal.evaluator import EvaluationResult, train_and_evaluate
from wstal.synthetic import make_synthetic_thumos

ANNOTATIONS = Path(__file__).resolve().parents[3] / "shared" / "data" / "thumos14"
FAMILIES = ("built-in", *launch.ANNOTATION_FAMILIES)
DEFAULT_CELLS = (
    "built-in",
    "ground-truth:0.5",
    "ground-truth:1",
    "context:0",
    "context:0.5",
    "context:0.75",
    "broadcast:1",
)


@dataclass(frozen=True)
class Cell:
    """One feature model at one difficulty (``None``: the built-in family, which has no knob)."""

    family: str
    difficulty: Optional[float] = None

    @classmethod
    def parse(cls, text: str) -> Cell:
        family, _, level = text.partition(":")
        if family not in FAMILIES:
            raise argparse.ArgumentTypeError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
        if family == "built-in":
            if level:
                raise argparse.ArgumentTypeError(f"the built-in family has no difficulty, got {text!r}")
            return cls(family)
        try:
            difficulty = float(level)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected FAMILY:DIFFICULTY, e.g. context:1, got {text!r}"
            ) from None
        if not np.isfinite(difficulty) or difficulty < 0:
            raise argparse.ArgumentTypeError(f"difficulty must be a finite number >= 0, got {text!r}")
        return cls(family, difficulty)

    @property
    def name(self) -> str:
        return self.family if self.difficulty is None else f"{self.family}:{self.difficulty:g}"

    def dataset(self, args: argparse.Namespace) -> WSTALDataset:
        """The cell's data, evaluated as a THUMOS14 folder is (snippet units, ambiguous regions)."""
        n, dim, seed = args.videos, args.dim, args.data_seed
        if self.family == "built-in":
            data = make_synthetic_thumos(num_train=n, num_test=n, dim=dim, seed=seed)
        else:
            make = launch.ANNOTATION_FAMILIES[self.family]
            data = make(
                args.annotations,
                seed=seed,
                dim=dim,
                difficulty=self.difficulty,
                max_videos_per_split=n,
                max_seconds=args.max_seconds,
            )
        return replace(data, evaluation_protocol="thumos")


def fusion_pair(text: str) -> tuple[str, str]:
    """``S1/S2``: a Stage-1 and a Stage-2 fusion strategy, e.g. ``mutual+/concat``."""
    stage1, slash, stage2 = text.partition("/")
    if not slash:
        raise argparse.ArgumentTypeError(f"expected STAGE1/STAGE2, e.g. mutual+/concat, got {text!r}")
    try:  # each half as --stage1-fusion / --stage2-fusion read it
        return launch.strategy(stage1), launch.strategy(stage2)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (in {text!r})") from None


def pair_name(pair: tuple[str, str]) -> str:
    return "/".join(pair)


STAGE3_INPUTS = {"two_stage": "two-stage", "stage1_only": "Stage-1 x base classes", "base": "base"}
"""The rows Stage 3 is built from, each a bar it must not rank below (by AVG, at tIoU 0.1 and 0.7)."""


def summary(result: EvaluationResult) -> dict[str, float]:
    """The numbers the bars read from one run, in percent (with a Stage-3 student, each detector's AVG
    and mAP at tIoU 0.1 and 0.7)."""
    recall = candidate_recall(result)
    row = {
        "base": result.avg("base"),
        "two_stage": result.avg("two_stage"),
        "stage1_only": result.avg("stage1_only"),
        "base@0.7": result.map_at(0.7, "base"),
        "two_stage@0.7": result.map_at(0.7),
        "candidates R@0.7": 100 * recall["candidates"],
        "base detections R@0.7": 100 * recall["base_detections"],
    }
    if result.three_stage is not None:
        row["three_stage"] = result.avg("three_stage")
        row["student"] = result.avg("student")
        for detector in ("three_stage", *STAGE3_INPUTS):
            for tiou in (0.1, 0.7):
                row[f"{detector}@{tiou}"] = result.map_at(tiou, detector)
    return row


def bars(cells: dict[str, list[dict[str, float]]]) -> dict[str, bool]:
    """The grid's bars over the seeds' means of each cell, and over the grid's mean."""
    mean = {
        name: {k: float(np.mean([run[k] for run in runs])) for k in runs[0]} for name, runs in cells.items()
    }
    checks = {}
    for name, m in mean.items():
        checks[f"{name}: two-stage >= base AVG"] = m["two_stage"] >= m["base"]
        checks[f"{name}: two-stage >= base at tIoU 0.7"] = m["two_stage@0.7"] >= m["base@0.7"]
        checks[f"{name}: candidates R@0.7 >= base detections'"] = (
            m["candidates R@0.7"] >= m["base detections R@0.7"]
        )
    grid_two = float(np.mean([m["two_stage"] for m in mean.values()]))
    grid_base = float(np.mean([m["base"] for m in mean.values()]))
    checks["grid mean: two-stage >= base + 2"] = grid_two >= grid_base + 2
    if all("three_stage" in m for m in mean.values()):
        for name, m in mean.items():
            for row, printed in STAGE3_INPUTS.items():
                checks[f"{name}: Stage 3 >= {printed} AVG"] = m["three_stage"] >= m[row]
                for tiou in (0.1, 0.7):
                    checks[f"{name}: Stage 3 >= {printed} at tIoU {tiou}"] = (
                        m[f"three_stage@{tiou}"] >= m[f"{row}@{tiou}"]
                    )
        grid_three = float(np.mean([m["three_stage"] for m in mean.values()]))
        checks["grid mean: Stage 3 >= base + 5"] = grid_three >= grid_base + 5
    return checks


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` (sample std, left out for one value), one decimal."""
    spread = f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
    return f"{np.mean(values):.1f}{spread}"


def format_grid(
    cells: dict[str, list[dict[str, float]]], seeds: Sequence[int]
) -> tuple[str, dict[str, bool]]:
    """The grid's table (mean ± std over the seeds, and each seed) and its checks."""

    def cell(runs: list[dict[str, float]], key: str) -> str:
        values = [run[key] for run in runs]
        return f"{mean_std(values)} ({' / '.join(f'{v:.1f}' for v in values)})"

    keys = ("base", "two_stage", "base@0.7", "two_stage@0.7", "candidates R@0.7", "base detections R@0.7")
    lines = [
        f"mAP AVG 0.1:0.7 and at tIoU 0.7, recall at tIoU 0.7 (%): mean ± std (seeds {' / '.join(map(str, seeds))})",
        "",
        "| cell | base AVG | two-stage AVG | base @0.7 | two-stage @0.7 | candidates R@0.7 | base detections R@0.7 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in cells.items():
        lines.append(f"| {name} | " + " | ".join(cell(runs, k) for k in keys) + " |")
    if all("three_stage" in runs[0] for runs in cells.values()):
        lines += ["", *format_stage3(cells)]
    checks = bars(cells)
    lines += ["", *(f"- [{'x' if ok else ' '}] {name}" for name, ok in checks.items())]
    return "\n".join(lines), checks


def format_stage3(cells: dict[str, list[dict[str, float]]]) -> list[str]:
    """Stage 3 beside the rows it is built from: per cell, each detector's AVG / mAP at tIoU 0.1 / at
    0.7 (means over the seeds), and the grid's mean of each."""
    detectors = {"three_stage": "Stage 3", **STAGE3_INPUTS}
    lines = [
        "Stage 3 and the rows it is built from: AVG 0.1:0.7 / mAP at tIoU 0.1 / at 0.7 (%), means over the seeds",
        "",
        "| cell | " + " | ".join(detectors.values()) + " |",
        "| --- | " + " | ".join("---" for _ in detectors) + " |",
    ]
    grid = {d: [] for d in detectors}
    for name, runs in cells.items():
        values = []
        for d in detectors:
            m = [float(np.mean([r[k] for r in runs])) for k in (d, f"{d}@0.1", f"{d}@0.7")]
            grid[d].append(m)
            values.append(" / ".join(f"{v:.1f}" for v in m))
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    means = [" / ".join(f"{v:.1f}" for v in np.mean(grid[d], axis=0)) for d in detectors]
    lines.append("| grid mean | " + " | ".join(means) + " |")
    return lines


def format_fusions(
    fusions: dict[str, dict[str, list[dict[str, float]]]],
    statistics: dict[str, dict[str, list[dict[str, Optional[float]]]]],
    seeds: Sequence[int],
) -> str:
    """The fusion axis: per cell and fusion pair the two stages' and Stage 1's AVG (mean ± std over the
    seeds), the grid's mean of each pair and its place, and the Stage-1 fusions' statistics."""
    pairs = list(fusions)
    cells = list(fusions[pairs[0]])
    lines = [
        f"mAP AVG 0.1:0.7 (%), mean ± std over seeds {' / '.join(map(str, seeds))}; base: the shared base model",
        "",
    ]
    for key, title in (("two_stage", "two-stage"), ("stage1_only", "Stage-1 proposals x base classes")):
        lines += [
            f"**{title}**",
            "",
            "| cell | base | " + " | ".join(pairs) + " |",
            "| --- | --- | " + " | ".join("---" for _ in pairs) + " |",
        ]
        for cell in cells:
            base = mean_std([run["base"] for run in fusions[pairs[0]][cell]])
            values = [mean_std([run[key] for run in fusions[p][cell]]) for p in pairs]
            lines.append(f"| {cell} | {base} | " + " | ".join(values) + " |")
        means = {p: float(np.mean([np.mean([r[key] for r in fusions[p][c]]) for c in cells])) for p in pairs}
        base_mean = float(np.mean([np.mean([r["base"] for r in fusions[pairs[0]][c]]) for c in cells]))
        lines.append(
            f"| grid mean | {base_mean:.1f} | " + " | ".join(f"{means[p]:.1f}" for p in pairs) + " |"
        )
        ranked = sorted(pairs, key=lambda p: -means[p])
        lines += ["", "Order by the grid's mean: " + " > ".join(f"{p} ({means[p]:.1f})" for p in ranked), ""]
    lines += ["**The grid's bars, pair by pair**", ""]
    for pair in pairs:
        missed = [name for name, ok in bars(fusions[pair]).items() if not ok]
        lines.append(f"- {pair}: " + ("every bar holds" if not missed else "missed: " + "; ".join(missed)))
    lines.append("")
    if statistics:
        stage1 = list(statistics)
        lines += [
            "**What each Stage-1 fusion learned** on the test videos (`examples/studies/dmf_attention.py`): "
            "the mean over the cells of each cell's seed mean, [the lowest, the highest cell]",
            "",
            "| statistic | " + " | ".join(stage1) + " |",
            "| --- | " + " | ".join("---" for _ in stage1) + " |",
        ]
        for name in dmf_attention.STATISTICS:
            row = []
            for fusion in stage1:
                cell_means = [
                    float(np.mean([r[name] for r in runs]))
                    for runs in statistics[fusion].values()
                    if all(r[name] is not None for r in runs)
                ]
                row.append(
                    f"{np.mean(cell_means):.3f} [{min(cell_means):.3f}, {max(cell_means):.3f}]"
                    if cell_means
                    else "—"
                )
            lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = launch.build_parser(
        "robustness_grid.py",
        "The detector on three feature models at THUMOS width, several difficulties each, and the bars.",
        data=False,
    )
    parser.set_defaults(preset="thumos14", out=Path("runs/robustness_grid"))
    grid = parser.add_argument_group("grid")
    grid.add_argument(
        "--cells",
        type=Cell.parse,
        nargs="+",
        default=[Cell.parse(c) for c in DEFAULT_CELLS],
        help="FAMILY[:DIFFICULTY] per cell, families: " + ", ".join(FAMILIES),
    )
    grid.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds of every cell")
    grid.add_argument(
        "--fusions",
        type=fusion_pair,
        nargs="+",
        default=None,
        metavar="S1/S2",
        help="Stage-1 / Stage-2 fusion pairs each run trains on its one base model, e.g. mutual+/concat "
        "mutual/concat (default: --stage1-fusion / --stage2-fusion); the bars read the first",
    )
    grid.add_argument("--videos", type=launch.positive_int, default=60, help="videos per split")
    grid.add_argument("--dim", type=launch.positive_int, default=1024, help="channels per modality")
    grid.add_argument("--max-seconds", type=launch.positive_float, default=400.0, help="longest video kept")
    grid.add_argument("--data-seed", type=int, default=0, help="seed of every cell's data")
    grid.add_argument(
        "--epochs-scale",
        type=launch.positive_float,
        default=1.0,
        help="scale every stage's epochs (a shortened grid; --epochs sets them outright)",
    )
    grid.add_argument("--annotations", type=Path, default=ANNOTATIONS, help="the THUMOS14 annotation folder")
    grid.add_argument(
        "--jobs",
        type=launch.positive_int,
        default=1,
        help="runs at a time, each in a process of its own with --threads / JOBS threads (on 2 cores, "
        "--jobs 2 runs the grid faster than one process with 2 threads; a thread count changes CPU "
        "results in their last bits, so compare grids run with the same one)",
    )
    grid.add_argument("--record-run", action="store_true", help=argparse.SUPPRESS)  # a process of --jobs
    grid.add_argument(
        "--report",
        metavar="OUT",
        help="alone: rewrite OUT/grid.md (and fusions.md) from OUT/grid.json, training nothing; "
        "--report OUT IN IN ...: first combine the grids of the IN folders (disjoint cells, the same seeds, "
        "schedule and fusion pairs) into OUT/grid.json",
    )
    grid.add_argument(
        "--diagnostics",
        action="store_true",
        help="also score, on every run's networks, the candidate variants and the segment sources' recall "
        "(studies.candidate_variants) into --out/diagnostics.md",
    )
    return parser


def run_dir(args: argparse.Namespace, cell: Cell, seed: int) -> Path:
    """Where one run of the grid keeps its checkpoints (and, with ``--jobs``, its ``run.json``)."""
    return args.out / cell.name.replace(":", "-") / f"seed{seed}"


def run_one(
    args: argparse.Namespace, cell: Cell, dataset: WSTALDataset, seed: int
) -> Optional[dict[str, Any]]:
    """Train (or resume) and evaluate one cell at one seed: its summary row and, with ``--diagnostics``,
    its candidate variants and segment sources. None on a rank other than 0 of a distributed run."""
    config = launch.make_config(args, seed=seed).with_epochs_scaled(args.epochs_scale)
    runner = launch.make_runner(args, dataset, config, run_dir(args, cell, seed))
    found: dict[str, Any] = {"fusions": {}, "statistics": {}}
    pairs = fusion_pairs(args, config)
    for pair in pairs:
        began = time.perf_counter()
        result = train_and_evaluate(runner, *pair)
        if result is None:
            return None
        row = summary(result)
        log(
            f"[{cell.name} seed {seed} {pair_name(pair)}] {time.perf_counter() - began:.0f} s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in row.items())
        )
        found["fusions"][pair_name(pair)] = row
        trained = runner.train(*pair)  # trained above: every stage is cached
        if pair[0] not in found["statistics"] and args.fusions:
            found["statistics"][pair[0]] = dmf_attention.fusion_statistics(
                trained, dataset.test, dataset.snippet_seconds, device=str(runner.device)
            )
        if "row" not in found:  # the first pair: the bars and the diagnostics read it
            found["row"] = row
            if args.diagnostics:
                found["variants"] = candidate_variants.score_variants(
                    trained, dataset, reuse=result.inference
                )
                found["sources"] = candidate_variants.source_recall(trained, dataset)
    return found


def fusion_pairs(args: argparse.Namespace, config: DetectorConfig) -> list[tuple[str, str]]:
    """The fusion pairs every run trains: ``--fusions``, else the configured pair."""
    return list(args.fusions) if args.fusions else [(config.stage1_fusion, config.stage2_fusion)]


def run_in_processes(args: argparse.Namespace) -> list[tuple[Cell, int, dict[str, Any]]]:
    """``--jobs N``: every (cell, seed) run in a process of its own, N at a time, each with
    ``--threads / N`` threads (at least 1); each writes its ``run.json``, read back here in grid order."""
    threads = max(1, args.threads // args.jobs)
    runs = [(cell, seed) for cell in args.cells for seed in args.seeds]
    pending, running, failed = list(runs), [], []
    while pending or running:
        while pending and len(running) < args.jobs:
            cell, seed = pending.pop(0)
            extra = ["--cells", cell.name, "--seeds", str(seed), "--threads", str(threads), "--jobs", "1"]
            command = [sys.executable, str(Path(__file__).resolve()), *args.argv, *extra, "--record-run"]
            running.append((cell, seed, subprocess.Popen(command)))
        time.sleep(0.2)
        for item in [r for r in running if r[2].poll() is not None]:
            running.remove(item)
            if item[2].returncode != 0:
                failed.append((item[0], item[1], item[2].returncode))
    if failed:
        names = ", ".join(f"{cell.name} seed {seed} (exit code {code})" for cell, seed, code in failed)
        raise GridRunFailed(f"runs failed: {names}", failed[0][2])
    return [
        (cell, seed, json.loads((run_dir(args, cell, seed) / "run.json").read_text())) for cell, seed in runs
    ]


class GridRunFailed(RuntimeError):
    """A run of ``--jobs`` ended with a nonzero exit code (the first one's is :attr:`code`)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def run_grid(args: argparse.Namespace) -> int:
    start, stamp = time.perf_counter(), launch.source_stamp()  # the code that runs
    if args.jobs > 1:
        try:
            found = run_in_processes(args)
        except GridRunFailed as error:
            print(f"robustness_grid.py: error: {error}", file=sys.stderr)
            return error.code
    else:
        found = []
        for cell in args.cells:
            dataset = cell.dataset(args)
            log(f"=== cell {cell.name}: {len(dataset.train)} + {len(dataset.test)} videos ===")
            for seed in args.seeds:
                one = run_one(args, cell, dataset, seed)
                if one is None:  # a rank other than 0 of a distributed run
                    continue
                if args.record_run:  # a process of --jobs: the parent reads it back
                    write_json(run_dir(args, cell, seed) / "run.json", one)
                found.append((cell, seed, one))
        if args.record_run:
            return 0
    cells: dict[str, list[dict[str, float]]] = {}
    fusions: dict[str, dict[str, list[dict[str, float]]]] = {}
    statistics: dict[str, dict[str, list[dict[str, Optional[float]]]]] = {}
    variants: dict[str, list[dict[str, tuple[float, float]]]] = {}
    sources: dict[str, list[dict[str, tuple[float, float]]]] = {}
    for cell, _, one in found:
        cells.setdefault(cell.name, []).append(one["row"])
        for pair, row in one["fusions"].items():
            fusions.setdefault(pair, {}).setdefault(cell.name, []).append(row)
        for stage1, numbers in one["statistics"].items():
            statistics.setdefault(stage1, {}).setdefault(cell.name, []).append(numbers)
        if args.diagnostics:
            variants.setdefault(cell.name, []).append(one["variants"])
            sources.setdefault(cell.name, []).append(one["sources"])
    if not args.dist.is_main:
        return 0
    seconds = time.perf_counter() - start
    payload: dict[str, Any] = {
        "stamp": stamp,
        "runtime_seconds": round(seconds, 1),
        "seeds": list(args.seeds),
        "epochs_scale": args.epochs_scale,
        "preset": launch.preset_name(args),
        "checks": bars(cells),
        "cells": cells,
    }
    if args.fusions:
        payload["fusions"] = fusions
        payload["fusion_statistics"] = statistics
    write_json(args.out / "grid.json", payload)
    text = write_reports(args.out, payload)
    if args.diagnostics:
        diagnostics = f"{stamp}\n\n{candidate_variants.format_diagnostics(variants, sources)}"
        (args.out / "diagnostics.md").write_text(diagnostics + "\n")
        write_json(
            args.out / "diagnostics.json",
            {
                "seeds": list(args.seeds),
                "epochs_scale": args.epochs_scale,
                "variants": variants,
                "sources": sources,
            },
        )
        print(f"\n{diagnostics}")
    print()
    print(text)
    return 0


def write_reports(out: Path, payload: dict[str, Any]) -> str:
    """Write ``grid.md`` (and ``fusions.md`` with a fusion axis) from a grid's ``grid.json`` payload;
    returns what it wrote, for the terminal."""
    text, _ = format_grid(payload["cells"], payload["seeds"])
    stamp = payload.get("stamp", "Trained by an unrecorded commit")
    took = "Grids run in {:.1f} min in all." if "combined" in payload else "Grid run in {:.1f} min."
    text = f"{stamp}\n\n{text}\n\n{took.format(payload['runtime_seconds'] / 60)}"
    (out / "grid.md").write_text(text + "\n")
    if "fusions" in payload:
        tables = format_fusions(payload["fusions"], payload["fusion_statistics"], payload["seeds"])
        fusion_text = f"{stamp}\n\n{tables}"
        (out / "fusions.md").write_text(fusion_text + "\n")
        text = f"{fusion_text}\n\n{text}"
    return text


def combine(payloads: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """One grid from several finished ones with disjoint cells (e.g. a cell added to a fusion axis later):
    their cells, fusion pairs and statistics side by side, the bars over all cells, each run's stamp kept.

    Raises:
        ValueError: the grids differ in seeds, schedule, preset or fusion pairs, or share a cell (naming
            the grids and what differs).
    """
    first, name = payloads[0], names[0]
    for other, other_name in zip(payloads[1:], names[1:]):
        for key in ("seeds", "epochs_scale", "preset"):
            if other.get(key) != first.get(key):
                raise ValueError(f"{key} differ: {first.get(key)!r} in {name}, {other.get(key)!r} in {other_name}")
        pairs, other_pairs = list(first.get("fusions", {})), list(other.get("fusions", {}))
        if pairs != other_pairs:
            raise ValueError(f"fusion pairs differ: {pairs} in {name}, {other_pairs} in {other_name}")
    owner: dict[str, str] = {}
    for payload, source in zip(payloads, names):
        for cell in payload["cells"]:
            if cell in owner:
                raise ValueError(f"cell {cell!r} is in both {owner[cell]} and {source}")
            owner[cell] = source
    stamps = [payload.get("stamp", "Trained by an unrecorded commit") for payload in payloads]
    combined: dict[str, Any] = {
        "stamp": f"Combined by {launch.source_stamp()} from {len(payloads)} grids:\n\n"
        + "\n".join(f"- {source}: {stamp}" for source, stamp in zip(names, stamps)),
        "runtime_seconds": round(sum(p["runtime_seconds"] for p in payloads), 1),
        "combined": list(names),
        "seeds": first["seeds"],
        "epochs_scale": first.get("epochs_scale"),
        "preset": first.get("preset"),
        "cells": {cell: runs for p in payloads for cell, runs in p["cells"].items()},
    }
    combined["checks"] = bars(combined["cells"])
    if "fusions" in first:
        for key in ("fusions", "fusion_statistics"):
            merged: dict[str, dict[str, Any]] = {}
            for payload in payloads:
                for name_, by_cell in payload[key].items():
                    merged.setdefault(name_, {}).update(by_cell)
            combined[key] = merged
    return combined


def report(out: Path, sources: Sequence[Path] = ()) -> int:
    """``--report OUT``: rewrite a finished grid's tables from its ``grid.json``, training nothing (the
    stamp is the run's; a grid of an earlier version, without one, also says which code rendered it).
    ``--report OUT IN IN ...``: first write into OUT the grid that :func:`combine` makes of the INs'."""
    for folder in sources or (out,):
        if not (folder / "grid.json").is_file():
            print(f"robustness_grid.py: error: argument --report: no grid.json in {folder}", file=sys.stderr)
            return 2
    if sources:
        try:
            payload = combine([json.loads((f / "grid.json").read_text()) for f in sources], [str(f) for f in sources])
        except ValueError as error:
            print(f"robustness_grid.py: error: argument --report: {error}", file=sys.stderr)
            return 2
        write_json(out / "grid.json", payload)
    else:
        payload = json.loads((out / "grid.json").read_text())
    payload.setdefault("stamp", f"Trained by an unrecorded commit; rendered by {launch.source_stamp()}")
    print(write_reports(out, payload))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--report"]:
        if len(argv) == 3 or len(argv) < 2:
            parser.error("argument --report: expected --report OUT alone, or OUT and two or more grids")
        return report(Path(argv[1]), [Path(a) for a in argv[2:]])
    args = launch.parse(parser, argv)
    if args.report is not None:  # --report with other flags: it trains nothing, so it takes none
        parser.error("argument --report: expected --report OUT alone, or OUT and two or more grids")
    args.argv = argv
    if any(c.family != "built-in" for c in args.cells) and not args.annotations.is_dir():
        parser.error(f"argument --annotations: no THUMOS14 annotation folder at {args.annotations}")
    if args.jobs > 1 and args.dist.world_size > 1:
        parser.error("argument --jobs: runs a process per run on one machine; not under torchrun")
    return launch.run(parser, args, lambda: run_grid(args))


if __name__ == "__main__":
    sys.exit(main())
