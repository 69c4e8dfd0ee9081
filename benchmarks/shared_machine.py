"""The README's first command on a machine shared with another job: wall time per thread setting.

    python benchmarks/shared_machine.py                         # the README command, 2 rounds, busy and idle
    python benchmarks/shared_machine.py --rounds 3 --conditions busy
    python benchmarks/shared_machine.py --extra=--quick         # a shorter command to try settings on

Each round runs every setting once, in an order that alternates from round to round, so that a drift of
the machine's speed falls on every setting alike (paired runs). A setting is a thread flag of
``examples/thumos_two_stage.py`` (``default`` passes none) and, optionally, an OpenMP wait policy
(``threads=2,omp=active`` sets ``OMP_WAIT_POLICY=ACTIVE`` for that run only: how the detector ran before it
chose its threads and waited passively).

Under ``busy`` a competing job runs the whole time: ``--competitor-threads`` PyTorch threads multiplying
matrices in a loop, a CPU-bound job as another user's training would be. It is started before the round
and kept running until the one-minute load average reaches ``--settle-load`` (at most 90 s), so that the
detector starts on a machine whose load shows the other job, as it would on a machine that was already
busy. Under ``idle`` nothing else runs (other users' jobs aside: the load average before each run is
printed beside it).

Prints one markdown table: per condition and setting, the median, min and max wall seconds over the
rounds, the ratio of the median to the best setting's median under the same condition, the threads the
run chose and its mAP AVG 0.1:0.7 (from its results.json), and writes the runs to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "thumos_two_stage.py"

COMPETITOR = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a) * 0.5
"""


def load() -> float:
    return os.getloadavg()[0]


def setting_env(setting: str) -> tuple[list[str], dict[str, str]]:
    """The command-line flags and environment of a setting such as ``default``, ``threads=1`` or
    ``threads=2,omp=active``."""
    flags: list[str] = []
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    for part in setting.split(","):
        name, _, value = part.partition("=")
        if name == "threads":
            flags += ["--threads", value]
        elif name == "omp":
            env["OMP_WAIT_POLICY"] = value.upper()
        elif name != "default":
            raise ValueError(f"setting parts are default, threads=N and omp=POLICY, got {part!r}")
    return flags, env


def start_competitor(threads: int, settle_load: float) -> subprocess.Popen:
    job = subprocess.Popen(
        [sys.executable, "-c", COMPETITOR, str(threads)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while load() < settle_load and time.monotonic() < deadline:
        time.sleep(2)
    return job


def stop(job: Optional[subprocess.Popen]) -> None:
    if job is not None and job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def run_once(setting: str, extra: list[str], out: Path) -> dict[str, Any]:
    flags, env = setting_env(setting)
    before = load()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *extra, *flags, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{setting}: exit code {done.returncode}\n{done.stderr[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    return {
        "setting": setting,
        "seconds": round(seconds, 1),
        "threads": results["torch_threads"],
        "avg": round(100 * results["results"]["two_stage"]["averages"]["0.1:0.7"], 1),
        "load_before": round(before, 2),
    }


def table(runs: list[dict[str, Any]], conditions: list[str], settings: list[str]) -> str:
    lines = [
        "| machine | setting | wall s, median (min-max) | / best median | threads chosen | AVG 0.1:0.7 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for condition in conditions:
        mine = {s: [r for r in runs if r["condition"] == condition and r["setting"] == s] for s in settings}
        medians = {s: statistics.median(r["seconds"] for r in rs) for s, rs in mine.items() if rs}
        best = min(medians.values())
        for setting, rs in mine.items():
            if not rs:
                continue
            seconds = [r["seconds"] for r in rs]
            threads = "/".join(sorted({str(r["threads"]) for r in rs}))
            avgs = "/".join(f"{r['avg']:.1f}" for r in rs)
            lines.append(
                f"| {condition} | `{setting}` | {medians[setting]:.0f} ({min(seconds):.0f}-{max(seconds):.0f}) "
                f"| {medians[setting] / best:.2f} | {threads} | {avgs} |"
            )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--conditions", nargs="+", choices=("busy", "idle"), default=["busy", "idle"])
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["default", "threads=1", "threads=2"],
        help="see the module docstring",
    )
    parser.add_argument("--competitor-threads", type=int, default=2)
    parser.add_argument("--settle-load", type=float, default=1.8)
    parser.add_argument("--extra", default="", help="flags added to every run of the command, e.g. --quick")
    parser.add_argument("--json", type=Path, default=None, help="write the runs here")
    args = parser.parse_args(argv)
    extra = args.extra.split()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for condition in args.conditions:
            for round_ in range(args.rounds):
                order = args.settings if round_ % 2 == 0 else args.settings[::-1]
                for setting in order:
                    competitor = None
                    try:
                        if condition == "busy":
                            competitor = start_competitor(args.competitor_threads, args.settle_load)
                        run = {
                            "condition": condition,
                            "round": round_,
                            **run_once(setting, extra, Path(tmp) / "out"),
                        }
                    finally:
                        stop(competitor)
                    runs.append(run)
                    print(json.dumps(run), flush=True)
    command = " ".join(
        ["python", "benchmarks/shared_machine.py", *(argv if argv is not None else sys.argv[1:])]
    )
    print(f"\n`{command}`: `python examples/thumos_two_stage.py {args.extra}`".rstrip() + "\n")
    print(table(runs, args.conditions, args.settings))
    if args.json is not None:
        args.json.write_text(json.dumps({"command": command, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
