"""The folder the studio shows: safe paths inside it, and what it holds (runs, prepared data, eval
runs, builds, configs), found by the files each command writes.

Every path a request names goes through `Workspace.resolve`: it is joined to the root, resolved
(symlinks followed) and refused unless the result is still inside the root, so neither `../` nor a
symlink pointing out of DIR reaches a file outside it. Discovery walks the tree without following
symlinked folders and skips hidden folders and checkpoints, down to `MAX_DEPTH` levels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from instructune.rundir import (
    BUILD_REPORT_FILE,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVAL_METRICS_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    PREPARED_DIR,
    RunDir,
)

MAX_DEPTH = 6
"""Folder levels under DIR searched for runs (a run in `runs/2026/exp/lora/` is 4 levels down)."""
_SKIPPED = {CHECKPOINTS_DIR, "node_modules", "__pycache__"}
CONFIG_SUFFIXES = (".yaml", ".yml")


class OutsideError(ValueError):
    """A requested path that is not inside the studio's folder (or does not exist there)."""


@dataclass
class Found:
    """The folders (relative to the root, POSIX spelling) of each kind of artifact."""

    runs: list[str] = field(default_factory=list)
    prepared: list[str] = field(default_factory=list)
    evals: list[str] = field(default_factory=list)
    builds: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)


class Workspace:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"studio folder {str(root)!r} is not a folder")

    def resolve(self, rel: str, *, must_exist: bool = True) -> Path:
        """`rel` (relative to the root) as an absolute path inside the root; `OutsideError` for
        an absolute path, a `..` escape, a symlink out of the root or (with `must_exist`) a
        missing file."""
        if not isinstance(rel, str) or "\x00" in rel or Path(rel).is_absolute():
            raise OutsideError(f"path {rel!r} must be relative to the studio folder")
        path = (self.root / rel).resolve()
        if path != self.root and not path.is_relative_to(self.root):
            raise OutsideError(f"path {rel!r} is outside the studio folder")
        if must_exist and not path.exists():
            raise OutsideError(f"path {rel!r} does not exist in the studio folder")
        return path

    def rel(self, path: Path) -> str:
        """`path` (inside the root) spelled relative to it; "." for the root itself."""
        return path.resolve().relative_to(self.root).as_posix() or "."

    def scan(self) -> Found:
        found = Found()
        for folder, dirs, files in _walk(self.root):
            rel = self.rel(folder)
            names = set(files)
            if (METRICS_FILE in names or MANIFEST_FILE in names) and _is_training(folder):
                found.runs.append(rel)
            if PREPARED_DIR in dirs and RunDir(folder).prepared.summary_file.is_file():
                found.prepared.append(rel)
            if EVAL_METRICS_FILE in names and PREDICTIONS_FILE in names:
                found.evals.append(rel)
            if BUILD_REPORT_FILE in names:
                found.builds.append(rel)
            found.configs += sorted(
                self.rel(folder / n)
                for n in names
                if n.endswith(CONFIG_SUFFIXES) and n != CONFIG_FILE and not n.startswith(".")
            )
        return found


def _is_training(folder: Path) -> bool:
    """A training output_dir logs metrics.jsonl; prepare/eval folders write a manifest too, so a
    manifest alone counts only when it says `train`."""
    run = RunDir(folder)
    if run.metrics_file.is_file():
        return True
    try:
        text = run.manifest_file.read_text(encoding="utf-8")
    except OSError:
        return False
    return '"command": "train"' in text


def _walk(root: Path) -> list[tuple[Path, list[str], list[str]]]:
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d not in _SKIPPED and not (here / d).is_symlink()
        )
        if depth >= MAX_DEPTH:
            dirs[:] = []
        out.append((here, list(dirs), sorted(files)))
    return out
