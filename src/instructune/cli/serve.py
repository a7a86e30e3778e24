"""`instructune serve RUN [--host 127.0.0.1 --port 8000] [--adapter RUN2 ...]`: an
OpenAI-compatible server (see `inference.server`). The sampling flags are the defaults for
requests that leave a field out; the API key comes from `--api-key` or `INSTRUCTUNE_API_KEY`."""

from __future__ import annotations

import argparse
import os

from instructune.cli.options import (
    add_model_arguments,
    add_sampling_arguments,
    sampling_from_args,
)

API_KEY_ENV = "INSTRUCTUNE_API_KEY"
DEFAULT_DRAIN_TIMEOUT_S = 20.0
"""Seconds running requests get after SIGTERM: inside Kubernetes' default 30 s grace period."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="RUN2",
        help="another LoRA run on the same base, served as its folder name (repeatable)",
    )
    parser.add_argument("--api-key", help=f"require this bearer key (or set {API_KEY_ENV})")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-batch-size", type=int, default=8, help="rows decoded together")
    limits.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429")
    limits.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    limits.add_argument("--max-body-bytes", type=int, default=1 << 20)
    limits.add_argument("--max-messages", type=int, default=256)
    limits.add_argument("--max-prompt-tokens", type=int, default=None, help="default: context")
    limits.add_argument("--max-tokens-cap", type=int, default=2048, help="largest max_tokens")
    limits.add_argument(
        "--batch-window-ms", type=float, default=10.0, help="an idle server waits this for a burst"
    )
    limits.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT_S,
        help="on SIGTERM/SIGINT, seconds running requests get to finish before they are cut "
        f"(default {DEFAULT_DRAIN_TIMEOUT_S:.0f}); new requests get 503 meanwhile",
    )
    add_model_arguments(parser)
    add_sampling_arguments(parser)


def main(args: argparse.Namespace, cfg: None) -> int:
    from instructune.inference.drain import run_serve
    from instructune.inference.loading import load_run
    from instructune.inference.server import Limits, serve_state

    defaults = sampling_from_args(args)
    same_names = ("max_body_bytes", "max_messages", "max_prompt_tokens", "max_queue")
    limits = Limits(
        **{name: getattr(args, name) for name in same_names},
        max_tokens=args.max_tokens_cap,
        timeout_s=args.timeout,
        batch_window_s=args.batch_window_ms / 1000,
    )
    if args.drain_timeout < 0:
        raise ValueError(f"--drain-timeout {args.drain_timeout}: must be >= 0")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    bundle = load_run(args.run, args.template, args.dtype, adapters=args.adapter)
    state = serve_state(
        bundle,
        defaults=defaults,
        limits=limits,
        api_key=api_key,
        max_batch_size=args.max_batch_size,
    )
    return run_serve(state, args.host, args.port, args.drain_timeout)
