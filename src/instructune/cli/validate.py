"""`instructune validate cfg.yaml`: load and check the config, print it resolved."""

from __future__ import annotations

import argparse

from instructune.config import Config, dump_config
from instructune.redact import redact_secrets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options beyond the config and its overrides


def main(args: argparse.Namespace, cfg: Config) -> int:
    del args
    print(redact_secrets(dump_config(cfg)), end="")  # a terminal may be shared or recorded
    print("config OK")
    return 0
