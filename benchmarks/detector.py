"""Wall time and peak memory of the reference detector on THUMOS-sized data, stage by stage.

    python benchmarks/detector.py                          # 60 + 60 videos, the --data-dir preset, defaults
    python benchmarks/detector.py --size 200+212           # the real THUMOS14 split sizes
    python benchmarks/detector.py --amp off bf16           # one run per precision, same data
    python benchmarks/detector.py --family builtin         # without ../shared: the first synthetic family
    python benchmarks/detector.py --stage3                 # with the Stage-3 student, and its share

The data are THUMOS-sized: 1024 + 1024 channels (the width of the I3D features) and THUMOS lengths.
With ``--family annotations`` (the default where ``../shared/data/thumos14`` exists) the second
synthetic family lays the features around the real THUMOS14 ground truth, keeping videos of at most
``--max-seconds`` (400 s, as in the held-out check of docs/detector.md) and the first N of each split;
with ``--family builtin`` the first family generates N + M videos of its THUMOS-like lengths.

Each run trains and evaluates the detector exactly as ``examples/thumos_two_stage.py --data-dir`` does
(the ``thumos14`` preset and the default fusions, the THUMOS evaluation protocol), with the command line's default threads and
device, and times the phases in pipeline order: base model, pseudo labels (base inference on the
training split), Stage 1, training proposals, Stage 2, with ``--stage3`` (or where the configuration
enables it) the two stages' detections on the training split and Stage 3, and the test split
(inference of every detector, evaluation, proposal recall). With Stage 3 the table also gives the
run's total without its two phases and what they add to it, measured in the same run. Peak memory is the process's peak resident set after each
phase (it only grows). The test-split mAP AVG 0.1:0.7 is printed beside the time, so a speed change that
costs accuracy shows.

Results: JSON under benchmarks/results/ and a markdown table in docs/benchmarks.md between the
``<!-- results: detector-SIZE -->`` markers (``detector-SIZE-scaled`` for runs with ``--epochs-scale``,
whose table extrapolates the training phases to the full preset).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT), str(ROOT / "examples")):
    if path not in sys.path:
        sys.path.insert(0, path)

import roofline  # noqa: E402
import torch  # noqa: E402

from wstal.config import preset_config  # noqa: E402
from wstal.distributed import resolve_amp  # noqa: E402
from wstal.evaluator import evaluate  # noqa: E402
from wstal.launch import available_cores  # noqa: E402
from wstal.pipeline import DetectorRunner, base_strategy_for  # noqa: E402
from wstal.synthetic import make_synthetic_thumos  # noqa: E402
from wstal.synthetic_gt import make_synthetic_from_annotations  # noqa: E402

ANNOTATIONS = ROOT.parent / "shared" / "data" / "thumos14"
PHASES = (
    "base",
    "pseudo labels",
    "Stage 1",
    "train proposals",
    "Stage 2",
    "train detections",
    "Stage 3",
    "test: detect + evaluate",
)
STAGE3_PHASES = ("train detections", "Stage 3")
"""The phases only a run with the Stage-3 student has."""


def peak_rss_gib() -> float:
    """Peak resident set of this process so far, GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_data(family: str, num_train: int, num_test: int, max_seconds: float, seed: int):
    if family == "annotations":
        dataset = make_synthetic_from_annotations(
            ANNOTATIONS,
            seed=seed,
            dim=1024,
            max_videos_per_split=max(num_train, num_test),
            max_seconds=max_seconds,
        )
    else:
        dataset = make_synthetic_thumos(num_train=num_train, num_test=num_test, dim=1024, seed=seed)
    # evaluated as a THUMOS14 folder is (snippet units, ambiguous regions where the family has them)
    return dataclasses.replace(
        dataset, train=dataset.train[:num_train], test=dataset.test[:num_test], evaluation_protocol="thumos"
    )


def run_once(dataset: Any, amp: str, epochs_scale: float, stage3: bool = False) -> dict[str, Any]:
    """Train and evaluate once, timing each phase; returns the row."""
    full = preset_config("thumos14").with_options(stage3=stage3 or None)
    config = full.with_epochs_scaled(epochs_scale)
    stages = ("base", "stage1", "stage2", "stage3")
    s1, s2, s3 = config.stage1_fusion, config.stage2_fusion, config.stage3_fusion
    base = base_strategy_for(s1, s2)
    with tempfile.TemporaryDirectory() as checkpoints:
        runner = DetectorRunner(
            dataset, config, checkpoint_dir=Path(checkpoints), amp=amp, show_progress=False
        )
        steps = {
            "base": lambda: runner.train_stage(runner.base_stage(base)),
            "pseudo labels": lambda: runner.pseudo_labels(base),
            "Stage 1": lambda: runner.train_stage(runner.rpn_stage(s1, base)),
            "train proposals": lambda: runner.training_proposals(s1, base),
            "Stage 2": lambda: runner.train_stage(runner.classifier_stage(s1, s2, base)),
            "train detections": lambda: runner.pseudo_instances(s1, s2),
            "Stage 3": lambda: runner.train_stage(runner.student_stage(s1, s2, s3, base)),
            "test: detect + evaluate": lambda: evaluate(runner.train(s1, s2), dataset),
        }
        phases = [p for p in PHASES if config.student.enabled or p not in STAGE3_PHASES]
        seconds, memory, result = {}, {}, None
        for phase in phases:
            start = time.perf_counter()
            result = steps[phase]()
            seconds[phase] = time.perf_counter() - start
            memory[phase] = peak_rss_gib()
            print(f"  {phase:<24} {seconds[phase]:8.1f} s   peak RSS {memory[phase]:.2f} GiB", flush=True)
    return {
        "amp": amp,
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "peak_rss_gib": memory,
        "map_avg": {name: 100 * getattr(result, name).averages["0.1:0.7"] for name in result.detectors},
        "epoch_factor": {  # full preset epochs / epochs run, per training phase
            phase: getattr(full, n).epochs / getattr(config, n).epochs
            for phase, n in zip(("base", "Stage 1", "Stage 2", "Stage 3"), stages)
        },
    }


def extrapolated_minutes(row: dict[str, Any], without: tuple[str, ...] = ()) -> float:
    """The run's time with the preset's full epochs (leaving out the phases ``without``): training phases
    scale with their epochs, inference does not."""
    seconds = {p: s for p, s in row["seconds"].items() if p not in without}
    return sum(s * row["epoch_factor"].get(p, 1.0) for p, s in seconds.items()) / 60


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = "| phase | " + " | ".join(f"amp {r['amp']} (s)" for r in rows) + " |"
    scale = meta["epochs_scale"]
    scaled = (
        ""
        if scale == 1
        else (
            f" Every stage ran {scale:g} of the preset's epochs; the last row scales the training phases "
            "up to the full preset (inference unchanged)."
        )
    )
    lines = [
        f"{meta['machine']}; {meta['size']} videos ({meta['family']} family, 1024 + 1024 channels, "
        + (
            f"real THUMOS14 durations of at most {meta['max_seconds']:.0f} s), "
            if meta["family"] == "annotations"
            else "THUMOS-like lengths), "
        )
        + f"`thumos14` preset, {meta['threads']} threads, device {meta['device']}.{scaled} "
        f"Command: `{meta['command']}`.",
        "",
        head,
        "| --- |" + " --- |" * len(rows),
    ]
    for phase in PHASES:
        if all(phase in r["seconds"] for r in rows):
            lines.append(f"| {phase} | " + " | ".join(f"{r['seconds'][phase]:.0f}" for r in rows) + " |")
    lines.append("| **total** | " + " | ".join(f"**{r['total_seconds'] / 60:.1f} min**" for r in rows) + " |")
    if all("Stage 3" in r["seconds"] for r in rows):
        without = [r["total_seconds"] - sum(r["seconds"][p] for p in STAGE3_PHASES) for r in rows]
        lines.append("| total without Stage 3 | " + " | ".join(f"{w / 60:.1f} min" for w in without) + " |")
        lines.append(
            "| Stage 3 adds | "
            + " | ".join(f"{100 * (r['total_seconds'] / w - 1):+.0f} %" for r, w in zip(rows, without))
            + " |"
        )
    if scale != 1:
        lines.append(
            "| total at the full preset (extrapolated) | "
            + " | ".join(f"{extrapolated_minutes(r):.0f} min" for r in rows)
            + " |"
        )
        if all("Stage 3" in r["seconds"] for r in rows):
            shares = [
                extrapolated_minutes(r) / extrapolated_minutes(r, without=STAGE3_PHASES) - 1 for r in rows
            ]
            lines.append(
                "| Stage 3 adds at the full preset (extrapolated) | "
                + " | ".join(f"{100 * share:+.0f} %" for share in shares)
                + " |"
            )
    lines.append(
        "| peak RSS (GiB) | " + " | ".join(f"{r['peak_rss_gib'][PHASES[-1]]:.2f}" for r in rows) + " |"
    )
    labels = {
        "three_stage": "Stage 3",
        "two_stage": "two-stage",
        "stage1_only": "Stage 1 + base",
        "base": "base",
    }
    for name, label in labels.items():
        if all(name in r["map_avg"] for r in rows):
            lines.append(
                f"| mAP AVG, {label} | " + " | ".join(f"{r['map_avg'][name]:.1f}" for r in rows) + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="60+60", help="train+test videos, e.g. 60+60 or 200+212")
    parser.add_argument("--family", choices=("annotations", "builtin"), default=None)
    parser.add_argument("--max-seconds", type=float, default=400.0)
    parser.add_argument("--amp", nargs="+", default=["auto"], help="precisions to run: auto off bf16 fp16")
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument(
        "--epochs-scale", type=float, default=1.0, help="scale every stage's epochs (smoke runs)"
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--stage3", action="store_true", help="train the Stage-3 student too")
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    family = args.family or ("annotations" if ANNOTATIONS.exists() else "builtin")
    num_train, num_test = (int(n) for n in args.size.split("+"))
    max_seconds = args.max_seconds if family == "annotations" else float("inf")
    dataset = make_data(family, num_train, num_test, args.max_seconds, args.seed)
    rows = []
    for amp in args.amp:
        resolved = resolve_amp(amp, "cpu")
        print(f"amp {amp} -> {resolved}: {len(dataset.train)} + {len(dataset.test)} videos", flush=True)
        rows.append(
            {**run_once(dataset, resolved, args.epochs_scale, args.stage3), "amp": f"{amp} ({resolved})"}
        )
    meta = {
        "machine": roofline.machine(torch.device("cpu"))["name"],
        "size": f"{len(dataset.train)} + {len(dataset.test)}",
        "family": family,
        "max_seconds": max_seconds,
        "threads": args.threads,
        "device": "cpu",
        "epochs_scale": args.epochs_scale,
        "command": "python benchmarks/detector.py " + " ".join(sys.argv[1:]),
    }
    key = (
        f"detector-{args.size}"
        + ("-stage3" if args.stage3 else "")
        + ("" if args.epochs_scale == 1 else "-scaled")
    )
    (HERE / "results" / f"{key}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown(rows, meta)
    print(table)
    if not args.no_markdown:
        roofline.write_markdown(ROOT / "docs" / "benchmarks.md", key, table, title="Benchmarks")


if __name__ == "__main__":
    main()
