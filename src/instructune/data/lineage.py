"""Hashes that pin a run to its exact inputs (the manifest stores them).

`file_sha256` identifies a source file (or a saved `datasets` folder); `dataset_hash` identifies
the tokenized training set itself, so a change of template, tokenizer or truncation that alters
even one token changes the hash while the source files stay the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["dataset_hash", "file_sha256"]

_CHUNK = 1 << 20
Tokens = Sequence[int] | npt.NDArray[np.integer[Any]]
"""Token ids or labels: a list, a numpy array (or anything `np.asarray` accepts)."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (streamed), or of a folder's sorted relative paths + contents."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            # Name and length prefixes keep (a, bc) and (ab, c) from hashing alike.
            name = file.relative_to(path).as_posix().encode()
            digest.update(len(name).to_bytes(8, "little") + name)
            digest.update(file.stat().st_size.to_bytes(8, "little"))
            _update_from_file(digest, file)
    else:
        _update_from_file(digest, path)
    return digest.hexdigest()


def _update_from_file(digest: Any, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)


def dataset_hash(examples: Iterable[tuple[Tokens, Tokens]]) -> str:
    """SHA-256 over tokenized examples given as (input_ids, labels) pairs, in order.

    Each array is hashed as little-endian int64 bytes with a length prefix, so the hash depends on
    the token values and the example boundaries, not on the container type (list, numpy, torch).
    """
    digest = hashlib.sha256()
    count = 0
    for input_ids, labels in examples:
        for values in (input_ids, labels):
            array = np.ascontiguousarray(np.asarray(values), dtype="<i8")
            digest.update(array.size.to_bytes(8, "little"))
            digest.update(array.tobytes())
        count += 1
    digest.update(count.to_bytes(8, "little"))
    return digest.hexdigest()
