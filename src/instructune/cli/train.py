"""`instructune train cfg.yaml [--resume | --overwrite]`: fine-tune, write all to `output_dir`."""

from __future__ import annotations

import argparse
import json

from instructune.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in <output_dir>/checkpoints (the config and "
        "data must match, except more steps/epochs and logging/saving settings)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier training run in output_dir (its results and checkpoints)",
    )


def main(args: argparse.Namespace, cfg: Config) -> int:
    from instructune.training.run import run_train

    result = run_train(cfg, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(result.metrics, indent=2))
    print(f"wrote {result.out_dir}")
    return 0
