"""Evaluation sets are pinned: fingerprints reproduce in a fresh process and in the session; the cache is verified."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

from iclbench import cache, tasks
from iclbench.tasks import FINGERPRINTS

SCRIPT = """
import json
from iclbench import tasks
print(json.dumps({name: t.generate().fingerprint() for name, t in tasks.TASKS.items()}))
"""


def fresh_fingerprints() -> dict[str, str]:
    env = {**os.environ, "ICLBENCH_CACHE": "off"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_fingerprints_reproduce_in_a_fresh_process_and_in_the_session(session_fingerprints: dict[str, str]) -> None:
    """Two processes generate every set: a fresh one, and this session (once, for all its tests)."""
    fresh = fresh_fingerprints()
    assert fresh == session_fingerprints
    assert fresh == FINGERPRINTS  # a change of data must come with a new suite version
    assert set(FINGERPRINTS) == set(tasks.TASKS)


def test_fingerprint_covers_every_tensor() -> None:
    data, fingerprint = cache.eval_set(tasks.get("lasso/shift0.1"))
    for name, tensor in data.tensors().items():
        changed = dict(data.tensors())
        bumped = tensor.clone()
        bumped.view(-1)[0] = torch.nextafter(bumped.view(-1)[0], torch.tensor(float("inf")))
        changed[name] = bumped
        assert tasks.EvalSet.from_tensors(changed).fingerprint() != fingerprint, name


def test_cache_file_is_verified_and_regenerated_when_tampered(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ICLBENCH_CACHE", str(tmp_path))
    task = tasks.get("kernel/relu")
    cache.clear_memory()
    data, fingerprint = cache.eval_set(task)
    files = list(tmp_path.rglob("*.safetensors"))
    assert len(files) == 1 and fingerprint[:16] in files[0].name
    tensors = load_file(files[0])
    tensors["y"][0, 0] += 1.0
    save_file(tensors, files[0])
    cache.clear_memory()
    again, again_fp = cache.eval_set(task)
    assert again_fp == fingerprint and torch.equal(again.y, data.y)
    assert cache.EvalSet.from_tensors(load_file(files[0])).fingerprint() == fingerprint  # rewritten
    files[0].write_bytes(b"not a safetensors file")
    cache.clear_memory()
    assert cache.eval_set(task)[1] == fingerprint
    cache.clear_memory()
