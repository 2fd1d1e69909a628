"""What the run file costs a sweep of N points: bytes written and time, old way and new.

A synthetic sweep (no model, nothing measured): N made-up points, each the size of a
real GPU point (3 repeats, gpu0/cpu/dram components, latencies, codecarbon figures,
about 4.8 KB of JSON), go through carbonbench.runfile as a run would send them.

- old: the run file rewritten whole, atomically and fsync'd, after every point (what
  ``RunFile.add_point`` did before the journal): O(n^2) bytes.
- new: ``RunFile`` as it is: the point appended to ``<run-id>.points.jsonl`` (one synced
  write), the run file written at the start, at most every 30 s, and whole at the end.

Bytes are counted at carbonbench.files' ``os.write`` (every byte the program hands the
kernel, temporary files included) and are exact; ``/proc/self/io`` is read alongside
as a check. Times are wall clock on whatever machine this runs on: indicative only.

The old way at 5,000 points writes about 60 GB, which no shared disk should take: with
``--old-sample K`` (default 50 at 5,000 points) it makes only every K-th rewrite (and
the last) for real, timed, and counts the others' bytes exactly from the lengths of
the points' JSON (checked against every rewrite it does make); the time is then the
sampled rewrites' times x K. At 1,000 points it makes every rewrite, and also prints
the sampled estimate beside it, so the estimate can be judged.

    python benchmarks/runfile_cost.py                      # 1,000 and 5,000 points
    python benchmarks/runfile_cost.py --points 200 --old-sample 10 --dir /tmp/rfc
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import carbonbench.files as files  # noqa: E402
from carbonbench.records import ComponentRecord, PointRecord, RepeatRecord  # noqa: E402
from carbonbench.run_record import RunRecord  # noqa: E402
from carbonbench.runfile import RunFile, _jsonable, run_text, write_run  # noqa: E402


class CountingOs:
    """carbonbench.files' ``os``, counting what is written and synced."""

    def __init__(self, real):
        self._real = real
        self.bytes_written = self.writes = self.fsyncs = 0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def write(self, fd, data):
        n = self._real.write(fd, data)
        self.bytes_written += n
        self.writes += 1
        return n

    def fsync(self, fd):
        self.fsyncs += 1
        return self._real.fsync(fd)


def proc_wchar() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# -- fake data ----------------------------------------------------------------------------
def fake_point(i: int, rng: random.Random) -> PointRecord:
    def num() -> float:
        return rng.uniform(0.001, 1000.0)

    repeats = []
    for r in range(3):
        components = {
            name: ComponentRecord(kind, num(), method, meter)
            for name, kind, method, meter in (
                ("gpu0", "gpu", "counter", "nvml"),
                ("cpu", "cpu", "counter", "rapl"),
                ("dram0", "dram", "counter", "rapl"),
            )
        }
        repeats.append(
            RepeatRecord(
                repeat=r,
                steps=rng.randint(10, 5000),
                tokens=rng.randint(1000, 10**6),
                flops=num() * 1e12,
                model_flops=num() * 1e12,
                start_unix_s=1.7e9 + num(),
                duration_s=num(),
                energy_j=num(),
                method="counter",
                energy_method="counter",
                flags=["extended-window"] if r == 0 else [],
                components=components,
                active_energy_j=num(),
                ttft_s=num() / 1e3,
                tpot_s=num() / 1e3,
                latency_s={k: num() / 1e3 for k in ("p50", "p90", "p99", "mean", "min", "max")},
                codecarbon={
                    "duration_s": num(),
                    "energy_j": num(),
                    "cpu_energy_j": num(),
                    "gpu_energy_j": num(),
                    "ram_energy_j": num(),
                    "emissions_g": num(),
                },
            )
        )
    p = PointRecord(
        key=f"opt-125m/decode/b{i}/p64-n16",
        model="opt-125m",
        workload="decode",
        batch_size=i,
        prompt_tokens=64,
        new_tokens=16,
        repeats=repeats,
        started_unix_s=1.7e9 + num(),
        tokens_per_step=rng.randint(1, 512),
        flops_per_step=num() * 1e9,
        model_flops_per_step=num() * 1e9,
        warmup={"steps": 3, "duration_s": num(), "first_step_s": num()},
        params=125_239_296,
        parallel=None,
    )
    p.finish(peak_memory_bytes=rng.randint(10**8, 10**10))
    return p


def fake_run(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        status="running",
        started_utc="2026-12-01T00:00:00+00:00",
        carbonbench_version="bench",
        fingerprint="0" * 16,
        scenario={"name": "bench", "carbon": {"grid_g_per_kwh": 400.0}, "measurement": {"repeats": 3}},
        environment={"hostname": "bench", "cpu_model": "x" * 40, "gpus": ["NVIDIA H100 80GB HBM3"]},
        meters=[{"kind": "nvml", "detail": "y" * 200}],
        timeline_file=f"{run_id}.timeline.csv",
    )


# -- the two ways -------------------------------------------------------------------------
def point_list_lengths(points: list[PointRecord]) -> list[int]:
    """Each point's length inside an indent=1 run file (two deeper: every line indented 2 more)."""
    return [len(json.dumps(_jsonable(p.to_dict()), indent=1).replace("\n", "\n  ")) + 2 for p in points]


def old_way(directory: Path, points: list[PointRecord], sample_every: int, counter: CountingOs) -> dict:
    """The whole file after every point; every ``sample_every``-th rewrite made for real."""
    path = directory / "old.json"
    run = fake_run("old")
    base = len(run_text(run))  # with "points": []
    lengths = point_list_lengths(points)
    counted = made = 0
    made_s = 0.0
    size_so_far = base + 3  # "[]" becomes "[\n" ... "\n ]"
    t0 = time.perf_counter()
    for k, point in enumerate(points, 1):
        run.points.append(point)
        size_so_far += lengths[k - 1] + (2 if k > 1 else 0)
        if k % sample_every == 0 or k == len(points):
            before = counter.bytes_written
            s0 = time.perf_counter()
            write_run(path, run)
            made_s += time.perf_counter() - s0
            written = counter.bytes_written - before
            assert written == size_so_far, (k, written, size_so_far)  # the count for the others is exact
            made += 1
        counted += size_so_far
    wall_s = time.perf_counter() - t0
    return {
        "bytes": counted,
        "wall_s": wall_s if sample_every == 1 else made_s * sample_every,
        "measured": sample_every == 1,
        "rewrites_made": made,
        "final_file_bytes": path.stat().st_size,
    }


def new_way(directory: Path, points: list[PointRecord], counter: CountingOs) -> dict:
    before = (counter.bytes_written, counter.writes, counter.fsyncs, proc_wchar())
    t0 = time.perf_counter()
    run_file = RunFile.open(directory, lambda: fake_run("new"), "0" * 16, resume=False)
    run_file.save(status="running")
    for point in points:
        run_file.add_point(point)
    run_file.close("complete")
    wall_s = time.perf_counter() - t0
    wchar = proc_wchar()
    return {
        "bytes": counter.bytes_written - before[0],
        "writes": counter.writes - before[1],
        "fsyncs": counter.fsyncs - before[2],
        "wall_s": wall_s,
        "measured": True,
        "proc_wchar": None if wchar is None else wchar - before[3],
        "final_file_bytes": run_file.path.stat().st_size,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--old-sample",
        type=int,
        default=None,
        help="make every K-th old rewrite for real (default: all up to 1,000 points, else 50)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    counter = CountingOs(files.os)
    files.os = counter
    root = Path(tempfile.mkdtemp(prefix="runfile-cost-", dir=args.dir))
    rows = []
    try:
        for n in args.points:
            rng = random.Random(n)
            points = [fake_point(i + 1, rng) for i in range(n)]
            per_point = sum(point_list_lengths(points)) / n
            sample = args.old_sample or (1 if n <= 1000 else 50)
            runs = [("old", sample), *([("old", 50)] if sample == 1 and n >= 500 else []), ("new", None)]
            for way, k in runs:
                directory = root / f"{way}-{n}-{k}"
                directory.mkdir()
                figures = (
                    old_way(directory, points, k, counter) if way == "old" else new_way(directory, points, counter)
                )
                shutil.rmtree(directory)
                label = (
                    way
                    if way == "new"
                    else f"old ({'every rewrite' if k == 1 else f'every {k}th rewrite, times x {k}'})"
                )
                rows.append({"points": n, "way": label, "point_json_bytes": round(per_point), **figures})
                print(
                    f"{n:>6} points ({per_point / 1e3:.1f} KB each)  {label:<40} {figures['bytes'] / 1e6:>12,.1f} MB  {figures['wall_s']:>9.1f} s"
                    f"{'' if figures['measured'] else ' (estimated)'}",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
