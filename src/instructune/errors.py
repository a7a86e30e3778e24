"""Every failure the CLI reports is one `error: ...` line (plus a hint), never a traceback.

Below `cli/` because the studio shows a config's errors exactly as the CLI prints them.

Anticipated errors (bad config, bad input rows and files, missing models) carry messages that
name the file, line or key and the fix; they are printed as they are. Anything else is a bug or an
environment problem: its type and first line are printed with a pointer to the traceback, which
`INSTRUCTUNE_DEBUG=1` shows instead.
"""

from __future__ import annotations

import os
import sys

from instructune.config import ConfigError
from instructune.redact import redact_secrets

DEBUG_ENV = "INSTRUCTUNE_DEBUG"
DEBUG_HINT = f"run with {DEBUG_ENV}=1 for the traceback"
EXIT_CONFIG = 2
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

# Raised with messages written for the user (file, line, key, fix): printed as they are.
_ANTICIPATED: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
)


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _say(line: str) -> None:
    # a URL in a message (an endpoint that failed, a config value echoed) loses its credentials
    print(redact_secrets(line), file=sys.stderr)


def report(err: BaseException) -> int:
    """Print `err` as the CLI's one-line error and return the exit code (re-raise in debug)."""
    if debug_enabled():
        raise err
    if isinstance(err, KeyboardInterrupt):  # training's says where it saved and how to resume
        _say(f"error: {err or 'interrupted'}")
        return EXIT_INTERRUPTED
    if isinstance(err, ConfigError):
        _say(f"error: {err}")
        return EXIT_CONFIG
    if isinstance(err, _ANTICIPATED):
        _say(f"error: {err}")
        return EXIT_ERROR
    if isinstance(err, SystemExit):
        raise err
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    _say(f"error: {type(err).__name__}: {first}".rstrip(": "))
    print(DEBUG_HINT, file=sys.stderr)
    return EXIT_ERROR
