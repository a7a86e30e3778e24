"""What every run records: the manifest (command, versions, commit, seeds) and the metrics log."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from instructune.config import Config
from instructune.redact import redact_secrets

_PACKAGES = (
    "instructune",
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "gguf",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the working directory's repo, when there is one (a run's code provenance)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def manifest_text(cfg: Config | None, command: str, extra: dict[str, Any]) -> str:
    """`manifest.json`'s text (`RunDir.write_manifest` writes it): the command, argv, time,
    versions, commit and seeds, plus `extra`; secrets redacted (argv, stop reasons)."""
    seed = {"data": cfg.data.seed if cfg.data else None, "train": cfg.train.seed} if cfg else None
    manifest = {
        "command": command,
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "seed": seed,
        **extra,
    }
    return redact_secrets(json.dumps(manifest, indent=2, default=str))


class MetricsLog:
    """Append-only `metrics.jsonl`: one JSON object per line, flushed as written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")
