"""Bounded readers for files a submitter controls: YAML and JSON with limits on size, depth and aliases.

Every limit is checked before the work it bounds: the file's size (by `stat`) before it is
read, and YAML aliases and nesting while the document is composed, so a hostile file is
refused in milliseconds. Every failure is an `UntrustedError` with a one-line message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 16
"""Deepest nesting of lists and mappings accepted in a submitted YAML or JSON document."""


class UntrustedError(ValueError):
    """A submitted file that is too large, too deep or not parseable: the message is one line."""


def read_limited(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, refused by its size (from `stat`) when over `max_bytes`, before reading."""
    size = path.stat().st_size
    if size > max_bytes:
        raise UntrustedError(f"{size} bytes, over the {max_bytes}-byte limit")
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since the stat
        raise UntrustedError(f"over the {max_bytes}-byte limit")
    return data


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses anchors and aliases and nesting deeper than `MAX_DEPTH`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not accepted", event.start_mark
            )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _one_line(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def load_yaml(path: Path, max_bytes: int) -> Any:
    """Parse the YAML file `path` safely: at most `max_bytes`, no anchors or aliases, at most `MAX_DEPTH` deep."""
    return parse_yaml(read_limited(path, max_bytes))


def parse_yaml(raw: bytes) -> Any:
    """Parse YAML bytes (UTF-8) without anchors or aliases, nested at most `MAX_DEPTH` deep; `UntrustedError` with a
    one-line reason otherwise."""
    try:
        return yaml.load(raw.decode("utf-8"), Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except UnicodeDecodeError as exc:
        raise UntrustedError(f"not readable YAML: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise UntrustedError(f"not readable YAML: {_one_line(exc)}") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise UntrustedError(f"not readable YAML: {_one_line(exc)}") from None


def _depth(obj: Any) -> int:
    """The nesting depth of lists and dicts in a parsed JSON document (iterative)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(raw: bytes) -> Any:
    """Parse JSON bytes, nested at most `MAX_DEPTH` deep; `UntrustedError` with a one-line reason otherwise."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise UntrustedError(f"not readable JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, integers of more than 4,300 digits
        raise UntrustedError(f"not readable JSON: {' '.join(str(exc).split())}") from None
    if _depth(doc) > MAX_DEPTH:
        raise UntrustedError(f"not readable JSON: nested deeper than {MAX_DEPTH} levels")
    return doc


def load_json(path: Path, max_bytes: int) -> Any:
    """Parse the JSON file `path` of at most `max_bytes`, nested at most `MAX_DEPTH` deep."""
    return parse_json(read_limited(path, max_bytes))
