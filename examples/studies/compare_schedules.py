"""Does a shortened schedule rank the candidate variants as the full one does? Compares the diagnostics of
two robustness grids (``examples/studies/robustness_grid.py --diagnostics``), cell by cell:

    python examples/studies/robustness_grid.py --out runs/g04 --seeds 0 --epochs-scale 0.4 --diagnostics
    python examples/studies/robustness_grid.py --out runs/g10 --seeds 0 --diagnostics
    python examples/studies/compare_schedules.py runs/g04 runs/g10

For every cell both grids hold: the variants of :data:`studies.candidate_variants.VARIANTS` ordered by their
seed-mean mAP AVG 0.1:0.7 under each grid, Kendall's tau of the two orders (1: the same order) and whether
the best variant is the same. Printed and written, stamped with the commit, to ``FIRST/schedule_ranking.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the wstal package and the studies

from studies.candidate_variants import compare_rankings
from wstal import launch
from wstal.console import Parser


def read_diagnostics(parser: argparse.ArgumentParser, out: Path) -> dict:
    path = out / "diagnostics.json"
    if not path.is_file():
        parser.error(
            f"no {path}: run examples/studies/robustness_grid.py --out {out} --diagnostics (with --resume) first"
        )
    return json.loads(path.read_text())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = Parser(
        prog="compare_schedules.py",
        description="Rank agreement of the candidate variants between two robustness grids' diagnostics.",
    )
    parser.add_argument("first", type=Path, help="a grid's --out (the shortened schedule, say)")
    parser.add_argument("second", type=Path, help="another grid's --out (the full schedule, say)")
    args = parser.parse_args(argv)
    first, second = (read_diagnostics(parser, out) for out in (args.first, args.second))
    table, taus = compare_rankings(first["variants"], second["variants"])
    if not taus:
        parser.error(f"{args.first} and {args.second} share no cell")
    header = (
        f"First grid: {args.first} (epochs x {first['epochs_scale']:g}, seeds {first['seeds']}); "
        f"second: {args.second} (epochs x {second['epochs_scale']:g}, seeds {second['seeds']})"
    )
    text = f"{launch.source_stamp()}\n\n{header}\n\n{table}"
    (args.first / "schedule_ranking.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
