"""A submission's checkpoint: safetensors checks without unpickling, and where its file lies.

A checkpoint is declared in `submission.yaml` either as a file in the submission's
folder or as a Hugging Face Hub file pinned to a commit. `resolve(__file__)` is what a
submission's `model.py` calls in `setup` to get the checkpoint's local path, checked
against its declared SHA-256.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import Any

from iclbench.plugins import sha256_file
from iclbench.untrusted import UntrustedError, load_yaml, parse_json

MAX_HEADER_BYTES = 2**20
"""Largest safetensors JSON header accepted (room for thousands of tensors)."""
MAX_RANK = 8
"""Most dimensions a checkpoint tensor may have."""
MAX_YAML_BYTES = 64 * 2**10
"""Largest submission.yaml read."""
MAX_FILE_BYTES = 50 * 2**20
"""Largest checkpoint in a submission's folder; a larger one goes on the Hugging Face Hub."""
MAX_HUB_BYTES = 2 * 2**30
"""Largest checkpoint on the Hub."""

COMMIT_RE = re.compile(r"[0-9a-f]{40}")
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class CheckpointError(ValueError):
    """A checkpoint that is missing, not safetensors, or not the declared file."""


def _sniff(head: bytes) -> str | None:
    """A name for a known non-safetensors format, from a file's first bytes."""
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (the torch.save format, which holds a pickle)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if head[:6] == b"\x93NUMPY":
        return "a NumPy .npy file"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "an HDF5 file"
    return None


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _header(path: Path, max_bytes: int) -> tuple[dict[str, Any], int]:
    """The parsed JSON header of a safetensors file and the size of its data section, within the limits."""
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointError(f"{path}: {size} bytes, over the limit of {max_bytes} bytes")
    with open(path, "rb") as fh:
        head = fh.read(9)  # the header length, then the header's opening brace
        n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
        fits = n <= MAX_HEADER_BYTES and 8 + n <= size
        # a header length can begin like another format (0x0380 bytes: b"\x80\x03", a pickle's start)
        if not (fits and head[8:9] == b"{") and (kind := _sniff(head)) is not None:
            raise CheckpointError(f"{path}: this is {kind}, not a safetensors file; save weights with safetensors")
        if len(head) < 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file ({size} bytes)")
        if not fits:
            raise CheckpointError(
                f"{path}: not a safetensors file (header length {n} does not fit a {size}-byte file "
                f"or is over the {MAX_HEADER_BYTES}-byte limit)"
            )
        raw = head[8:] + fh.read(n - len(head[8:]))
    try:
        header = parse_json(raw)
    except UntrustedError as exc:
        raise CheckpointError(f"{path}: not a safetensors file (header {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header, size - 8 - n


def _span(path: Path, name: str, info: Any, data_bytes: int) -> tuple[int, int]:
    """The checked byte range of one tensor's header entry."""
    if not (isinstance(info, dict) and sorted(info) == ["data_offsets", "dtype", "shape"]):
        raise CheckpointError(f"{path}: tensor {name!r}: header entry must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise CheckpointError(f"{path}: tensor {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK and all(map(_int, shape))):
        raise CheckpointError(
            f"{path}: tensor {name!r}: shape must be a list of at most {MAX_RANK} non-negative integers, got {shape!r}"[
                :300
            ]
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_int, offsets))):
        raise CheckpointError(f"{path}: tensor {name!r}: data_offsets must be two non-negative integers, got {offsets!r}")
    start, end = offsets
    if not start <= end <= data_bytes or end - start != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise CheckpointError(
            f"{path}: tensor {name!r} has byte range {start}-{end}, inconsistent with its "
            f"{dtype} shape {shape} or the file's {data_bytes} data bytes"
        )
    return start, end


def check_safetensors(path: str | Path, max_bytes: int) -> dict[str, Any]:
    """Parse and check a safetensors file's header without loading any tensor; return the header.

    The file's size (from `stat`) must be at most `max_bytes`, before anything is read;
    then only the 8-byte little-endian header length and the JSON header (at most
    `MAX_HEADER_BYTES`, nested at most `untrusted.MAX_DEPTH` deep) are read: nothing is
    unpickled or executed. `__metadata__` must map strings to strings; every tensor's
    dtype must be one of `DTYPE_BYTES`, its shape a list of non-negative integers, its
    data_offsets two integers consistent with dtype and shape, and the tensors' byte
    ranges must cover the data section exactly, without gaps or overlaps.
    """
    path = Path(path)
    header, data_bytes = _header(path, max_bytes)
    meta = header.get("__metadata__", {})
    if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")
    spans = sorted(_span(path, name, info, data_bytes) for name, info in header.items() if name != "__metadata__")
    covered = 0
    for start, end in spans:
        if start != covered:
            raise CheckpointError(f"{path}: tensor data is not contiguous (gap or overlap at byte {start})")
        covered = end
    if covered != data_bytes:
        raise CheckpointError(f"{path}: {data_bytes - covered} bytes after the last tensor")
    return header


def hub_download(repo_id: str, filename: str, revision: str) -> Path:
    """The local path of a Hub file at a pinned commit, downloaded into (or found in) the Hub cache.

    With HF_HUB_OFFLINE=1 the file is taken from the cache only.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if not COMMIT_RE.fullmatch(revision):
        raise CheckpointError(f"revision {revision!r} is not a 40-character commit hash")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError as exc:
        raise CheckpointError(
            f"{repo_id}/{filename}@{revision}: not in the Hub cache and cannot be downloaded ({exc})"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(f"{repo_id}/{filename}@{revision}: download failed: {exc}") from None


def locate(folder: Path, declared: dict[str, Any]) -> Path:
    """The local path of the checkpoint `declared` in `folder`'s submission.yaml (no hash check).

    A local `file` must be a plain file inside the folder: no absolute path, no `..`,
    no symbolic link.
    """
    if "file" in declared:
        rel = str(declared["file"])
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise CheckpointError(f"checkpoint.file {rel!r} must be a relative path inside the submission folder")
        path = folder / rel
        if path.is_symlink():
            raise CheckpointError(f"checkpoint.file {rel!r} is a symbolic link; commit the file itself")
        if not path.resolve().is_relative_to(folder.resolve()):
            raise CheckpointError(f"checkpoint.file {rel!r} escapes the submission folder")
        if not path.is_file():
            raise CheckpointError(f"checkpoint.file {rel!r} not found in {folder}")
        return path
    return hub_download(str(declared["repo_id"]), str(declared["filename"]), str(declared["revision"]))


def max_bytes(declared: dict[str, Any]) -> int:
    """The size limit of the checkpoint `declared`: `MAX_FILE_BYTES` in the folder, `MAX_HUB_BYTES` on the Hub."""
    return MAX_FILE_BYTES if "file" in declared else MAX_HUB_BYTES


def verify(path: Path, sha256: str, max_bytes: int) -> dict[str, Any]:
    """Check that `path` is a safetensors file of at most `max_bytes` whose SHA-256 is `sha256`; return its header."""
    header = check_safetensors(path, max_bytes)
    actual = sha256_file(path)
    if actual != sha256:
        raise CheckpointError(f"{path}: SHA-256 is {actual}, but submission.yaml declares {sha256}")
    return header


def elements(header: dict[str, Any]) -> int:
    """The number of elements of every tensor of a checked safetensors header (`check_safetensors`)."""
    return sum(math.prod(info["shape"]) for name, info in header.items() if name != "__metadata__")


def resolve(model_file: str | Path) -> Path:
    """The checked local path of the checkpoint declared in the submission.yaml next to `model_file`.

    A submission's model.py calls `resolve(__file__)` in `setup`, then loads the file
    with `safetensors.torch.load_file`.
    """
    folder = Path(model_file).resolve().parent
    meta_path = folder / "submission.yaml"
    try:
        meta = load_yaml(meta_path, MAX_YAML_BYTES)
        declared = meta["checkpoint"]
        sha256 = declared["sha256"]
    except (OSError, UntrustedError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{meta_path}: cannot read the checkpoint declaration: {exc}") from None
    path = locate(folder, declared)
    verify(path, str(sha256), max_bytes(declared))
    return path
