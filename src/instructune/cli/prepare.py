"""`instructune prepare cfg.yaml [--dump]`: build the training data and show what is trained."""

from __future__ import annotations

import argparse

from instructune.config import Config
from instructune.data.prepare import run_prepare


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dump",
        action="store_true",
        help="write tokenized examples to <output_dir>/prepared/{train,eval}.jsonl",
    )


def main(args: argparse.Namespace, cfg: Config) -> int:
    result = run_prepare(cfg, dump=args.dump)
    print(result.text)
    print(f"wrote {result.out_dir}")
    return 0
