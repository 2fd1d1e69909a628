"""Plain aligned tables for the terminal (no extra dependency), and the one way text
read from files reaches it.

Model names, host names, error messages and hardware descriptions come from files
anyone can write: ``echo_safe`` and every table cell pass them through
``carbonbench.reading.printable``, so an escape sequence in a result file (a screen clear,
a window title, an OSC 52 clipboard write) is shown as text, never obeyed.
"""

from __future__ import annotations

from typing import Sequence

import click

from carbonbench.reading import printable


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[printable(h) for h in headers]] + [["" if c is None else printable(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(r[i]) for r in cells[1:] if r[i]) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    click.echo(format_table(headers, rows))


def echo_safe(text: str, **kwargs) -> None:
    """click.echo for text that quotes files: lines kept, every terminal control escaped."""
    click.echo(printable(text, newlines=True), **kwargs)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("%"))
        return True
    except ValueError:
        return False
