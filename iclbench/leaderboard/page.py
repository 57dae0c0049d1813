"""The published site, written from the site summary (`leaderboard.json`) and the entries' results files.

Layout of the output folder (`write`; the lead file is `index.html`, whose first load is the page, `site.css` and
`site.js` only):

    index.html          the leaders of every family side by side, the table (server-rendered) in each family's
                        view, the ranking rule, downloads, plots on demand
    site.css, site.js   the styles and the script (sorting, views, per-model detail)
    models/<key>.json   one model's detail: summary row, metadata, run, per-step curves (thinned)
    models/<key>.js     the same detail as a script, which the page loads on click: it works from a file://
                        page, where a browser refuses to fetch the .json
    plots/*.svg         per task, per model, the lasso shift (`iclbench.leaderboard.plots`), loaded lazily
    leaderboard.csv     every model's error and score per task and prompt length, with its 90% interval
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
from iclbench.leaderboard.ranking import rank_text, unranked_reason

if TYPE_CHECKING:
    from iclbench.leaderboard.ranking import Entry

DENSE_STEPS = 16
SPARSE_STEPS = 32
"""Per-step curves keep every step up to DENSE_STEPS, then about SPARSE_STEPS log-spaced ones, and the last."""
LEADERS = 5
"""Ranked models each family's card lists (and its best submission, when it is not among them)."""
DEPTH_SOLVER = {"lasso": "ista"}
"""The optimizer the table's depth column counts in, by family (gd elsewhere)."""
DEPTH_HELP = (
    "Optimizer-equivalent depth at each task's nominal length, in the task columns' order: the fewest steps k of "
    "gradient descent (ISTA on the lasso family), run with the step tuned for k steps, whose running best error "
    "reaches the model's; '> K': not within the K steps run; 'never': the solution the optimizer converges to is "
    "worse than the model. Only for models that report per-layer errors."
)
ASSETS = ("site.css", "site.js")

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 .8em;color:#222}
a{color:#0550ae}h1{font-size:1.5em;margin:.5em 0 .1em}h2{font-size:1.2em}nav a{margin-right:1em;display:inline-block}
.lead{margin:.3em 0 .6em}
#leaders{display:grid;grid-template-columns:repeat(auto-fill,minmax(255px,1fr));gap:.6em}
.card{border:1px solid #ddd;border-radius:4px;padding:.2em .5em .4em}.card h3{margin:.2em 0;font-size:1.05em}
.card h3 small{font-weight:normal;color:#666}.card table{width:100%}.card td.m{text-align:left;white-space:normal}
.card tr.submission td.m a{font-weight:600}.card tr.gap td{border:0;color:#888;text-align:center;padding:0}
#controls{margin:.8em 0;display:flex;flex-wrap:wrap;gap:.5em 2em}
.wrap{overflow:auto;max-height:85vh;border:1px solid #ddd}
table{border-collapse:separate;border-spacing:0;font-size:13px}
th,td{padding:3px 7px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap;background:#fff}
#board thead th{position:sticky;top:0;z-index:2;background:#f3f3f3;cursor:pointer;user-select:none}
#board .rank{position:sticky;left:0;z-index:1;box-sizing:border-box;width:3.4em;min-width:3.4em;max-width:3.4em}
#board .name{position:sticky;left:3.4em;z-index:1;text-align:left;white-space:normal;min-width:7em;max-width:12em;
 border-right:1px solid #ccc;font-weight:normal}
#board thead .rank,#board thead .name{z-index:3}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.kind{display:block;font-size:11px;color:#666}tr.submission .name a{font-weight:600}
.flag{font-size:11px;color:#a40000;display:block}.unverified{color:#7a5a00}
td small{display:block;font-size:10px;color:#777}.hidden{display:none}.t{text-align:left}
p,li,code{overflow-wrap:anywhere}
pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap;word-break:break-word}
#detail{border-top:2px solid #ccc;margin-top:1.5em}#detail:empty{display:none}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 1em}dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}img{max-width:100%;height:auto}
details{margin:.3em 0}summary{cursor:pointer}.note{font-size:12px;color:#555}
@media (max-width:600px){body{padding:0 .4em}th,td{padding:3px 4px}#board .name{min-width:6em;max-width:8.5em}
 nav a{margin-right:.7em}}
"""

SCRIPT = r"""
'use strict';
const table = document.getElementById('board'), body = table.tBodies[0];
const heads = Array.from(table.tHead.rows[0].cells);
const family = document.getElementById('family'), baselines = document.getElementById('baselines');
const RANK = 0, SCORE = 2, WORST = 3, COVER = 4, DEPTH = 5;
let sorted = {col: RANK, dir: 1};
const num = (x) => x === '' ? null : parseFloat(x);
const order = (r) => parseFloat(r.dataset.order);
function sortBy(col, dir) {
  const numeric = heads[col].dataset.type === 'num';
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
    if (x === '' || y === '') return (x === '') - (y === '') || order(a) - order(b);
    return dir * (numeric ? num(x) - num(y) : x.localeCompare(y)) || order(a) - order(b);
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
  for (const row of body.rows) {
    const v = all ? null : JSON.parse(row.dataset.fam)[fam];  // VIEW's cells, in page.py's order
    row.dataset.order = all ? row.dataset.all : (v ? v[8] : 1e9);
    if (v) {
      setCell(row.cells[RANK], v[1], v[0]);
      setCell(row.cells[SCORE], v[2], v[2] === null ? '\u2013' : v[2].toFixed(2));
      setCell(row.cells[WORST], v[4], v[3]);
      setCell(row.cells[COVER], v[5][0], v[5][0] + '/' + v[5][1]);
      setCell(row.cells[DEPTH], v[7], v[6]);
    }
    row.classList.toggle('hidden', (!all && !v) || (!baselines.checked && row.dataset.kind !== 'submission'));
  }
  for (const cell of table.querySelectorAll('[data-col]')) {
    const col = cell.dataset.col;
    cell.classList.toggle('hidden', all ? col === 'view' : col !== 'view' && col !== fam);
  }
  heads[RANK].textContent = all ? '' : 'rank';
  heads[SCORE].textContent = all ? '' : fam + ' score (%)';
  Array.from(body.rows).sort((a, b) => order(a) - order(b)).forEach(r => body.appendChild(r));
  heads.forEach(h => h.removeAttribute('aria-sort'));
  sorted = {col: null, dir: 1};
}
family.addEventListener('change', view);
baselines.addEventListener('change', view);
for (const a of document.querySelectorAll('a[data-family]')) a.addEventListener('click', ev => {
  ev.preventDefault();
  family.value = a.dataset.family;
  view();
  table.scrollIntoView();
});

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
}
const fmt = (v, d) => v === null || v === undefined ? '\u2013' : v.toFixed(d);
const ci = (c) => c ? ' [' + fmt(c[0], 1) + ', ' + fmt(c[1], 1) + ']' : '';
const range = (r) => r === null ? null : r[0] === r[1] ? String(r[0]) : r[0] + '\u2013' + r[1];
const steps = (v) => v === null || v === undefined ? '\u2013' : String(v);
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
function standing(d, f) {
  const fam = d.families[f];
  if (fam.score === null) return null;
  const w = fam.worst_length;
  const worst = w ? ', worst length n=' + w.n + ' (' + fmt(w.score, 2) + ' %)' : '';
  const where = fam.rank ? 'rank ' + range(fam.rank) + ' of ' + fam.pool : 'not ranked (' + d.why + ')';
  return where + ', score ' + fmt(fam.score, 2) + ' %' + worst;
}
function render(d) {
  const info = [['kind', d.kind_label], ...Object.keys(d.families).map(f => ['rank in ' + f, standing(d, f)]),
    ['tasks scored', d.coverage.join(' of ')], ['verification', d.verification],
    ['parameters', d.parameters], ['run date', d.date], ['paper', d.paper], ['code', d.code],
    ['cut at', d.budget_steps === null ? null : d.budget_steps + ' steps']]
    .concat(flat(d.meta, '', []).filter(([k]) => !['name', 'parameters', 'paper', 'code'].includes(k)),
      flat(d.run, 'run.', []));
  const dl = el('dl');
  for (const [k, v] of info) if (v !== null && v !== undefined) dl.append(el('dt', {}, k), el('dd', {}, link(v)));
  const rows = Object.entries(d.tasks).filter(([, t]) => t.score !== null).map(([name, t]) => el('tr', {},
    el('td', {class: 't'}, name), el('td', {}, range(t.rank) || '\u2013'), el('td', {}, fmt(t.score, 2)),
    el('td', {}, fmt(t.db, 2) + ci(t.ci90_db)),
    el('td', {class: 't'}, Object.entries(t.by_length).map(([n, v]) => n + ': ' + fmt(v.db, 1)).join(', ')),
    el('td', {}, t.depth ? Object.entries(t.depth).map(([k, v]) => k + ' ' + steps(v)).join(', ') : '\u2013'),
    el('td', {}, t.error_rate === null || t.error_rate === undefined ? '\u2013' : t.error_rate.toFixed(3))));
  const tasks = el('div', {class: 'wrap'}, el('table', {},
    el('thead', {}, el('tr', {}, ...['task', 'rank', 'score (%)', 'nominal dB [90%]', 'dB by prompt length',
      'depth (steps)', 'error rate'].map(h => el('th', {}, h)))), el('tbody', {}, ...rows)));
  const gap = d.lasso_gap_db ? el('p', {}, 'Lasso robustness gap from lasso/fixed (dB): ' +
    Object.entries(d.lasso_gap_db).map(([k, v]) => k + ' ' + fmt(v, 2)).join(', ')) : null;
  const pools = Object.entries(d.tasks).filter(([, t]) => t && t.in_pool).map(([name, t]) => name + ': ' +
    fmt(t.in_pool.db, 2) + ' dB in pool (' + t.in_pool.size + ' tasks, seed ' + t.in_pool.seed + '), ' +
    fmt(t.db, 2) + ' dB out of pool');
  const pool = pools.length ?
    el('p', {}, 'Trained on a pool of tasks, at the nominal length (in-pool errors never ranked; ' +
      (d.verification.startsWith('verified') ? 'fresh-draw verified with the rest' : d.verification) + '): ' +
      pools.join('; ')) : null;
  const figs = [d.plots.lengths, d.plots.steps].filter(Boolean).map(src =>
    el('figure', {}, el('img', {src: src, loading: 'lazy', alt: d.name + ' plot'})));
  const box = document.getElementById('detail');
  box.replaceChildren(el('h2', {id: 'detail-title'}, d.name), dl, el('p', {}, 'Reproduce:'),
    el('pre', {}, el('code', {}, d.command)), tasks, ...(gap ? [gap] : []), ...(pool ? [pool] : []), ...figs,
    el('p', {}, el('a', {href: '#top'}, 'back to the top')));
  box.scrollIntoView();
}
window.iclbenchDetail = render;
function show(key) {
  const box = document.getElementById('detail');
  const a = document.querySelector('a[data-key="' + CSS.escape(key) + '"]');
  if (!a) return;
  const src = a.dataset.script;
  box.replaceChildren(el('p', {}, 'loading ' + src + '\u2026'));
  const script = el('script', {src: src});
  script.onerror = () => box.replaceChildren(el('p', {}, 'Could not load ' + src + '.'));
  script.onload = () => script.remove();
  document.head.append(script);
}
document.addEventListener('click', ev => {
  const a = ev.target.closest('a[data-key]');
  if (!a) return;
  ev.preventDefault();
  if (location.hash === '#model-' + a.dataset.key) show(a.dataset.key); else location.hash = 'model-' + a.dataset.key;
});
function route() { if (location.hash.startsWith('#model-')) show(decodeURIComponent(location.hash.slice(7))); }
window.addEventListener('hashchange', route);
view();
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
    """leaderboard.csv: one row per model, task and prompt length: the error in dB, its 90% interval, the task's
    reference level there and the score it gives; the task's score and rank range on its nominal length's row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "kind", "task", "family", "n", "nominal", "db", "ci90_low_db", "ci90_high_db", "level_db",
                "score", "task_score", "task_rank"])
    for m in site["models"]:
        for task, t in m["tasks"].items():
            info = site["tasks"][task]
            for n, v in sorted(t["by_length"].items(), key=lambda kv: int(kv[0])):
                nominal = int(n) == info["nominal"]
                lo, hi = v.get("ci90_db") or ("", "")
                rank = rank_text(t["rank"]) if nominal and t["rank"] is not None else ""
                task_score = t["score"] if nominal else ""
                w.writerow([m["name"], m["kind"], task, info["family"], n, nominal, v["db"], lo, hi,
                            info["levels_db"][n], v["score"], task_score, rank])
    return buf.getvalue()


def write(
    site: dict[str, Any], entries: list[Entry], out: Path, findings: Path | None = None, plots: bool = True
) -> None:
    """Write the site (all but leaderboard.json) into `out` from the summary `site` and its `entries`; without
    `plots`, the pages name no plot and none is drawn."""
    by_key = {e.key: e for e in entries}
    details = {m["key"]: detail(by_key[m["key"]], m) for m in site["models"]}
    drawn = plotting.draw(site, details, out / "plots") if plots else plotting.no_plots()
    parents = {id(e.results): e.key for e in entries if e.budget is None}
    models = out / "models"
    if models.is_dir():
        shutil.rmtree(models)
    models.mkdir()
    for key, d in details.items():
        parent = parents[id(by_key[key].results)]
        d["kind_label"], d["why"] = site["kinds"][d["kind"]], unranked_reason(by_key[key])
        d["plots"] = {"lengths": drawn["model"].get(parent), "steps": drawn["model_steps"].get(parent)}
        text = json.dumps(d, separators=(",", ":"), allow_nan=False)
        (out / d["detail"]).write_text(text)
        (out / script_path(d["detail"])).write_text(f"iclbenchDetail({_script_safe(text)});\n")
    (out / "leaderboard.csv").write_text(table_csv(site))
    if findings is not None:
        findings_page(findings, out, site["links"])
    (out / "site.css").write_text(STYLE.lstrip())
    (out / "site.js").write_text(SCRIPT.lstrip())
    (out / "index.html").write_text(index(site, drawn))


def script_path(detail_path: str) -> str:
    """models/<key>.js beside models/<key>.json: the detail as a script, which a file:// page can load."""
    return detail_path.removesuffix(".json") + ".js"


def _script_safe(text: str) -> str:
    """JSON made safe inside a script: no "</" (which could close a script element) and no U+2028/U+2029."""
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _num(v: float | None, digits: int, ci: list[float] | None = None) -> str:
    if v is None:
        return 'data-v="">&ndash;'
    small = f"<small>{ci[0]:.1f} to {ci[1]:.1f}</small>" if ci else ""
    return f'data-v="{v!r}">{v:.{digits}f}{small}'


def _url(label: str, url: str | None) -> str:
    ok = isinstance(url, str) and url.startswith(("https://", "http://"))
    return f'<a href="{escape(url)}" rel="nofollow noopener">{label}</a>' if ok else ""


def _depth(m: dict[str, Any], site: dict[str, Any], fam: str) -> tuple[str, float | None]:
    """The depth column of a family view: the depth in the family's optimizer on each task, in the task columns'
    order, and a sort key (the median of those that are numbers; "> K" sorts after them, "never" last)."""
    solver = DEPTH_SOLVER.get(fam, "gd")
    values = [(m["tasks"][t]["depth"] or {}).get(solver) for t in site["families"][fam]]
    shown = [v for v in values if v is not None]
    if not shown:
        return "–", None
    keys = sorted(v if isinstance(v, int) else 1e9 if v == "never" else 1e6 for v in shown)
    return " · ".join(f"{v:,}" if isinstance(v, int) else v for v in values if v is not None), keys[len(keys) // 2]


VIEW = ("rank", "rank_v", "score", "worst", "worst_v", "cover", "depth", "depth_v", "order")
"""A row's cells in a family's view, by name; the page holds them as lists in this order (`site.js` reads them)."""


def _view(m: dict[str, Any], site: dict[str, Any], fam: str, order: int) -> dict[str, Any] | None:
    """A row's cells in the view of family `fam` (None when it has no score there)."""
    f = m["families"][fam]
    if f["score"] is None:
        return None
    depth, depth_v = _depth(m, site, fam)
    worst = f["worst_length"]
    return dict(zip(VIEW, (
        rank_text(f["rank"]) if f["rank"] else "–",
        None if f["rank"] is None else order,  # the rank column sorts in the listing order: by score
        f["score"],
        f"{worst['score']:.2f} (n={worst['n']})",
        worst["score"],
        f["coverage"],
        depth,
        depth_v,
        order,
    )))


def _verification(text: str) -> str:
    """The verification cell: a failed one says the submission is not ranked."""
    if text.startswith("failed"):
        return f'{escape(text)}<span class="flag">not ranked</span>'
    return f'<span class="unverified">{escape(text)}</span>' if text == "not verified" else escape(text)


def _compact(views: dict[str, dict[str, Any]]) -> str:
    """The views of a row as JSON lists in `VIEW`'s order, by family."""
    return json.dumps({f: [v[k] for k in VIEW] for f, v in views.items()}, separators=(",", ":"), ensure_ascii=False)


def _attribute(text: str) -> str:
    """`text` escaped for a single-quoted attribute (double quotes kept: JSON is full of them)."""
    return escape(text, quote=False).replace("'", "&#x27;")


def _cell(value: Any, text: str, attrs: str = "") -> str:
    """A table cell that sorts by `value` (None: last) and shows `text` (escaped)."""
    return f'<td{attrs} data-v="{"" if value is None else escape(str(value))}">{escape(text)}</td>'


def _row(m: dict[str, Any], order: int, site: dict[str, Any], views: dict[str, dict[str, Any]], first: str) -> str:
    """A table row, its view cells filled for family `first`; `views`: its cells in every family's view."""
    v = views.get(first) or {"rank": "–", "rank_v": None, "score": None, "worst": "–", "worst_v": None,
                             "cover": None, "depth": "–", "depth_v": None, "order": 1e9}
    params = m["parameters"]
    cells = [
        _cell(v["rank_v"], v["rank"], ' class="rank" data-col="view"'),
        f'<th class="name" scope="row" data-v="{escape(m["name"].lower())}"><a href="{escape(m["detail"])}" '
        f'data-key="{escape(m["key"])}" data-script="{escape(script_path(m["detail"]))}">{escape(m["name"])}</a>'
        f'<span class="kind">{escape(site["kinds"][m["kind"]])}</span></th>',
        _cell(v["score"], "–" if v["score"] is None else f"{v['score']:.2f}", ' data-col="view"'),
        _cell(v["worst_v"], v["worst"], ' data-col="view"'),
        _cell(None if v["cover"] is None else v["cover"][0],
              "–" if v["cover"] is None else "/".join(map(str, v["cover"])), ' data-col="view"'),
        _cell(v["depth_v"], v["depth"], ' class="t" data-col="view"'),
        f'<td class="t" data-v="{escape(m["verification"].lower())}">{_verification(m["verification"])}</td>',
        _cell(params, "–" if params is None else f"{params:,}"),
        _cell(m["date"] or "", m["date"] or "–", ' class="t"'),
        f'<td class="t" data-v="">{" ".join(filter(None, (_url("paper", m["paper"]), _url("code", m["code"]))))}</td>',
    ]
    for f in site["families"]:
        fam = m["families"][f]
        small = f"<small>rank {rank_text(fam['rank'])}</small>" if fam["rank"] else ""
        cells.append(f'<td data-col="family" class="hidden" {_num(fam["score"], 2)}{small}</td>')
    for task, info in site["tasks"].items():
        t = m["tasks"].get(task) or {}
        title = "" if t.get("score") is None else f"score {t['score']:.2f} %"
        title += f", rank {rank_text(t['rank'])}" if t.get("rank") else ""
        title = f' title="{title}"' if title else ""
        hidden = "" if info["family"] == first else ' class="hidden"'
        cells.append(f'<td data-col="{info["family"]}"{hidden}{title} {_num(t.get("db"), 1, t.get("ci90_db"))}</td>')
    hidden = "" if first in views else " hidden"
    return (
        f'<tr id="row-{escape(m["key"])}" class="{m["kind"]}{hidden}" data-kind="{m["kind"]}" data-all="{order}" '
        f"data-order=\"{v['order']}\" data-fam='{_attribute(_compact(views))}'>"
        f"{''.join(cells)}</tr>"
    )


def _table(site: dict[str, Any], first: str) -> str:
    head = [
        '<th class="rank" data-col="view" data-type="num" title="rank range: 1 + the models told apart above, to '
        'the pool size minus those told apart below (paired 90 % intervals)">rank</th>',
        '<th class="name" data-type="text">model</th>',
        f'<th data-col="view" data-type="num" title="percentage of the gap closed from the zero predictor (0) to '
        f'the best exact reference (100), mean over every prompt length and task">{escape(first)} score (%)</th>',
        '<th data-col="view" data-type="num" title="the lowest score at one prompt length (mean over the tasks)">'
        "worst length (%)</th>",
        '<th data-col="view" data-type="num" title="tasks of the family scored">tasks</th>',
        f'<th class="t" data-col="view" data-type="num" title="{escape(DEPTH_HELP)}">depth&thinsp;<a href="#depth">'
        "&dagger;</a></th>",
        '<th class="t" data-type="text" title="fresh-draw verification (iclbench verify); failed: not ranked">'
        "verification</th>",
        '<th data-type="num">parameters</th>',
        '<th class="t" data-type="text" title="the day the submitted run finished (recorded by iclbench run)">run date</th>',
        '<th class="t" data-type="text">links</th>',
    ]
    head += [f'<th data-col="family" class="hidden" data-type="num">{escape(f)} (%)</th>' for f in site["families"]]
    hide = {f: "" if f == first else ' class="hidden"' for f in site["families"]}
    head += [
        f'<th data-col="{info["family"]}"{hide[info["family"]]} data-type="num" '
        f'title="error in dB at the nominal n={info["nominal"]}; below: 90% interval">{escape(task)}</th>'
        for task, info in site["tasks"].items()
    ]
    orders = {f: {m["key"]: i for i, m in enumerate(family_listing(site, f))} for f in site["families"]}
    rows = []
    for i, m in enumerate(site["models"]):
        views = {f: v for f in site["families"] if (v := _view(m, site, f, orders[f].get(m["key"], 0))) is not None}
        rows.append(_row(m, i, site, views, first))
    return (
        f'<div class="wrap"><table id="board"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def family_listing(site: dict[str, Any], fam: str) -> list[dict[str, Any]]:
    """The models scored in family `fam` as its view lists them: ranked ones by score, then the others by score;
    equal scores by name (`iclbench.leaderboard.ranking.family_order`, on the summary)."""
    scored = [m for m in site["models"] if m["families"][fam]["score"] is not None]
    return sorted(scored, key=lambda m: (not m["families"][fam]["rank"], -m["families"][fam]["score"],
                                         m["name"].lower()))


def _leader_row(m: dict[str, Any], fam: str) -> str:
    f = m["families"][fam]
    worst = f["worst_length"]
    return (
        f'<tr class="{m["kind"]}"><td>{rank_text(f["rank"])}</td><td class="m"><a href="{escape(m["detail"])}" '
        f'data-key="{escape(m["key"])}" data-script="{escape(script_path(m["detail"]))}">{escape(m["name"])}</a></td>'
        f'<td>{f["score"]:.2f}</td><td title="worst length n={worst["n"]}">{worst["score"]:.2f}</td></tr>'
    )


def leaders(site: dict[str, Any]) -> str:
    """One card per family: its `LEADERS` best ranked models, and its best submission when not among them."""
    cards = []
    for fam in site["families"]:
        ranked = [m for m in family_listing(site, fam) if m["families"][fam]["rank"]]
        top = ranked[:LEADERS]
        sub = next((m for m in ranked if m["kind"] == "submission"), None)
        rows = [_leader_row(m, fam) for m in top]
        if sub is not None and sub not in top:
            rows += ['<tr class="gap"><td colspan="4">&hellip;</td></tr>', _leader_row(sub, fam)]
        body = "".join(rows) or '<tr><td colspan="4" class="m">no ranked model yet</td></tr>'
        cards.append(
            f'<div class="card"><h3><a href="#board" data-family="{escape(fam)}">{escape(fam)}</a> '
            f"<small>{len(ranked)} ranked</small></h3><table><thead><tr><th>rank</th><th class=\"m t\">model</th>"
            f'<th title="score (%)">score</th><th title="worst prompt length (%)">worst</th></tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )
    return f'<section id="leaders" aria-label="leaders by family">{"".join(cards)}</section>'


def _figure(src: str | None, alt: str) -> str:
    return f'<img loading="lazy" src="{escape(src)}" alt="{escape(alt)}">' if src else ""


def nav(links: dict[str, str], here: str, anchors: tuple[tuple[str, str], ...] = ()) -> str:
    """The links every page carries (the leaderboard, the repository, how to submit, the findings), then `anchors`."""
    items = [("Leaderboard", "index.html"), ("Repository", links["repository"]), ("How to submit", links["submitting"]),
             ("Findings", links["findings"]), *anchors]
    return "<nav>" + "".join(f'<a href="{escape(url)}">{label}</a>' for label, url in items if url != here) + "</nav>"


def index(site: dict[str, Any], plots: dict[str, Any]) -> str:
    """index.html: the leaders, the table and controls, the ranking rule, downloads, the plots by task (lazily)."""
    fams = list(site["families"])
    first = next((f for f in fams if any(m["families"][f]["rank"] for m in site["models"])), fams[0])
    options = "".join(
        f'<option value="{escape(f)}"{" selected" if f == first else ""}>{escape(f)}</option>' for f in fams
    )
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
    unresolved = sum(not m["resolved"] for m in site["models"] if any(f["rank"] for f in m["families"].values()))
    resolution = (
        f" {unresolved} ranked row(s) have no per-prompt samples in this build: their comparisons are not "
        "resolved (each such rank spans the models it cannot be told from)."
        if unresolved
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>iclbench leaderboard (suite {escape(site["suite_version"])})</title><link rel="stylesheet" href="site.css">
</head><body><h1 id="top">iclbench leaderboard</h1>
{nav(site["links"], "index.html", (("Ranking rule", "#ranking"), ("Plots", "#plots"), ("CSV", "leaderboard.csv")))}
<p class="lead">Suite <b>{escape(site["suite_version"])}</b>, built <b>{escape(site["built"])}</b>:
{subs} submission(s). Score: % of the gap closed from the zero predictor (0) to the best exact reference
(100), over every prompt length. Rank: a range where <a href="#ranking">paired comparisons</a> cannot tell
models apart. Click a model for its detail.</p>
{leaders(site)}
<div id="controls"><label>View <select id="family">{options}<option value="all">every model, scores by family</option>
</select></label><label><input type="checkbox" id="baselines" checked> show baselines and references</label></div>
{_table(site, first)}
<p class="note" id="depth">&dagger; {escape(DEPTH_HELP)} Task cells: error in dB at the nominal prompt length
(lower is better, the zero predictor scores 0 dB), with its 90% interval below; hover for the task's score and
rank.{resolution}</p>
<section id="detail" aria-live="polite"></section>
<h2 id="ranking">Ranking rule</h2><p>{escape(site["ranking_rule"])}</p>
{f'<h3>Worked example</h3><pre>{escape(site["ranking_example"])}</pre>' if site["ranking_example"] else ""}
<h2 id="plots">Plots by task</h2><p>Open a task to load its plots. Axes are fitted to the ranked models; points of
reference models or below the round-off floor that fall outside are drawn on the edge as triangles.</p>{by_task}
<p>Downloads: <a href="leaderboard.csv" download>leaderboard.csv</a> (error and score per model, task and prompt
length, with 90% intervals), <a href="leaderboard.json" download>leaderboard.json</a> (the summary this page is made
from; per-step curves are in each model's <code>models/&lt;key&gt;.json</code>). Inputs SHA-256
<code>{escape(site["inputs_sha256"])}</code>.</p>
<script src="site.js"></script></body></html>
"""


LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def findings_page(source: Path, out: Path, links: dict[str, str]) -> None:
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
        '<link rel="stylesheet" href="site.css"></head><body>'
        f'{nav(links, "findings.html")}<div class="findings">{body}</div></body></html>\n'
    )
