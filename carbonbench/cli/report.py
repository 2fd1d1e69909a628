"""`carbonbench report`: one self-contained HTML file from any number of result files."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from carbonbench.reading import printable


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write. Default: reports/<scenario>.html.",
)
@click.option("--title", default=None, help="The report's title (default: 'carbonbench report').")
@click.option("--skip-damaged", is_flag=True, help="Skip unreadable result files with a warning instead of failing.")
def report(results: tuple[Path, ...], out: Path | None, title: str | None, skip_damaged: bool) -> None:
    """Build an HTML report from result files or directories (any number, any machines).

    The file opens offline: plotly.js is embedded once (about 4.8 MB) and nothing is
    fetched from the network. With results from two or more machines, the report
    matches their points and shows who wins where.

    \b
    Example:  carbonbench report results/ -o reports/opt-125m.html
    """
    from carbonbench.errors import UserError
    from carbonbench.files import WriteError
    from carbonbench.report import build_report

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path = build_report(results, out, title=title, on_error="skip" if skip_damaged else "raise")
        except ModuleNotFoundError as exc:
            # plotly is imported only here, so that everything else works without it
            if (exc.name or "").split(".")[0] != "plotly":
                raise
            raise UserError("the HTML report needs plotly, which is not installed: pip install plotly") from None
        except WriteError as exc:  # written atomically: nothing half-written is left
            # Status 2 for a target the user can change (read-only, no permission), 1 for a full disk.
            raise (UserError if exc.exit_status == 2 else click.ClickException)(str(exc)) from None
        finally:
            for w in caught:
                click.echo(f"warning: {printable(w.message)}", err=True)
    click.echo(f"report: {printable(path)} ({path.stat().st_size / 1e6:.1f} MB)")
