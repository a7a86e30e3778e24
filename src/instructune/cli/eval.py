"""`instructune eval cfg.yaml [--fail-on-regression]`: base vs tuned on the eval tasks.

Exit codes: 0 done, 3 a regression was found and `--fail-on-regression` (or
`eval.fail_on_regression`) is set; 1 and 2 are the usual bad-input and bad-config errors.
"""

from __future__ import annotations

import argparse

from instructune.config import Config

REGRESSION_EXIT = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        default=None,
        help="exit with status 3 when a regression_check task drops beyond the threshold",
    )
    parser.add_argument(
        "--adapter", help="training output_dir or adapter folder to evaluate (overrides `adapter`)"
    )
    parser.add_argument(
        "--no-base", action="store_true", help="evaluate only the tuned model (no comparison)"
    )


def main(args: argparse.Namespace, cfg: Config) -> int:
    from instructune.evaluation.run import run_eval

    if args.adapter:
        cfg.adapter, cfg.adapters = args.adapter, None
    if args.no_base and cfg.eval is not None:
        cfg.eval.compare_base = False
    result = run_eval(cfg, fail_on_regression=args.fail_on_regression)
    print(result.table)
    for name in ("metrics", "predictions", "report_md", "report_html"):
        if name in result.files:
            print(f"wrote {result.files[name]}")
    if result.regressed and result.metrics["meta"]["fail_on_regression"]:
        return REGRESSION_EXIT
    return 0
