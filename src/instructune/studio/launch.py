"""Launching `build` / `prepare` / `train` / `eval` from a config in the studio's folder.

The config is validated in-process first (errors shown exactly as the CLI prints them, through
`errors.report`); then the ordinary CLI runs as a child process in DIR, its output going to
a log the page tails. Stop sends SIGINT: Ctrl-C semantics (training saves a resumable checkpoint
and exits 130). A run started here is an ordinary CLI run in an ordinary folder.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHABLE = ("build", "prepare", "train", "eval")
_LOG_TAIL = 20_000


@dataclass
class Job:
    id: int
    command: str
    config: str
    log: Path
    process: subprocess.Popen[bytes]
    stopped: bool = False

    def view(self) -> dict[str, Any]:
        code = self.process.poll()
        size = self.log.stat().st_size
        with self.log.open("rb") as fh:
            fh.seek(max(0, size - _LOG_TAIL))
            tail = _progress_lines(fh.read().decode("utf-8", "replace"))
        return {
            "id": self.id,
            "command": self.command,
            "config": self.config,
            "running": code is None,
            "returncode": code,
            "stopped": self.stopped,
            "log": tail,
        }


def _progress_lines(text: str) -> str:
    """Each line as a terminal shows it: a progress bar's `\r` redraws keep only the last."""
    return "\n".join(
        next((part for part in reversed(line.split("\r")) if part), "") for line in text.split("\n")
    )


def validate(command: str, config: Path) -> str | None:
    """None when `config` loads for `command`; else the CLI's error text for it."""
    from instructune import errors
    from instructune.config import COMMAND_SECTIONS, load_config

    if command not in LAUNCHABLE:
        return f"error: command {command!r}: choose one of {list(LAUNCHABLE)}"
    required = COMMAND_SECTIONS[command]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            load_config(str(config), [], require=required)
        except Exception as err:
            errors.report(err)
            return stderr.getvalue().strip() or f"error: {err}"
    return None


@dataclass
class Jobs:
    root: Path
    jobs: dict[int, Job] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="studio-jobs-")))

    def start(self, command: str, config: Path, config_rel: str, dump: bool = False) -> Job:
        """Run `instructune COMMAND CONFIG` (`prepare --dump` with `dump`: the Data page's
        examples) in DIR."""
        argv = [sys.executable, "-m", "instructune", command, str(config)]
        if dump and command == "prepare":
            argv.append("--dump")
        with self._lock:
            job_id = next(self._ids)
            log = self._logs / f"job-{job_id}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    argv,
                    cwd=self.root,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    # its own process group: a Ctrl-C at the studio's terminal reaches the
                    # studio only, which then sends each job exactly one SIGINT (`close`); a
                    # second one would stop training before its checkpoint is written
                    start_new_session=True,
                )
            job = Job(job_id, command, config_rel, log, process)
            self.jobs[job_id] = job
            return job

    def stop(self, job_id: int) -> Job:
        job = self.jobs[job_id]
        if job.process.poll() is None:
            job.process.send_signal(signal.SIGINT)
            job.stopped = True
        return job

    def close(self) -> None:
        """Ctrl-C every job still running (they checkpoint), then wait a little for each."""
        for job in self.jobs.values():
            if job.process.poll() is None:
                job.process.send_signal(signal.SIGINT)
        for job in self.jobs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                job.process.wait(timeout=30)
        shutil.rmtree(self._logs, ignore_errors=True)
