"""Architecture checkpoints: the weights in safetensors, the config as JSON in its metadata."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from iclbench.models import InContextModel, build

FORMAT = "iclbench-model-1"


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file through a temporary file, so that a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_weights(model: InContextModel, path: str | Path, info: dict[str, Any] | None = None) -> None:
    """Save `model`'s weights with its config (and JSON-ready `info`, e.g. the training tasks) as metadata."""
    metadata = {"format": FORMAT, "config": json.dumps(model.config()), "info": json.dumps(info or {})}
    atomic_save(model.state_dict(), Path(path), metadata)


def read_metadata(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, info) stored in a checkpoint, read from its header alone."""
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"{path}: not an iclbench architecture checkpoint (no {FORMAT!r} config in its metadata)")
    return json.loads(meta["config"]), json.loads(meta.get("info", "{}"))


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> tuple[InContextModel, dict[str, Any]]:
    """The model saved at `path`, on `device` in evaluation mode, and its stored info."""
    config, info = read_metadata(path)
    model = build(config)
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored config {config}: {exc}") from None
    return model.to(device).eval(), info
