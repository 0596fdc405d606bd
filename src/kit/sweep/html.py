"""The sweep page: one self-contained HTML file (``sweep_report.html``) to open in a browser with
no W&B and no server: the sweep table with its paired tests, the plot, and per-sample diffs
between any two points (or a point and the base), chosen on the page.

Everything is inside the file: styles, the script, the plot as a data URI, the samples as JSON.
The per-sample data are capped as kit.sweep.samples says (the page states the cap). Inspect's own
viewer for the jobs' logs is a separate folder (kit.sweep.bundle), linked when it exists.
Choices can be given in the address: ``sweep_report.html#a=base&b=1`` compares the base with job 1.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

from kit.core.sweepdir import REPORT
from kit.sweep.samples import points_by_sample

PAGE = REPORT[3]  # sweep_report.html (kit.core.sweepdir)
BUNDLE = "inspect_bundle"  # kit report --html: Inspect's static viewer of every job's logs


def markdown_table_html(md: str) -> str:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    cells = [[html.escape(c.strip()) for c in ln.strip().strip("|").split("|")] for ln in lines]
    head = "".join(f"<th>{c}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[2:])
    return f'<table id="points"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def plot_html(path: Path) -> str:
    if not path.is_file():
        return "<p>No plot (no finished job).</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img id="plot" alt="score against the swept value" src="data:image/png;base64,{data}">'


def json_script(element_id: str, data) -> str:
    text = json.dumps(data).replace("</", "<\\/")  # a completion holding "</script>" stays data
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def default_pair(summary: dict, samples: dict) -> tuple[str, str]:
    """The base against the best finished point (by its first headline score), else the first two points."""
    ids = [p["id"] for p in samples["points"]]
    jobs = [p for p in samples["points"] if "job" in p]
    rows = {r["job"]: r for r in summary["jobs"]}
    metric = next((m for r in rows.values() for m in sorted(r.get("scores") or {}) if not m.endswith("stderr")), None)
    best = max(jobs, key=lambda p: (rows[p["job"]].get("scores") or {}).get(metric) or 0, default=None)
    first = next((i for i in ids if i.startswith("base")), ids[0] if ids else "")
    second = best["id"] if best else (ids[1] if len(ids) > 1 else first)
    return first, second


def render(sweep_dir: Path, summary: dict, table_md: str, notes: list[str], plot: Path) -> str:
    """The page; ``table_md`` and ``notes``: the sweep summary's table and its explanations
    (kit.sweep.report), ``plot``: its PNG."""
    samples = points_by_sample(summary)
    a, b = default_pair(summary, samples)
    bundle = sweep_dir / BUNDLE / "index.html"
    bundle_line = (
        f"<p>Inspect's viewer of every job's logs: <a href=\"{BUNDLE}/index.html\">{BUNDLE}/</a> "
        f"(serve the sweep dir, e.g. <code>python -m http.server -d {html.escape(str(sweep_dir))}</code>: "
        "the viewer reads its logs over HTTP).</p>"
        if bundle.is_file()
        else f"<p>Inspect's viewer: <code>python -m kit report {html.escape(str(sweep_dir))} --html</code> "
        f"also writes it ({BUNDLE}/), or <code>inspect view --log-dir &lt;job&gt;/inspect_logs</code>.</p>"
    )
    notes_html = "".join(f"<p>{html.escape(ln)}</p>" for ln in notes if ln)
    cap = (
        f"{len(samples['samples'])} of {samples['total']} samples shown"
        f"{' (capped at ' + str(samples['cap']) + ')' if samples['total'] > samples['cap'] else ''}."
    )
    return TEMPLATE.format(
        title=html.escape(f"Sweep {summary['group']}"),
        where=html.escape(str(sweep_dir)),
        when=time.strftime("%Y-%m-%d %H:%M:%S"),
        table=markdown_table_html(table_md),
        notes=notes_html,
        plot=plot_html(plot),
        bundle=bundle_line,
        cap=html.escape(cap),
        data=json_script("samples-data", {**samples, "default": [a, b]}),
        script=SCRIPT,
        style=STYLE,
    )


def write_page(sweep_dir: Path, summary: dict, table_md: str, notes: list[str], plot: Path) -> Path:
    path = sweep_dir / PAGE
    tmp = sweep_dir / f".{PAGE}.tmp"
    tmp.write_text(render(sweep_dir, summary, table_md, notes, plot), encoding="utf-8")
    tmp.replace(path)
    return path


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
#plot { max-width: 100%; border: 1px solid #ddd; }
td.text { white-space: pre-wrap; max-width: 28em; font-family: ui-monospace, monospace; }
tr.better td.b { background: #dff5df; } tr.worse td.b { background: #fbe0e0; }
.controls { margin: 0.5em 0; } .controls select { margin: 0 0.5em; }
#diff-count { font-weight: bold; }
"""

SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById('samples-data').textContent);
  const selA = document.getElementById('point-a'), selB = document.getElementById('point-b');
  const only = document.getElementById('only-differing');
  for (const sel of [selA, selB]) {
    for (const p of data.points) {
      const o = document.createElement('option'); o.value = p.id; o.textContent = p.label; sel.appendChild(o);
    }
  }
  const hash = new URLSearchParams(location.hash.slice(1));
  selA.value = hash.get('a') || data.default[0];
  selB.value = hash.get('b') || data.default[1];
  if (hash.get('all') === '1') only.checked = false;
  function cell(tr, text, cls) {
    const td = document.createElement('td'); td.textContent = text === null || text === undefined ? '-' : String(text);
    if (cls) td.className = cls; tr.appendChild(td);
  }
  function render() {
    const a = selA.value, b = selB.value, body = document.querySelector('#diff tbody');
    body.innerHTML = '';
    let shown = 0, differing = 0;
    for (const s of data.samples) {
      const ca = s.cells[a] || [null, null], cb = s.cells[b] || [null, null];
      const differs = ca[1] !== cb[1] || ca[0] !== cb[0];
      if (differs) differing++;
      if (only.checked && !differs) continue;
      const tr = document.createElement('tr');
      const known = ca[1] !== null && cb[1] !== null;
      tr.className = 'sample' + (known && cb[1] > ca[1] ? ' better' : known && cb[1] < ca[1] ? ' worse' : '');
      tr.dataset.sample = s.task + '/' + s.id + '/' + s.epoch;
      cell(tr, s.task + ' ' + s.id); cell(tr, s.input, 'text'); cell(tr, s.target, 'text');
      cell(tr, ca[0], 'text'); cell(tr, ca[1]); cell(tr, cb[0], 'text b'); cell(tr, cb[1], 'b');
      body.appendChild(tr); shown++;
    }
    document.getElementById('diff-count').textContent =
      differing + ' of ' + data.samples.length + ' samples differ between ' + selA.selectedOptions[0].textContent +
      ' and ' + selB.selectedOptions[0].textContent + ' (score or completion); ' + shown + ' shown.';
    document.getElementById('head-a').textContent = selA.selectedOptions[0].textContent;
    document.getElementById('head-b').textContent = selB.selectedOptions[0].textContent;
    document.body.dataset.rendered = 'yes';
  }
  selA.addEventListener('change', render); selB.addEventListener('change', render); only.addEventListener('change', render);
  render();
})();
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{style}</style></head>
<body>
<h1>{title}</h1>
<p>{where} &middot; written {when} by <code>kit report</code></p>
<h2>Points</h2>
{table}
{notes}
<h2>Plot</h2>
{plot}
<h2>Per-sample diff</h2>
<div class="controls">Compare <select id="point-a"></select> with <select id="point-b"></select>
<label><input type="checkbox" id="only-differing" checked> only samples that differ</label></div>
<p id="diff-count"></p>
<p>{cap}</p>
<table id="diff"><thead><tr><th>sample</th><th>input</th><th>target</th>
<th>completion: <span id="head-a"></span></th><th>score</th><th>completion: <span id="head-b"></span></th><th>score</th>
</tr></thead><tbody></tbody></table>
<h2>Inspect logs</h2>
{bundle}
{data}
<script>{script}</script>
</body></html>
"""
