"""The report in a real browser: headless Chromium, file:// URL, network off.

A probe script, added to a copy of the report before its own scripts, records
JavaScript errors, alert/confirm/prompt calls, blocked requests (CSP) and what loaded,
then counts the charts plotly drew. The page is dumped after a virtual time budget and
the probe's JSON read back. A screenshot is taken too and checked not to be blank.
A second start clicks a table's "Download CSV" button and reads the file the browser saved.

Needs Debian's ``chromium`` (``.ci/run`` installs it). Without it the test is skipped,
unless $CI is set, where a missing browser is a failure.
"""

import csv
import html
import io
import json
import os
import re
import shutil
import struct
import subprocess
import time
import zlib

import pytest
from support.report_data import HOSTILE, HOSTILE_HOST, rows_of

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def script_string(text):
    """A JS string literal that cannot end the probe's own <script> element."""
    return json.dumps(text).replace("<", "\\u003c").replace(">", "\\u003e")


PROBE = """<script>
(function(){
  var cb = window.__cb = {errors: [], warnings: [], alerts: [], blocked: []};
  addEventListener('error', function(e){
    var where = e.target && e.target !== window ? ' (loading ' + e.target.tagName + ')' : '';
    cb.errors.push(String(e.message || e.type) + where + ' ' + (e.filename || '') + ':' + (e.lineno || ''));
  }, true);
  addEventListener('unhandledrejection', function(e){ cb.errors.push('unhandled rejection: ' + e.reason); });
  addEventListener('securitypolicyviolation', function(e){ cb.blocked.push(e.violatedDirective + ' ' + e.blockedURI); });
  ['alert', 'confirm', 'prompt'].forEach(function(f){ window[f] = function(m){ cb.alerts.push(f + ': ' + m); }; });
  console.error = function(){ cb.errors.push('console.error: ' + [].join.call(arguments, ' ')); };
  console.warn = function(){ cb.warnings.push([].join.call(arguments, ' ')); };
  addEventListener('load', function(){ setTimeout(function(){
    var charts = document.querySelectorAll('.cb-chart');
    var drawn = [].filter.call(charts, function(d){
      return d.classList.contains('js-plotly-plot') && d.querySelector('svg.main-svg') &&
             d.querySelectorAll('g.trace, g.point, path.js-line').length > 0; });
    var legend = [].map.call(document.querySelectorAll('.legendtext, .ytick text, .gtitle'),
                             function(e){ return e.textContent; });
    var out = document.createElement('pre');
    out.id = 'cb-probe';
    out.textContent = JSON.stringify({
      errors: cb.errors, warnings: cb.warnings, alerts: cb.alerts, blocked: cb.blocked,
      charts: charts.length, drawn: drawn.length,
      resources: performance.getEntriesByType('resource').map(function(r){ return r.name; }),
      handlers: document.querySelectorAll('[onerror],[onload],[onmouseover],[onclick]').length,
      images: document.querySelectorAll('img').length,
      bodyText: document.body.innerText.indexOf(%(hostile)s) >= 0,
      figureText: legend.filter(function(t){ return t.indexOf(%(host)s) >= 0; }).length
    });
    document.body.appendChild(out);
  }, 1000); });
})();
</script>""" % {"hostile": script_string(HOSTILE), "host": script_string("<script>alert(4)</script>")}


@pytest.fixture(scope="module")
def browser():
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run must `apt-get install -y chromium` before the tests")
        pytest.skip("chromium is not installed (apt-get install chromium); under $CI this fails instead")
    return BROWSER


@pytest.fixture(scope="module")
def report(tmp_path_factory, hostile_report):
    # The hostile tiny CPU run plus the H100 fixture, shared with test_report.py.
    _, out = hostile_report
    probed = tmp_path_factory.mktemp("browser") / "probed.html"
    text = out.read_text(encoding="utf-8")
    # After the charset and CSP <meta>s, before any of the report's scripts.
    probed.write_text(text.replace("<title>", PROBE + "<title>", 1), encoding="utf-8")
    return probed


def chromium(browser, tmp_path, *args, timeout=90):
    # The flags keep Chromium off the network and quiet on a machine without a desktop;
    # the proxy and resolver rules make any request that slips through fail fast.
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--hide-scrollbars",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=8000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_report_renders_in_chromium_without_errors_or_script_injection(browser, report, tmp_path):
    shot = tmp_path / "report.png"
    # One browser start does both: the DOM after the time budget, and the screenshot.
    done = chromium(browser, tmp_path, "--dump-dom", "--window-size=1280,4000", f"--screenshot={shot}", report.as_uri())
    match = re.search(r'<pre id="cb-probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"the probe never reported (rc {done.returncode}): {done.stderr[-2000:]}"
    probe = json.loads(html.unescape(match.group(1)))

    assert probe["errors"] == []
    assert probe["warnings"] == []  # plotly warns about figures it cannot draw as given
    assert probe["alerts"] == []  # the hostile names ran no script
    assert probe["blocked"] == []  # nothing tried to load and hit the CSP
    assert probe["resources"] == []  # everything is inline: no file, font or CDN fetched
    assert probe["handlers"] == 0 and probe["images"] == 0
    assert probe["charts"] >= 10
    assert probe["drawn"] == probe["charts"], f"{probe['charts'] - probe['drawn']} chart(s) not drawn"
    assert probe["bodyText"]  # the hostile scenario name is shown, as text
    assert probe["figureText"] > 0  # and plotly shows the hostile host as text, not markup

    assert shot.exists(), done.stderr[-2000:]
    width, height, distinct = png_summary(shot.read_bytes())
    assert (width, height) == (1280, 4000)
    assert distinct > 32, "the screenshot is blank"
    keep = os.environ.get("CARBONBENCH_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "report.png"))


def png_summary(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixel data): enough to tell blank from drawn."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    pixels = zlib.decompress(idat)
    return width, height, len(set(pixels[::7]))


# Clicks the CSV button of the points table, after the report's own scripts have run.
DOWNLOAD_PROBE = """<script>
addEventListener('load', function(){ setTimeout(function(){
  var button = document.querySelector('button.cb-csv[data-file="points.csv"]');
  var out = document.createElement('pre');
  out.id = 'cb-download';
  out.textContent = JSON.stringify({buttons: document.querySelectorAll('button.cb-csv').length,
                                    tables: document.querySelectorAll('main table').length, found: !!button});
  document.body.appendChild(out);
  if (button) button.click();
}, 500); });
</script>"""


def test_a_table_downloads_as_csv(browser, report, tmp_path):
    downloads = tmp_path / "downloads"
    profile = tmp_path / "profile" / "Default"
    profile.mkdir(parents=True)
    (profile / "Preferences").write_text(
        json.dumps({"download": {"default_directory": str(downloads), "prompt_for_download": False}})
    )
    page = tmp_path / "download.html"
    text = report.read_text(encoding="utf-8")
    page.write_text(text.replace("</body>", DOWNLOAD_PROBE + "</body>", 1), encoding="utf-8")
    done = chromium(browser, tmp_path, "--dump-dom", page.as_uri())
    match = re.search(r'<pre id="cb-download">(.*?)</pre>', done.stdout, re.S)
    assert match, f"the download probe never reported (rc {done.returncode}): {done.stderr[-2000:]}"
    probe = json.loads(html.unescape(match.group(1)))
    assert probe["found"] and probe["buttons"] == probe["tables"] >= 5  # every table has its button

    saved = downloads / "points.csv"
    for _ in range(50):  # the browser may still be writing it
        if saved.exists() and not list(downloads.glob("*.crdownload")):
            break
        time.sleep(0.1)
    assert saved.exists(), sorted(p.name for p in downloads.iterdir()) if downloads.exists() else "no downloads"
    data = saved.read_text(encoding="utf-8-sig")  # with a BOM, so that spreadsheets read it as UTF-8
    head, *rows = list(csv.reader(io.StringIO(data)))
    shown = rows_of(report.read_text(encoding="utf-8"), "points")
    assert head == list(shown[0]) and len(rows) == len(shown)
    records = [dict(zip(head, r)) for r in rows]
    assert any(HOSTILE_HOST in r["machine"] for r in records)  # hostile text, as text
    assert {r["status"] for r in records} == {r["status"] for r in shown}
    for got, want in zip(records, shown):
        assert got["model"] == want["model"] and got["J/token ± 95% CI"] == want["J/token ± 95% CI"]
        assert int(got["batch"]) == int(want["batch"].replace(",", ""))  # "1", not the sort key's "1.0"
        if want["mean W"]:  # shown to 4 figures, saved at full precision
            assert float(got["mean W"]) == pytest.approx(float(want["mean W"].replace(",", "")), rel=1e-3)
            assert len(got["mean W"].replace(".", "")) >= len(want["mean W"].replace(",", "").replace(".", ""))
