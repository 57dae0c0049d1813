"""Hostile or malformed submissions are refused by `iclbench validate` with one line each, never a traceback.

Every case is a folder of its own; one `iclbench validate` process checks them all, and each
folder's report must be exactly its one expected reason and `INVALID, 1 problem(s)`.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml
from fixtures.submission_kit import static_submission, write_meta

from iclbench import checkpoint
from iclbench.leaderboard.build import LeaderboardError, load_entries
from iclbench.plugins import sha256_file
from iclbench.submissions import schema
from iclbench.submissions.payload import MAX_NUMBERS, count, text_numbers
from iclbench.submissions.rerun import compare_task
from iclbench.submissions.schema import CHECKPOINT_HUB, check_fields
from iclbench.tasks import TASKS
from iclbench.untrusted import UntrustedError, load_yaml

NOMINAL = {name: -15.0 for name in TASKS}
M20 = ("tasks", "linear/kappa1", "lengths", "20")


def alias_bomb(levels: int, width: int) -> str:
    """A billion-laughs YAML: `levels` anchors, each a list of `width` aliases of the previous one."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def edit_results(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        doc = json.loads((folder / "results.json").read_text())
        change(doc)
        (folder / "results.json").write_text(json.dumps(doc))  # NaN and Infinity are written as JSON's extensions

    return apply


def at(doc: dict, *path: str) -> dict:
    for key in path:
        doc = doc[key]
    return doc


def with_checkpoint(data: bytes) -> Callable[[Path], None]:
    """Replace the checkpoint by `data`, declared with its true SHA-256 (so only its content is at fault)."""

    def apply(folder: Path) -> None:
        (folder / "weights.safetensors").write_bytes(data)
        digest = sha256_file(folder / "weights.safetensors")
        write_meta(folder, checkpoint={"file": "weights.safetensors", "sha256": digest})
        edit_results(lambda d: d["model"].update(checkpoint_sha256=digest))(folder)

    return apply


def safetensors(header: object, data: bytes = b"\0" * 4, length: int | None = None) -> bytes:
    raw = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def sparse_checkpoint(size: int) -> Callable[[Path], None]:
    """A checkpoint of `size` bytes (a sparse file, so the test writes almost nothing)."""

    def apply(folder: Path) -> None:
        with open(folder / "weights.safetensors", "wb") as fh:
            fh.write(safetensors({"lr": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}))
            fh.truncate(size)

    return apply


def hub(**fields: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        digest = sha256_file(folder / "weights.safetensors")
        (folder / "weights.safetensors").unlink()
        declared = {"repo_id": "org/tiny", "filename": "weights.safetensors", "revision": "0" * 40, "sha256": digest}
        write_meta(folder, checkpoint={**declared, **fields})

    return apply


def yaml_text(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "submission.yaml").write_text(text)


def named(name: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        write_meta(folder, name=name)
        edit_results(lambda d: d["model"].update(name=name))(folder)

    return apply


def training_free(files: dict[str, str | bytes]) -> Callable[[Path], None]:
    """Make the folder a training-free submission (no checkpoint, `training: null`) holding `files` besides."""

    def apply(folder: Path) -> None:
        (folder / "weights.safetensors").unlink()
        meta = yaml.safe_load((folder / "submission.yaml").read_text())
        meta.update(parameters=0, training=None, checkpoint=None)
        (folder / "submission.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        edit_results(lambda d: d["model"].update(checkpoint_sha256=None))(folder)
        for name, content in files.items():
            path = folder / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return apply


NUMBERS = ", ".join(f"{0.001 * i:.4f}" for i in range(300))
"""300 numbers as text."""
BASE64 = base64.b64encode(struct.pack("<300f", *range(300))).decode()
"""300 float32 values, base64-encoded: 1,600 characters in one run."""


def lr(entry: dict) -> bytes:
    return safetensors({"lr": entry})


F32 = {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    # YAML: bounded before and while parsing
    "yaml-alias-bomb": (yaml_text(alias_bomb(9, 9)), "anchors and aliases (&name, *name) are not accepted"),
    "yaml-alias-bomb-wide": (yaml_text(alias_bomb(8, 12)), "anchors and aliases (&name, *name) are not accepted"),
    "yaml-deep-flow": (yaml_text("name: " + "[" * 60000), "nested deeper than 16 levels"),
    "yaml-deep-block": (yaml_text("".join(" " * i + "- \n" for i in range(200))), "nested deeper than 16 levels"),
    "yaml-huge": (yaml_text("# padding\n" * 20000), "200000 bytes, over the 65536-byte limit for .yaml files"),
    # results.json: every number typed and finite, wherever it is
    "results-nan": (
        edit_results(lambda d: at(d, *M20, "rel_err").update(db=float("nan"))),
        "tasks['linear/kappa1'].lengths['20'].rel_err.db must be a finite number, got float nan",
    ),
    "results-infinity-value": (  # a field the re-run did not compare, shown in leaderboard.csv
        edit_results(lambda d: at(d, *M20, "rel_err").update(value=float("inf"))),
        "tasks['linear/kappa1'].lengths['20'].rel_err.value must be a finite number, got float inf",
    ),
    "results-infinity-seconds": (
        edit_results(lambda d: d["tasks"]["lasso/fixed"].update(seconds=float("-inf"))),
        "tasks['lasso/fixed'].seconds must be a finite number, got float -inf",
    ),
    "results-string": (
        edit_results(lambda d: at(d, *M20, "rel_err").update(db="-300")),
        "tasks['linear/kappa1'].lengths['20'].rel_err.db must be a finite number, got str '-300'",
    ),
    "results-bool": (
        edit_results(lambda d: at(d, *M20, "rel_err").update(ci90_db=[True, False])),
        "rel_err.ci90_db must be a list of 2 finite numbers, got list [True, False]",
    ),
    "results-short-interval": (
        edit_results(lambda d: at(d, *M20, "rel_err").update(ci90=[0.1])),
        "rel_err.ci90 must be a list of 2 finite numbers, got list [0.1]",
    ),
    "results-unknown-metric": (
        edit_results(lambda d: at(d, *M20).update(score={"value": 1})),
        "lengths['20']: unknown metric 'score'",
    ),
    "results-huge-int": (
        edit_results(lambda d: at(d, *M20, "rel_err").update(db=-(10**300))),
        "rel_err.db must be a finite number, got int",
    ),
    "results-deep": (
        lambda f: (f / "results.json").write_text('{"deep": ' + "[" * 5000 + "]" * 5000 + ", " + (f / "results.json").read_text()[1:]),
        "results.json: not readable JSON: nested deeper than 16 levels",
    ),
    "results-dtype": (edit_results(lambda d: d["run"].update(dtype=32)), "run.dtype must be 'float32' or 'float64'"),
    # safetensors headers: checked for type and size before any library reads the file
    "st-shape-null": (with_checkpoint(lr({**F32, "shape": [None]})), "shape must be a list of at most 8 non-negative"),
    "st-shape-bool": (with_checkpoint(lr({**F32, "shape": [True]})), "shape must be a list of at most 8 non-negative"),
    "st-shape-negative": (with_checkpoint(lr({**F32, "shape": [-1]})), "shape must be a list of at most 8"),
    "st-string-offsets": (
        with_checkpoint(lr({**F32, "data_offsets": ["0", "4"]})),
        "data_offsets must be two non-negative integers, got ['0', '4']",
    ),
    "st-float-offsets": (
        with_checkpoint(lr({**F32, "data_offsets": [0, 4.0]})),
        "data_offsets must be two non-negative integers",
    ),
    "st-absurd-shape": (
        with_checkpoint(lr({**F32, "shape": [2**62, 2**62]})),
        "has byte range 0-4, inconsistent with its F32 shape [4611686018427387904, 4611686018427387904]",
    ),
    "st-bad-dtype": (with_checkpoint(lr({**F32, "dtype": "PICKLE"})), "dtype 'PICKLE' is not one of"),
    "st-extra-key": (with_checkpoint(lr({**F32, "pickle": 1})), "must have exactly dtype, shape and data_offsets"),
    "st-deep": (
        with_checkpoint(safetensors('{"lr": ' + "[" * 3000 + "]" * 3000 + "}")),
        "header not readable JSON: nested deeper than 16 levels",
    ),
    "st-header-length": (
        with_checkpoint(safetensors(F32, length=2**63)),
        "header length 9223372036854775808 does not fit",
    ),
    "st-overlap": (
        with_checkpoint(safetensors({"a": F32, "b": {**F32, "data_offsets": [2, 6]}}, b"\0" * 6)),
        "gap or overlap at byte 2",
    ),
    "st-metadata": (
        with_checkpoint(safetensors({"__metadata__": {"x": 1}, "lr": F32})),
        "__metadata__ must map strings to strings",
    ),
    "st-1gib": (sparse_checkpoint(2**30), "1073741824 bytes, over the 52428800-byte limit for .safetensors files"),
    # ids and names: an ASCII slug, unique ignoring case
    "id-baseline": (named("ridge"), "name 'ridge' is already the name of the baseline 'ridge'"),
    "id-upper": (named("Ridge"), "field 'name' must be the model's name, equal to its Model.name: 3-64 lowercase"),
    "id-zero-width-space": (named("ridge\u200b"), "field 'name' must be the model's name"),
    "id-cyrillic": (named("ridg\u0435"), "field 'name' must be the model's name"),
    # training-free submissions ship no parameters, in any file; a trained one counts them in its checkpoint
    "free-json": (training_free({"weights.json": f"[{NUMBERS}]"}), "weights.json: holds 300 numbers, more than the 256"),
    "free-base64": (training_free({"notes.txt": BASE64}), f"notes.txt: holds {text_numbers(BASE64)} numbers, more than"),
    "free-python": (training_free({"table.py": f"W = [{NUMBERS}]\n"}), "table.py: holds 300 numbers"),
    "free-python-string": (training_free({"table.py": f"W = {BASE64!r}\n"}), "table.py: holds 3"),
    "free-readme": (training_free({"README.md": f"Weights: {NUMBERS}\n"}), "README.md: holds 300 numbers"),
    "free-binary": (training_free({"data.txt": struct.pack("<300f", *range(300))}), "data.txt: holds 300 numbers"),
    "parameters": (lambda f: write_meta(f, parameters=5), "field 'parameters' is 5, but the checkpoint holds 1 numbers"),
    # Hub fields
    "hub-dotdot-repo": (hub(repo_id="org/.."), "field 'repo_id' must be a Hugging Face Hub model id owner/name"),
    "hub-dashes-repo": (hub(repo_id="org/a--b"), "field 'repo_id' must be a Hugging Face Hub model id"),
    "hub-parent-file": (
        hub(filename="../../x.safetensors"),
        "field 'filename' must be the relative path of a .safetensors file in the Hub repository",
    ),
    "hub-absolute-file": (hub(filename="/etc/x.safetensors"), "field 'filename' must be the relative path"),
    "hub-branch": (hub(revision="main"), "field 'revision' must be the 40-hex-digit commit hash"),
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[str]], subprocess.CompletedProcess[str]]:
    """Each case's folder broken as described, all validated by one `iclbench validate` process.

    Returns each case's report lines (its errors, then its summary) and the process.
    """
    root = tmp_path_factory.mktemp("refusals")
    folders = {}
    for case, (breaks, _) in CASES.items():
        folder = static_submission(root / case / "submissions" / "tiny-gd", NOMINAL)
        breaks(folder)
        folders[case] = folder
    done = subprocess.run(
        [sys.executable, "-m", "iclbench.cli", "validate", *map(str, folders.values())],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines, blocks = [], {}
    for line in done.stdout.splitlines():
        lines.append(line)
        for case, folder in folders.items():
            if line.startswith(f"{folder}: "):
                blocks[case], lines = lines, []
    return blocks, done


@pytest.mark.parametrize("case", CASES)
def test_refused_with_one_line(case: str, report: tuple[dict[str, list[str]], subprocess.CompletedProcess]) -> None:
    blocks, done = report
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    error, summary = blocks[case]
    assert error.startswith("error: ") and CASES[case][1] in error, blocks[case]
    assert summary.endswith(": INVALID, 1 problem(s)")


def test_untouched_copy_is_valid(tmp_path: Path) -> None:
    """The cases' starting point is valid: each refusal is due to its one change."""
    folder = static_submission(tmp_path / "submissions" / "tiny-gd", NOMINAL)
    done = subprocess.run(
        [sys.executable, "-m", "iclbench.cli", "validate", str(folder)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("tiny-gd: valid"), done.stdout + done.stderr


def test_a_training_free_submission_may_hold_a_few_numbers(tmp_path: Path) -> None:
    """The training-free cases' starting point is valid: a note with a few numbers is no checkpoint."""
    folder = static_submission(tmp_path / "submissions" / "tiny-gd", NOMINAL)
    training_free({"notes.txt": "learning rate 0.05, 8 steps, chosen on linear/kappa1\n"})(folder)
    assert schema.load(folder)[1] == []


def test_every_baseline_could_be_a_training_free_submission() -> None:
    """The limit on numbers leaves room for real algorithms: no baseline's file reaches it."""
    files = sorted((Path(checkpoint.__file__).parent / "baselines").glob("*.py"))
    counted = {p.name: count(p, p.read_bytes()) for p in files}
    assert len(counted) > 5 and max(counted.values()) <= MAX_NUMBERS, counted


def test_names_are_unique_ignoring_case_across_submissions(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    first = static_submission(subs / "model-a", NOMINAL, name="shared-name")
    second = static_submission(subs / "model-b", NOMINAL, name="shared-name")
    third = static_submission(subs / "model-c", NOMINAL, name="model-a")  # another submission's id
    with pytest.raises(LeaderboardError) as info:
        load_entries(subs, tmp_path / "no-baselines")
    message = str(info.value)
    assert f"{second}: name 'shared-name' is already the model name 'shared-name' of {first}" in message
    assert f"{first}: name 'shared-name' is already the model name 'shared-name' of {second}" in message
    assert f"{third}: name 'model-a' is already the id of {first}" in message


def test_names_that_look_alike_are_refused(tmp_path: Path) -> None:
    """Ids and names equal up to separators, 0/o, 1/l and rn/m are one name, against submissions and baselines."""
    subs = tmp_path / "submissions"
    static_submission(subs / "lsa-1l-kernel", NOMINAL, name="lsa-1l-kernel")
    same_id = static_submission(subs / "lsa-ll-kemel", NOMINAL, name="my-model")
    same_name = static_submission(subs / "other-model", NOMINAL, name="o1s")
    apart = static_submission(subs / "lsa-2l-kernel", NOMINAL, name="lsa-2l-kernel")
    problems = {p: schema.load(p)[1] for p in (same_id, same_name, apart)}
    assert problems[same_id] == [
        f"{same_id}: id 'lsa-ll-kemel' looks like the id of {subs / 'lsa-1l-kernel'} ({schema.LOOKALIKE_RULE})"
    ]
    assert problems[same_name] == [
        f"{same_name}: name 'o1s' looks like the name of the baseline 'ols' ({schema.LOOKALIKE_RULE})"
    ]
    assert problems[apart] == []


def test_non_finite_baseline_results_are_refused_not_crashed_on(tmp_path: Path) -> None:
    """A baseline results file with Infinity where the ranking does not look is refused by name."""
    folder = static_submission(tmp_path / "source" / "tiny-gd", NOMINAL)
    doc = json.loads((folder / "results.json").read_text())
    doc["tasks"]["kernel/exp"]["lengths"]["14"]["rel_err"]["ci90"][1] = float("inf")
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "fake.json").write_text(json.dumps(doc))
    with pytest.raises(LeaderboardError, match=r"fake.json: tasks\['kernel/exp'\].lengths\['14'\].rel_err.ci90\[1\] "):
        load_entries(tmp_path / "none", tmp_path / "baselines")


def test_resolve_reads_submission_yaml_with_the_bounded_loader(tmp_path: Path) -> None:
    """model.py's `checkpoint.resolve(__file__)` refuses an alias bomb as validation does."""
    folder = static_submission(tmp_path / "submissions" / "tiny-gd", NOMINAL)
    (folder / "submission.yaml").write_text(alias_bomb(9, 9) + (folder / "submission.yaml").read_text())
    with pytest.raises(checkpoint.CheckpointError, match="anchors and aliases"):
        checkpoint.resolve(folder / "model.py")


def entry(db: float, steps: list[float] | None = None) -> dict:
    value = 10 ** (db / 10)
    metrics: dict = {"rel_err": {"value": value, "db": db, "ci90": [value, value], "ci90_db": [db, db]}}
    if steps is not None:
        metrics["steps_rel_err_db"] = steps
    return {"status": "ok", "unsupported_lengths": [], "lengths": {"20": metrics}}


def test_claims_below_the_old_floor_are_compared() -> None:
    """-150 dB claimed where the re-run gives -88 dB was 'equal' (both below -60 dB); now it is a difference."""
    problems = compare_task("linear/kappa1", entry(-150.0), entry(-88.0), "float32")
    assert len(problems) == 6, problems  # db, value and both ends of the interval in dB and as ratios
    assert "linear/kappa1 n=20: rel_err.db is -150 in results.json, -88 on re-run" in problems


@pytest.mark.parametrize(
    "claimed,rerun,dtype,close",
    [
        (-20.0, -20.09, "float32", True),  # within 0.1 dB
        (-20.0, -20.2, "float32", False),
        (-150.0, -145.0, "float32", True),  # both below float32's round-off floor, eps² = -138.5 dB
        (-139.0, -137.0, "float32", True),  # straddling it, differing by less than eps²
        (-130.0, -128.5, "float32", False),  # above it: a real difference
        (-150.0, -145.0, "float64", False),  # float64's floor is -313 dB: below the -300 dB reporting floor
        (-300.0, -300.0, "float64", True),
    ],
)
def test_round_off_floor_depends_on_the_dtype(claimed: float, rerun: float, dtype: str, close: bool) -> None:
    assert (compare_task("t", entry(claimed), entry(rerun), dtype) == []) == close


def test_step_curves_and_values_are_compared() -> None:
    old, new = entry(-30.0, steps=[-10.0, -150.0]), entry(-30.0, steps=[-10.0, -88.0])
    assert compare_task("t", old, new, "float32") == ["t n=20: steps_rel_err_db.[1] is -150 in results.json, -88 on re-run"]
    edited = entry(-30.0)
    edited["lengths"]["20"]["rel_err"]["value"] = 1e-9  # shown in leaderboard.csv, not ranked
    assert compare_task("t", edited, entry(-30.0), "float32") == ["t n=20: rel_err.value is -90 in results.json, -30 on re-run"]


def test_a_length_the_re_run_does_not_score_is_a_difference() -> None:
    claimed = entry(-30.0)
    claimed["lengths"]["5"] = entry(-60.0)["lengths"]["20"]  # shown on the leaderboard, never scored by the model
    assert compare_task("t", claimed, entry(-30.0), "float32") == [
        "t: lengths ['20', '5'] in results.json, ['20'] on re-run"
    ]


def test_yaml_bomb_is_refused_fast(tmp_path: Path) -> None:
    """Times are printed for the record (never asserted): the bombs are refused while composing, in milliseconds."""
    for name, text in (("716-byte-like bomb", alias_bomb(9, 9)), ("deep flow", "[" * 60000)):
        path = tmp_path / "bomb.yaml"
        path.write_text(text)
        start = time.perf_counter()
        with pytest.raises(UntrustedError):
            load_yaml(path, 64 * 2**10)
        print(f"{name} ({len(text)} bytes): refused in {1e3 * (time.perf_counter() - start):.1f} ms")


def test_hub_fields_accept_ordinary_values() -> None:
    good = {"repo_id": "Org-1/my_model.v2", "filename": "sub/dir/w.safetensors", "revision": "a" * 40, "sha256": "0" * 64}
    assert check_fields(good, CHECKPOINT_HUB, "x") == []
