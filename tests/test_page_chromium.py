"""The leaderboard page in headless Chromium, used as a person would: rows, sorting by a header click, the filters.

Needs Debian's `chromium` package and the `websocket-client` package; Chromium is driven
over its DevTools protocol. The screenshot is saved as `leaderboard.png` in the test's
pytest temporary folder.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import websocket
from fixtures.submission_kit import results_doc, static_submission

from iclbench.leaderboard.build import build
from iclbench.tasks import TASKS

FAMILY = {name: t.spec.family for name, t in TASKS.items()}
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
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element (of its first line box, for a link that wraps)."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
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


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Page]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Chromium is not installed: install Debian's package with `apt-get install -y chromium`")
    profile = tmp_path / "profile"
    profile.mkdir()
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
        yield page
        page.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_leaderboard_page(chromium: Page, tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    static_submission(subs / "tiny-gd", {n: -15.0 for n in TASKS})
    baselines = tmp_path / "leaderboard" / "baselines"
    baselines.mkdir(parents=True)
    docs = [
        results_doc("zero", {n: 0.0 for n in TASKS}),
        results_doc("linear-only", {n: -40.0 for n, f in FAMILY.items() if f == "linear"}),
        results_doc("kernel-only", {n: -5.0 for n, f in FAMILY.items() if f == "kernel"}),
    ]
    for doc in docs:
        (baselines / f"{doc['model']['name']}.json").write_text(json.dumps(doc))
    out = tmp_path / "leaderboard"
    entries = build(subs, baselines, out)

    chromium.send("Page.navigate", url=(out / "index.html").as_uri())
    deadline = time.monotonic() + 60
    while chromium.js("document.readyState") != "complete":
        assert time.monotonic() < deadline, "the page did not load"
        time.sleep(0.2)

    # every model has its row, in rank order: tiny-gd -15, linear-only -10, kernel-only -1.25, zero 0
    order = ["row-sub-tiny-gd", "row-base-linear-only", "row-base-kernel-only", "row-base-zero"]
    assert chromium.visible_rows() == order == [f"row-{e.key}" for e in entries]

    # a click on the "model" header sorts by name, a second click reverses
    chromium.click("#board thead th:nth-child(2)")
    by_name = ["row-base-kernel-only", "row-base-linear-only", "row-sub-tiny-gd", "row-base-zero"]
    assert chromium.visible_rows() == by_name
    chromium.click("#board thead th:nth-child(2)")
    assert chromium.visible_rows() == by_name[::-1]
    # the kernel/linear column: lowest error first (tiny-gd -15, kernel-only -5, zero 0), unscored rows last
    col = list(TASKS).index("kernel/linear") + 5 + len(set(FAMILY.values())) + 1  # rank, model, kind, verification, score
    chromium.click(f"#board thead th:nth-child({col})")
    assert chromium.visible_rows() == [
        "row-sub-tiny-gd",
        "row-base-kernel-only",
        "row-base-zero",
        "row-base-linear-only",
    ]

    # the family filter hides the rows of models with no score in that family, and other families' columns
    chromium.choose("family", "kernel")
    assert chromium.visible_rows() == ["row-sub-tiny-gd", "row-base-kernel-only", "row-base-zero"]
    shown = chromium.js(
        "Array.from(document.querySelectorAll('#board thead th')).filter(h => h.offsetParent !== null)"
        ".map(h => h.textContent)"
    )
    assert "kernel/linear" in shown and "linear/kappa1" not in shown and "lasso (dB)" not in shown

    # hiding the baselines leaves the submissions
    chromium.click("#baselines")
    assert chromium.visible_rows() == ["row-sub-tiny-gd"]
    chromium.click("#baselines")
    chromium.choose("family", "all")
    assert chromium.visible_rows() == order

    # a row's link leads to its detail section with the command that reproduces it
    chromium.click("#row-base-linear-only a")
    deadline = time.monotonic() + 10
    while chromium.js("location.hash") != "#model-base-linear-only":
        assert time.monotonic() < deadline, f"the link did not lead to the detail: {chromium.js('location.hash')!r}"
        time.sleep(0.1)
    detail = chromium.js("document.getElementById('model-base-linear-only').innerText")
    assert "iclbench run --model linear-only --out" in detail
    assert chromium.js("document.querySelectorAll('#model-sub-tiny-gd img').length") == 1

    chromium.js("window.scrollTo(0, 0)")
    shot = base64.b64decode(chromium.send("Page.captureScreenshot", format="png")["data"])
    (tmp_path / "leaderboard.png").write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
