"""Numbers a submission's files could feed its model besides the declared checkpoint, counted per file.

A model reads whatever lies beside it, so weights can travel in any file, not only in a `.safetensors`
checkpoint: a `.json` or `.txt` of numbers, a Python list literal, a base64 string. `count` bounds what a file
holds, read as data (nothing is run):

- text: every decimal number written in it (`NUMBER_RE`), and every run of at least `OPAQUE_RUN` base64
  characters (`OPAQUE_RE`: base64, hexadecimal, a long digit string) as the float32 values its bytes could
  encode (3 bytes per 4 characters, 4 bytes per value);
- Python code (a `.py` file Python's tokenizer reads): every numeric literal, and its strings and comments as text;
- anything that is not UTF-8 text: one value per 4 bytes.

A training-free submission (`training: null`) ships none: every file except `SCHEMA_FILES` holds at most
`MAX_NUMBERS` (`iclbench.submissions.schema.check_training_free`).
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

SCHEMA_FILES = ("submission.yaml", "results.json", "verification.json")
"""Files whose every field is checked against a schema (verification.json: written by CI only): not counted."""
MAX_NUMBERS = 256
"""Most numbers a file of a training-free submission may hold (every baseline's file holds fewer)."""
OPAQUE_RUN = 32
NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
"""A decimal number written in text."""
OPAQUE_RE = re.compile(rf"[A-Za-z0-9+/=_-]{{{OPAQUE_RUN},}}")
"""A run of characters that could encode bytes (base64 and its URL-safe form, hexadecimal, digits)."""


TEXT_TOKENS = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
"""Python tokens read as text (an f-string's text is its own token from Python 3.12)."""


def text_numbers(text: str) -> int:
    """The numbers a piece of text could hold: its decimal numbers, and its opaque runs as float32 values."""
    return len(NUMBER_RE.findall(text)) + sum(len(run) * 3 // 16 for run in OPAQUE_RE.findall(text))


def _code_numbers(text: str) -> int | None:
    """The numbers Python source could hold: numeric literals, strings and comments as text; None when it does
    not tokenize."""
    found = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.NUMBER:
                found += 1
            elif token.type in TEXT_TOKENS:
                found += text_numbers(token.string)
    except (tokenize.TokenError, SyntaxError):
        return None
    return found


def count(path: Path, data: bytes) -> int:
    """The numbers the file `path`, whose content is `data`, could feed a model (see the module)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return len(data) // 4
    code = _code_numbers(text) if path.suffix == ".py" else None
    return text_numbers(text) if code is None else code
