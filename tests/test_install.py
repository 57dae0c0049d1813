"""The package as a user installs it: a wheel built from the checkout, installed into a fresh virtual environment,
scores a model from the checkout's root (where `iclbench/` is the source tree, not the installed package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_built_wheel_works_from_the_checkout_root(tmp_path: Path) -> None:
    """`python -m build` makes a wheel holding the baselines and every data file of the package; installed alone (torch and the other
    dependencies from the system's site packages), its `iclbench run` and the model's worker both import the
    installed package, even with the checkout's source tree in the working directory."""
    dist, src = tmp_path / "dist", tmp_path / "src"
    # the sources alone, as a fresh clone has them: an egg-info or build folder of an earlier build adds its files
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "tests", "submissions", "results", "docs"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(src)],
                   cwd=tmp_path, capture_output=True, text=True, check=True, timeout=300)
    wheel = next(dist.glob("iclbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [p.relative_to(ROOT).as_posix() for p in (ROOT / "iclbench").rglob("*")
            if p.suffix in (".json", ".safetensors")]
    assert len(data) > 5 and "iclbench/leaderboard/reference_levels.json" in data
    for name in (*data, "iclbench/baselines/zero.py", "iclbench/leaderboard/ranking.py"):
        assert name in names, name
    assert not any(name.startswith(("tests/", "baselines/", "submissions/")) for name in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--ignore-installed",
                    "--quiet", str(wheel)], capture_output=True, text=True, check=True, timeout=300)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ICLBENCH_CACHE": os.environ["ICLBENCH_CACHE"]}
    site = subprocess.run([str(python), "-c", "import iclbench; print(iclbench.__file__)"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert Path(site).is_relative_to(env_dir), site

    decoy = tmp_path / "decoy"  # a working directory whose source tree must never be imported
    (decoy / "iclbench").mkdir(parents=True)
    (decoy / "iclbench" / "__init__.py").write_text("raise ImportError('the working directory was imported')\n")
    for cwd in (ROOT, decoy):
        out = tmp_path / cwd.name / "results"
        proc = subprocess.run([str(env_dir / "bin" / "iclbench"), "run", "--model", "zero", "--tasks", "linear/kappa1",
                               "--prompts", "16", "--quiet", "--out", str(out)],
                              cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads((out / "zero.json").read_text())["tasks"]["linear/kappa1"]["status"] == "ok"
