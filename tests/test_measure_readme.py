"""The README's "Measure your own code" examples, run as they are written.

Every ```python block of the section is executed in order, in one empty working
directory (so results/ and reports/ are the example's own), and every ```sh line through
the CLI; the checks after each block are on what the example itself produced.
"""

from __future__ import annotations

import re
import shlex

import pytest
from support import ROOT

from carbonbench.runfile import read_run

SECTION = "## Measure your own code\n"


def blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, "README.md lost its 'Measure your own code' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```", section, re.S | re.M)


def run_python(code: str) -> dict:
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_the_section_has_the_examples_this_test_checks():
    assert [lang for lang, _ in blocks()] == ["python", "python", "python", "sh", "python"]


def test_the_readme_examples_run_and_do_what_they_say(invoke_cli, tmp_path, monkeypatch, capsys):
    pytest.importorskip("accelerate")
    monkeypatch.chdir(tmp_path)
    (window, decorator, session, report, trainer) = [code for _, code in blocks()]

    ns = run_python(window)
    m = ns["m"]
    assert m.status == "ok" and m.energy_j > 0 and m.method in ("counter", "integrated", "estimated")
    assert m.co2e_g > 0 and "FRA" in m.grid_source and set(m.components) >= {"cpu"}
    assert "J (" in capsys.readouterr().out

    ns = run_python(decorator)
    assert ns["forward"].last.joules_per_token == pytest.approx(ns["forward"].last.energy_j / 512)
    assert ns["epoch"].status == "ok" and ns["epoch"].energy_j > ns["forward"].last.energy_j

    ns = run_python(session)
    run = read_run(ns["s"].path)
    assert run.status == "complete" and run.idle is not None and len(run.points[0].repeats) == 5
    df = ns["df"]
    assert df.joules_per_token.notna().all()
    # Active energy is there unless another process kept the host busy (then it is left out, flagged).
    busy = df["flags"].fillna("").str.contains("busy-")
    assert (df.active_energy_j.notna() | busy).all() and df.active_energy_j[~busy].notna().all()

    for line in report.strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "carbonbench"
        result = invoke_cli(*args[1:])
        assert result.exit_code == 0, result.output
    html = (tmp_path / "reports" / "my-training.html").read_text()
    assert "my-training" in html

    ns = run_python(trainer)
    first = ns["trainer"].state.log_history[0]
    assert first["energy_j"] > 0 and first["energy_method"] in ("counter", "integrated", "estimated")
    assert read_run(ns["energy"].path).status == "complete"
    assert len(ns["energy"].epochs) == 2 and ns["energy"].train.energy_j > 0
