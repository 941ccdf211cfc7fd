"""``report.html``: every scan of a segmentation run on one self-contained page.

Written by :func:`pipeline.inference.segmenter.segment_inputs` into the output folder after each scan (atomically:
a browser that reloads it during a long run sees the previous or the new page, never half of one). The page holds
no reference to anything outside that folder and loads nothing from the network: CSS and the little JavaScript for
sorting and filtering are inline, the volume plot is inline SVG, thumbnails and links point to the QC pictures and
masks beside it (relative links, so the folder can be moved or zipped).

Rows come from ``lung_stats.csv`` (so a rerun that skips finished scans keeps them) plus this run's failed inputs.
The page reads ``#show=flagged|failed|all&sort=<column>&order=asc|desc`` from its address on load, so a view can
be bookmarked (and a headless browser can check sorting and filtering).

Why our own: MONAI has no report of a segmentation run; a template engine or plotting library for one page would
be a dependency for ~150 lines.
"""

from __future__ import annotations

import csv
import html
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.cases import CaseResult
from pipeline.files import atomic_write_text
from pipeline.inference.outputs import REPORT_HTML, STATS_CSV

__all__ = ["COLUMNS", "REPORT_HTML", "report_rows", "write_run_report"]

#: table columns after the picture: (key, header, kind); keys are lung_stats.csv's columns, plus name and status
COLUMNS = (("name", "scan", "text"), ("status", "status", "text"), ("right_lung_ml", "right mL", "number"),
           ("left_lung_ml", "left mL", "number"), ("total_lung_ml", "total mL", "number"),
           ("mean_hu_right", "mean HU right", "number"), ("mean_hu_left", "mean HU left", "number"),
           ("flags", "flags", "text"), ("runtime_s", "runtime s", "number"))
_PLOT_W, _PLOT_H, _PLOT_PAD = 720, 120, 30

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.4em}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:middle}
th{cursor:pointer;background:#f3f3f3;position:sticky;top:0;user-select:none}th.asc::after{content:" \\25B2"}
th.desc::after{content:" \\25BC"}td.text,th.text{text-align:left}tr.failed td{background:#fde8e8}
tr.flagged td{background:#fff6db}img.thumb{height:64px;display:block}#summary td{text-align:left}
.flag{display:inline-block;background:#c62828;color:#fff;border-radius:3px;padding:0 4px;margin:1px;font-size:12px}
.controls{margin:.6em 0}.controls label{margin-right:1em}svg text{font-size:11px;fill:#444}
"""

_JS = """
(function(){
const table=document.getElementById('cases'),body=table.tBodies[0],heads=[...table.tHead.rows[0].cells];
function key(row,i,kind){const c=row.cells[i],v=c.dataset.value;if(kind==='number'){const x=parseFloat(v);
return isNaN(x)?Infinity:x;}return (v||c.textContent).toLowerCase();}
function sortBy(name,order){const i=heads.findIndex(h=>h.dataset.key===name);if(i<0)return;const kind=heads[i].dataset.kind;
const rows=[...body.rows];rows.sort((a,b)=>{const x=key(a,i,kind),y=key(b,i,kind);return (x<y?-1:x>y?1:0)*(order==='desc'?-1:1);});
rows.forEach(r=>body.appendChild(r));heads.forEach(h=>h.classList.remove('asc','desc'));heads[i].classList.add(order);
state.sort=name;state.order=order;save();}
function show(what){[...body.rows].forEach(r=>{r.hidden=!(what==='all'||(what==='flagged'&&r.dataset.flags)||
(what==='failed'&&r.dataset.status==='failed'));});document.querySelectorAll('input[name=show]').forEach(b=>b.checked=b.value===what);
document.getElementById('shown').textContent=[...body.rows].filter(r=>!r.hidden).length;state.show=what;save();}
const state={};function save(){const p=new URLSearchParams(state).toString();if(location.hash.slice(1)!==p)history.replaceState(null,'','#'+p);}
heads.forEach(h=>{if(h.dataset.key)h.addEventListener('click',()=>sortBy(h.dataset.key,state.sort===h.dataset.key&&state.order==='asc'?'desc':'asc'));});
document.querySelectorAll('input[name=show]').forEach(b=>b.addEventListener('change',()=>show(b.value)));
const p=new URLSearchParams(location.hash.slice(1));if(p.get('sort'))sortBy(p.get('sort'),p.get('order')==='desc'?'desc':'asc');
show(['flagged','failed'].includes(p.get('show'))?p.get('show'):'all');
})();
"""


def _rel(path: str | os.PathLike | None, out_dir: Path) -> str | None:
    """``path`` relative to ``out_dir`` (forward slashes) when it lies inside it and exists, else ``None``."""
    if not path:
        return None
    p = Path(path)
    p = p if p.is_absolute() else Path.cwd() / p
    try:
        rel = p.resolve().relative_to(out_dir.resolve())
    except ValueError:
        return None
    return rel.as_posix() if p.is_file() else None


def report_rows(out_dir: Path, results: Sequence[CaseResult], qc_path: Any) -> list[dict[str, Any]]:
    """One dict per scan: ``lung_stats.csv``'s rows (earlier runs' included), then this run's failed inputs.

    Args:
        out_dir: the output folder.
        results: this run's results so far.
        qc_path: function input path -> its QC picture's path.
    """
    rows: list[dict[str, Any]] = []
    stats = out_dir / STATS_CSV
    if stats.is_file():
        with stats.open(newline="") as f:
            for r in csv.DictReader(f):
                rows.append({**r, "name": _display_name(r["input"]), "status": "done", "message": "",
                             "qc": _rel(qc_path(r["input"]), out_dir), "mask": _rel(r.get("output"), out_dir)})
    done = {r["input"] for r in rows}
    for res in results:
        if res.status == "failed" and res.case not in done:
            rows.append({"input": res.case, "name": _display_name(res.case), "status": "failed", "message": res.message,
                         "flags": "", "runtime_s": f"{res.runtime_s:.2f}" if res.runtime_s else "", "qc": None,
                         "mask": None})
    return rows


def _display_name(source: str) -> str:
    return Path(str(source).rstrip("/\\")).name or str(source)


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _cell(row: Mapping[str, Any], key: str, kind: str) -> str:
    if key == "flags":
        flags = str(row.get("flags") or "").split()
        return f'<td class="text" data-value="{html.escape(" ".join(flags))}">' + "".join(
            f'<span class="flag">{html.escape(f)}</span>' for f in flags) + "</td>"
    if key == "name":
        link = row.get("mask")
        label = html.escape(row["name"])
        inner = f'<a href="{html.escape(link)}">{label}</a>' if link else label
        title = html.escape(str(row.get("input", "")))
        return f'<td class="text" data-value="{label}" title="{title}">{inner}</td>'
    value = row.get(key)
    if kind == "number":
        x = _number(value)
        shown = "" if math.isnan(x) else (f"{x:.0f}" if key.endswith("_ml") or key.startswith("mean_hu") else f"{x:.1f}")
        return f'<td data-value="{"" if math.isnan(x) else f"{x:.6g}"}">{shown}</td>'
    return f'<td class="text" data-value="{html.escape(str(value or ""))}">{html.escape(str(value or ""))}</td>'


def _volume_plot(rows: Sequence[Mapping[str, Any]]) -> str:
    """Inline SVG strip plot of total lung volume: one mark per scan, flagged scans in red, outliers stand out."""
    points = [(_number(r.get("total_lung_ml")), bool(str(r.get("flags") or "").strip()), r["name"]) for r in rows
              if r["status"] == "done"]
    points = [p for p in points if math.isfinite(p[0])]
    if not points:
        return "<p>No volumes yet.</p>"
    hi = max(max(p[0] for p in points), 1.0)
    top = 10 ** math.ceil(math.log10(hi)) if hi > 0 else 1.0
    top = next(t for t in (top / 5, top / 2, top) if t >= hi)
    scale = (_PLOT_W - 2 * _PLOT_PAD) / top
    marks = []
    for i, (ml, flagged, name) in enumerate(points):
        x = _PLOT_PAD + ml * scale
        y = _PLOT_PAD + (i * 37 % 50)  # spread the marks vertically so that equal volumes stay visible
        colour = "#c62828" if flagged else "#1565c0"
        marks.append(f'<circle cx="{x:.1f}" cy="{y}" r="4" fill="{colour}" fill-opacity="0.7">'
                     f"<title>{html.escape(name)}: {ml:.0f} mL</title></circle>")
    ticks = []
    for k in range(6):
        value = top * k / 5
        x = _PLOT_PAD + value * scale
        ticks.append(f'<line x1="{x:.1f}" y1="{_PLOT_H - 25}" x2="{x:.1f}" y2="{_PLOT_H - 20}" stroke="#444"/>'
                     f'<text x="{x:.1f}" y="{_PLOT_H - 6}" text-anchor="middle">{value:.0f}</text>')
    axis = (f'<line x1="{_PLOT_PAD}" y1="{_PLOT_H - 25}" x2="{_PLOT_W - _PLOT_PAD}" y2="{_PLOT_H - 25}" '
            'stroke="#444"/>')
    return (f'<svg id="volume-plot" width="{_PLOT_W}" height="{_PLOT_H}" viewBox="0 0 {_PLOT_W} {_PLOT_H}" '
            'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="total lung volume per scan, mL">'
            + axis + "".join(ticks) + "".join(marks) + "</svg><p>Total lung volume per scan (mL); red: flagged.</p>")


def write_run_report(out_dir: str | os.PathLike, results: Sequence[CaseResult], settings: Mapping[str, Any],
                     qc_path: Any, runtime_s: float, finished: bool) -> Path:
    """Write ``out_dir/report.html`` atomically (see the module docstring); returns its path.

    Args:
        out_dir: the segment tool's ``--out``.
        results: this run's results so far.
        settings: the model and its settings, shown in the summary (name -> value).
        qc_path: function input path -> its QC picture's path.
        runtime_s: seconds since the run started.
        finished: whether the run is over (the page says "running" until then).
    """
    out = Path(out_dir)
    rows = report_rows(out, results, qc_path)
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    flagged = [r for r in done if str(r.get("flags") or "").strip()]
    done_now = {r.case for r in results if r.status == "done"}
    earlier = sum(r["input"] not in done_now for r in done)
    state = "finished" if finished else "running (this page is rewritten after each scan: reload to update)"
    summary = [("scans", (f"{len(rows)}: {len(done)} done ({earlier} from earlier runs), {len(failed)} failed, "
                          f"{len(flagged)} flagged")),
               ("this run", f"{state}; {runtime_s:.1f} s; last written {time.strftime('%Y-%m-%d %H:%M:%S')}")]
    summary += [(str(k), str(v)) for k, v in settings.items()]
    body_rows = []
    for r in rows:
        classes = r["status"] + (" flagged" if str(r.get("flags") or "").strip() else "")
        qc = r.get("qc")
        picture = (f'<a href="{html.escape(qc)}"><img class="thumb" src="{html.escape(qc)}" loading="lazy" alt="QC"></a>'
                   if qc else "")
        cells = "".join(_cell(r, key, kind) for key, _, kind in COLUMNS)
        body_rows.append(f'<tr class="{classes}" data-status="{r["status"]}" '
                         f'data-flags="{html.escape(str(r.get("flags") or "").strip())}"><td>{picture}</td>{cells}</tr>')
    heads = "<th>QC</th>" + "".join(f'<th class="{kind}" data-key="{key}" data-kind="{kind}">{html.escape(title)}</th>'
                                    for key, title, kind in COLUMNS)
    failures = "".join(f"<li><b>{html.escape(r['name'])}</b>: {html.escape(' '.join(str(r['message']).split()))}</li>"
                       for r in failed)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Lung segmentation report: {len(rows)} scans</title><style>{_CSS}</style></head><body>
<h1>Lung segmentation report</h1>
<table id="summary">{"".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary)}</table>
<h2>Total lung volume</h2>{_volume_plot(rows)}
<h2>Scans</h2>
<div class="controls">Show: <label><input type="radio" name="show" value="all" checked> all</label>
<label><input type="radio" name="show" value="flagged"> flagged ({len(flagged)})</label>
<label><input type="radio" name="show" value="failed"> failed ({len(failed)})</label>
<span id="shown">{len(rows)}</span> shown; click a column to sort.</div>
<table id="cases"><thead><tr>{heads}</tr></thead><tbody>
{chr(10).join(body_rows)}
</tbody></table>
<h2>Failed inputs</h2>{f"<ul id='failures'>{failures}</ul>" if failures else "<p>None.</p>"}
<script>{_JS}</script>
</body></html>
"""
    return atomic_write_text(out / REPORT_HTML, page)
