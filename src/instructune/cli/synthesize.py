"""`instructune synthesize cfg.yaml`: LLM-generated instruction data (Self-Instruct, Evol-Instruct,
Unnatural-style) over a local model or an OpenAI-compatible endpoint; rerun to resume."""

from __future__ import annotations

import argparse
import sys

from instructune.config import Config
from instructune.redact import redact_secrets
from instructune.synthesis.backends import BackendError
from instructune.synthesis.run import run_synthesize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace, cfg: Config) -> int:
    try:
        result = run_synthesize(cfg, show_progress=not args.no_progress)
    except BackendError as err:
        # Everything generated so far is on disk; rerunning the command resumes from it.
        print(redact_secrets(f"error: {err} (rerun to resume)"), file=sys.stderr)
        return 1
    print(
        redact_secrets(
            f"{result.kept_instructions} instructions, {result.rows} rows "
            f"({result.stop_reason}); wrote {result.out_dir}"
        )
    )
    return 0
