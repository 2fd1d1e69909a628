"""`carbonbench run`: measure a scenario, or re-run the scenario recorded in a result file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from carbonbench.cli.table import print_table
from carbonbench.errors import UserError


@click.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Directory for the run file (JSON) and its power timeline (CSV).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Override the scenario's device (auto picks CUDA when present).")
@click.option("--quick", is_flag=True, help="Short windows and 2 repeats: a smoke run, not figures to publish.")
@click.option("--resume", is_flag=True, help="Continue the latest run of this scenario in --out, skipping points already measured.")
def run(source: Path, out_dir: Path, device: str | None, quick: bool, resume: bool) -> None:
    """Measure every point of a scenario (YAML), or re-run one recorded in a result file (JSON).

    Writes OUT/<run-id>.json after every point and OUT/<run-id>.timeline.csv at the end.
    Exit status: 0 when every point was measured, 1 when some point failed, 2 for bad
    input, 130/143 when interrupted by Ctrl-C/SIGTERM (finished points are kept).
    """
    from carbonbench.runner import Hooks, Interrupted, Runner

    scenario = _load_source(source)
    runner_holder = {}

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    hooks = Hooks(log=log)
    runner = Runner(scenario, out_dir, device=device, quick_run=quick, resume=resume, source=str(source), hooks=hooks)
    runner_holder["r"] = runner
    click.echo(f"scenario {scenario.name!r}: {len(runner.points)} points on {runner.device.type} ({str(runner.dtype).removeprefix('torch.')})", err=True)
    with click.progressbar(length=len(runner.points), label="measuring", file=sys.stderr,
                           item_show_func=lambda key: key or "") as bar:
        hooks.point_done = lambda point, record: bar.update(1, f"{point.key} [{record['status']}]")
        try:
            outcome = runner.run()
        except Interrupted as exc:
            click.echo(f"\ninterrupted ({exc}): finished points are saved in {out_dir}", err=True)
            sys.exit(exc.exit_code)
        bar.update(outcome.skipped)
    _summary(outcome.run)
    click.echo(f"results: {outcome.path}")
    if outcome.failed:
        click.echo(f"{outcome.failed} point(s) failed; see the 'error' field of each point", err=True)
        sys.exit(1)


def _load_source(source: Path):
    from carbonbench import scenario as sc

    if source.suffix.lower() == ".json":
        from carbonbench.results import read_run

        run = read_run(source)
        return sc.from_dict(run["scenario"], source=f"{source} (recorded scenario)")
    if source.suffix.lower() not in (".yaml", ".yml"):
        raise UserError(f"{source}: expected a scenario (.yaml) or a result file (.json)")
    return sc.load(source)


def _summary(run: dict) -> None:
    from carbonbench.results import run_rows

    rows = []
    for r in run_rows(run):
        rows.append(r)
    by_point: dict[tuple, list[dict]] = {}
    for r in rows:
        by_point.setdefault((r["model"], r["workload"], r["batch_size"], r["prompt_tokens"], r["new_tokens"], r["seq_len"]), []).append(r)
    table = []
    for (model, workload, batch, prompt, new, seq), reps in by_point.items():
        ok = [r for r in reps if r["status"] == "ok" and r.get("tokens")]
        sizes = {"prefill": f"p{prompt}", "decode": f"p{prompt}+{new}", "train": f"s{seq}"}[workload]
        if not ok:
            table.append([model, workload, batch, sizes, reps[0]["status"], "", "", ""])
            continue
        tps = sum(r["tokens_per_s"] for r in ok) / len(ok)
        jpt = [r["joules_per_token"] for r in ok if r["joules_per_token"] is not None]
        table.append([model, workload, batch, sizes, "ok", f"{tps:,.1f}",
                      f"{sum(jpt) / len(jpt):.4g}" if jpt else "n/a", ok[0]["energy_method"]])
    print_table(["model", "workload", "batch", "sizes", "status", "tokens/s", "J/token", "energy method"], table)
