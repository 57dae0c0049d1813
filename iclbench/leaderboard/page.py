"""The leaderboard's self-contained static page: one HTML file, styles, script and plots inline."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import iclbench
from iclbench.tasks import SUITE_VERSION, TASKS

if TYPE_CHECKING:
    from iclbench.leaderboard.ranking import Entry

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 7px;border-bottom:1px solid #ddd;text-align:right}
td.t,th.t{text-align:left;white-space:nowrap}
thead th{cursor:pointer;background:#f3f3f3;position:sticky;top:0;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.baseline td{color:#555}tr.submission td.t a{font-weight:600}.hidden{display:none}
#controls{margin:1em 0;display:flex;gap:2em}.wrap{overflow-x:auto}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
section.model{border-top:2px solid #ccc;margin-top:2em}img{max-width:100%}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em}
dt{font-weight:600}dd{margin:0}.plots{display:flex;flex-wrap:wrap}
"""

SCRIPT = """
const table = document.getElementById('board'), body = table.tBodies[0];
const heads = Array.from(table.tHead.rows[0].cells);
const family = document.getElementById('family'), baselines = document.getElementById('baselines');
let sorted = {col: -1, dir: 1};
function key(row, col) { return row.cells[col].dataset.v; }
function sortBy(col, dir) {
  const numeric = heads[col].dataset.type === 'num';
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a, col), y = key(b, col);
    if (x === '' || y === '') return (x === '') - (y === '');
    return dir * (numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y));
  });
  rows.forEach(r => body.appendChild(r));
  heads.forEach(h => h.removeAttribute('aria-sort'));
  heads[col].setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
  sorted = {col: col, dir: dir};
}
heads.forEach((h, col) => h.addEventListener('click', () => sortBy(col, sorted.col === col ? -sorted.dir : 1)));
function filter() {
  const fam = family.value;
  for (const row of body.rows) {
    const hide = (!baselines.checked && row.dataset.kind === 'baseline')
      || (fam !== 'all' && !row.dataset.families.split(' ').includes(fam));
    row.classList.toggle('hidden', hide);
  }
  for (const cell of table.querySelectorAll('[data-fam]')) {
    cell.classList.toggle('hidden', fam !== 'all' && cell.dataset.fam !== fam);
  }
  const famCol = heads.findIndex(h => h.dataset.score === fam);
  sortBy(famCol >= 0 ? famCol : 0, 1);
}
family.addEventListener('change', filter);
baselines.addEventListener('change', filter);
"""


def _num(v: float | None, digits: int = 1) -> str:
    return '<td data-v="">&ndash;</td>' if v is None else f'<td data-v="{v!r}">{v:.{digits}f}</td>'


def _img(folder: Path, name: str | None, alt: str) -> str:
    if name is None:
        return ""
    data = base64.b64encode((folder / name).read_bytes()).decode()
    return f'<figure><img decoding="async" alt="{escape(alt)}" src="data:image/svg+xml;base64,{data}"></figure>'


def _value(v: Any) -> str:
    if isinstance(v, str) and v.startswith(("https://", "http://")):
        return f'<a href="{escape(v)}" rel="nofollow noopener">{escape(v)}</a>'
    if isinstance(v, list):
        return escape(", ".join(str(x) for x in v))
    return escape(str(v))


def _flat(meta: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for k, v in meta.items():
        items += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return items


def _table(entries: list[Entry], families: list[str]) -> str:
    tasks = list(TASKS)
    head = [
        '<th data-type="num">rank</th>',
        '<th class="t" data-type="text">model</th>',
        '<th class="t" data-type="text">kind</th>',
        '<th class="t" data-type="text" title="fresh-draw verification (iclbench verify)">verification</th>',
        '<th data-type="num" data-score="all">score (dB)</th>',
    ]
    head += [f'<th data-type="num" data-fam="{f}" data-score="{f}">{f} (dB)</th>' for f in families]
    head += [
        f'<th data-type="num" data-fam="{TASKS[t].spec.family}" title="n={TASKS[t].spec.nominal}">{escape(t)}</th>'
        for t in tasks
    ]
    head.append('<th data-type="num">tasks scored</th>')
    rows = []
    for e in entries:
        fams = " ".join(f for f in families if any(e.scores[t] is not None for t in tasks if TASKS[t].spec.family == f))
        cells = [
            f'<td data-v="{e.rank}">{e.rank}</td>',
            f'<td class="t" data-v="{escape(e.name.lower())}"><a href="#model-{e.key}">{escape(e.name)}</a></td>',
            f'<td class="t" data-v="{e.kind}">{e.kind}</td>',
            f'<td class="t" data-v="{escape(e.verification)}">{escape(e.verification)}</td>',
            _num(e.overall, 2),
        ]
        cells += [_num(e.family_scores[f], 2).replace("<td", f'<td data-fam="{f}"', 1) for f in families]
        cells += [_num(e.scores[t]).replace("<td", f'<td data-fam="{TASKS[t].spec.family}"', 1) for t in tasks]
        scored = sum(v is not None for v in e.scores.values())
        cells.append(f'<td data-v="{scored}">{scored}</td>')
        rows.append(
            f'<tr id="row-{e.key}" class="{e.kind}" data-kind="{e.kind}" data-families="{fams}">{"".join(cells)}</tr>'
        )
    return (
        f'<div class="wrap"><table id="board"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _detail(e: Entry, plots: dict[str, Any], folder: Path, parent: str) -> str:
    run = e.results["run"]
    info = _flat(e.meta) + [
        ("verification", e.verification),
        ("results.model.class", e.results["model"].get("class")),
        ("results.model.checkpoint_sha256", e.results["model"].get("checkpoint_sha256")),
        (
            "results.run",
            f"{run.get('device')} ({run.get('device_name')}), {run.get('dtype')}, "
            f"torch {run.get('torch_version')}, {run.get('finished')}",
        ),
        ("results.iclbench_version", e.results.get("iclbench_version")),
    ]
    if e.budget is not None:
        info.insert(0, ("cut at", f"{e.budget} steps (per-step errors of {e.results['model']['name']})"))
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{_value(v)}</dd>" for k, v in info if v is not None)
    return (
        f'<section class="model" id="model-{e.key}"><h3>{escape(e.name)} <small>({e.kind}, rank {e.rank}, '
        f"{e.overall:.2f} dB)</small></h3><dl>{rows}</dl><p>Reproduce:</p><pre><code>{escape(e.command)}</code></pre>"
        f"{_img(folder, plots['model'][parent], e.name + ' error against prompt length')}"
        f"{_img(folder, plots['model_steps'][parent], e.name + ' error against steps')}"
        '<p><a href="#top">back to the table</a></p></section>'
    )


def render(entries: list[Entry], plots: dict[str, Any], out: Path, built: str) -> str:
    """The page's HTML; `plots` as returned by `iclbench.leaderboard.plots.draw` into `out / "plots"`."""
    from iclbench.leaderboard.ranking import FINDINGS_LINK, RANKING_RULE

    folder = out / "plots"
    families = list(dict.fromkeys(t.spec.family for t in TASKS.values()))
    parents = {id(e.results): e.key for e in entries if e.budget is None}
    options = "".join(f'<option value="{f}">{f}</option>' for f in families)
    task_plots = "".join(
        _img(folder, plots["task"][t], f"{t} error against prompt length")
        + _img(folder, plots["steps"].get(t), f"{t} error against steps")
        for t in TASKS
    )
    details = "".join(_detail(e, plots, folder, parents[id(e.results)]) for e in entries)
    subs = sum(e.kind == "submission" for e in entries)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>iclbench leaderboard (suite {SUITE_VERSION})</title><style>{STYLE}</style></head>
<body><h1 id="top">iclbench leaderboard</h1>
<p>Suite <b>{SUITE_VERSION}</b>, iclbench {iclbench.__version__}, built <b>{built}</b>:
{subs} submission(s) and {len(entries) - subs} baseline row(s). Scores are relative errors in dB at each task's nominal
prompt length (lower is better; the zero predictor scores 0 dB). Click a column header to sort; click a model for its
details, plots and the command that reproduces it. <a href="{FINDINGS_LINK}">Findings: what the reference transformers
do</a>.</p>
<div id="controls"><label>Task family <select id="family"><option value="all">all</option>{options}</select></label>
<label><input type="checkbox" id="baselines" checked> show baselines</label></div>
{_table(entries, families)}
<h2 id="ranking">Ranking rule</h2><p>{escape(RANKING_RULE)}</p>
<h2>Plots by task</h2><div class="plots">{task_plots}</div>
<h2>Lasso: shift of the measurement matrix</h2>{_img(folder, plots["lasso_shift"], "lasso error against matrix shift")}
<h2>Models</h2>{details}
<script>{SCRIPT}</script></body></html>
"""
