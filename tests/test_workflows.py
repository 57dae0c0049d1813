"""The GitHub workflows: triggers, permissions, pinned actions and torch, commands that exist, and the split of
running from judging, checked on the files and replayed (`fixtures.actions`) against a pull request whose model
tries to take over the steps that judge it (`fixtures.tamperer`).

The judge never shares a job with the judged: a job that runs submitted code (`iclbench predict`) holds no
permission, reads no output of another job and runs nothing after the model but the upload of its predictions;
a job that holds a permission never runs submitted code (no predict, re-run or verify of a model) and installs only
the base's iclbench. The replays show it: no mark of the tampering model appears in a trusted job, and the verdicts
are the honest ones.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from fixtures.actions import Runner, load
from fixtures.tamperer import write_tamperer

from iclbench.cli import build_parser
from iclbench.leaderboard import findings
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run
from iclbench.submissions import pr_check
from iclbench.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("submissions", "pages", "tests")
JUDGED = ("submissions", "pages")
README = (ROOT / "README.md").read_text()
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
TASK_NAMES = ["lasso/fixed", "kernel/linear"]
"""The tasks of the fast replays: their sets generate in milliseconds."""
HONEST = "kernel-exp-attn-linear"
"""The committed submission of the fast replays (it scores kernel/linear)."""
POOLED = "lsa-3l-noisy-pool16"
"""A committed submission trained on a pool of 16 tasks of linear/noisy, which the pages replay also judges there."""


def workflow(name: str) -> dict[str, Any]:
    return load(WORKFLOWS / f"{name}.yml")


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def lines(script: str) -> list[str]:
    """The shell commands of a `run:` script, continuation lines joined."""
    return [line.strip() for line in script.replace("\\\n", " ").splitlines() if line.strip()]


def commands(doc: dict[str, Any], job: str | None = None) -> list[str]:
    """Every shell command of the workflow's `run:` steps (of one job), continuation lines joined."""
    jobs = [doc["jobs"][job]] if job else doc["jobs"].values()
    return [c for j in jobs for step in j["steps"] if "run" in step for c in lines(step["run"])]


def runs_model(job: dict[str, Any]) -> bool:
    """Whether a job runs submitted code: predicts, re-runs or verifies a model."""
    text = "\n".join(step.get("run", "") for step in job["steps"])
    return bool(re.search(r"iclbench (predict|verify)\b|--rerun", text))


def test_every_workflow_is_listed() -> None:
    assert sorted(p.stem for p in WORKFLOWS.glob("*.yml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_actions_are_pinned_by_commit(name: str) -> None:
    found = [line for line in (WORKFLOWS / f"{name}.yml").read_text().splitlines() if "uses:" in line]
    assert found
    for line in found:
        assert re.fullmatch(r"\s*(- )?uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+(\.\d+)*", line), line


@pytest.mark.parametrize("name", NAMES)
def test_no_pull_request_target_and_no_credentials_kept(name: str) -> None:
    doc = workflow(name)
    assert "pull_request_target" not in doc["on"] and "workflow_run" not in doc["on"]
    for step in steps(doc):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False
    assert "${{ secrets." not in (WORKFLOWS / f"{name}.yml").read_text()


@pytest.mark.parametrize("name", JUDGED)
def test_the_judge_never_shares_a_job_with_the_judged(name: str) -> None:
    """Nothing is granted by default; a job that runs submitted code holds no permission, reads no other job's
    output, and runs nothing after the model but the upload of its predictions; every other job runs no model."""
    doc = workflow(name)
    assert doc["permissions"] == {}
    judged = [key for key, job in doc["jobs"].items() if runs_model(job)]
    assert judged == ["predict"]
    job = doc["jobs"]["predict"]
    assert job["permissions"] == {} and "outputs" not in job and "env" not in job
    assert "needs." not in yaml.safe_dump({k: v for k, v in job.items() if k != "strategy"})
    text = json.dumps(job)
    assert "outputs" not in text.replace("outputs.ids", "")  # only the matrix's list of ids
    after = job["steps"][[i for i, s in enumerate(job["steps"]) if "iclbench predict" in s.get("run", "")][0] + 1:]
    assert [s["uses"].split("@")[0] for s in after] == ["actions/upload-artifact"]
    assert after[0]["with"]["path"] == "${{ runner.temp }}/predictions"
    for key, trusted in doc["jobs"].items():
        if key != "predict":
            assert trusted["permissions"]["contents"] == "read" and not runs_model(trusted), key
            installs = [c for c in commands(doc, key) if "pip install" in c and "torch" not in c]
            assert installs in (["python -m pip install ./base"], ["python -m pip install ."]), installs


@pytest.mark.parametrize("name", JUDGED)
def test_pages_permissions_only_where_the_site_is_deployed(name: str) -> None:
    doc = workflow(name)
    holders = {k for k, job in doc["jobs"].items() if set(job["permissions"]) - {"contents"}}
    assert holders == ({"publish"} if name == "pages" else set())
    if name == "pages":
        assert doc["jobs"]["publish"]["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
        deploy = [s for s in doc["jobs"]["publish"]["steps"] if s.get("uses", "").startswith("actions/deploy-pages@")]
        assert deploy


@pytest.mark.parametrize("name", JUDGED)
def test_the_seed_reaches_the_judging_job_alone(name: str) -> None:
    """The seed is drawn into a file that is removed before any upload, leaves `prepare` as a job output, and is
    read by the job that scores (never by `predict`); no artifact is made of the folder it was written to."""
    doc = workflow(name)
    prepare = commands(doc, "prepare")
    (draw,) = [c for c in prepare if "--draw-seed" in c]
    seed_file = shlex.split(draw)[shlex.split(draw).index("--draw-seed") + 1]
    assert prepare[prepare.index(draw) + 1] == f'echo "seed=$(cat {seed_file})" >> "$GITHUB_OUTPUT"'
    assert prepare[prepare.index(draw) + 2] == f"rm -r {seed_file.split('/')[0]}"
    assert doc["jobs"]["prepare"]["outputs"]["seed"] == "${{ steps.inputs.outputs.seed }}"
    readers = [k for k, job in doc["jobs"].items() if "needs.prepare.outputs.seed" in json.dumps(job)]
    judge = "publish" if name == "pages" else "score"
    assert readers == [judge] and doc["jobs"][judge]["env"]["SEED"] == "${{ needs.prepare.outputs.seed }}"
    uploads = [s["with"]["path"] for s in steps(doc) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert not any(seed_file.split("/")[0] in path for path in uploads)


@pytest.mark.parametrize("name", NAMES)
def test_torch_is_pinned_as_in_the_readme_from_the_cpu_index(name: str) -> None:
    (pin,) = set(re.findall(r"torch==[\w.+]+", README))
    installs = [c for c in commands(workflow(name)) if re.search(r"pip install .*\btorch\b", c)]
    assert installs
    assert all(c.endswith(f"pip install {pin} {CPU_INDEX}") for c in installs)


@pytest.mark.parametrize("name", NAMES)
def test_iclbench_commands_exist(name: str) -> None:
    """Every `iclbench ...` and `python -I/-P -m iclbench...` line parses with today's command line."""
    found = 0
    for line in commands(workflow(name)):
        inner = re.fullmatch(r"\w+=\$\((.*)\)", line)  # folder=$(python ...)
        text = (inner.group(1) if inner else line).split(" || ")[0]
        if not re.match(r"iclbench |python -[IP] -m iclbench\.", text):
            continue
        words = shlex.split(re.sub(r"\$\{?\w+\}?", "1", text))  # a shell variable's value: a count or a path
        if words[0] == "iclbench":
            build_parser().parse_args(words[1:])
        elif words[3] == "iclbench.submissions.pr_check":
            assert words[1] == "-I", text
            pr_check.build_parser().parse_args(words[4:])
        else:
            assert words[:4] == ["python", "-P", "-m", "iclbench.leaderboard.findings"], text
            findings.build_parser().parse_args(words[4:])
        found += 1
    assert found or name == "tests"


def test_submissions_judges_with_the_base_commit() -> None:
    doc = workflow("submissions")
    assert list(doc["on"]) == ["pull_request"]
    for job in ("prepare", "score"):
        found = [s for s in doc["jobs"][job]["steps"] if "actions/checkout@" in s.get("uses", "")]
        checkouts = {s["with"]["path"]: s["with"] for s in found}
        assert checkouts["base"]["ref"] == "${{ github.event.pull_request.base.sha }}"
        assert "ref" not in checkouts["pr"]  # the merge commit of the pull request
        (scope,) = [c for c in commands(doc, job) if "iclbench.submissions.pr_check" in c]
        assert 'python -I -m iclbench.submissions.pr_check --repo pr --base "$BASE_SHA" --head "$GITHUB_SHA"' in scope
        assert '--extract "$RUNNER_TEMP/submission"' in scope  # the judge's copy comes from git objects, in each job
        assert not any(re.search(r"(^|[\s/])pr/", c) for c in commands(doc, job) if c != scope)
    assert not any("actions/checkout@" in s.get("uses", "") for s in doc["jobs"]["predict"]["steps"])
    assert 'iclbench validate "$FOLDER"' in commands(doc, "prepare")
    (judge,) = [c for c in commands(doc, "score") if c.startswith("iclbench score")]
    assert '--seed "$SEED" --seed-drawn' in judge
    # its per-prompt errors from its judged predictions, for the board (built in $RUNNER_TEMP/board)
    assert '--samples "board/samples/$(basename "$FOLDER").samples.safetensors"' in judge
    (board,) = [c for c in commands(doc, "score") if c.startswith("iclbench leaderboard")]
    assert "--run-baselines" in board and "--check" not in board and "--samples samples" in board


def test_predict_jobs_make_the_sandbox_possible_and_fail_without_it() -> None:
    for name in JUDGED:
        run = commands(workflow(name), "predict")
        assert "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in run
        assert any(c.startswith("sudo apt-get install") and "bubblewrap" in c for c in run)
        predicts = [c for c in run if c.startswith("iclbench predict")]
        assert predicts and all("--no-sandbox" not in c and c.endswith("|| [ $? -eq 1 ]") for c in predicts)
        # a Hub checkpoint reaches the cache before the offline sandbox needs it; the model's code is not run then
        (fetch,) = [i for i, c in enumerate(run) if c.startswith("iclbench validate")]
        assert "--rerun" not in run[fetch] and fetch < run.index(predicts[0])


def test_pages_builds_everything() -> None:
    doc = workflow("pages")
    assert set(doc["on"]) == {"push", "workflow_dispatch"} and doc["on"]["push"] == {"branches": ["main"]}
    assert doc["jobs"]["predict"]["strategy"]["matrix"] == {"id": "${{ fromJSON(needs.prepare.outputs.ids) }}"}
    assert doc["jobs"]["predict"]["strategy"]["fail-fast"] is False
    assert doc["jobs"]["publish"]["if"] == "${{ always() && needs.prepare.result == 'success' }}"
    (board,) = [c for c in commands(doc) if c.startswith("iclbench leaderboard")]
    words = shlex.split(board)
    assert "--run-baselines" in words
    site = words[words.index("--out") + 1]
    (upload,) = [s for s in steps(doc) if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload["with"]["path"] == site.replace("$RUNNER_TEMP", "${{ runner.temp }}")
    baselines = words[words.index("--baselines") + 1]
    assert baselines.startswith("$RUNNER_TEMP/")  # scored here, never taken from the repository
    samples = words[words.index("--samples") + 1]  # the judged predictions' errors, never a submitter's file
    judged = [shlex.split(c) for c in commands(doc) if c.startswith("iclbench score")]
    assert judged and all(w[w.index("--samples") + 1].startswith(samples + "/") for w in judged)
    assert not [c for c in commands(doc) if c.startswith("iclbench validate") and "--rerun" in c]  # no model runs here


def test_pages_checks_the_findings_against_the_baselines_it_scored() -> None:
    run = commands(workflow("pages"), "publish")
    (board,) = [i for i, c in enumerate(run) if c.startswith("iclbench leaderboard")]
    (check,) = [i for i, c in enumerate(run) if c.startswith("python -P -m iclbench.leaderboard.findings")]
    assert check > board
    args = findings.build_parser().parse_args(shlex.split(run[check])[4:])
    assert args.check and not args.no_checkpoints
    words = shlex.split(run[board])
    assert args.baselines == Path(words[words.index("--baselines") + 1])
    assert args.submissions == Path("submissions") and args.out == Path("docs/findings")


def test_tests_runs_the_readme_command() -> None:
    doc = workflow("tests")
    assert {"push", "pull_request"} <= set(doc["on"])
    steps = [s for s in doc["jobs"]["pytest"]["steps"] if "run" in s]
    readme_step = next(s for s in steps if s["run"] == ".ci/run")
    assert "if" not in readme_step  # every push and pull request runs it
    (slow,) = [s for s in steps if s["run"] == "pytest -m slow"]
    assert "pull_request" not in slow["if"]  # the full-size checks never hold a pull request up
    readme_command = re.search(r"## Development\n\n```bash\n(.+)\n```", README).group(1)
    assert (ROOT / ".ci" / "run").read_text().splitlines()[-1] == readme_command


# The replays ---------------------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def project(repo: Path, submissions: list[str] | None) -> None:
    """A repository whose `main` holds this checkout's code, docs and workflows, and the committed submissions named
    (all when None)."""
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("iclbench", "docs", ".github"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=ignore)
    for file in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / file, repo / file)
    names = submissions if submissions is not None else [p.name for p in (ROOT / "submissions").iterdir() if p.is_dir()]
    (repo / "submissions").mkdir()
    shutil.copy(ROOT / "submissions" / "README.md", repo / "submissions" / "README.md")
    for name in names:
        shutil.copytree(ROOT / "submissions" / name, repo / "submissions" / name, ignore=ignore)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "ci@example.org")
    git(repo, "config", "user.name", "ci")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")


def add_tamperer(repo: Path, markers: Path, replay: Path) -> Path:
    """Commit the tampering look-up cheater as `submissions/look-up`, with a full run's results (it supports
    TASK_NAMES alone), made in this process, where it stays inert; return its folder."""
    folder = repo / "submissions" / "look-up"
    model = write_tamperer(folder, TASK_NAMES, markers, replay)
    meta = {"name": "look-up", "authors": ["A. Cheat"], "contact": "cheat@example.org", "paper": None, "code": None,
            "license": "MIT", "architecture": "a table of the public targets", "parameters": 0, "training": None,
            "checkpoint": None}
    (folder / "submission.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    run(load_model(str(model)), list(TASKS.values()), RunConfig("cpu"), folder / "results.json", progress=False)
    assert marks(markers) == [], "the tamperer acted in the test's own process"
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "submission look-up")
    return folder


def restrict(tasks: list[str]) -> Callable[[str], str]:
    """The fast replays' change to a `run:` script: inputs and scores on `tasks` alone, the baselines not scored
    (`--run-baselines` dropped) and the findings not checked (both need every baseline, scored in minutes)."""

    def rewrite(script: str) -> str:
        if "iclbench.leaderboard.findings --check" in script:
            return "echo 'the fast replay scores no baseline: the findings are checked in the full replay'\n"
        if not re.search(r"iclbench (inputs|score) |--run-baselines", script):
            return script
        joined = script.replace("\\\n", " ")
        joined = re.sub(r"(iclbench (?:inputs|score) [^\n]*?)( \|\| [^\n]*)?$", lambda m: f"{m.group(1)} --tasks "
                        f"{' '.join(tasks)}{m.group(2) or ''}", joined, flags=re.M)
        return joined.replace(" --run-baselines", "")

    return rewrite


def marks(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_no_trace(runner: Runner, markers: Path, trusted: list[str]) -> None:
    """No mark of the tamperer anywhere (the sandbox keeps it from every file it would write), its secret nowhere
    (it reads no variable of its job: nothing of the runner's secret leaves with its answers)."""
    found = marks(markers)
    assert found == [], found
    for path in runner.root.rglob("*"):
        if path.is_file() and "machines" not in path.relative_to(runner.root).parts[:1]:
            assert runner.secret.encode() not in path.read_bytes(), path
    for key in trusted:
        assert all(runner.secret not in job.log() for job in runner.jobs.get(key, [])), key


def test_the_runner_keeps_githubs_channels(tmp_path: Path) -> None:
    """The replays' runner is faithful where tampering would act: a step's $GITHUB_ENV and $GITHUB_PATH reach the
    later steps of its job, $GITHUB_OUTPUT its job's outputs, an artifact the later jobs; a process left behind dies
    with its job; another job's machine, or the system's Python, cannot be written."""
    (tmp_path / "repo").mkdir()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = Path(sys.base_prefix) / "lib" / version / "site-packages"
    project_file = tmp_path / "repo" / "w.yml"
    project_file.write_text(yaml.safe_dump({
        "on": {"push": {}},
        "permissions": {},
        "jobs": {
            "first": {"permissions": {}, "outputs": {"said": "${{ steps.say.outputs.word }}"}, "steps": [
                {"id": "say", "run": 'echo "word=hello" >> "$GITHUB_OUTPUT"\necho "LATER=yes" >> "$GITHUB_ENV"\n'
                                     'mkdir -p "$RUNNER_TEMP/bin" && printf "#!/bin/sh\\necho shadowed\\n" > '
                                     '"$RUNNER_TEMP/bin/tool" && chmod +x "$RUNNER_TEMP/bin/tool"\n'
                                     'echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"\n'
                                     f'(setsid sleep 300 &) ; touch {system}/x.pth || true\n'},
                {"run": 'test "$LATER" = yes && test "$(tool)" = shadowed && mkdir -p out && echo data > out/f'},
                {"uses": "actions/upload-artifact@x", "with": {"name": "a", "path": "${{ github.workspace }}/out"}},
            ]},
            "second": {"needs": "first", "permissions": {}, "steps": [
                {"uses": "actions/download-artifact@x", "with": {"name": "a", "path": "got"}},
                {"run": 'test "$(cat got/f)" = data && test "${{ needs.first.outputs.said }}" = hello\n'
                        'test -z "$LATER"'},
            ]},
        },
    }))
    runner = Runner(tmp_path / "replay", tmp_path / "repo", {"name": "push", "payload": {}}, "0" * 40)
    jobs = runner.run_workflow(project_file)
    assert [j.result for j in jobs["first"] + jobs["second"]] == ["success", "success"], jobs["first"][0].log()
    assert not (system / "x.pth").exists()
    assert len(jobs["first"][0].killed) == 1 and jobs["second"][0].killed == []  # the sleeper, at its job's end


def test_the_tamperer_takes_over_a_job_it_shares(tmp_path: Path) -> None:
    """The control: in a job that runs the model unsandboxed and then judges, the tampering works (marks of the
    planted code, of the shadowing `iclbench`), which the replays' absence of marks is measured against."""
    markers, repo = tmp_path / "markers", tmp_path / "repo"
    markers.mkdir()
    repo.mkdir()
    project(repo, [])
    add_tamperer(repo, markers, tmp_path / "replay")
    shared = [
        {"uses": "actions/checkout@x", "with": {"persist-credentials": False}},
        {"run": "python -m pip install ."},
        {"run": "python -c \"import runpy; runpy.run_path('submissions/look-up/model.py')\""},
        {"run": "python -c 'import iclbench.submissions.score'; iclbench score --help"},
    ]
    (repo / "shared.yml").write_text(yaml.safe_dump({"on": {"push": {}}, "jobs": {"shared": {"permissions": {},
                                                                                             "steps": shared}}}))
    runner = Runner(tmp_path / "replay", repo, {"name": "push", "payload": {}}, git(repo, "rev-parse", "HEAD"),
                    writable=(markers,))
    (job,) = runner.run_workflow(repo / "shared.yml")["shared"]
    assert job.result == "success", job.log()
    assert {"imported-shared", "planted-shared", "path-shared", "alive-shared"} <= set(marks(markers))
    assert "verified" in job.steps[-1].stdout  # the shadowing iclbench answered


def replay_submission(tmp_path: Path, rewrite: Callable[[str], str] | None) -> tuple[Runner, Path]:
    markers, repo = tmp_path / "markers", tmp_path / "repo"
    markers.mkdir()
    repo.mkdir()
    project(repo, [HONEST])
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "pr")
    add_tamperer(repo, markers, tmp_path / "replay")
    event = {"name": "pull_request", "payload": {"pull_request": {"base": {"sha": base}}}}
    runner = Runner(tmp_path / "replay", repo, event, git(repo, "rev-parse", "HEAD"), rewrite, writable=(markers,))
    runner.run_workflow(repo / ".github" / "workflows" / "submissions.yml")
    return runner, markers


def test_a_tampering_pull_request_is_judged_honestly(tmp_path: Path) -> None:
    """The submissions workflow on a pull request adding the tampering cheater (fast: two tasks, no baselines): the
    model ran in `predict` alone, nothing of it reached `prepare` or `score`, and `score` refused it."""
    runner, markers = replay_submission(tmp_path, restrict(TASK_NAMES))
    jobs = {key: instances[0] for key, instances in runner.jobs.items()}
    assert jobs["prepare"].result == jobs["predict"].result == "success", jobs["prepare"].log() + jobs["predict"].log()
    assert jobs["score"].result == "failure"
    judged = jobs["score"].steps[-1]
    assert judged.name.startswith("Judge the predictions") and judged.returncode == 1, jobs["score"].log()
    assert "verified on fresh data" not in judged.stdout
    assert "FAILED verification" in judged.stdout, judged.stdout
    assert_no_trace(runner, markers, ["prepare", "score"])


def replay_pages(
    tmp_path: Path, submissions: list[str] | None, rewrite: Callable[[str], str] | None
) -> tuple[Runner, Path]:
    markers, repo = tmp_path / "markers", tmp_path / "repo"
    markers.mkdir()
    repo.mkdir()
    project(repo, submissions)
    add_tamperer(repo, markers, tmp_path / "replay")
    runner = Runner(tmp_path / "replay", repo, {"name": "push", "payload": {}}, git(repo, "rev-parse", "HEAD"),
                    rewrite, writable=(markers,))
    runner.run_workflow(repo / ".github" / "workflows" / "pages.yml")
    return runner, markers


def reports(runner: Runner) -> dict[str, Any]:
    """The verification reports the publish job wrote, by submission id."""
    folder = runner.jobs["publish"][0].machine / "temp" / "submissions"
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/verification.json")}


def test_pages_publishes_honest_verdicts_beside_a_tampering_model(tmp_path: Path) -> None:
    """The pages workflow on main with two committed submissions, one trained on a pool of tasks, and the tampering
    cheater merged (fast: three tasks, no baselines): each model predicts in a job of its own, the site is deployed,
    the honest models are verified (the pool model on fresh in-pool prompts too) and the cheater is not, and
    nothing of it reached `prepare` or `publish`."""
    runner, markers = replay_pages(tmp_path, [HONEST, POOLED], restrict([*TASK_NAMES, "linear/noisy"]))
    predicted = sorted(j.name for j in runner.jobs["predict"])
    assert predicted == [f"predict-{HONEST}", "predict-look-up", f"predict-{POOLED}"]
    publish = runner.jobs["publish"][0]
    assert publish.result == "success" and runner.deployed, publish.log()
    found = reports(runner)
    assert found[HONEST]["verdict"] == "pass" and set(found[HONEST]["tasks"]) == {*TASK_NAMES, "linear/noisy"}
    assert found[POOLED]["verdict"] == "pass" and set(found[POOLED]["tasks"]["linear/noisy"]["in_pool"]) == {
        str(n) for n in TASKS["linear/noisy"].spec.lengths}
    assert found.get("look-up", {"verdict": "fail"})["verdict"] == "fail"
    shown = {m["key"]: m["verification"] for m in json.loads((runner.site / "leaderboard.json").read_text())["models"]}
    assert shown[f"sub-{HONEST}"] == "not verified"  # verified on two tasks: the board counts a full verification
    assert_no_trace(runner, markers, ["prepare", "publish"])


@pytest.mark.slow
def test_pages_verifies_every_committed_submission(tmp_path: Path) -> None:
    """The pages workflow as written (every task, every baseline, the findings checked) on main with every committed
    submission and the tampering cheater: every committed submission is verified on the published site."""
    runner, markers = replay_pages(tmp_path, None, None)
    publish = runner.jobs["publish"][0]
    assert publish.result == "success" and runner.deployed, publish.log()
    committed = sorted(p.name for p in (ROOT / "submissions").iterdir() if p.is_dir())
    found = reports(runner)
    assert {k: found[k]["verdict"] for k in committed} == {k: "pass" for k in committed}
    shown = {m["key"]: m["verification"] for m in json.loads((runner.site / "leaderboard.json").read_text())["models"]}
    assert all(shown[f"sub-{k}"].startswith("verified ") for k in committed), shown
    assert found.get("look-up", {"verdict": "fail"})["verdict"] == "fail"
    assert_no_trace(runner, markers, ["prepare", "publish"])
