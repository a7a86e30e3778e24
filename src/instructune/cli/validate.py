"""`instructune validate cfg.yaml`: load and check the config, print it resolved."""

from __future__ import annotations

import argparse

from instructune.config import Config, dump_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options beyond the config and its overrides


def main(args: argparse.Namespace, cfg: Config) -> int:
    del args
    print(dump_config(cfg), end="")
    print("config OK")
    return 0
