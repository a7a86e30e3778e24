"""`instructune build cfg.yaml`: instruction rows from labelled data, collections and trees."""

from __future__ import annotations

import argparse

from instructune.config import Config
from instructune.curation.build import run_build


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier build in output_dir (train.jsonl, eval.jsonl, the reports)",
    )


def main(args: argparse.Namespace, cfg: Config) -> int:
    result = run_build(cfg, overwrite=args.overwrite)
    print(result.text)
    print(f"wrote {result.out_dir}")
    return 0
