"""What every run writes to its output directory: resolved config, versions, seeds, metrics."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from instructune.artifacts import CONFIG_FILE, MANIFEST_FILE
from instructune.config import Config, dump_config
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


def write_manifest(out_dir: Path, cfg: Config | None, command: str, extra: dict[str, Any]) -> Path:
    """Write `config.yaml` (resolved; when there is a config) and `manifest.json`; returns the
    manifest path. Commands that act on a run (`merge`, `export`) pass its config, or None.

    The manifest comes first and is replaced atomically: it is what marks `out_dir` as written by
    instructune (`output_dir.claim_output_dir`), so a crash never leaves our files without it."""
    out_dir.mkdir(parents=True, exist_ok=True)
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
    path = out_dir / MANIFEST_FILE
    text = redact_secrets(json.dumps(manifest, indent=2, default=str))  # argv, stop reasons
    partial = path.with_name(f".{MANIFEST_FILE}.tmp")
    partial.write_text(text + "\n", encoding="utf-8")
    os.replace(partial, path)
    if cfg is not None:
        # a credential in a URL (synthesize.backend.base_url) is never written
        (out_dir / CONFIG_FILE).write_text(redact_secrets(dump_config(cfg)), encoding="utf-8")
    return path


class MetricsLog:
    """Append-only `metrics.jsonl`: one JSON object per line, flushed as written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")
