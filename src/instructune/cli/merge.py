"""`instructune merge RUN --out DIR [--dtype float32]`: the adapter folded into the base, checked.

Exit codes: 0 merged and in tolerance; 1 bad input or parity out of tolerance (the merged folder
and its `parity.json` are still written, for inspection).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from instructune.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from instructune.config.dtypes import DTYPES

    add_checked_output(
        parser,
        "new folder for the merged model",
        DTYPES,
        "float32",
        "dtype the base is loaded, merged and saved in (default float32; never 4-bit)",
    )


def add_checked_output(
    parser: argparse.ArgumentParser,
    out_help: str,
    dtypes: Iterable[str],
    default: str,
    dtype_help: str,
) -> None:
    """--out, --dtype and --prompts: merge and export (which merges first) both write a model and
    check its logits against the run's on held-out prompts."""
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--dtype", default=default, choices=list(dtypes), help=dtype_help)
    parser.add_argument(
        "--prompts", type=int, default=4, help="held-out prompts the parity check runs on"
    )


def main(args: argparse.Namespace, cfg: Config | None) -> int:
    from instructune.ship.merge import run_merge

    result = run_merge(args.run, args.out, dtype=args.dtype, prompts=args.prompts)
    print(result.parity.summary())
    print(f"wrote {result.out_dir} (parity report: {result.files['parity']})")
    return 0
