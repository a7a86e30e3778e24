"""Checks on a run's `output_dir` made before any work, so a bad path fails in a second, not after
an hour of training, and the one home of the rules for which folders a run may write into."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from instructune.config import ConfigError, DataConfig
from instructune.rundir.names import MANIFEST_FILE


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


def claim_output_dir(
    path: Path, *, command: str, inputs: Iterable[str | Path] = (), key: str = "output_dir"
) -> None:
    """Raise a one-line error when a `command` run must not write into `path`.

    A run writes many files (config.yaml, manifest.json, README.md, train.jsonl, ...) with fixed
    names, so it may only use a missing or empty folder, or one an instructune command wrote
    (its manifest.json says so; what each command then replaces is its own rule: `train
    --overwrite`, `build --overwrite`, `synthesize` resuming). The filesystem root, the home
    folder and a folder holding one of the run's `inputs` are refused whatever it holds.
    """
    check_output_dir(path, key)
    path = path.expanduser()
    here = path.resolve()
    what = {Path(here.anchor): "the filesystem root"}
    with contextlib.suppress(RuntimeError):  # no HOME and no passwd entry: no home folder
        what[Path.home().resolve()] = "your home folder"
    if here in what:
        raise ConfigError(
            f"{key} {str(path)!r} is {what[here]}: `{command}` writes its files into {key}; "
            "choose a folder of its own, e.g. runs/NAME"
        )
    for item in inputs:
        source = Path(item).expanduser()
        if source.exists() and (source.resolve() == here or here in source.resolve().parents):
            raise ConfigError(
                f"{key} {str(path)!r} holds this run's input {str(item)!r}: `{command}` would "
                f"write over or beside its own data; choose another {key}"
            )
    if not path.is_dir() or written_by_instructune(path):
        return
    entries = sorted(entry.name for entry in path.iterdir())
    if entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if entries[3:] else "")
        raise ConfigError(
            f"{key} {str(path)!r} is a folder instructune did not write (it holds {shown}; no "
            f"{MANIFEST_FILE} of a run): `{command}` would replace files there; choose a new or "
            "empty folder"
        )


def written_by_instructune(path: Path) -> bool:
    """Whether `path` holds the manifest.json an instructune command writes (command, versions)."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and {"command", "versions"} <= manifest.keys()


def existing_outputs(path: Path, names: Iterable[str]) -> list[str]:
    """Those of `names` that exist in `path` (an earlier run's files a rerun would replace)."""
    return [name for name in names if (path / name).exists()]


def data_inputs(data: DataConfig | None) -> list[str]:
    """The local files a `data:` section reads (sources, a template file): a run's inputs."""
    if data is None:
        return []
    paths = [source.path for source in [*data.train, *(data.eval or [])]]
    return [*paths, data.template]  # a template name (`chat`) is no file and is skipped


def check_output_file(
    path: Path, *, flag: str, inputs: Iterable[str | Path] = (), overwrite: bool = False
) -> None:
    """Raise a one-line error when the file `flag` names must not be written: it is one of the
    command's `inputs` (or a file inside an input folder), or it exists and not `overwrite`."""
    path = path.expanduser()
    for item in inputs:
        source = Path(item).expanduser()
        if not source.exists() or not path.exists():
            continue
        inside = source.is_dir() and source.resolve() in path.resolve().parents
        if inside or path.samefile(source):
            raise ValueError(
                f"{flag} {str(path)!r} is this command's input {str(item)!r}: writing it would "
                "destroy what is being read; choose another file"
            )
    if path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder; name a file")
    if path.exists() and not overwrite:
        raise ValueError(f"{flag} {str(path)!r} exists; pass --overwrite to replace it")
