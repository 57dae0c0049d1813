"""The documentation: every relative link and anchor resolves, the README stays short with a table of contents
of every docs page, and the facts the docs repeat from the code (tasks, ranking example, commands) agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import iclbench
from iclbench.leaderboard.ranking import RANKING_EXAMPLE

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "SUBMITTING.md", ROOT / "submissions" / "README.md", *DOCS]
README = (ROOT / "README.md").read_text()
MAX_README_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
HTML_ID = re.compile(r"""<[^>]+\b(?:id|name)=["']([^"']+)["']""")


def prose(text: str) -> str:
    """The text without fenced code blocks (links in code are not links)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lowercased, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading renders as its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub makes for `path`: heading slugs (repeats get -1, -2, ...) and HTML ids."""
    text = prose(path.read_text())
    found: set[str] = set(HTML_ID.findall(text))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(text):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


def links(path: Path) -> list[str]:
    """The targets of every Markdown link and image of `path`, outside code."""
    text = CODE_SPAN.sub("x", prose(path.read_text()))  # `[a](b)` in code is not a link
    return LINK.findall(text)


def test_slugs_follow_githubs_rules() -> None:
    assert slug("The tasks (suite v3)") == "the-tasks-suite-v3"
    assert slug("CI judges with the base branch's code") == "ci-judges-with-the-base-branchs-code"
    assert slug("`iclbench list`, `export` and `--data`") == "iclbench-list-export-and---data"
    assert slug("6. Validate") == "6-validate"
    assert slug("[Findings](docs/findings.md): Q2") == "findings-q2"


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n## Part two\n\n[ok](#part-two) [bad](#part-three) [gone](missing.md)\n"
                    "```\n[in code](nowhere.md)\n```\n`[span](nowhere.md)`\n")
    assert links(page) == ["#part-two", "#part-three", "missing.md"]
    assert anchors(page) == {"a-title", "part-two"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or not dest.is_relative_to(ROOT):
            broken.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no such anchor")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_is_short_with_a_table_of_contents_of_every_docs_page() -> None:
    assert len(README.splitlines()) <= MAX_README_LINES
    contents = re.search(r"^## Contents\n(.*?)^## ", README, re.S | re.M).group(1)
    targets = {t.partition("#")[0] for t in LINK.findall(contents)}
    assert {f"docs/{p.name}" for p in DOCS} <= targets
    sections = {slug(h) for h in re.findall(r"^## (.+)$", prose(README), re.M)} - {"contents"}
    assert sections == {t[1:] for t in LINK.findall(contents) if t.startswith("#")}


def test_the_readme_task_table_is_the_suite() -> None:
    """Names, dimensions, prompt lengths and nominal lengths of the README's table are those of the code."""
    rows = re.findall(r"^\| ([a-z]+/[\w.-]+(?:, [a-z]+/[\w.-]+)*) \| (\d+) \| ([^|]+) \|", README, re.M)
    table, previous = {}, ""
    for names, d, lengths in rows:
        lengths = previous if lengths.strip() == "same" else lengths.strip()
        previous = lengths
        for name in names.split(", "):
            table[name] = (int(d), lengths)
    expected = {
        name: (t.spec.d, ", ".join(f"{n}*" if n == t.spec.nominal else str(n) for n in t.spec.lengths))
        for name, t in iclbench.tasks.TASKS.items()
    }
    assert table == expected
    assert f"## The tasks (suite {iclbench.SUITE_VERSION})" in README


def test_the_ranking_pages_worked_example_is_the_codes() -> None:
    """docs/ranking.md states the example `RANKING_EXAMPLE` states (and tests/test_ranking.py checks against the
    committed results): the same pool size and the same numbers."""
    text = (ROOT / "docs" / "ranking.md").read_text().replace("−", "-")
    example = text[text.index("## Worked example"):]
    number = re.compile(r"-?\d+\.\d+")
    assert sorted(number.findall(example)) == sorted(number.findall(RANKING_EXAMPLE))
    (pool,) = re.findall(r"(\d+) models", RANKING_EXAMPLE)
    assert f"{pool} models" in example


def test_the_test_command_and_the_cpu_build_are_stated_once_for_all() -> None:
    (install,) = re.findall(r"^pip install (torch==[\w.+]+) -e \. && iclbench run ", README, re.M)
    cpu = f"pip install {install} --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in README
    development = (ROOT / "docs" / "development.md").read_text()
    readme_command = re.search(r"## Development\n\n```bash\n(.+)\n```", README).group(1)
    assert f"```bash\n{readme_command}\n```" in development
    assert "pytest -m slow" in README and "pytest -m slow" in development
