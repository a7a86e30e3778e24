"""Sampling flags shared by `generate`, `chat` and `serve` (their defaults for requests)."""

from __future__ import annotations

import argparse

from instructune.inference.sampling import SamplingParams


def add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument(
        "--temperature", type=float, default=0.0, help="0 (default) decodes greedily"
    )
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--top-k", type=int, default=0, help="0 keeps every token")
    group.add_argument("--repetition-penalty", type=float, default=1.0)
    group.add_argument(
        "--stop", action="append", default=[], help="a string that ends the output (repeatable)"
    )
    group.add_argument("--seed", type=int, default=None)


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    """The flags as `SamplingParams`; a bad value is a ValueError naming the flag's field."""
    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop),
        seed=args.seed,
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """How RUN is loaded: the template when the run has none saved, the weights dtype."""
    parser.add_argument(
        "--template",
        default=None,
        help="chat, alpaca or a .jinja file, when RUN has no saved template.jinja (default chat)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="weights dtype (default float32 on CPU)",
    )
