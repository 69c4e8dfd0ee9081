"""Console output of the detector: log lines and progress bars, from rank 0 of a distributed run only.

Training and inference both report through these two functions, so neither imports the other.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Optional

import torch.distributed

try:  # tqdm is in the [examples] extra; without it progress is plain prints
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - exercised only without tqdm
    _tqdm = None

__all__ = ["is_main_process", "log", "progress"]


def is_main_process() -> bool:
    """False on the ranks other than 0 of a distributed run (they neither log nor show progress)."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def log(message: str) -> None:
    """Print a line without breaking an active tqdm bar (rank 0 only)."""
    if not is_main_process():
        return
    if _tqdm is not None:
        _tqdm.write(message, file=sys.stdout)
    else:
        print(message, flush=True)


def progress(
    iterable: Iterable[Any], *, desc: str, total: Optional[int] = None, enabled: bool = True
) -> Iterable[Any]:
    """A tqdm bar on stderr when tqdm is installed and ``enabled`` (rank 0 only); otherwise the iterable."""
    if _tqdm is None or not enabled or not is_main_process():
        return iterable
    return _tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stderr)
