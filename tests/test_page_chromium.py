"""The published site in headless Chromium, used as a person would, at desktop width and on a 390 px phone; and the
output folder published alone: every link resolves, and the first load is small.

Needs Debian's `chromium` package and the `websocket-client` package; Chromium is driven over its DevTools
protocol. The site is copied alone to a fresh folder and served over http://127.0.0.1, and opened as a file://
page too (the details load as scripts, which a file:// page allows). Screenshots are saved in pytest's temporary
folder; their paths are printed.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import websocket
from fixtures.submission_kit import results_doc, static_submission

from iclbench.leaderboard.build import build
from iclbench.tasks import TASKS

FAMILY = {name: t.spec.family for name, t in TASKS.items()}
FIRST_LOAD_BOUND = 200_000
"""Bytes the first load (the page and what it loads before any interaction) stays under."""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
]
FINDINGS = Path(__file__).resolve().parents[1] / "docs" / "findings.md"


class Page:
    """A Chromium tab driven over the DevTools protocol."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, what: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not self.js(expression):
            assert time.monotonic() < deadline, f"{what} within {seconds} s"
            time.sleep(0.1)

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", f"{url} loads")

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element (of its first line box, for a link that wraps)."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getClientRects()[0]; return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def choose(self, select_id: str, value: str) -> None:
        """Pick an option of a <select>, as the browser does on a user's choice (value set, then "change")."""
        self.js(
            f"(() => {{ const s = document.getElementById({json.dumps(select_id)}); s.value = {json.dumps(value)};"
            " s.dispatchEvent(new Event('change')); })()"
        )

    def visible_rows(self) -> list[str]:
        return self.js(
            "Array.from(document.querySelectorAll('#board tbody tr'))"
            ".filter(r => r.offsetParent !== null).map(r => r.id)"
        )

    def column(self, index: int) -> list[str]:
        """The text of one column (0-based) of the visible rows."""
        return self.js(
            "Array.from(document.querySelectorAll('#board tbody tr')).filter(r => r.offsetParent !== null)"
            f".map(r => r.cells[{index}].textContent)"
        )

    def screenshot(self, path: Path) -> None:
        self.js("window.scrollTo(0, 0)")
        shot = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        path.write_bytes(shot)
        print(f"screenshot: {path}")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Chromium is not installed: install Debian's package with `apt-get install -y chromium`")
    profile = tmp_path_factory.mktemp("profile")
    proc = subprocess.Popen(
        [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, "chromium exited during start-up"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port within 60 s"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            targets = json.load(resp)
        page = Page(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
        page.send("Network.enable")
        page.send("Network.setCacheDisabled", cacheDisabled=True)  # every load is a first load
        yield page
        page.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


REPOSITORY = "https://example.org/iclbench"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A site built from a few synthetic results files, copied alone to a fresh folder and served: (URL, folder)."""
    tmp = tmp_path_factory.mktemp("build")
    subs = tmp / "submissions"
    static_submission(
        subs / "tiny-gd",
        {n: (-2.0 if f == "logistic" else -15.0) for n, f in FAMILY.items()},
        paper="https://example.org/paper",
        architecture="<script>alert(1)</script> GD",
    )
    baselines = tmp / "repo" / "baselines"
    baselines.mkdir(parents=True)
    docs = [
        results_doc("zero", {n: 0.0 for n in TASKS}),
        results_doc("linear-only", {n: -40.0 for n, f in FAMILY.items() if f == "linear"}),
        results_doc("kernel-only", {n: -5.0 for n, f in FAMILY.items() if f == "kernel"}),
        results_doc("iter", {n: -25.0 for n in TASKS}, steps=[-2.0 * k for k in range(1, 41)]),
    ]
    pooled = docs[-1]  # as if trained on a pool of 16 tasks of linear/noisy: its in-pool errors in its detail
    pooled["model"]["task_pool"] = {"tasks": ["linear/noisy"], "size": 16, "seed": 0}
    entry = pooled["tasks"]["linear/noisy"]
    entry["in_pool"] = {"size": 16, "seed": 0, "n_prompts": entry["n_prompts"],
                        "lengths": {n: {"rel_err": m["rel_err"]} for n, m in entry["lengths"].items()}}
    for doc in docs:
        (baselines / f"{doc['model']['name']}.json").write_text(json.dumps(doc))
    build(subs, baselines, tmp / "repo" / "out", findings=FINDINGS, repository=REPOSITORY)
    published = tmp_path_factory.mktemp("published") / "site"
    shutil.copytree(tmp / "repo" / "out", published)  # the output folder alone, as the pages workflow publishes it
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(published)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", published
    server.shutdown()
    thread.join()


def _summary(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "leaderboard.json", timeout=30) as resp:
        return json.load(resp)


def _show(value: float | int | None, fmt: Callable[[Any], str]) -> str:
    return "–" if value is None else fmt(value)


def _rank(r: list[int] | None) -> str:
    return "–" if r is None else str(r[0]) if r[0] == r[1] else f"{r[0]}–{r[1]}"


def _listing(models: list[dict[str, Any]], fam: str) -> list[dict[str, Any]]:
    """The models of a family view in the page's order: ranked by score, then the others by score; then name."""
    scored = [m for m in models if m["families"][fam]["score"] is not None]
    return sorted(scored, key=lambda m: (not m["families"][fam]["rank"], -m["families"][fam]["score"],
                                         m["name"].lower()))


FIRST_SCREEN = """
Array.from(document.querySelectorAll('#leaders .card')).map(card => {
  const r = card.getBoundingClientRect();
  const rows = Array.from(card.querySelectorAll('tbody tr')).filter(tr => {
    const b = tr.getBoundingClientRect(); return b.bottom <= innerHeight && b.right <= innerWidth; });
  return {family: card.querySelector('h3 a').textContent, top: r.top, left: r.left,
          rows: rows.map(tr => Array.from(tr.cells).map(c => c.textContent))};
})"""
"""Each leaders card: its family, where it starts, and the rows of it wholly inside the window."""


def _first_screen(chromium: Page, summary: dict[str, Any], width: int, height: int) -> list[dict[str, Any]]:
    """Check that the first screen shows a ranking with numbers: the leaders of at least one family, each row its
    rank range, name and score as the summary has them; return the cards."""
    cards = chromium.js(FIRST_SCREEN)
    seen = [c for c in cards if c["rows"] and c["top"] < height and c["left"] < width]
    assert seen, f"no ranking in the first {width}x{height} screen: {cards}"
    models = {m["name"]: m for m in summary["models"]}
    for card in seen:
        for rank_cell, name, score, worst in (r for r in card["rows"] if len(r) == 4):
            fam = models[name]["families"][card["family"]]
            assert (rank_cell, score) == (_rank(fam["rank"]), f"{fam['score']:.2f}")
            assert worst == f"{fam['worst_length']['score']:.2f}"
    return seen


def test_desktop_first_screen_views_and_detail(chromium: Page, site: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = site
    summary = _summary(url)
    models = summary["models"]
    chromium.send("Emulation.setDeviceMetricsOverride", width=1366, height=900, deviceScaleFactor=1, mobile=False)
    try:
        chromium.open(url + "index.html")
        seen = _first_screen(chromium, summary, 1366, 900)
        assert {c["family"] for c in seen} == set(summary["families"])  # every family's leaders, side by side
        chromium.screenshot(tmp_path / "desktop.png")

        # the table opens on the first family: its models in their order, with rank range, score and worst length
        fam = [m for m in _listing(models, "linear")]
        assert chromium.visible_rows() == [f"row-{m['key']}" for m in fam]
        assert chromium.column(0) == [_rank(m["families"]["linear"]["rank"]) for m in fam]
        assert chromium.column(2) == [_show(m["families"]["linear"]["score"], lambda v: f"{v:.2f}") for m in fam]
        shown = chromium.js(
            "Array.from(document.querySelectorAll('#board thead th')).filter(h => h.offsetParent !== null)"
            ".map(h => [h.textContent, h.title])"
        )
        heads = [h for h, _ in shown]
        assert heads[:6] == ["rank", "model", "linear score (%)", "worst length (%)", "tasks", "depth\u2009\u2020"]
        assert "running best" in shown[5][1] and "never" in shown[5][1]  # the depth's header explains itself
        assert "linear/kappa1" in heads and "kernel/linear" not in heads
        iter_row = next(m for m in fam if m["name"] == "iter")
        depth = chromium.js("document.getElementById('row-base-iter').cells[5].textContent")
        assert depth == "–"  # no optimizer in this folder to count it in
        assert iter_row["tasks"]["linear/kappa1"]["depth"] == {"gd": None, "newton": None, "ista": None}

        # a click on the "model" header sorts by name, a second click reverses
        by_name = [f"row-{m['key']}" for m in sorted(fam, key=lambda m: m["name"].lower())]
        chromium.click("#board thead th:nth-child(2)")
        assert chromium.visible_rows() == by_name
        chromium.click("#board thead th:nth-child(2)")
        assert chromium.visible_rows() == by_name[::-1]

        # another family, from its leaders card: its own models, ranks and scores
        chromium.click('#leaders a[data-family="kernel"]')
        kernel = _listing(models, "kernel")
        assert chromium.visible_rows() == [f"row-{m['key']}" for m in kernel]
        assert chromium.column(2) == [_show(m["families"]["kernel"]["score"], lambda v: f"{v:.2f}") for m in kernel]
        # every model, scores by family; hiding the baselines leaves the submissions
        chromium.choose("family", "all")
        assert chromium.visible_rows() == [f"row-{m['key']}" for m in models]
        chromium.click("#baselines")
        assert chromium.visible_rows() == ["row-sub-tiny-gd"]
        chromium.click("#baselines")

        # the columns of the contract: interval, parameters, date, links, verification, coverage
        chromium.choose("family", "linear")
        tiny = chromium.js("Array.from(document.getElementById('row-sub-tiny-gd').cells).map(c => c.innerText)")
        kappa1 = next(m for m in models if m["key"] == "sub-tiny-gd")["tasks"]["linear/kappa1"]
        assert "-15.0\n-18.0 to -12.0" in tiny and kappa1["ci90_db"] == [-18.0, -12.0]
        assert "1" in tiny and "not verified" in tiny and "4/4" in tiny and "2026-01-01" in tiny
        assert chromium.js("document.querySelector('#row-sub-tiny-gd a[href=\"https://example.org/paper\"]') !== null")

        # a click on a model loads its detail and its plots, on demand
        assert chromium.js("document.querySelectorAll('#detail img').length") == 0
        chromium.click("#row-base-iter a[data-key]")
        chromium.wait("location.hash === '#model-base-iter'", "the hash names the model")
        chromium.wait("document.querySelectorAll('#detail img').length === 2", "the detail and its plots appear")
        detail = chromium.js("document.getElementById('detail').innerText")
        assert "iclbench run --model iter --out" in detail and "linear/kappa1" in detail and "null" not in detail
        ranks = {f: _rank(iter_row["families"][f]["rank"]) for f in summary["families"]}
        assert f"rank {ranks['linear']} of {iter_row['families']['linear']['pool']}" in detail  # the family ranks
        assert "not ranked" not in detail
        assert "in pool (16 tasks, seed 0)" in detail and "(in-pool errors never ranked; –)" in detail
        srcs = chromium.js("Array.from(document.querySelectorAll('#detail img')).map(i => i.getAttribute('src'))")
        assert srcs == ["plots/model-base-iter.svg", "plots/model-base-iter-steps.svg"]
        chromium.wait(
            "Array.from(document.querySelectorAll('#detail img')).every(i => i.complete && i.naturalWidth > 0)",
            "the plots load",
        )
        # a reference says why it is not ranked; a submitter's text is shown as text, never run as markup
        chromium.click("#row-base-zero a[data-key]")
        chromium.wait("document.getElementById('detail').innerText.includes('reference line, never ranked')",
                      "the reference's detail shows")
        chromium.click("#row-sub-tiny-gd a[data-key]")
        chromium.wait("document.getElementById('detail').innerText.includes('alert(1)')",
                      "the submission's detail shows")
        assert chromium.js("document.querySelectorAll('#detail script').length") == 0
    finally:
        chromium.send("Emulation.clearDeviceMetricsOverride")


def test_phone_first_screen(chromium: Page, site: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = site
    chromium.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=1, mobile=True)
    try:
        chromium.open(url + "index.html")
        seen = _first_screen(chromium, _summary(url), 390, 844)
        assert seen[0]["family"] == "linear" and len(seen[0]["rows"]) >= 3  # the first family's leaders, with numbers
        chromium.screenshot(tmp_path / "phone.png")
        # the page itself does not scroll sideways; the table scrolls inside its own frame
        wide = chromium.js(
            "Array.from(document.body.querySelectorAll('*')).filter(e => !e.closest('.wrap, .hidden'))"
            ".filter(e => e.getBoundingClientRect().right > 390).map(e => e.tagName + ' ' + e.textContent.slice(0, 40))"
        )
        assert chromium.js("document.documentElement.scrollWidth") <= 390, f"wider than the phone: {wide}"
        assert chromium.js("(() => { const w = document.querySelector('.wrap'); return w.scrollWidth > w.clientWidth })()")

        def first_row_cells() -> list[dict[str, Any]]:
            return chromium.js(
                "Array.from(document.querySelector('#board tbody tr:not(.hidden)').cells).slice(0, 3).map(c => {"
                " const r = c.getBoundingClientRect(), x = r.x + Math.min(r.width / 2, 20), y = r.y + r.height / 2;"
                " return {left: r.left, right: r.right, text: c.innerText,"
                "  seen: c.contains(document.elementFromPoint(x, y))}; })"
            )

        chromium.js("document.getElementById('board').scrollIntoView()")
        first = _listing(_summary(url)["models"], "linear")[0]
        cells = first_row_cells()
        assert [c["text"].split("\n")[0] for c in cells] == [
            _rank(first["families"]["linear"]["rank"]), first["name"], f"{first['families']['linear']['score']:.2f}"]
        assert all(c["seen"] and c["left"] >= 0 and c["right"] <= 390 for c in cells), cells
        # scrolled to the far right of the table, the rank and the model name stay in view
        chromium.js("document.querySelector('.wrap').scrollLeft = 100000")
        cells = first_row_cells()
        assert cells[0]["seen"] and cells[1]["seen"] and cells[1]["right"] <= 390, cells

        chromium.open(url + "findings.html")  # its wide tables scroll inside their frames too
        assert chromium.js("document.querySelectorAll('.wrap table').length") > 0
        assert chromium.js("document.documentElement.scrollWidth") <= 390
    finally:
        chromium.send("Emulation.clearDeviceMetricsOverride")


def test_detail_from_a_file_page(chromium: Page, site: tuple[str, Path]) -> None:
    """Opened as a local file, with no server, a click on a model shows its detail (a script, not a fetch)."""
    _, folder = site
    chromium.open((folder / "index.html").as_uri())
    chromium.click('#leaders a[data-key="sub-tiny-gd"]')
    chromium.wait("document.getElementById('detail').innerText.includes('iclbench validate')", "the detail shows")
    detail = chromium.js("document.getElementById('detail').innerText")
    assert "rank in linear" in detail and "Could not load" not in detail
    chromium.wait("Array.from(document.querySelectorAll('#detail img')).every(i => i.complete && i.naturalWidth > 0)",
                  "the plots load from the folder")


class _Links(HTMLParser):
    """Every href and src of an HTML document, and its ids."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)
            elif name == "id" and value is not None:
                self.ids.add(value)


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: HTTP {exc.code}") from None


def test_published_folder_alone(chromium: Page, site: tuple[str, Path]) -> None:
    url, folder = site
    pages = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html"))
    assert {"index.html", "findings.html"} <= set(pages)
    checked, external = 0, 0
    for name in pages:
        parser = _Links()
        parser.feed(_get(url + name).decode())
        wanted = {REPOSITORY, f"{REPOSITORY}/blob/HEAD/SUBMITTING.md", "findings.html"} - {name}
        assert wanted <= set(parser.links), f"{name} does not link to {wanted - set(parser.links)}"
        for link in parser.links:
            target = urllib.parse.urljoin(url + name, link)
            if not target.startswith(url):
                assert target.startswith("https://"), f"{name}: {link} leaves the site without https"
                external += 1
                continue
            path, _, fragment = target.partition("#")
            body = _get(path)
            if fragment:
                ids = parser.ids if path == url + name else _ids(body)
                assert fragment in ids, f"{name}: {link}: no element with id {fragment!r}"
            checked += 1
    # what the page loads on demand: every model's detail script, and the plots it names
    for m in _summary(url)["models"]:
        script = _get(url + m["detail"].removesuffix(".json") + ".js").decode()
        detail = json.loads(script.removeprefix("iclbenchDetail(").removesuffix(");\n"))
        assert detail == json.loads(_get(url + m["detail"]))
        for plot in filter(None, detail["plots"].values()):
            assert _get(url + plot)[:5] == b"<?xml"
            checked += 1
    print(f"published folder alone: {checked} links resolve, {external} external links not followed")
    assert checked > 40 and "findings/q1_one_layer.png" in (folder / "findings.html").read_text()

    # the first load: the page and what it loads before any interaction, measured by the browser
    chromium.send("Emulation.clearDeviceMetricsOverride")
    chromium.open(url + "index.html")
    time.sleep(0.5)  # anything lazy that would start after the load event
    loads = chromium.js(
        "[performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]"
        ".map(e => [e.name, e.encodedBodySize])"
    )
    # /favicon.ico: the browser's own request for a site icon, which it may make (and time) or not; not the page's
    loads = [(name, size) for name, size in loads if urllib.parse.urlsplit(name).path != "/favicon.ico"]
    names = sorted(urllib.parse.urlsplit(name).path for name, _ in loads)
    assert names == ["/index.html", "/site.css", "/site.js"]  # no plot, no detail file, no image
    total = sum(size for _, size in loads)
    assert total == sum((folder / n.lstrip("/")).stat().st_size for n in names)
    print(f"first load: {total:,} bytes ({', '.join(f'{n} {s:,}' for n, s in loads)}); bound {FIRST_LOAD_BOUND:,}")
    assert total < FIRST_LOAD_BOUND


def _ids(html: bytes) -> set[str]:
    parser = _Links()
    parser.feed(html.decode())
    return parser.ids
