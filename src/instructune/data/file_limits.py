"""Reading data files within bounds: lines read at most a limit at a time, and paths that exist
but can't be read as data (a FIFO, a device, a symlink loop) recognised without opening them, and
the message for one that doesn't exist."""

from __future__ import annotations

import difflib
import errno
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, AnyStr

__all__ = ["TOO_LARGE", "bounded_lines", "missing_message", "too_large", "unreadable_reason"]

_SKIP_CHUNK = 1 << 20
"""Bytes read at a time while skipping the rest of a line over the limit."""


def bounded_lines(
    handle: IO[AnyStr], limit: int, newline: AnyStr
) -> Iterator[tuple[AnyStr | None, int]]:
    """(line, its size) per line of `handle`; a line over `limit` comes as (None, its size).

    `readline(limit + 1)` never holds more than the limit, and the rest of a longer line is read
    past in chunks: one huge line costs its length in time, not in memory. (`for line in f`
    would hold the whole line, however long.)
    """
    while line := handle.readline(limit + 1):
        if len(line) <= limit or line.endswith(newline):
            yield line, len(line)
            continue
        size = len(line)
        while not line.endswith(newline) and (line := handle.readline(_SKIP_CHUNK)):
            size += len(line)
        yield None, size


TOO_LARGE = "record too large"
"""The reason rows over a source's `max_record_bytes` are counted under."""


def too_large(size: int, limit: int) -> str:
    return (
        f"{size} bytes, over the max_record_bytes limit of {limit} (set max_record_bytes on the "
        "data source to read larger rows)"
    )


_SPECIAL = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def unreadable_reason(path: Path) -> str | None:
    """Why `path` exists but can't be read as data (a FIFO, device, socket, symlink loop), or None.

    Only `stat` is called: opening a FIFO would wait for a writer forever, and a device such as
    /dev/zero never ends.
    """
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (a link that leads back to itself); point it at a file"
        if path.is_symlink():
            return f"is a symbolic link to {path.readlink()}, which doesn't exist"
        return None  # missing: the caller's "no such file" message says so
    for test, what in _SPECIAL:
        if test(mode):
            return (
                f"is {what}, not a regular file; data must be a file or folder that can be read "
                "to its end and read again (write the data to a file first)"
            )
    return None


def missing_message(path: Path, name: str) -> str:
    message = f"{name}: no such file or folder locally ({path.absolute()})"
    if not path.parent.is_dir():
        return f"{message}; the folder {path.parent} doesn't exist either"
    names = [p.name for p in path.parent.iterdir()]
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    if close:
        message += f"; did you mean {', '.join(str(path.parent / c) for c in close)}?"
    return message
