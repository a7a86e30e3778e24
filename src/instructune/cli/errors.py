"""Every failure the CLI reports is one `error: ...` line (plus a hint), never a traceback.

Anticipated errors (bad config, bad input rows and files, missing models) carry messages that
name the file, line or key and the fix; they are printed as they are. Anything else is a bug or an
environment problem: its type and first line are printed with a pointer to the traceback, which
`INSTRUCTUNE_DEBUG=1` shows instead.
"""

from __future__ import annotations

import os
import sys

from instructune.config import ConfigError

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


def report(err: BaseException) -> int:
    """Print `err` as the CLI's one-line error and return the exit code (re-raise in debug)."""
    if debug_enabled():
        raise err
    if isinstance(err, KeyboardInterrupt):  # training's says where it saved and how to resume
        print(f"error: {err or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(err, ConfigError):
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if isinstance(err, _ANTICIPATED):
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(err, SystemExit):
        raise err
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    print(f"error: {type(err).__name__}: {first}".rstrip(": "), file=sys.stderr)
    print(DEBUG_HINT, file=sys.stderr)
    return EXIT_ERROR
