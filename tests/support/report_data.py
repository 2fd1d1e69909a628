"""The report tests' data: the H100 fixture, a tiny CPU run whose scenario name,
description and hostname are markup, and a parser for the report's tables.

The ``hostile_report`` fixture (tests/conftest.py) measures and renders it once per session.
"""

import json
from html.parser import HTMLParser
from pathlib import Path

from support import DATA

FIXTURE_DIR = DATA / "results"
FIXTURE = FIXTURE_DIR / "opt-125m-h100-fixture-20260901T120000000000Z.json"
HOSTILE = "<script>alert(1)</script>"
HOSTILE_DESCRIPTION = 'hostile </script><img src=x onerror=alert(2)> & "quotes"'
HOSTILE_HOST = "<b onmouseover=alert(3)>vm</b><script>alert(4)</script>"

# A real tiny CPU run with a hostile scenario name and description, opt-tiny points that
# the H100 fixture also has (matched) and one it lacks (prefill b1 is in both; all are).
HOSTILE_SCENARIO = f"""\
name: {json.dumps(HOSTILE)}
description: {json.dumps(HOSTILE_DESCRIPTION)}
models: [opt-tiny]
batch_sizes: [1, 2]
workloads:
  prefill: {{prompt_tokens: [16]}}
  decode: {{prompt_tokens: [8], new_tokens: [4], batch_sizes: [1]}}
  train: {{seq_len: [16], batch_sizes: [2]}}
measurement:
  warmup_steps: 1
  warmup_s: 0
  min_seconds: 0.05
  repeats: 2
  idle_baseline_s: 0.1
  codecarbon: false
"""


def make_hostile_run(root: Path) -> Path:
    """Measure the tiny hostile scenario on this CPU; returns the directory of results."""
    from carbonbench import scenario as sc
    from carbonbench.runner import Runner

    root.mkdir(parents=True, exist_ok=True)
    path = root / "hostile.yaml"
    path.write_text(HOSTILE_SCENARIO)
    out = root / "results"
    outcome = Runner(sc.load(path), out).run()
    # Hostnames are user strings too, and unlike the scenario name they reach every figure.
    run = json.loads(outcome.path.read_text())
    run["environment"]["hostname"] = HOSTILE_HOST
    outcome.path.write_text(json.dumps(run))
    return out


class Tables(HTMLParser):
    """Cells of every table by id, as text."""

    def __init__(self):
        super().__init__()
        self.tables, self._id, self._row, self._cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id") or f"t{len(self.tables)}"
            self.tables[self._id] = []
        elif tag == "tr" and self._id:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._id].append(self._row)
            self._row = None
        elif tag == "table":
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def rows_of(html_text, table_id):
    parser = Tables()
    parser.feed(html_text)
    head, *rows = parser.tables[table_id]
    return [dict(zip(head, r)) for r in rows]
