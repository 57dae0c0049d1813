"""The published site, written from the site summary (`leaderboard.json`) and the entries' results files.

Layout of the output folder (`write`; the lead file is `index.html`, whose first load is the page, `site.css` and
`site.js` only):

    index.html          the table (server-rendered), family views, the ranking rule, downloads, plots on demand
    site.css, site.js   the styles and the script (sorting, family views, per-model detail)
    models/<key>.json   one model's detail, fetched on click: summary row, metadata, run, per-step curves (thinned)
    plots/*.svg         per task, per model, the lasso shift (`iclbench.leaderboard.plots`), loaded lazily
    leaderboard.csv     every model's error per task and prompt length with its 90% interval
    findings.html       docs/findings.md rendered, with the files it links to under findings/
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import markdown
import numpy as np

from iclbench.leaderboard import plots as plotting

if TYPE_CHECKING:
    from iclbench.leaderboard.ranking import Entry

DENSE_STEPS = 16
SPARSE_STEPS = 32
"""Per-step curves keep every step up to DENSE_STEPS, then about SPARSE_STEPS log-spaced ones, and the last."""
ASSETS = ("site.css", "site.js")

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 .8em;color:#222}
a{color:#0550ae}h1{font-size:1.5em;margin:.6em 0 .2em}nav a{margin-right:1em;display:inline-block}
#controls{margin:.8em 0;display:flex;flex-wrap:wrap;gap:.5em 2em}
.wrap{overflow:auto;max-height:85vh;border:1px solid #ddd}
table{border-collapse:separate;border-spacing:0;font-size:13px}
th,td{padding:3px 7px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap;background:#fff}
#board thead th{position:sticky;top:0;z-index:2;background:#f3f3f3;cursor:pointer;user-select:none}
#board .rank{position:sticky;left:0;z-index:1;box-sizing:border-box;width:3em;min-width:3em;max-width:3em}
#board .name{position:sticky;left:3em;z-index:1;text-align:left;white-space:normal;min-width:7em;max-width:12em;
 border-right:1px solid #ccc;font-weight:normal}
#board thead .rank,#board thead .name{z-index:3}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.kind{display:block;font-size:11px;color:#666}tr.submission .name a{font-weight:600}
td small{display:block;font-size:10px;color:#777}.hidden{display:none}.t{text-align:left}
p,li,code{overflow-wrap:anywhere}
pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap;word-break:break-word}
#detail{border-top:2px solid #ccc;margin-top:1.5em}#detail:empty{display:none}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 1em}dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}img{max-width:100%;height:auto}
details{margin:.3em 0}summary{cursor:pointer}
@media (max-width:600px){body{padding:0 .4em}th,td{padding:3px 4px}#board .name{min-width:6em;max-width:8.5em}}
"""

SCRIPT = r"""
'use strict';
const table = document.getElementById('board'), body = table.tBodies[0];
const heads = Array.from(table.tHead.rows[0].cells);
const family = document.getElementById('family'), baselines = document.getElementById('baselines');
const RANK = 0, SCORE = 2, COVER = 3;
let sorted = {col: RANK, dir: 1};
const num = (x) => x === '' ? null : parseFloat(x);
function sortBy(col, dir) {
  const numeric = heads[col].dataset.type === 'num';
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
    if (x === '' || y === '') return (x === '') - (y === '') || a.dataset.order - b.dataset.order;
    return dir * (numeric ? num(x) - num(y) : x.localeCompare(y)) || a.dataset.order - b.dataset.order;
  });
  rows.forEach(r => body.appendChild(r));
  heads.forEach(h => h.removeAttribute('aria-sort'));
  heads[col].setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
  sorted = {col: col, dir: dir};
}
heads.forEach((h, col) => h.addEventListener('click', () => sortBy(col, sorted.col === col ? -sorted.dir : 1)));
function setCell(cell, v, text) { cell.dataset.v = v === null ? '' : String(v); cell.textContent = text; }
function view() {
  const fam = family.value, all = fam === 'all';
  let order = [];
  for (const row of body.rows) {
    const [rank, score, k, m] = JSON.parse(row.dataset.fam)[fam];
    setCell(row.cells[RANK], rank, rank === null ? '\u2013' : String(rank));
    setCell(row.cells[SCORE], score, score === null ? '\u2013' : score.toFixed(2));
    setCell(row.cells[COVER], k, k + '/' + m);
    row.classList.toggle('hidden', (!all && k === 0) || (!baselines.checked && row.dataset.kind !== 'submission'));
  }
  for (const cell of table.querySelectorAll('[data-col]')) {
    const col = cell.dataset.col;
    cell.classList.toggle('hidden', all ? false : (col === 'family' || (col !== fam)));
  }
  heads[RANK].textContent = all ? 'rank' : 'rank in ' + fam;
  heads[SCORE].textContent = all ? 'score (win %)' : fam + ' score (win %)';
  heads[COVER].textContent = all ? 'tasks' : fam + ' tasks';
  sortBy(RANK, 1);
}
family.addEventListener('change', view);
baselines.addEventListener('change', view);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
}
const fmt = (v, d) => v === null || v === undefined ? '\u2013' : v.toFixed(d);
const ci = (c) => c ? ' [' + fmt(c[0], 1) + ', ' + fmt(c[1], 1) + ']' : '';
function link(url) {
  return /^https?:\/\//.test(url) ? el('a', {href: url, rel: 'nofollow noopener'}, url) : String(url);
}
function flat(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === 'object' && !Array.isArray(v)) flat(v, prefix + k + '.', out);
    else if (v !== null && v !== undefined) out.push([prefix + k, Array.isArray(v) ? v.join(', ') : v]);
  }
  return out;
}
function render(d) {
  const info = [['kind', d.kind], ['rank', d.rank === null ? 'not ranked' : d.rank],
    ['score (win %)', fmt(d.score, 2)], ['tasks scored', d.coverage.join(' of ')], ['verification', d.verification],
    ['parameters', d.parameters], ['run date', d.date], ['paper', d.paper], ['code', d.code],
    ['cut at', d.budget_steps === null ? null : d.budget_steps + ' steps']]
    .concat(flat(d.meta, '', []).filter(([k]) => !['name', 'parameters', 'paper', 'code'].includes(k)),
      flat(d.run, 'run.', []));
  const dl = el('dl');
  for (const [k, v] of info) if (v !== null && v !== undefined) dl.append(el('dt', {}, k), el('dd', {}, link(v)));
  const rows = Object.entries(d.tasks).map(([name, t]) => el('tr', {},
    el('td', {class: 't'}, name), el('td', {}, t.rank === null ? '\u2013' : String(t.rank)),
    el('td', {}, fmt(t.db, 2) + ci(t.ci90_db)),
    el('td', {class: 't'}, Object.entries(t.by_length).map(([n, v]) => n + ': ' + fmt(v.db, 1)).join(', ')),
    el('td', {}, t.depth ? ['gd', 'newton', 'ista'].map(k => k + ' ' + fmt(t.depth[k], 1)).join(', ') : '\u2013'),
    el('td', {}, t.error_rate === null || t.error_rate === undefined ? '\u2013' : t.error_rate.toFixed(3))));
  const tasks = el('div', {class: 'wrap'}, el('table', {},
    el('thead', {}, el('tr', {}, ...['task', 'rank', 'nominal dB [90%]', 'dB by prompt length', 'depth (steps)',
      'error rate'].map(h => el('th', {}, h)))), el('tbody', {}, ...rows)));
  const gap = d.lasso_gap_db ? el('p', {}, 'Lasso robustness gap from lasso/fixed (dB): ' +
    Object.entries(d.lasso_gap_db).map(([k, v]) => k + ' ' + fmt(v, 2)).join(', ')) : null;
  const pools = Object.entries(d.tasks).filter(([, t]) => t && t.in_pool).map(([name, t]) => name + ': ' +
    fmt(t.in_pool.db, 2) + ' dB in pool (' + t.in_pool.size + ' tasks, seed ' + t.in_pool.seed + '), ' +
    fmt(t.db, 2) + ' dB out of pool');
  const pool = pools.length ?
    el('p', {}, 'Trained on a pool of tasks, at the nominal length: ' + pools.join('; ')) : null;
  const figs = [d.plots.lengths, d.plots.steps].filter(Boolean).map(src =>
    el('figure', {}, el('img', {src: src, loading: 'lazy', alt: d.name + ' plot'})));
  const box = document.getElementById('detail');
  box.replaceChildren(el('h2', {id: 'detail-title'}, d.name), dl, el('p', {}, 'Reproduce:'),
    el('pre', {}, el('code', {}, d.command)), tasks, ...(gap ? [gap] : []), ...(pool ? [pool] : []), ...figs,
    el('p', {}, el('a', {href: '#top'}, 'back to the table')));
  box.scrollIntoView();
}
async function show(key) {
  const box = document.getElementById('detail');
  const row = document.getElementById('row-' + key);
  if (!row) return;
  box.replaceChildren(el('p', {}, 'loading ' + row.dataset.detail + '\u2026'));
  try {
    const resp = await fetch(row.dataset.detail);
    if (!resp.ok) throw new Error(resp.status + ' ' + resp.statusText);
    render(await resp.json());
  } catch (err) {
    box.replaceChildren(el('p', {}, 'Could not load ' + row.dataset.detail + ' (' + err.message +
      '); the page needs to be served over http, e.g. python -m http.server.'));
  }
}
table.addEventListener('click', ev => {
  const a = ev.target.closest('a[data-key]');
  if (!a) return;
  ev.preventDefault();
  if (location.hash === '#model-' + a.dataset.key) show(a.dataset.key); else location.hash = 'model-' + a.dataset.key;
});
function route() { if (location.hash.startsWith('#model-')) show(decodeURIComponent(location.hash.slice(7))); }
window.addEventListener('hashchange', route);
route();
"""


def thin(n: int) -> list[int]:
    """The steps (1-based) kept of an n-step curve: every step up to `DENSE_STEPS`, then about `SPARSE_STEPS`
    log-spaced ones, and the last."""
    sparse = np.geomspace(DENSE_STEPS, n, SPARSE_STEPS).round().astype(int) if n > DENSE_STEPS else []
    return sorted({*range(1, min(n, DENSE_STEPS) + 1), *map(int, sparse), *([n] if n else [])})


def detail(entry: Entry, model: dict[str, Any]) -> dict[str, Any]:
    """models/<key>.json: the model's summary row, its metadata and run, and its per-step curves at every scored
    length (thinned; cut at the budget of a budget row), as {task: {n: {"step": [...], "db": [...]}}}."""
    steps: dict[str, dict[str, dict[str, list[float]]]] = {}
    for task, t in entry.results["tasks"].items():
        for n, m in t.get("lengths", {}).items() if t.get("status") == "ok" else ():
            ys = m.get("steps_rel_err_db", [])[: entry.budget]
            if ys:
                xs = thin(len(ys))
                steps.setdefault(task, {})[n] = {"step": xs, "db": [round(ys[k - 1], 3) for k in xs]}
    run, about = entry.results["run"], entry.results["model"]
    return {
        **model,
        "meta": entry.meta,
        "run": {
            "device": f"{run.get('device')} ({run.get('device_name')})",
            "dtype": run.get("dtype"),
            "torch": run.get("torch_version"),
            "iclbench": entry.results.get("iclbench_version"),
            "finished": run.get("finished"),
            "class": about.get("class"),
            "checkpoint_sha256": about.get("checkpoint_sha256"),
        },
        "steps": steps,
        "plots": {"lengths": None, "steps": None},
    }


def table_csv(site: dict[str, Any]) -> str:
    """leaderboard.csv: one row per model, task and prompt length: the error in dB and its 90% interval."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "kind", "task", "family", "n", "nominal", "db", "ci90_low_db", "ci90_high_db", "task_rank"])
    for m in site["models"]:
        for task, t in m["tasks"].items():
            if t is None:
                continue
            info = site["tasks"][task]
            for n, v in sorted(t["by_length"].items(), key=lambda kv: int(kv[0])):
                nominal = int(n) == info["nominal"]
                lo, hi = v.get("ci90_db") or ("", "")
                rank = t["rank"] if nominal and t["rank"] is not None else ""
                w.writerow([m["name"], m["kind"], task, info["family"], n, nominal, v["db"], lo, hi, rank])
    return buf.getvalue()


def write(site: dict[str, Any], entries: list[Entry], out: Path, findings: Path | None = None) -> None:
    """Write the site (all but leaderboard.json) into `out` from the summary `site` and its `entries`."""
    by_key = {e.key: e for e in entries}
    details = {m["key"]: detail(by_key[m["key"]], m) for m in site["models"]}
    plots = plotting.draw(site, details, out / "plots")
    parents = {id(e.results): e.key for e in entries if e.budget is None}
    models = out / "models"
    if models.is_dir():
        shutil.rmtree(models)
    models.mkdir()
    for key, d in details.items():
        parent = parents[id(by_key[key].results)]
        d["plots"] = {"lengths": plots["model"].get(parent), "steps": plots["model_steps"].get(parent)}
        (out / d["detail"]).write_text(json.dumps(d, separators=(",", ":"), allow_nan=False))
    (out / "leaderboard.csv").write_text(table_csv(site))
    if findings is not None:
        findings_page(findings, out)
    (out / "site.css").write_text(STYLE.lstrip())
    (out / "site.js").write_text(SCRIPT.lstrip())
    (out / "index.html").write_text(index(site, plots, findings is not None))


def _num(v: float | None, digits: int, ci: list[float] | None = None) -> str:
    if v is None:
        return 'data-v="">&ndash;'
    small = f"<small>{ci[0]:.1f} to {ci[1]:.1f}</small>" if ci else ""
    return f'data-v="{v!r}">{v:.{digits}f}{small}'


def _url(label: str, url: str | None) -> str:
    ok = isinstance(url, str) and url.startswith(("https://", "http://"))
    return f'<a href="{escape(url)}" rel="nofollow noopener">{label}</a>' if ok else ""


def _row(m: dict[str, Any], order: int, site: dict[str, Any]) -> str:
    fams = {"all": [m["rank"], m["score"], *m["coverage"]]}
    fams |= {f: [v["rank"], v["score"], *v["coverage"]] for f, v in m["families"].items()}
    rank, params = "" if m["rank"] is None else m["rank"], m["parameters"]
    cells = [
        f'<td class="rank" data-v="{rank}">{rank if rank != "" else "&ndash;"}</td>',
        f'<th class="name" scope="row" data-v="{escape(m["name"].lower())}"><a href="{escape(m["detail"])}" '
        f'data-key="{escape(m["key"])}">{escape(m["name"])}</a><span class="kind">{escape(m["kind"])}</span></th>',
        f"<td {_num(m['score'], 2)}</td>",
        f'<td data-v="{m["coverage"][0]}">{m["coverage"][0]}/{m["coverage"][1]}</td>',
        f'<td class="t" data-v="{escape(m["verification"].lower())}">{escape(m["verification"])}</td>',
        f'<td data-v="{params or ""}">{"&ndash;" if params is None else f"{params:,}"}</td>',
        f'<td class="t" data-v="{escape(m["date"] or "")}">{escape(m["date"]) if m["date"] else "&ndash;"}</td>',
        f'<td class="t" data-v="">{" ".join(filter(None, (_url("paper", m["paper"]), _url("code", m["code"]))))}</td>',
    ]
    cells += [f'<td data-col="family" {_num(m["families"][f]["score"], 2)}</td>' for f in site["families"]]
    for task, info in site["tasks"].items():
        t = m["tasks"].get(task) or {}
        title = f' title="rank {t["rank"]} on {escape(task)}"' if t.get("rank") is not None else ""
        cells.append(f'<td data-col="{info["family"]}"{title} {_num(t.get("db"), 1, t.get("ci90_db"))}</td>')
    return (
        f'<tr id="row-{escape(m["key"])}" class="{m["kind"]}" data-kind="{m["kind"]}" data-order="{order}" '
        f"data-detail=\"{escape(m['detail'])}\" data-fam='{escape(json.dumps(fams))}'>{''.join(cells)}</tr>"
    )


def _table(site: dict[str, Any]) -> str:
    head = [
        '<th class="rank" data-type="num">rank</th>',
        '<th class="name" data-type="text">model</th>',
        '<th data-type="num" title="mean win rate (%), higher is better: see the ranking rule">score (win %)</th>',
        '<th data-type="num" title="tasks scored, of all tasks">tasks</th>',
        '<th class="t" data-type="text" title="fresh-draw verification (iclbench verify)">verification</th>',
        '<th data-type="num">parameters</th>',
        '<th class="t" data-type="text" title="the day the submitted run finished (recorded by iclbench run)">run date</th>',
        '<th class="t" data-type="text">links</th>',
    ]
    head += [f'<th data-col="family" data-type="num">{escape(f)} (win %)</th>' for f in site["families"]]
    head += [
        f'<th data-col="{info["family"]}" data-type="num" title="nominal n={info["nominal"]}; below: 90% interval">'
        f"{escape(task)}</th>"
        for task, info in site["tasks"].items()
    ]
    rows = "".join(_row(m, i, site) for i, m in enumerate(site["models"]))
    return (
        f'<div class="wrap"><table id="board"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _figure(src: str | None, alt: str) -> str:
    return f'<img loading="lazy" src="{escape(src)}" alt="{escape(alt)}">' if src else ""


def index(site: dict[str, Any], plots: dict[str, Any], has_findings: bool) -> str:
    """index.html: the table and controls, the ranking rule, downloads, and the plots by task (loaded lazily)."""
    options = "".join(f'<option value="{escape(f)}">{escape(f)}</option>' for f in site["families"])
    by_task = "".join(
        f"<details><summary>{escape(task)}</summary>"
        f"{_figure(plots['task'].get(task), f'{task}: error against prompt length')}"
        f"{_figure(plots['steps'].get(task), f'{task}: error against steps')}</details>"
        for task in site["tasks"]
    )
    if plots["lasso_shift"]:
        by_task += (
            "<details><summary>lasso: error against the shift of the measurement matrix</summary>"
            f"{_figure(plots['lasso_shift'], 'lasso error against matrix shift')}</details>"
        )
    subs = sum(m["kind"] == "submission" for m in site["models"])
    no_overall = (
        ""
        if any(m["rank"] is not None for m in site["models"])
        else " No model is scored on every family yet, so none has an overall rank: choose a family for its ranking."
    )
    findings = '<a href="findings.html">Findings</a>' if has_findings else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>iclbench leaderboard (suite {escape(site["suite_version"])})</title><link rel="stylesheet" href="site.css">
</head><body><h1 id="top">iclbench leaderboard</h1>
<nav><a href="#ranking">Ranking rule</a>{findings}<a href="leaderboard.csv" download>CSV</a>
<a href="leaderboard.json" download>JSON</a><a href="#plots">Plots</a></nav>
<p>Suite <b>{escape(site["suite_version"])}</b>, iclbench {escape(site["iclbench_version"])}, built
<b>{escape(site["built"])}</b>: {subs} submission(s), {len(site["models"]) - subs} other row(s). Scores are mean win
rates in %, higher is better (<a href="#ranking">ranking rule</a>); task cells are relative errors in dB at the task's
nominal prompt length, lower is better (the zero predictor scores 0 dB), with their 90% interval below. Click a header
to sort, a model for its detail, plots and the command that reproduces it.{no_overall}</p>
<div id="controls"><label>Family <select id="family"><option value="all">all (overall rank)</option>{options}
</select></label><label><input type="checkbox" id="baselines" checked> show baselines and references</label></div>
{_table(site)}
<section id="detail" aria-live="polite"></section>
<h2 id="ranking">Ranking rule</h2><p>{escape(site["ranking_rule"])}</p>
<h3>Worked example</h3><pre>{escape(site["ranking_example"] or "")}</pre>
<h2 id="plots">Plots by task</h2><p>Open a task to load its plots. Axes are fitted to the ranked models; points of
reference models or below the round-off floor that fall outside are drawn on the edge as triangles.</p>{by_task}
<p>Downloads: <a href="leaderboard.csv" download>leaderboard.csv</a> (error per model, task and prompt length, with
90% intervals), <a href="leaderboard.json" download>leaderboard.json</a> (the summary this page is made from; per-step
curves are in each model's <code>models/&lt;key&gt;.json</code>). Inputs SHA-256
<code>{escape(site["inputs_sha256"])}</code>.</p>
<script src="site.js"></script></body></html>
"""


LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def findings_page(source: Path, out: Path) -> None:
    """Render the findings Markdown `source` into out/findings.html; the files it links to inside its folder are
    copied beside it, links that leave that folder become plain text (they would not resolve in the site)."""
    root = source.parent.resolve()

    def relink(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if re.match(r"[a-z][a-z0-9+.-]*:|#", target):
            return match.group(0)
        path = (root / target.split("#")[0]).resolve()
        if path.is_file() and path.is_relative_to(root):
            dest = out / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            return match.group(0)
        return "" if bang else label

    body = markdown.markdown(LINK.sub(relink, source.read_text()), extensions=["tables", "fenced_code", "toc"])
    body = body.replace("<img ", '<img loading="lazy" ').replace("<table>", '<div class="wrap"><table>')
    body = body.replace("</table>", "</table></div>")
    (out / "findings.html").write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><title>iclbench findings</title>'
        '<link rel="stylesheet" href="site.css"></head><body><nav><a href="index.html">Leaderboard</a></nav>'
        f'<div class="findings">{body}</div></body></html>\n'
    )
