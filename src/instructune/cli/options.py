"""The options `generate`, `chat` and `serve` share: how RUN is loaded (template, dtype) and the
sampling flags (their defaults for requests, those of `config.SamplingConfig`)."""

from __future__ import annotations

import argparse

from instructune.config.dtypes import DTYPES
from instructune.config.sampling import SamplingConfig
from instructune.inference.sampling import SamplingParams

_DEFAULT = SamplingConfig()


def add_sampling_arguments(
    parser: argparse.ArgumentParser, max_new_tokens: int = _DEFAULT.max_new_tokens
) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument(
        "--temperature",
        type=float,
        default=_DEFAULT.temperature,
        help=f"0 decodes greedily (default {_DEFAULT.temperature:g})",
    )
    group.add_argument("--top-p", type=float, default=_DEFAULT.top_p)
    group.add_argument("--top-k", type=int, default=_DEFAULT.top_k, help="0 keeps every token")
    group.add_argument("--repetition-penalty", type=float, default=_DEFAULT.repetition_penalty)
    group.add_argument(
        "--stop", action="append", default=[], help="a string that ends the output (repeatable)"
    )
    group.add_argument("--seed", type=int, default=_DEFAULT.seed)


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    """The flags as `SamplingParams`; a bad value is a ValueError naming the flag's field."""
    return SamplingParams.from_config(args)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """How RUN is loaded: the template when the run has none saved, the weights dtype."""
    parser.add_argument(
        "--template",
        default=None,
        help="chat, alpaca or a .jinja file, when RUN has no saved template.jinja (default chat)",
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default=None, help="weights dtype (default float32 on CPU)"
    )
