"""HTML building blocks: escaping, sortable tables, embedded plotly figures, the page.

Every string that reaches the page passes through one of three doors, each safe for
where it lands:

- ``esc`` for HTML text and attributes (``html.escape`` with quotes);
- ``plot_text`` for strings inside plotly figures: plotly renders trace names, titles,
  tick labels and hover text as its own small HTML dialect, so ``<`` must arrive as
  ``&lt;`` (plotly turns entities back into literal characters, as text);
- ``script_json`` for JSON inside ``<script>``: ``<``, ``>`` and ``&`` become ``\\u003c``
  and friends, so no string, however hostile, can close the script element.

``check_plot_markup`` then refuses any figure whose strings hold a tag other than the
few the report itself writes, so a missed ``plot_text`` fails loudly instead of shipping.
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import Any, Iterable, Sequence

import plotly.io as pio
from plotly.utils import PlotlyJSONEncoder

# Tags the report itself writes into figures (line breaks, bold, hover's <extra>).
_ALLOWED_PLOT_TAGS = {"br", "b", "i", "sub", "sup", "extra"}
_TAG = re.compile(r"<\s*/?\s*([A-Za-z][A-Za-z0-9-]*)")
TEMPLATE = "plotly_white"


def esc(value: Any) -> str:
    """Any value as HTML text or attribute content."""
    return html.escape("" if value is None else str(value), quote=True)


def plot_text(value: Any) -> str:
    """A user string for a plotly figure: shown literally, never parsed as markup."""
    return html.escape("" if value is None else str(value), quote=False)


def script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element, whatever its strings hold."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def check_plot_markup(value: Any, where: str = "figure") -> None:
    """Raise if any string in a figure holds a tag the report does not write itself."""
    if isinstance(value, str):
        for match in _TAG.finditer(value):
            if match.group(1).lower() not in _ALLOWED_PLOT_TAGS:
                raise ValueError(f"{where}: unescaped markup <{match.group(1)}> in a figure string")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_plot_markup(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_plot_markup(v, where)


def _plain(value: Any) -> Any:
    """Figure JSON with NaN/inf as null: JSON has no NaN, and plotly skips nulls.

    Floats are drawn to 6 significant figures (hover text and tables, not these, give the
    values): the 17 digits of a double would be a third of a big sweep's file."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class Figures:
    """Collects figures for one page; their JSON goes inline, plotly.js once."""

    def __init__(self) -> None:
        self.count = 0

    def embed(self, fig, *, caption: str = "") -> str:
        """A figure as a placeholder div plus its JSON; rendered by the page's script."""
        spec = _plain(json.loads(pio.to_json(fig, validate=False, remove_uids=True)))
        layout = spec.setdefault("layout", {})
        layout.pop("template", None)  # the page sets one shared template
        check_plot_markup(spec)
        self.count += 1
        fig_id = f"cb-fig-{self.count}"
        # The div gets the figure's height, so the page lays out before plotly draws.
        height = layout.get("height")
        style = f' style="height:{int(height)}px"' if isinstance(height, (int, float)) else ""
        cap = f'<p class="caption">{caption}</p>' if caption else ""
        return (
            f'<figure class="cb-figure"><div class="cb-chart" id="{fig_id}"{style}></div>'
            f'<script type="application/json" id="{fig_id}-data">{script_json(spec)}</script>{cap}</figure>'
        )


def number(x: Any, digits: int = 4) -> str:
    """A number to ``digits`` significant figures, with thousands separators when large."""
    if x is None:
        return ""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return ""
    if x != 0 and abs(x) >= 10**digits:
        return f"{x:,.0f}"
    if x != 0 and abs(x) < 1e-4:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def mean_ci(mean: Any, half: Any, digits: int = 4) -> str:
    """'mean ± half-width' (half-width absent with one repeat)."""
    m = number(mean, digits)
    if not m:
        return ""
    h = number(half, 2)
    return f"{m} ± {h}" if h else m


class Cell:
    """A table cell: shown text (escaped on output) and the value it sorts by."""

    __slots__ = ("text", "sort", "cls", "raw_html")

    def __init__(self, text: Any, sort: Any = None, cls: str = "", raw_html: bool = False):
        self.text, self.sort, self.cls, self.raw_html = text, sort, cls, raw_html


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "", caption: str = "", table_id: str = ""
) -> str:
    """A sortable table; click a header to sort by it (numbers numerically)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for c in row:
            cell = c if isinstance(c, Cell) else Cell(c, c if isinstance(c, (int, float)) else None)
            text = cell.text if cell.raw_html else esc(cell.text)
            attrs = ""
            if cell.sort is not None and not (isinstance(cell.sort, float) and not math.isfinite(cell.sort)):
                attrs += f' data-sort="{esc(cell.sort)}"'
            if cell.cls:
                attrs += f' class="{esc(cell.cls)}"'
            cells.append(f"<td{attrs}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<div class="table-wrap"><table class="sortable {esc(cls)}"{ident}>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def num_cell(x: Any, digits: int = 4, half: Any = None) -> Cell:
    """A numeric cell, optionally 'mean ± CI', sorting by the value."""
    text = mean_ci(x, half, digits) if half is not None else number(x, digits)
    try:
        # Ten significant figures: past any measurement's precision, and a 5,000-point table's
        # sort keys at 17 digits would be megabytes.
        sort = float(f"{float(x):.10g}")
    except (TypeError, ValueError):
        sort = None
    return Cell(text, sort, "num")


def banner(kind: str, html_text: str) -> str:
    """A coloured notice; ``html_text`` is already escaped by the caller."""
    return f'<div class="banner {esc(kind)}">{html_text}</div>'


def section(anchor: str, title: str, body: str, intro: str = "") -> str:
    lead = f'<p class="intro">{intro}</p>' if intro else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead}{body}</section>'


_CSS = """
:root{--fg:#1d2330;--muted:#5b6474;--line:#dde2ea;--bg:#fff;--accent:#1f6feb}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
background:var(--bg);margin:0}
header.top{background:#10233f;color:#fff;padding:18px 28px}
header.top h1{margin:0 0 4px;font-size:22px}
header.top p{margin:0;color:#c7d2e4}
nav{position:sticky;top:0;z-index:10;background:#f5f7fb;border-bottom:1px solid var(--line);padding:6px 28px}
nav a{margin-right:14px;color:var(--accent);text-decoration:none;font-size:14px}
main{max-width:1240px;margin:0 auto;padding:8px 28px 40px}
section{margin-top:28px;border-top:1px solid var(--line);padding-top:6px}
h2{font-size:20px;margin:10px 0 6px}
h3{font-size:16px;margin:18px 0 6px}
p.intro,p.caption,.note{color:var(--muted)}
p.caption{font-size:13px;margin:2px 0 0}
figure{margin:10px 0 18px}
.cb-chart{width:100%;height:460px}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;border:1px solid}
.banner.warn{background:#fff7e0;border-color:#e8c559}
.banner.info{background:#eaf2ff;border-color:#9dbdf0}
.banner.bad{background:#fdecec;border-color:#e59b9b}
.table-wrap{overflow-x:auto;margin:8px 0 14px}
table{border-collapse:collapse;font-size:13px;width:100%}
caption{caption-side:top;text-align:left;color:var(--muted);padding:4px 0}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f7fb;position:sticky;top:0;cursor:pointer;white-space:nowrap;user-select:none}
th.asc::after{content:" \\25B2";font-size:10px}
th.desc::after{content:" \\25BC";font-size:10px}
td{white-space:nowrap}
td.wrap,table.runs td{white-space:normal;min-width:16em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.win{font-weight:600;color:#116329}
.method{display:inline-block;padding:0 6px;border-radius:9px;font-size:12px;border:1px solid}
.method.counter{background:#e6f6ea;border-color:#6cc287}
.method.integrated{background:#eaf2ff;border-color:#8fb3ee}
.method.estimated{background:#fff2d6;border-color:#e0b24a}
.method.none{background:#eee;border-color:#bbb}
.method.attributed{background:#f3e8ff;border-color:#b58be0}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0}
ul.tight{margin:4px 0;padding-left:20px}
button.cb-csv{font-size:12px;margin:6px 0 0;padding:1px 8px;border:1px solid var(--line);border-radius:4px;
background:#f5f7fb;color:var(--accent);cursor:pointer}
"""

# Sorting: a click on a header sorts by data-sort when every cell has one, else by text.
_SORT_JS = """
(function(){
  function key(td){var s=td&&td.getAttribute('data-sort');if(s!==null&&s!==undefined&&s!==''&&!isNaN(+s))return +s;
    return td?td.textContent.trim().toLowerCase():'';}
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('thead th').forEach(function(th,i){
      th.addEventListener('click',function(){
        var asc=!th.classList.contains('asc');
        t.querySelectorAll('thead th').forEach(function(h){h.classList.remove('asc','desc');});
        th.classList.add(asc?'asc':'desc');
        var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);
          var nx=typeof x==='number',ny=typeof y==='number';
          if(nx!==ny)return nx?-1:1;  // numbers before blanks and text, either way
          return (x<y?-1:x>y?1:0)*(asc?1:-1);});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
})();
"""

# Every table gets a "Download CSV" button, built here rather than in the markup so that
# a page read without scripts shows no dead button. Cells are the text shown, except
# that a number loses its thousands separators and, where the table rounded it, comes
# at the full precision of its sort key; the rows come in
# the order the table is sorted in. A text cell starting with = + - @ is prefixed with
# ' so that a spreadsheet shows it instead of running it as a formula.
_CSV_JS = r"""
(function(){
  function number(s){return s!==null&&s!==''&&!isNaN(+s);}
  function value(c){
    var text=c.textContent.replace(/\s+/g,' ').trim();
    if(c.tagName==='TH')return text;
    var s=c.getAttribute('data-sort'),plain=text.replace(/,/g,'');
    if(number(plain))return number(s)&&+s!==+plain?s:plain;
    return /^[=+\-@]/.test(text)?"'"+text:text;
  }
  function quote(v){return /[",\r\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v;}
  function csv(t){
    return '\ufeff'+[].map.call(t.rows,function(r){return [].map.call(r.cells,function(c){return quote(value(c));}).join(',');})
      .join('\r\n')+'\r\n';
  }
  document.querySelectorAll('main table').forEach(function(t,i){
    var section=t.closest('section');
    var name=(t.id||((section&&section.id)||'table')+'-'+(i+1))+'.csv';
    var b=document.createElement('button');
    b.type='button';b.className='cb-csv';b.textContent='Download CSV';b.setAttribute('data-file',name);
    b.addEventListener('click',function(){
      var a=document.createElement('a');
      a.href=URL.createObjectURL(new Blob([csv(t)],{type:'text/csv;charset=utf-8'}));
      a.download=name;document.body.appendChild(a);a.click();
      setTimeout(function(){URL.revokeObjectURL(a.href);a.remove();},10000);
    });
    var wrap=t.closest('.table-wrap')||t;
    wrap.parentNode.insertBefore(b,wrap);
  });
})();
"""

# Figures are drawn after plotly.js has loaded, from the JSON beside each placeholder.
_PLOT_JS = """
(function(){
  var template=JSON.parse(document.getElementById('cb-template').textContent);
  var config={displaylogo:false,responsive:true,showLink:false,showSendToCloud:false,
    modeBarButtonsToRemove:['sendDataToCloud']};
  document.querySelectorAll('.cb-chart').forEach(function(div){
    var spec=JSON.parse(document.getElementById(div.id+'-data').textContent);
    var layout=spec.layout||{};layout.template=template;
    Plotly.newPlot(div,spec.data||[],layout,config);
  });
})();
"""


def page(*, title: str, subtitle_html: str, nav: Sequence[tuple[str, str]], body: str, plotly_js: str) -> str:
    """The whole document. ``plotly_js`` is the library's source, embedded once."""
    template = json.loads(json.dumps(pio.templates[TEMPLATE].to_plotly_json(), cls=PlotlyJSONEncoder))
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    # A strict CSP as a second line of defence: only inline script/style, no fetches.
    csp = (
        "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; connect-src 'none'"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f'<header class="top"><h1>{esc(title)}</h1><p>{subtitle_html}</p></header>'
        f"<nav>{links}</nav><main>{body}</main>"
        f'<script type="application/json" id="cb-template">{script_json(template)}</script>'
        f"<script>{_SORT_JS}</script>"
        f"<script>{_CSV_JS}</script>"
        f"<script>{plotly_js}</script>"
        f"<script>{_PLOT_JS}</script>"
        "</body></html>\n"
    )


def method_tag(method: Any) -> str:
    m = method if isinstance(method, str) and method else "none"
    cls = next((k for k in ("estimated", "attributed", "integrated", "counter") if k in m), "none")
    return f'<span class="method {cls}">{esc(m)}</span>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'
