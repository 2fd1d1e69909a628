"""The power timeline file: a CSV beside the run file, appended after every window.

A run of hours at 0.1 s sampling takes hundreds of thousands of samples per component.
Holding them until the end made memory grow all run long, so the runner hands each
point's samples to this file as soon as the point is recorded and the meters forget
them (``MeterSet.drain_timeline``). The columns are fixed, so appends never need to
rewrite the header; a row leaves empty what its meter does not read.

Each append is one write, synced (carbonbench.files.append_bytes: a failed one is cut
back off). A process killed in the middle of one can leave a partial last line:
resuming cuts it off, and readers skip it.
"""

from __future__ import annotations

import bisect
import csv
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

from carbonbench.errors import ResultsError
from carbonbench.files import append_bytes, atomic_write_text
from carbonbench.meters.sampler import TIMELINE_COLUMNS

# rank: which process took the sample (torchrun); window: "<point key>#r<repeat>" or "".
COLUMNS = (*TIMELINE_COLUMNS, "rank", "window")


class Spans:
    """The measured windows so far, to label each sample with the window it fell in.

    Windows are added as they close, so labelling a batch of samples costs a binary
    search per sample, however long the run.
    """

    def __init__(self) -> None:
        self._starts: list[float] = []
        self._spans: list[tuple[float, float, str]] = []

    def add(self, start_unix_s: float, end_unix_s: float, label: str) -> None:
        i = bisect.bisect_right(self._starts, start_unix_s)
        self._starts.insert(i, start_unix_s)
        self._spans.insert(i, (start_unix_s, end_unix_s, label))

    def label(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            i = bisect.bisect_right(self._starts, row["unix_s"]) - 1
            inside = i >= 0 and row["unix_s"] <= self._spans[i][1]
            out.append({**row, "window": row.get("window") or (self._spans[i][2] if inside else "")})
        return out


class TimelineFile:
    """Appends samples to ``path``, each labelled with its window; ``resume=True`` continues
    an existing file."""

    def __init__(self, path: Path, resume: bool = False):
        self.path = Path(path)
        self.rows_written = 0
        self.spans = Spans()
        if resume and self.path.exists():
            self._repair()
        else:
            atomic_write_text(self.path, _csv_text([], header=True))

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        append_bytes(self.path, _csv_text(self.spans.label(rows), header=False).encode("utf-8"))
        self.rows_written += len(rows)

    def _repair(self) -> None:
        """Make a resumed file appendable: our header, no partial last line."""
        try:
            data = self.path.read_bytes()
            header = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
        except (OSError, UnicodeDecodeError) as exc:
            raise ResultsError(
                f"{self.path}: damaged power timeline ({exc}); move it away to resume without it"
            ) from None
        if header == ",".join(COLUMNS):
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a write cut short by a kill: drop the fragment
                with self.path.open("r+b") as f:
                    f.truncate(end)
            return
        # A file from before the columns were fixed: rewrite it once in today's columns.
        try:
            rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ResultsError(
                f"{self.path}: damaged power timeline ({exc}); move it away to resume without it"
            ) from None
        unknown = set().union(*(r.keys() for r in rows)) - set(COLUMNS) if rows else set()
        if unknown:
            raise ResultsError(
                f"{self.path}: power timeline has unexpected columns {sorted(map(str, unknown))}; "
                "move it away to resume without it"
            )
        atomic_write_text(self.path, _csv_text(rows, header=True))


def _csv_text(rows: Iterable[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    # Every meter's rows stay within COLUMNS (a test reads each one); should one ever add a
    # key, losing that column beats losing the run.
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
