"""`instructune chat RUN`: a terminal multi-turn chat with streamed answers (see
`inference.chat` for the commands)."""

from __future__ import annotations

import argparse

from instructune.cli.options import (
    add_model_arguments,
    add_sampling_arguments,
    sampling_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system", help="a system message for the conversation")
    add_model_arguments(parser)
    add_sampling_arguments(parser, max_new_tokens=512)


def main(args: argparse.Namespace, cfg: None) -> int:
    from instructune.inference.chat import run_chat
    from instructune.inference.loading import load_engine

    params = sampling_from_args(args)
    engine = load_engine(args.run, args.template, args.dtype)
    return run_chat(engine, params, system=args.system)
