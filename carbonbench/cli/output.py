"""The one machine-readable output: ``--format text|json`` on every command that prints results.

JSON goes through ``echo_json`` only, so every command's output is valid JSON (NaN and
infinities become null, numpy scalars plain numbers) on stdout, with nothing else there.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

FORMATS = ("text", "json")


def format_option(help_text: str = "Output format.", default: str | None = "text"):
    """--format text|json; ``default=None`` lets a command tell "not given" apart (for --json)."""
    return click.option(
        "--format", "fmt", type=click.Choice(FORMATS), default=default, show_default=default is not None, help=help_text
    )


def json_alias_option(func):
    """The old --json flag, kept working as a deprecated spelling of --format json."""
    return click.option("--json", "as_json", is_flag=True, help="Deprecated: the same as --format json.")(func)


def chosen_format(fmt: str | None, as_json: bool) -> str:
    """The format --format and the deprecated --json ask for together."""
    if as_json:
        if fmt == "text":
            raise click.UsageError("--json and --format text contradict each other; give --format only")
        click.echo("warning: --json is deprecated; use --format json", err=True)
        return "json"
    return fmt or "text"


def echo_json(data: Any) -> None:
    click.echo(json.dumps(plain(data), indent=2, allow_nan=False))


def plain(value: Any) -> Any:
    """value as JSON-ready data: non-finite floats as None, numpy scalars and paths as Python values."""
    if hasattr(value, "item") and not isinstance(value, (dict, list, tuple, str)):
        value = value.item()  # numpy and torch scalars
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
