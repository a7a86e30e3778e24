"""The options `generate`, `chat` and `serve` share: sampling flags (defaults from the config,
converted like a config section) and how RUN is loaded."""

from __future__ import annotations

import argparse

import pytest

from instructune.cli.options import add_model_arguments, add_sampling_arguments, sampling_from_args
from instructune.config.sampling import SamplingConfig
from instructune.inference.sampling import SamplingParams


def _flags(*argv: str, max_new_tokens: int | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    if max_new_tokens is None:
        add_sampling_arguments(parser)
    else:
        add_sampling_arguments(parser, max_new_tokens=max_new_tokens)
    return parser.parse_args(list(argv))


def test_cli_flags_default_to_the_config_and_convert_alike() -> None:
    assert sampling_from_args(_flags()) == SamplingParams()
    assert sampling_from_args(_flags(max_new_tokens=512)) == SamplingParams(max_new_tokens=512)
    args = _flags(
        "--temperature", "0.7", "--top-k", "4", "--stop", "a", "--stop", "b", "--seed", "3"
    )
    expected = SamplingConfig(temperature=0.7, top_k=4, stop=["a", "b"], seed=3)
    assert sampling_from_args(args) == SamplingParams.from_config(expected)


def test_bad_cli_flag_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^top_p=1\.5: must be a number in \(0, 1\]$"):
        sampling_from_args(_flags("--top-p", "1.5"))


def test_model_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    assert vars(parser.parse_args([])) == {"template": None, "dtype": None}
    args = parser.parse_args(["--template", "alpaca", "--dtype", "bfloat16"])
    assert (args.template, args.dtype) == ("alpaca", "bfloat16")
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "fp16"])
