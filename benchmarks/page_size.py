"""The published site's size: its first load (what a browser fetches before any interaction) and the rest.

    python benchmarks/page_size.py [--submissions submissions] [--baselines results/baselines]

Builds the site into a temporary folder with `iclbench.leaderboard.build.build` and prints the bytes of the
first load (index.html and the files it names as stylesheet or script: plots and detail files load only on a
click, which tests/test_page_chromium.py checks in Chromium) beside the whole folder, by part.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from iclbench.leaderboard.build import build


def first_load(out: Path) -> dict[str, int]:
    """Bytes of index.html and of every stylesheet and script it loads."""
    page = (out / "index.html").read_text()
    names = re.findall(r'<link rel="stylesheet" href="([^"]+)"|<script src="([^"]+)"', page)
    files = ["index.html", *(a or b for a, b in names)]
    return {name: (out / name).stat().st_size for name in files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=Path, default=Path("submissions"))
    parser.add_argument("--baselines", type=Path, default=Path("results/baselines"))
    parser.add_argument("--findings", type=Path, default=Path("docs/findings.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        entries = build(args.submissions, args.baselines, out, args.findings)
        first = first_load(out)
        print(f"{len(entries)} rows; first load {sum(first.values()):,} bytes: "
              + ", ".join(f"{k} {v:,}" for k, v in first.items()))
        parts: dict[str, int] = {}
        for p in out.rglob("*"):
            if p.is_file():
                top = p.relative_to(out).parts[0]
                parts[top] = parts.get(top, 0) + p.stat().st_size
        print(f"whole site {sum(parts.values()):,} bytes: "
              + ", ".join(f"{k} {v:,}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
