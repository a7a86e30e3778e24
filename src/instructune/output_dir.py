"""Checks on a run's `output_dir` made before any work, so a bad path fails in a second, not after
an hour of training."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_output_dir(path: Path, key: str = "output_dir") -> None:
    """Raise a one-line error when `path` can't become a writable folder.

    It must be a folder (or not exist yet) and its nearest existing ancestor must accept a new file
    (one is created and removed); the folder itself is not created here.
    """
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"{key} {str(path)!r} is a file, not a folder; choose another path"
        )
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            f"{key} {str(path)!r} is under {str(existing)!r}, which is a file, not a folder"
        )
    # A real write, not os.access: root passes access checks on read-only or pseudo filesystems.
    try:
        fd, probe = tempfile.mkstemp(prefix=".instructune-probe-", dir=existing)
    except OSError as err:
        what = "it" if existing == path else f"its parent {str(existing)!r}"
        raise PermissionError(
            f"{key} {str(path)!r} can't be written: {what} refuses new files "
            f"({err.strerror or err}); choose another path"
        ) from None
    os.close(fd)
    os.unlink(probe)
