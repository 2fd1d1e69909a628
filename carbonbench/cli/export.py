"""`carbonbench export`: result files as one CSV or Parquet table, every repeat or one row per point."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from carbonbench.reading import printable


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet"]),
    default=None,
    help="Table format. Default: from the -o suffix (.csv, .parquet), else csv.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write. Default: CSV on standard output (Parquet needs a file).",
)
@click.option(
    "--what",
    type=click.Choice(["rows", "points"]),
    default="rows",
    show_default=True,
    help="rows: one row per point and repeat, with carbon and cost columns (results.load); "
    "points: one row per point, mean, std and 95% CI half-width (results.summarise).",
)
@click.option("--skip-damaged", is_flag=True, help="Skip unreadable result files with a warning instead of failing.")
def export(results: tuple[Path, ...], fmt: str | None, out: Path | None, what: str, skip_damaged: bool) -> None:
    """Write result files or directories (any number, any machines) as one table.

    \b
    Examples:  carbonbench export results/ -o results.csv
               carbonbench export results/ --what points -o points.parquet
    """
    from carbonbench import export as ex
    from carbonbench.errors import UserError
    from carbonbench.files import WriteError

    chosen = ex.output_format(fmt, out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = ex.table(results, what, on_error="skip" if skip_damaged else "raise")
    for w in caught:
        click.echo(f"warning: {printable(w.message)}", err=True)
    if out is None:
        text = df.to_csv(index=False)
        # On a terminal the CSV is for reading: text from result files must not drive it. Piped
        # to a file or a program, the data goes through as it is (color=True: click would
        # otherwise strip what looks like an ANSI sequence from the values).
        if sys.stdout.isatty():
            click.echo(printable(text, newlines=True), nl=False)
        else:
            click.echo(text, nl=False, color=True)
        return
    try:
        ex.write(df, out, chosen)
    except WriteError as exc:  # written atomically: nothing half-written is left
        # Status 2 for a target the user can change (read-only, no permission), 1 for a full disk.
        raise (UserError if exc.exit_status == 2 else click.ClickException)(str(exc)) from None
    click.echo(f"{what}: {len(df)} written to {out} ({chosen})", err=True)
