"""Console output of the detector: log lines and progress bars (from rank 0 of a distributed run only),
the commands' argument parser and how warnings print.

Training and inference both report through :func:`log` and :func:`progress`, so neither imports the
other. Progress bars are drawn only on a terminal; redirected to a file, a run writes its log lines (one
per epoch) and nothing else.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterable
from typing import Any, Optional

import torch.distributed

try:  # tqdm is in the [examples] extra; without it progress is plain prints
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - exercised only without tqdm
    _tqdm = None

__all__ = ["HelpFormatter", "Parser", "is_main_process", "log", "progress", "short_warnings"]


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
    """A tqdm bar on stderr when tqdm is installed, ``enabled``, stderr is a terminal (tqdm's own test)
    and this is rank 0; otherwise the iterable."""
    if _tqdm is None or not enabled or not is_main_process():
        return iterable
    return _tqdm(
        iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stderr, disable=None
    )


# -------------------------------------------------------------------------------- the command line


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` that says each default once: ``(default: X)`` is added to an option's help unless the
    help already names its default, or the default is None or a flag's False."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        quiet = action.default in (None, False, argparse.SUPPRESS) or action.default == []
        if "default" in text or quiet or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The detector commands' parser: a one-line usage (``prog [positionals] [options]``, the options
    being in ``--help``), and an argument error printed as that line and the message, as ``git`` and
    ``pip`` do, with exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def _one_line_usage(self) -> str:
        formatter = self._get_formatter()
        positionals = [
            formatter._format_args(action, action.dest)  # argparse's own rendering of nargs
            for action in self._actions
            if not action.option_strings and action.help is not argparse.SUPPRESS
        ]
        return " ".join([self.prog, *positionals, "[options]"])

    def format_usage(self) -> str:
        return f"usage: {self.usage or self._one_line_usage()}\n"

    def format_help(self) -> str:
        usage, self.usage = self.usage, self.usage or self._one_line_usage()
        try:
            return super().format_help()
        finally:
            self.usage = usage

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.format_usage()}{self.prog}: error: {message}\n")


def short_warnings(prog: str) -> None:
    """Print every later warning as one line, ``prog: warning: <message>``, without the source line
    that Python's default format shows (the message says what to do; the line is internal)."""

    def format_warning(message: Any, category: Any, filename: str, lineno: int, line: Any = None) -> str:
        return f"{prog}: warning: {message}\n"

    warnings.formatwarning = format_warning
