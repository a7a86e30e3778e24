"""`instructune studio [DIR] [--host 127.0.0.1 --port 7860] [--api-key KEY]`: a local web app over
the runs, prepared data, eval runs and builds under DIR (see `instructune.studio`). Loopback only
unless `--host` names another address, which then needs `--api-key` (or `INSTRUCTUNE_API_KEY`,
as for `serve`)."""

from __future__ import annotations

import argparse
import os

from instructune.cli.serve import API_KEY_ENV

DEFAULT_PORT = 7860


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", metavar="DIR", help="folder to show")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--api-key", help=f"require this key (or set {API_KEY_ENV}); needed off loopback"
    )


def main(args: argparse.Namespace, cfg: None) -> int:
    from instructune.studio.app import run_studio

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    return run_studio(args.dir, args.host, args.port, api_key)
