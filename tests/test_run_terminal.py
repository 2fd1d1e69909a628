"""`carbonbench run` on a real terminal (a pseudo-terminal): what the screen ends up showing.

The runner logs its forecast while click's progress bar owns the last line; the forecast
must get a line of its own, not be glued to the end of the bar.
"""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

ESCAPE = re.compile(r"\x1b\[[0-9;?]*([A-Za-z])")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows for raw: carriage return, line feed and erase-to-end handled."""
    lines, line, col, i = [], [], 0, 0
    while i < len(raw):
        m = ESCAPE.match(raw, i)
        if m:
            if m.group(1) == "K":
                del line[col:]
            i = m.end()
            continue
        ch = raw[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            line[col : col + 1] = [ch]
            col += 1
        i += 1
    return lines + ["".join(line).rstrip()]


def run_on_a_terminal(args, cwd, timeout=240) -> str:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "carbonbench", *args],
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform != "linux", reason="pseudo-terminal test")
def test_the_forecast_gets_its_own_line_above_the_bar(tiny_scenario, tmp_path):
    raw = run_on_a_terminal(
        ["run", str(tiny_scenario()), "--out", str(tmp_path / "out"), "--quick", "--device", "cpu"], tmp_path
    )
    lines = screen(raw)
    forecast = [line for line in lines if "points, estimated" in line]
    assert forecast, lines
    for line in forecast:
        assert re.match(r"(WARNING: this sweep would take hours: )?\d+ points, estimated", line), line
    assert any(line.startswith("measuring idle power for") for line in lines), lines
    bars = [line for line in lines if line.startswith("measuring  [")]
    assert bars and "100%" in bars[-1], lines  # the bar was drawn again, and finished
    assert not any("measuring  [" in line and "estimated" in line for line in lines)
