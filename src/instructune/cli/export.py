"""`instructune export RUN --format gguf --out model.gguf [--dtype f32|f16|bf16|q8_0]`.

A LoRA run is merged first. The file is read back with transformers' GGUF loader and checked
(logit parity, tokenizer round trip, chat template); the report lands next to it as
`model.parity.json`. Exit codes: 0 written and checked; 1 bad input or a failed check.
"""

from __future__ import annotations

import argparse

from instructune.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from instructune.cli.merge import add_checked_output
    from instructune.ship.export import EXPORT_FORMATS
    from instructune.ship.gguf_export import GGUF_DTYPES

    parser.add_argument("--format", default="gguf", choices=EXPORT_FORMATS, help="file format")
    add_checked_output(
        parser,
        "the .gguf file to write (must not exist)",
        GGUF_DTYPES,
        "f32",
        "storage of the 2-D weights (norms stay f32); default f32 (lossless)",
    )


def main(args: argparse.Namespace, cfg: Config | None) -> int:
    from instructune.ship.export import run_export

    result = run_export(
        args.run, args.out, format=args.format, dtype=args.dtype, prompts=args.prompts
    )
    print(result.parity.summary())
    print(f"wrote {result.path} ({result.report['bytes']:,} bytes; report {result.report_path})")
    return 0
