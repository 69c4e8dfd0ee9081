"""Time the detection evaluator at THUMOS14 scale: 212 videos x 2,000 detections over 20 classes.

Ground truth is random but THUMOS-like (16 instances per video on average, median about 3 s); half of the
detections jitter around ground truth (so matching has real work: candidates, duplicates, contested ground
truth), half are random segments of random classes. Prints the median wall time of several runs, split into
building the ``Detection`` tuples (the caller's cost) and ``evaluate_detections`` itself.

    python benchmarks/evaluation.py                       # 212 videos x 2,000 detections x 20 classes
    python benchmarks/evaluation.py --detections 20000    # a heavier detector output
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the example package lives there

from wstal.data import Video
from wstal.evaluation import TIOU_THRESHOLDS, Detection, evaluate_detections, temporal_iou


def make_inputs(
    num_videos: int, per_video: int, num_classes: int, seed: int
) -> tuple[list[Video], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Videos with ground truth, and per video (labels, scores, segments) of its detections."""
    gt_rng, det_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    videos, raw = [], {}
    for i in range(num_videos):
        duration = float(gt_rng.uniform(60, 400))
        count = int(gt_rng.integers(4, 29))
        starts = gt_rng.uniform(0, duration - 10, count)
        segments = np.stack([starts, starts + gt_rng.lognormal(np.log(3.0), 0.7, count)], axis=1)
        video_classes = gt_rng.choice(num_classes, size=int(gt_rng.integers(1, 3)), replace=False)
        classes = video_classes[gt_rng.integers(0, len(video_classes), count)]
        label = np.zeros(num_classes)
        label[classes] = 1
        name = f"video_{i:04d}"
        videos.append(Video(name, np.zeros((1, 1)), np.zeros((1, 1)), label, segments, classes, duration))

        near, far = per_video // 2, per_video - per_video // 2
        pick = det_rng.integers(0, count, near)
        far_starts = det_rng.uniform(0, duration, far)
        detected = np.concatenate(
            [
                segments[pick] + det_rng.normal(0, 0.75, (near, 2)),
                np.stack([far_starts, far_starts + det_rng.lognormal(1.0, 1.0, far)], axis=1),
            ]
        )
        detected[:, 1] = np.maximum(detected[:, 1], detected[:, 0])
        labels = np.concatenate([classes[pick], det_rng.integers(0, num_classes, far)])
        raw[name] = (labels, det_rng.random(per_video), detected)
    return videos, raw


def to_detections(raw: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, list[Detection]]:
    return {
        name: [
            Detection(int(k), float(s), float(a), float(b)) for k, s, (a, b) in zip(labels, scores, segments)
        ]
        for name, (labels, scores, segments) in raw.items()
    }


def plain_ap(videos: list[Video], detections: dict[str, list[Detection]], num_classes: int) -> np.ndarray:
    """The ActivityNet evaluator's loop (one detection at a time, numpy per detection): the baseline."""
    thresholds = np.array(TIOU_THRESHOLDS)
    ap = np.full((len(thresholds), num_classes), np.nan)
    for c in range(num_classes):
        gt = {v.name: v.segments[v.segment_classes == c] for v in videos}
        num_gt = sum(len(g) for g in gt.values())
        if num_gt == 0:
            continue
        ranked = [(v.name, d) for v in videos for d in detections.get(v.name, []) if d.label == c]
        ranked.sort(key=lambda item: -item[1].score)  # stable: ties keep video, then list order
        taken = {name: np.zeros((len(thresholds), len(g)), dtype=bool) for name, g in gt.items()}
        hits = np.zeros((len(thresholds), len(ranked)))
        for i, (name, d) in enumerate(ranked):
            ious = temporal_iou([[d.start, d.end]], gt[name])[0]
            order = np.argsort(-ious, kind="stable")
            for t, threshold in enumerate(thresholds):
                for g in order:
                    if ious[g] < threshold - 1e-9:
                        break
                    if not taken[name][t, g]:
                        taken[name][t, g] = True
                        hits[t, i] = 1
                        break
        precision = np.cumsum(hits, axis=1) / np.arange(1, len(ranked) + 1)
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        ap[:, c] = (envelope * hits).sum(axis=1) / num_gt
    return ap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=212)
    parser.add_argument(
        "--detections", type=int, default=2000, help="detections per video, all classes together"
    )
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-videos", type=int, default=10, help="videos for the plain-loop comparison"
    )
    args = parser.parse_args()

    videos, raw = make_inputs(args.videos, args.detections, args.classes, args.seed)
    build, evaluate, thumos = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        detections = to_detections(raw)
        build.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = evaluate_detections(videos, detections, args.classes)
        evaluate.append(time.perf_counter() - start)
        start = time.perf_counter()
        evaluate_detections(videos, detections, args.classes, snippet_units=True)
        thumos.append(time.perf_counter() - start)

    total = args.videos * args.detections
    print(
        f"{args.videos} videos x {args.detections} detections ({total:,} in all) x {args.classes} classes, "
        f"{sum(len(v.segments) for v in videos):,} ground-truth instances, 7 tIoU thresholds"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}"
    )
    print(f"median of {args.repeats} runs:")
    print("| step | seconds |")
    print("| --- | --- |")
    print(f"| build Detection tuples (caller) | {statistics.median(build):.2f} |")
    print(f"| evaluate_detections (seconds) | {statistics.median(evaluate):.2f} |")
    print(f"| evaluate_detections (snippet_units=True) | {statistics.median(thumos):.2f} |")
    print(f"mAP@AVG 0.1:0.7 of these random detections: {100 * result.averages['0.1:0.7']:.1f}")

    subset = videos[: args.baseline_videos]
    subset_detections = {v.name: detections[v.name] for v in subset}
    start = time.perf_counter()
    fast = evaluate_detections(subset, subset_detections, args.classes).ap
    fast_time = time.perf_counter() - start
    start = time.perf_counter()
    slow = plain_ap(subset, subset_detections, args.classes)
    slow_time = time.perf_counter() - start
    same = np.allclose(fast, slow, equal_nan=True)
    print(
        f"baseline on the first {len(subset)} videos ({len(subset) * args.detections:,} detections): "
        f"evaluate_detections {fast_time:.3f} s, plain per-detection loop {slow_time:.2f} s "
        f"({slow_time / fast_time:.0f}x), same AP: {same}"
    )


if __name__ == "__main__":
    main()
