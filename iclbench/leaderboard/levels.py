"""The reference levels of the ranking rule: per task and prompt length, the error in dB that closes the whole gap.

A task's score at one prompt length is the fraction of the gap closed between two levels that no ranked model
moves: 0 dB, the zero predictor, and the level stored here, the best error of the exact references computed
from the prompt alone (`SOURCES`: the Bayes-optimal predictors, the exact solutions the iterative solvers
converge to, the logistic optimum the logistic target is made from, and on garg/relu2nn, whose Bayes predictor
has no closed form, the best predictor linear in the labels), raised to float32's round-off floor. The oracle
`true-w` reads the hidden parameter and is not a source. The levels are pinned in `LEVELS_FILE` (rounded to
0.01 dB), written from the baselines' results and checked against them:

    python -m iclbench.leaderboard.levels --baselines results/baselines           # print them
    python -m iclbench.leaderboard.levels --baselines results/baselines --check   # exit 1 unless they are the file's
    python -m iclbench.leaderboard.levels --baselines results/baselines --write   # store them
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from iclbench.submissions.rerun import FLOOR_DB, db_close
from iclbench.tasks import SUITE_VERSION, TASKS

SOURCES = ("ridge", "ols", "lasso-exact", "logistic-optimum", "gp-posterior", "select-bayes", "garg-bayes")
"""The exact references whose best error at a task and length is the level a score of 1 reaches."""
LEVELS_FILE = Path(__file__).with_name("reference_levels.json")
DIGITS = 2


def levels_from(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{task: {n: {"db": level, "source": reference}}} from the results documents of `SOURCES` (by name);
    `ValueError` naming a task and length no source scores, or a level that is not below 0 dB."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, t in TASKS.items():
        for n in t.spec.lengths:
            found = [
                (doc["tasks"][task]["lengths"][str(n)]["rel_err"]["db"], name)
                for name, doc in docs.items()
                if name in SOURCES
                and doc["tasks"].get(task, {}).get("status") == "ok"
                and str(n) in doc["tasks"][task].get("lengths", {})
            ]
            if not found:
                raise ValueError(f"{task} n={n}: none of {', '.join(SOURCES)} is scored there")
            best, source = min(found)
            level = round(max(best, FLOOR_DB["float32"]), DIGITS)
            if not level < 0:
                raise ValueError(f"{task} n={n}: the best reference, {source}, scores {best:.2f} dB, not below 0 dB")
            out.setdefault(task, {})[str(n)] = {"db": level, "source": source}
    return out


@lru_cache(maxsize=1)
def levels() -> dict[str, dict[int, float]]:
    """The pinned levels in dB, {task: {n: level}} for every task of the suite; `ValueError` when the file is of
    another suite or misses a task."""
    doc = json.loads(LEVELS_FILE.read_text())
    if doc.get("suite_version") != SUITE_VERSION:
        raise ValueError(f"{LEVELS_FILE}: levels of suite {doc.get('suite_version')!r}, this is suite {SUITE_VERSION}")
    table = {task: {int(n): float(v["db"]) for n, v in by_n.items()} for task, by_n in doc["levels"].items()}
    missing = [f"{t} n={n}" for t, task in TASKS.items() for n in task.spec.lengths if n not in table.get(t, {})]
    if missing:
        raise ValueError(f"{LEVELS_FILE}: no level for {', '.join(missing)}")
    return table


def document(found: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The levels file's text: JSON, one task a line."""
    head = {"suite_version": SUITE_VERSION, "sources": list(SOURCES), "floor_db": round(FLOOR_DB["float32"], DIGITS)}
    tasks = ",\n".join(f"  {json.dumps(task)}: {json.dumps(by_n)}" for task, by_n in found.items())
    return json.dumps(head)[:-1] + ', "levels": {\n' + tasks + "\n}}\n"


def main(argv: list[str] | None = None) -> int:
    from iclbench import results

    parser = argparse.ArgumentParser(prog="python -m iclbench.leaderboard.levels", description=__doc__.split("\n")[0])
    parser.add_argument("--baselines", type=Path, required=True, help="folder of the baselines' results files")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 unless the levels equal the stored ones")
    action.add_argument("--write", action="store_true", help=f"store them in {LEVELS_FILE.name}")
    args = parser.parse_args(argv)
    docs = {}
    for name in SOURCES:
        path = args.baselines / f"{name}.json"
        try:
            docs[name] = results.read(path)
        except (OSError, results.ResultsError) as exc:
            print(f"{parser.prog}: {path}: {exc}", file=sys.stderr)
            return 2
    try:
        found = levels_from(docs)
    except ValueError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    for task, by_n in found.items():
        print(f"{task:18s} " + ", ".join(f"n={n}: {v['db']:.2f} ({v['source']})" for n, v in by_n.items()))
    if args.write:
        LEVELS_FILE.write_text(document(found))
        print(f"wrote {LEVELS_FILE}")
    if args.check:
        stored = json.loads(LEVELS_FILE.read_text())["levels"]
        differ = [
            f"{t} n={n}: stored {stored.get(t, {}).get(n, {}).get('db')}, found {v['db']}"
            for t, by_n in found.items()
            for n, v in by_n.items()
            if not db_close(v["db"], stored.get(t, {}).get(n, {}).get("db", float("inf")), "float32")
        ]
        if differ:
            print("the stored levels differ from the baselines':\n  " + "\n  ".join(differ), file=sys.stderr)
            return 1
        print(f"the levels in {LEVELS_FILE.name} are the baselines'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
