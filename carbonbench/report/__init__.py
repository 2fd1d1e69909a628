"""The HTML report: any number of result files in, one self-contained HTML file out.

    from carbonbench.report import build_report
    build_report(["results/", "reports/reference/h100/"], "reports/compare.html")

The file opens with no network: plotly.js is embedded once, inline, with every figure's
data beside its placeholder; there are no fonts, MathJax or CDN links to fetch, and a
Content-Security-Policy forbids fetching anything. Layout: data.py reads the runs;
summary_section, comparison_section, chart_sections, training_section and tables_section
write the sections; plot.py holds what the figures share and cost_figures, tradeoff_figures,
breakdown_figure, timeline_figure, carbon_figures and comparison_figure draw them; compare.py
matches points across machines, training.py extrapolates, html.py escapes and assembles.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from pathlib import Path
from typing import Iterable, Optional

from carbonbench.files import atomic_write_text, safe_name
from carbonbench.report.data import ReportData, load

REPORTS_DIR = Path("reports")

__all__ = ["build_report", "render", "default_output", "load", "ReportData"]


def default_output(data: ReportData, reports_dir: Path = REPORTS_DIR) -> Path:
    """reports/<scenario>[-vs-...].html, named from the runs' scenarios (made file-safe)."""
    names = list(dict.fromkeys(str(r.record.scenario_name or "run") for r in data.runs))
    machines = len({r.machine for r in data.runs})
    stem = "-".join(safe_name(n, 40) for n in names[:3]) + (f"-{machines}-machines" if machines > 1 else "")
    return reports_dir / f"{safe_name(stem, 100)}.html"


def render(data: ReportData, *, title: Optional[str] = None) -> str:
    """The report's HTML text."""
    # Drawing needs plotly, reading does not: report.load works where plotly is missing.
    import plotly.offline

    from carbonbench import __version__
    from carbonbench.report.html import Figures, esc, page
    from carbonbench.report.plot import colors as run_colors

    figures = Figures()
    colors = run_colors(r.label for r in data.runs)
    with without_default_template():
        body = _body(data, figures, colors)
    scenarios = ", ".join(dict.fromkeys(str(r.record.scenario_name) for r in data.runs))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (
        f"{len(data.runs)} run(s) on {len({r.machine for r in data.runs})} machine(s); scenario(s): "
        f"{esc(scenarios)}. Generated {esc(now)} by carbonbench {esc(__version__)}."
    )
    nav = [
        ("summary", "Summary"),
        ("comparison", "Comparison"),
        ("cost", "Cost per token"),
        ("tradeoff", "Trade-off"),
        ("serve", "Served load"),
        ("breakdown", "Energy breakdown"),
        ("timeline", "Power timeline"),
        ("carbon", "Carbon"),
        ("training", "Training"),
        ("tables", "Tables"),
    ]
    return page(
        title=title or "carbonbench report",
        subtitle_html=subtitle,
        nav=nav,
        body=body,
        plotly_js=plotly.offline.get_plotlyjs(),
    )


def _body(data: ReportData, figures, colors: dict[str, str]) -> str:
    """The sections, in reading order: what was run, who wins, then the detail."""
    from carbonbench.report import chart_sections as charts
    from carbonbench.report import comparison_section, summary_section, tables_section, training_section
    from carbonbench.report.serve import serve_section

    return "".join(
        [
            summary_section.summary(data),
            comparison_section.comparison(data, figures, colors),
            charts.cost(data, figures, colors),
            charts.tradeoff(data, figures, colors),
            serve_section(data),
            charts.breakdown(data, figures),
            charts.timelines(data, figures),
            charts.carbon(data, figures, colors),
            training_section.training_section(data, figures, colors),
            tables_section.tables(data),
        ]
    )


@contextlib.contextmanager
def without_default_template():
    """Figures built without plotly's default template: the page sets one template for all,
    and copying it into every figure (only to strip it again) is most of their build time."""
    import plotly.io as pio

    saved = pio.templates.default
    pio.templates.default = None
    try:
        yield
    finally:
        pio.templates.default = saved


def build_report(
    paths: Iterable[str | Path],
    out: Optional[str | Path] = None,
    *,
    title: Optional[str] = None,
    on_error: str = "raise",
) -> Path:
    """Read result files/directories and write the report; returns the file written."""
    data = load(paths, on_error=on_error)
    target = Path(out) if out is not None else default_output(data)
    atomic_write_text(target, render(data, title=title))
    target.chmod(0o644)  # a report is for sharing; the atomic write's temporary file was private
    return target
