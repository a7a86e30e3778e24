"""`instructune combine RUN_A RUN_B ... --weights 0.7 0.3 --how linear --out DIR`: LoRA runs on
one base combined into one adapter (a run folder that eval, generate, chat, serve, merge load)."""

from __future__ import annotations

import argparse

from instructune.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from instructune.ship.combine import HOWS

    parser.add_argument("more", nargs="+", metavar="RUN", help="further LoRA runs to combine")
    parser.add_argument(
        "--weights", type=float, nargs="+", required=True, help="one weight per run, in order"
    )
    parser.add_argument(
        "--how",
        default="linear",
        choices=HOWS,
        help="linear (equal ranks), cat (rank = sum), ties / dare_ties (equal ranks, --density)",
    )
    parser.add_argument(
        "--density", type=float, default=None, help="share of each update kept (ties, dare_ties)"
    )
    parser.add_argument("--out", required=True, help="new folder for the combined run")


def main(args: argparse.Namespace, cfg: Config | None) -> int:
    from instructune.ship.combine import run_combine

    runs = [args.run, *args.more]
    result = run_combine(runs, args.weights, args.how, args.out, args.density)
    print(f"combined {len(runs)} adapters ({args.how}, rank {result.rank}) into {result.out_dir}")
    return 0
