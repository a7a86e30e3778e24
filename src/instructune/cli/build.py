"""`instructune build cfg.yaml`: instruction rows from labelled data, collections and trees."""

from __future__ import annotations

import argparse

from instructune.config import Config
from instructune.curation.build import run_build


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # the config holds every setting


def main(args: argparse.Namespace, cfg: Config) -> int:
    result = run_build(cfg)
    print(result.text)
    print(f"wrote {result.out_dir}")
    return 0
