"""Write the configuration table of docs/configuration.md from the dataclasses of ``wstal.config``.

    python docs/figures/make_config_table.py           # rewrite the table between the page's markers
    python docs/figures/make_config_table.py --check   # exit 1 if the page's table is out of date

One row per field of ``DetectorConfig``, nested settings as dotted names (``stage1.epochs``): its type, its
default, each preset's value where it differs, and the field's line of its class's ``Attributes:``
docstring section (empty where the class has none).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]  # this tree's dmf_fusion and wstal

from wstal import config  # noqa: E402  (needs the path above)

PAGE = ROOT / "docs" / "configuration.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def presets() -> dict[str, Any]:
    """The presets shown beside the default, by name: the one place that knows where they come from."""
    return {name: config.preset_config(name) for name in config.PRESETS if name != "default"}


def descriptions(cls: type) -> dict[str, str]:
    """Field name -> its description in the ``Attributes:`` section of ``cls``'s docstring, on one line."""
    _, _, section = (inspect.getdoc(cls) or "").partition("Attributes:\n")
    found: dict[str, str] = {}
    names: list[str] = []
    for line in section.splitlines():
        if line and not line.startswith(" "):  # the next section
            break
        entry = re.match(r" {4}(\w+(?:, \w+)*): (.*)", line)
        if entry:
            names = entry[1].split(", ")
            found.update(dict.fromkeys(names, entry[2]))
        elif line.strip():
            for name in names:
                found[name] += " " + line.strip()
    return found


def show_type(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return " / ".join(f"`{choice}`" for choice in typing.get_args(hint))
    plain = typing.get_origin(hint) is None and hasattr(hint, "__name__")
    return f"`{hint.__name__ if plain else str(hint).replace('typing.', '')}`"


def show_value(value: Any) -> str:
    def plain(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:g}"
        if isinstance(v, tuple):
            shown = [plain(x) for x in v]
            return ", ".join(shown if len(v) <= 4 else [*shown[:2], "…", shown[-1]])
        return str(v)

    return f"`{plain(value)}`"


def show_text(text: str) -> str:
    """Sphinx roles and double backticks as plain markdown code; pipes escaped for the table."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    return text.replace("|", "\\|")


def rows(default: Any, others: dict[str, Any], prefix: str = "") -> list[list[str]]:
    hints = typing.get_type_hints(type(default))
    about = descriptions(type(default))
    out = []
    for f in dataclasses.fields(default):
        value = getattr(default, f.name)
        preset_values = {name: getattr(other, f.name) for name, other in others.items()}
        if dataclasses.is_dataclass(value):
            out += rows(value, preset_values, f"{prefix}{f.name}.")
            continue
        differ = [show_value(v) if v != value else "" for v in preset_values.values()]
        name, about_it = f"`{prefix}{f.name}`", show_text(about.get(f.name, ""))
        out.append([name, show_type(hints[f.name]), show_value(value), *differ, about_it])
    return out


def table() -> str:
    others = presets()
    header = ["field", "type", "default", *(f"`{name}` preset" for name in others), "description"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(config.DetectorConfig(), others)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page's table is out of date")
    parser.add_argument("--page", type=Path, default=PAGE, help="the page holding the markers")
    args = parser.parse_args()
    text = args.page.read_text()
    if text.count(START) != 1 or text.count(END) != 1:
        parser.error(f"{args.page} must hold {START} and {END} once each")
    head, rest = text.split(START)
    current, tail = rest.split(END)
    block = f"\n{table()}\n"
    if args.check:
        if current != block:
            script = Path(__file__).resolve().relative_to(ROOT)
            print(f"{args.page}: the configuration table is out of date; run python {script}")
            return 1
        return 0
    args.page.write_text(head + START + block + END + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
