"""`carbonbench run`: measure a scenario, or re-run the scenario recorded in a result file."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import click

from carbonbench.cli.table import print_table
from carbonbench.errors import UserError
from carbonbench.reading import printable


class ThreadsType(click.ParamType):
    """'auto' or a positive integer, checked as the scenario's measurement.threads is."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        from carbonbench.threads import parse

        try:
            return parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path), metavar="SOURCE")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Directory for the run file (JSON) and its power timeline (CSV).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="Override the scenario's device (auto picks CUDA when present).",
)
@click.option(
    "--threads",
    type=ThreadsType(),
    default=None,
    help="torch CPU threads, intra-op and interop: a count, or auto (one per free physical core; see "
    "docs/measurement.md). Overrides the scenario's measurement.threads (default auto).",
)
@click.option("--quick", is_flag=True, help="Short windows and 2 repeats: a smoke run, not figures to publish.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the latest run of this scenario in --out, skipping points already measured.",
)
@click.option(
    "--nproc-per-node",
    type=click.IntRange(min=1),
    default=None,
    help="Run under torchrun with N processes on this node, one per GPU: FSDP2 training, tensor-parallel "
    "or replicated inference, energy summed over ranks (docs/distributed.md). The same as "
    "`torchrun --nproc-per-node N -m carbonbench run SOURCE ...`.",
)
@click.option(
    "--nnodes",
    default="1",
    show_default=True,
    help="Nodes in the job (torchrun's --nnodes); start this same command on every node.",
)
@click.option(
    "--node-rank",
    type=click.IntRange(min=0),
    default=None,
    help="This node's index, for a fixed node order (torchrun's static rendezvous: --rdzv-endpoint is then "
    "node 0's HOST:PORT). Leave out to let the nodes agree on ranks themselves.",
)
@click.option(
    "--rdzv-endpoint",
    default=None,
    metavar="HOST:PORT",
    help="Where the nodes meet (torchrun's c10d rendezvous): an address of the first node and a free port. "
    "Needed with --nnodes above 1.",
)
@click.option(
    "--rdzv-id",
    default=None,
    help="Job id shared by every node of one run (default: $SLURM_JOB_ID, else 'carbonbench').",
)
def run(
    source: Path,
    out_dir: Path,
    device: str | None,
    threads,
    quick: bool,
    resume: bool,
    nproc_per_node: int | None,
    nnodes: str,
    node_rank: int | None,
    rdzv_endpoint: str | None,
    rdzv_id: str | None,
) -> None:
    """Measure every point of a scenario (YAML), or re-run one recorded in a result file (JSON).

    SOURCE is a scenario file, a result file, or the name of a scenario shipped with
    carbonbench (opt-125m, opt-1.3b, opt-sizes, opt-train, ...), from any directory.

    Writes OUT/<run-id>.json, appends each finished point to OUT/<run-id>.points.jsonl
    and the power samples to OUT/<run-id>.timeline.csv after every measured window.
    Exit status: 0 when every point was measured, 1 when some point failed or its results
    could not be written (one line says where they are), 2 for bad input or a run that
    another process is writing, 130/143 when interrupted by Ctrl-C/SIGTERM (finished
    points are kept). With --nproc-per-node (or under torchrun), rank 0 writes the one
    run file, and a rank that dies or hangs ends the run with status 1 and a message naming it.
    """
    # The handlers come first, before torch is imported or the scenario read, so that a
    # signal in any phase ends the run the same way (carbonbench.interrupts).
    from carbonbench.interrupts import Interrupted, interrupts, phase

    state: dict = {"writer": True, "runner": None}
    try:
        with interrupts():
            phase("startup")
            opts = _Options(source, out_dir, device, threads, quick, resume)
            _run(state, opts, _Torchrun(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id))
    except Interrupted as exc:
        run_file = getattr(state["runner"], "run_file", None)
        if state["writer"]:
            saved = f"finished points are saved in {run_file.path}" if run_file else "nothing was measured yet"
            click.echo(f"\ninterrupted ({exc}): {saved}", err=True)
            if run_file is not None and run_file.unsaved:
                click.echo(f"Error: {run_file.unsaved}", err=True)
        sys.exit(exc.exit_code)


def _run(state: dict, opts: _Options, torchrun: _Torchrun) -> None:
    from carbonbench.distributed import DistributedFailure, launched_by_torchrun
    from carbonbench.files import WriteError

    scenario = _load_source(opts.source)
    if opts.threads is not None:  # recorded in the run's scenario, so a re-run of the file uses it too
        scenario = scenario.replace(measurement=dataclasses.replace(scenario.measurement, threads=opts.threads))
    _check_out_dir(opts.out_dir)
    if not launched_by_torchrun() and torchrun.nproc_per_node is not None:
        sys.exit(_launch(scenario, opts, torchrun))
    if not launched_by_torchrun() and torchrun.multi_node:
        raise UserError("--nnodes, --node-rank, --rdzv-endpoint and --rdzv-id need --nproc-per-node")
    from carbonbench.runner import Hooks, Runner

    # Under torchrun: join the job. Rank 0 alone prints and writes; the others stay quiet.
    dist = _join_job(scenario, opts.device) if launched_by_torchrun() else None
    writer = state["writer"] = dist is None or dist.is_writer
    drawn = {}  # "bar" while a progress bar owns the terminal's last line

    def log(msg: str) -> None:
        if not writer:
            return
        msg = printable(msg)  # messages quote names read from files: a terminal must not act on them
        bar = drawn.get("bar")
        if bar is None:
            click.echo(msg, err=True)
            return
        # The runner logs (forecast, idle baseline) while the bar is drawn: wipe the bar's
        # line, print the message there, and draw the bar again below it, showing the
        # message as its current item (a changed line is what makes click redraw).
        click.echo("\r\033[K" + msg, err=True)
        bar.update(0, msg)

    hooks = Hooks(log=log)
    runner = state["runner"] = Runner(
        scenario,
        opts.out_dir,
        device=opts.device,
        quick_run=opts.quick,
        resume=opts.resume,
        source=str(opts.source),
        hooks=hooks,
        dist=dist,
    )
    ranks = f", {dist.world_size} ranks on {dist.nnodes} node(s)" if dist else ""
    log(
        f"scenario {scenario.name!r}: {len(runner.points)} points on {runner.device.type} ({str(runner.dtype).removeprefix('torch.')}, "
        f"{runner.threads['torch_threads']} torch thread(s): {runner.threads['threads_reason']}){ranks}"
    )
    with click.progressbar(
        length=len(runner.points),
        label="measuring",
        file=sys.stderr if writer else io.StringIO(),
        item_show_func=lambda item: _shown(item),
    ) as bar:
        if writer and sys.stderr.isatty():  # off a terminal click prints the label once, and messages go below it
            drawn["bar"] = bar
        hooks.point_done = lambda point, record: bar.update(1, f"{point.key} [{record.status}]")
        try:
            outcome = _recorded(runner.run)() if dist else runner.run()
        except DistributedFailure as exc:
            click.echo(f"\n{exc}", err=True)
            sys.exit(1)
        except WriteError as exc:  # the run could not start its files: nothing was measured
            raise click.ClickException(str(exc)) from None
        finally:
            drawn.clear()
        bar.update(outcome.skipped)
    if dist is not None:
        dist.close()
    if not writer:
        return
    _summary(outcome.run)
    if outcome.unsaved:
        raise click.ClickException(outcome.unsaved)
    click.echo(f"results: {printable(outcome.path)}")
    if outcome.failed:
        click.echo(f"{outcome.failed} point(s) failed; see the 'error' field of each point", err=True)
        sys.exit(1)


def _launch(scenario, opts: _Options, t: _Torchrun) -> int:
    """Start this same run under torchrun (in this process); the exit status."""
    from carbonbench.distributed.launch import check_devices, launch, torchrun_args, worker_args

    torchrun = torchrun_args(t.nproc_per_node, t.nnodes, t.node_rank, t.rdzv_endpoint, t.rdzv_id)
    check_devices(opts.device or scenario.device, t.nproc_per_node)  # here once, not in every worker
    worker = worker_args(opts.source, opts.out_dir, opts.device, opts.quick, opts.resume, opts.threads)
    return launch(torchrun, worker, lambda msg: click.echo(msg, err=True))


@dataclass(frozen=True)
class _Options:
    """What `run` measures and where: passed on unchanged to torchrun's workers."""

    source: Path
    out_dir: Path
    device: Optional[str]
    threads: Any
    quick: bool
    resume: bool


@dataclass(frozen=True)
class _Torchrun:
    """The launcher's flags: only for starting torchrun, never seen by its workers."""

    nproc_per_node: Optional[int]
    nnodes: str
    node_rank: Optional[int]
    rdzv_endpoint: Optional[str]
    rdzv_id: Optional[str]

    @property
    def multi_node(self) -> bool:
        return self.nnodes != "1" or self.node_rank is not None or bool(self.rdzv_endpoint or self.rdzv_id)


def _join_job(scenario, device: str | None):
    """This worker's place in the torchrun job: process group, device, nodes (a collective)."""
    from carbonbench import environment
    from carbonbench.distributed import init_from_env

    device_type = environment.resolve_device(device or scenario.device).type
    return init_from_env(device_type, scenario.parallel.timeout_s)


def _recorded(fn):
    """torchrun's error-file recorder: the launcher can then say why this rank failed."""
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(fn)


def _check_out_dir(out_dir: Path) -> None:
    """--out must be (or be creatable as) a writable directory; checked before anything is written."""
    for p in (out_dir, *out_dir.absolute().parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"--out {out_dir}: {p} is not a directory")
            if not os.access(p, os.W_OK | os.X_OK):
                raise UserError(f"--out {out_dir}: {p} is not writable")
            return


def _shown(item) -> str:
    # A long item would wrap the bar's line, and a wrapped line cannot be redrawn in place.
    text = printable(item or "")
    return text if len(text) <= 60 else text[:57] + "..."


def _load_source(source: Path):
    from carbonbench import scenario as sc

    if source.suffix.lower() == ".json":
        from carbonbench.runfile import read_run

        run = read_run(source)
        if run.scenario.get("kind") == "session":  # carbonbench.measure_session: the user's code, not ours
            raise UserError(f"{source}: a measure_session run (your own code), not a scenario: nothing to re-run")
        return sc.from_dict(run.scenario, source=f"{source} (recorded scenario)")
    if source.suffix.lower() not in (".yaml", ".yml"):
        return sc.load(_shipped_scenario(source))
    return sc.load(source)


def _shipped_scenario(source: Path) -> Path:
    """A SOURCE without .yaml or .json names a scenario shipped with carbonbench (scenarios/)."""
    from importlib import resources

    from carbonbench.config import closest

    shipped = {
        p.name.removesuffix(".yaml"): p
        for p in resources.files("carbonbench.scenarios").iterdir()
        if p.name.endswith(".yaml")
    }
    name = str(source)
    if name in shipped:
        return Path(str(shipped[name]))
    raise UserError(
        f"{source}: expected a scenario (.yaml), a result file (.json) or the name of a shipped "
        f"scenario{closest(name, shipped)} ({', '.join(sorted(shipped))})"
    )


def _summary(run) -> None:
    """The run's points, one line each, from the summaries stored with them."""
    table = []
    for p in run.points:
        sizes = {
            "prefill": f"p{p.prompt_tokens}",
            "decode": f"p{p.prompt_tokens}+{p.new_tokens}",
            "train": f"s{p.seq_len}",
            "serve": f"{p.rate_rps:g} req/s" if p.rate_rps else f"{p.concurrency} clients",
        }.get(p.workload, "")
        ok = [r for r in p.ok_repeats if r.tokens]
        if not ok:
            table.append([p.model, p.workload, p.batch_size, sizes, p.status, "", "", ""])
            continue
        summary = p.summary or {}
        tps, jpt = (summary.get(k, {}).get("mean") for k in ("tokens_per_s", "joules_per_token"))
        table.append(
            [
                p.model,
                p.workload,
                p.batch_size,
                sizes,
                "ok" if p.ok else p.status,
                _figure(tps, ",.1f"),
                _figure(jpt, ".4g"),
                _method(ok),
            ]
        )
    print_table(["model", "workload", "batch", "sizes", "status", "tokens/s", "J/token", "energy method"], table)


def _method(repeats) -> str:
    """The energy method, and what a reader must know about the total: a missing part, a busy host."""
    missing = sorted({c for r in repeats for c, comp in r.components.items() if comp.energy_j is None})
    text = repeats[0].energy_method or "none"
    if missing:
        text += f", partial: no {'+'.join(missing)}"
    if any("busy-host" in r.flags for r in repeats):
        text += ", busy host"
    return text


def _figure(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"
