"""Print the numbers of docs/synthetic_broadcast.md's section "What the knob sets, measured".

    python docs/figures/broadcast_statistics.py [ANNOTATIONS]

ANNOTATIONS is the THUMOS14 annotation folder (default ../shared/data/thumos14 beside the checkout). Seed 0
throughout. Printed:

- the table: per difficulty, replays per annotated instance, the share of videos with a replay, the share
  of snippets inside replays (wipes included), the share with the overlay on and the overlay's on/off
  switches between neighbouring snippets per 100 snippets, on the held-out selection (the grid's 60 + 60
  videos of at most 400 s) and on all videos; the structure is drawn before any channel, so it is
  measured at 16 channels;
- the gaps between consecutive instances of a video (from the furthest end so far to the next start,
  negative where they overlap; all videos): their quartiles in snippets;
- the median replay length (wipes included) on the held-out selection at difficulty 1;
- instances per video and per minute (total instances over total minutes), all videos and those of at
  most 400 s;
- the probe: a ridge action-vs-background probe (penalty 1, bias column) on RGB and Flow at 128 channels,
  trained on the held-out selection's training snippets (action: inside an annotated instance, snippets
  rounded as the context family's probes round them; everything else background, replays included),
  scored on its test snippets: the share of replay snippets (their slow motion, wipes left out) and of
  the other background snippets (not in a replay) that score above the median action snippet, at
  difficulties 0.5, 1 and 2.

The replays and the overlay come from the family's own per-video generator, ``_broadcast_model``, run
through the same selection ``make_synthetic_broadcast`` makes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))  # this tree's wstal

from wstal.data import SNIPPET_SECONDS, Video  # noqa: E402  (needs the path above)
from wstal.synthetic_broadcast import _Broadcast, _broadcast_model  # noqa: E402
from wstal.synthetic_gt import _dataset, _read_folder  # noqa: E402

ANNOTATIONS = Path(__file__).resolve().parents[3] / "shared" / "data" / "thumos14"
HELD_OUT = {"max_videos_per_split": 60, "max_seconds": 400.0}  # the grid's 60 + 60 videos
EVERYTHING = {"max_videos_per_split": None, "max_seconds": None}
DIFFICULTIES = (0.0, 0.5, 0.75, 1.0, 2.0)
PROBE_DIFFICULTIES = (0.5, 1.0, 2.0)
STRUCTURE_DIM, PROBE_DIM = 16, 128


def broadcast(
    annotations: Path, difficulty: float, dim: int, selection: dict[str, Optional[float]]
) -> dict[str, list[tuple[Video, _Broadcast]]]:
    """Per split, each selected video of ``make_synthetic_broadcast`` (seed 0) with its broadcast structure:
    the same helpers, in the same order, with the structure kept."""
    folder, classes, truths, ambiguous = _read_folder(annotations)
    draw = _broadcast_model(0, classes, dim, difficulty)
    structure: dict[str, _Broadcast] = {}

    def video(truth):
        drawn, structure[truth.name] = draw(truth, ambiguous.get(truth.name, np.zeros((0, 2))))
        return drawn

    data = _dataset(folder, classes, truths, ambiguous, video, **selection)
    return {
        split: [(v, structure[v.name]) for v in videos]
        for split, videos in (("train", data.train), ("test", data.test))
    }


def shown(value: float, spec: str, unit: str = "") -> str:
    return "0" if value == 0 else f"{value:{spec}}{unit}"


def statistics(videos: list[tuple[Video, _Broadcast]]) -> dict[str, str]:
    """The table's columns for one selection at one difficulty, as the page shows them."""
    snippets = sum(v.num_snippets for v, _ in videos)
    replays = sum(len(b.replays) for _, b in videos)
    in_replays = sum(int((b.replays[:, 1] - b.replays[:, 0]).sum()) for _, b in videos)
    on = sum(int((b.overlay > 0).sum()) for _, b in videos)
    switches = sum(int(np.count_nonzero(np.diff(b.overlay > 0))) for _, b in videos)
    return {
        "replays per instance": shown(replays / sum(len(v.segments) for v, _ in videos), ".3f"),
        "videos with a replay": shown(float(np.mean([len(b.replays) > 0 for _, b in videos])), ".2f"),
        "snippets in replays": shown(100 * in_replays / snippets, ".1f", " %"),
        "overlay on": shown(100 * on / snippets, ".0f", " %"),
        "switches / 100": shown(100 * switches / snippets, ".1f"),
    }


def table(annotations: Path) -> str:
    rows = []
    for d in DIFFICULTIES:
        held_out = broadcast(annotations, d, STRUCTURE_DIM, HELD_OUT)
        everything = broadcast(annotations, d, STRUCTURE_DIM, EVERYTHING)
        every_video = everything["train"] + everything["test"]
        part, whole = statistics(held_out["train"] + held_out["test"]), statistics(every_video)
        rows.append([f"{d:g}", *part.values(), whole["replays per instance"], whole["snippets in replays"]])
    names = list(part)
    names[0] = (
        f"held-out selection ({len(held_out['train'])} + {len(held_out['test'])} videos, at most "
        f"{HELD_OUT['max_seconds']:g} s): {names[0]}"
    )
    header = ["`d`", *names, f"all {len(every_video)} videos: replays per instance", "snippets in replays"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def gaps_and_density(annotations: Path) -> list[str]:
    """The gap quartiles, the median replay, the instance counts and densities, one line each."""
    _, _, truths, _ = _read_folder(annotations)
    gaps = []
    for truth in truths:
        spans = truth.segments[np.argsort(truth.segments[:, 0], kind="stable")] / SNIPPET_SECONDS
        gaps.append(spans[1:, 0] - np.maximum.accumulate(spans[:, 1])[:-1])
    quartiles = np.percentile(np.concatenate(gaps), [25, 50, 75])
    held_out = broadcast(annotations, 1.0, STRUCTURE_DIM, HELD_OUT)
    lengths = np.concatenate(
        [b.replays[:, 1] - b.replays[:, 0] for _, b in held_out["train"] + held_out["test"]]
    )
    median = float(np.median(lengths))
    counts = np.array([len(t.segments) for t in truths])
    seconds = np.array([t.duration for t in truths])
    short = seconds <= HELD_OUT["max_seconds"]
    return [
        f"gaps between consecutive instances, all {len(truths)} videos, snippets: quartiles "
        + " / ".join(f"{q:.1f}" for q in quartiles),
        f"median replay (held-out selection, d = 1, {len(lengths)} replays): {median:g} snippets "
        f"({median * SNIPPET_SECONDS:.0f} s) with its wipes",
        f"{short.sum()} of {len(truths)} videos of at most {HELD_OUT['max_seconds']:g} s: up to {counts[short].max()} "
        f"instances each; the longer ones (up to {seconds.max():,.0f} s): up to {counts[~short].max()}",
        f"instances per minute: {60 * counts.sum() / seconds.sum():.1f} over all videos, "
        f"{60 * counts[short].sum() / seconds[short].sum():.1f} over those of at most {HELD_OUT['max_seconds']:g} s",
    ]


def snippet_rows(
    videos: list[tuple[Video, _Broadcast]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per snippet: RGB and Flow side by side; action (inside an annotated instance); in a replay's slow
    motion; in a replay, wipes included."""
    features, action, slow, replay = [], [], [], []
    for video, structure in videos:
        t = video.num_snippets
        inside, in_slow, in_replay = np.zeros(t, bool), np.zeros(t, bool), np.zeros(t, bool)
        for a, b in np.round(video.segments / SNIPPET_SECONDS).astype(int):
            inside[max(0, a) : min(b, t)] = True
        for start, stop, wipe, *_ in structure.replays:
            in_slow[start + wipe : stop - wipe] = True
            in_replay[start:stop] = True
        features.append(np.hstack([video.rgb, video.flow]).astype(np.float64))
        action.append(inside)
        slow.append(in_slow)
        replay.append(in_replay)
    return tuple(np.concatenate(rows) for rows in (features, action, slow, replay))


def probe(annotations: Path, difficulty: float) -> tuple[float, float]:
    """Share of the test snippets in replays' slow motion and of the other test background snippets (not
    in a replay) scoring above the median test action snippet, under a ridge probe trained with replays
    as background."""
    data = broadcast(annotations, difficulty, PROBE_DIM, HELD_OUT)
    x, action, _, _ = snippet_rows(data["train"])
    x = np.hstack([x, np.ones((len(x), 1))])
    weights = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ action.astype(np.float64))
    x, action, slow, replay = snippet_rows(data["test"])
    scores = np.hstack([x, np.ones((len(x), 1))]) @ weights
    median = np.median(scores[action])
    return float(np.mean(scores[slow] > median)), float(np.mean(scores[~action & ~replay] > median))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", nargs="?", type=Path, default=ANNOTATIONS, help="THUMOS14 annotations")
    args = parser.parse_args(argv)
    print(table(args.annotations))
    print()
    for line in gaps_and_density(args.annotations):
        print(line)
    print()
    print("probe: share of test snippets above the median action snippet")
    for d in PROBE_DIFFICULTIES:
        replays, rest = probe(args.annotations, d)
        print(
            f"d = {d:g}: replay snippets (slow motion) {100 * replays:.0f} %, other background {100 * rest:.0f} %"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
