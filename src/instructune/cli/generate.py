"""`instructune generate RUN --prompt "..."` (streamed to stdout) or `--input in.jsonl --output
out.jsonl` (batched; see `inference.generate` for the row format)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from instructune.cli.options import (
    add_model_arguments,
    add_sampling_arguments,
    sampling_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="one user message; the answer streams to stdout")
    source.add_argument("--input", type=Path, help="JSONL of prompts (`prompt` or `messages`)")
    parser.add_argument("--output", type=Path, help="JSONL to write (required with --input)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output when it exists")
    parser.add_argument("--system", help="a system message before --prompt")
    parser.add_argument("--batch-size", type=int, default=8, help="rows decoded together")
    add_model_arguments(parser)
    add_sampling_arguments(parser)


def main(args: argparse.Namespace, cfg: None) -> int:
    from instructune.inference.generate import run_generate
    from instructune.inference.loading import load_engine

    params = sampling_from_args(args)
    if args.input is not None and args.output is None:
        raise ValueError("--input needs --output (the JSONL file to write)")
    if args.prompt is not None:
        from instructune.data.conversation import Message

        engine = load_engine(args.run, args.template, args.dtype)
        head = [Message("system", args.system)] if args.system else []
        for delta in engine.stream(engine.render([*head, Message("user", args.prompt)]), params):
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    summary = run_generate(
        args.run,
        args.input,
        args.output,
        params,
        template=args.template,
        dtype=args.dtype,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {summary['rows']} rows to {summary['output']} "
        f"({summary['completion_tokens']} tokens; finish reasons {summary['finish_reasons']})"
    )
    return 0
