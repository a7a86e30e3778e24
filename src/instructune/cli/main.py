"""`instructune <command> config.yaml [key.path=value ...]`: parse, load config, call run_<command>.

Each command module exposes `add_arguments(parser)` and `main(args, cfg)`; the work itself lives in
the library (`run_prepare`, `run_train`, `run_eval`) so that tests and Python users call the same
functions the CLI does. Commands that act on a trained run rather than a config (`RUN_COMMANDS`)
take a run folder or model path as their positional and get `cfg=None`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from instructune import __version__, errors
from instructune.config import COMMAND_SECTIONS, load_config
from instructune.noise import silence_known_noise
from instructune.redact import RedactingFilter

# command → (module, help); the config sections each needs: `config.COMMAND_SECTIONS`
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("instructune.cli.validate", "check a config without running anything"),
    "prepare": ("instructune.cli.prepare", "load, template, tokenize, audit, pack data"),
    "train": ("instructune.cli.train", "fine-tune (full, LoRA, QLoRA) on prepared data"),
    "eval": ("instructune.cli.eval", "evaluate a model (and its base) on tasks"),
    "build": ("instructune.cli.build", "build an instruction dataset from labelled data"),
    "synthesize": (
        "instructune.cli.synthesize",
        "generate instruction data with an LLM (Self-Instruct, Evol-Instruct, Unnatural)",
    ),
}
# command → (module, help): the positional is RUN, a training output_dir, a merged folder or any
# model path (the embedded default included), so a new user can use the base model before training.
RUN_COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("instructune.cli.generate", "generate for one prompt or a JSONL file of prompts"),
    "chat": ("instructune.cli.chat", "chat with a model in the terminal, answers streamed"),
    "serve": ("instructune.cli.serve", "serve a model (and adapters) over the OpenAI API"),
    "merge": ("instructune.cli.merge", "merge a LoRA run's adapter into its base (parity-checked)"),
    "export": ("instructune.cli.export", "export a run or model as one GGUF file (parity-checked)"),
    "combine": ("instructune.cli.combine", "combine LoRA runs on one base into one adapter"),
}
# command → (module, help): commands over a folder, with their own positionals.
FOLDER_COMMANDS: dict[str, tuple[str, str]] = {
    "studio": ("instructune.cli.studio", "a local web app over the runs, data and evals in DIR"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instructune", description="Instruction fine-tuning: data → train → eval → ship."
    )
    parser.add_argument("--version", action="version", version=f"instructune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("config", help="YAML config file")
        cmd.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.max_length=1024")
        _command_module(module).add_arguments(cmd)
    for name, (module, help_text) in RUN_COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("run", metavar="RUN", help="a training output_dir or a model path")
        _command_module(module).add_arguments(cmd)
    for name, (module, help_text) in FOLDER_COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        _command_module(module).add_arguments(cmd)
    return parser


def _command_module(module: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(module)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse `argv`; overrides may come before, between or after a command's options."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # A positional after an option (`prepare cfg --dump a.b=1`) is left over by argparse,
        # which assigns `nargs="*"` positionals only once: it is an override all the same.
        options = [e for e in extra if e.startswith("-")]
        if options or args.command not in COMMANDS:
            parser.error(f"unrecognized arguments: {' '.join(options or extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for handler in logging.getLogger().handlers:  # no credential in a URL reaches the terminal
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    silence_known_noise()
    try:
        if args.command in RUN_COMMANDS:
            result = _command_module(RUN_COMMANDS[args.command][0]).main(args, None)
        elif args.command in FOLDER_COMMANDS:
            result = _command_module(FOLDER_COMMANDS[args.command][0]).main(args, None)
        else:
            required = COMMAND_SECTIONS[args.command]
            cfg = load_config(args.config, args.overrides, require=required)
            result = _command_module(COMMANDS[args.command][0]).main(args, cfg)
    except (Exception, KeyboardInterrupt) as err:
        # Bad input (rows, files, templates, audits) raises errors whose messages name the file,
        # line and field; a traceback adds nothing for the user. INSTRUCTUNE_DEBUG=1 shows it.
        return errors.report(err)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
