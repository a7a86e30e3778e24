"""The accelerate configs shipped in configs/accelerate/ go through accelerate's own launcher
code (`accelerate launch --config_file ...` up to the environment it hands the processes), so a
key accelerate doesn't know, or a value it would turn into something else, fails here. Their
FSDP settings then build accelerate's FSDP plugin as a launched process would."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


def _launch_env(path: Path) -> tuple[argparse.Namespace, dict[str, str]]:
    """What `accelerate launch --config_file path -m instructune train cfg.yaml` would export."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(path), "-m", "instructune", "train", "cfg.yaml"]
    args, defaults, mixed_from_config = _validate_launch_command(
        launch_command_parser().parse_args(argv)
    )
    if args.use_deepspeed:  # as accelerate's launch_command does before deepspeed_launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] * mixed_from_config)
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


def test_every_shipped_accelerate_config_is_covered() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == ["deepspeed-zero3.yaml", "fsdp2.yaml"]


def test_accelerate_loads_them_without_unknown_keys() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    for path in CONFIGS.glob("*.yaml"):
        config = load_config_from_file(str(path))  # raises on keys accelerate doesn't know
        assert config.mixed_precision == "bf16" and config.num_processes == 8, path.name


def test_fsdp2_config_launches_fsdp2_and_builds_the_plugin(monkeypatch: Any) -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers.models.llama import modeling_llama

    args, env = _launch_env(CONFIGS / "fsdp2.yaml")
    assert args.use_fsdp and not args.use_deepspeed
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_RESHARD_AFTER_FORWARD"] == "true"
    assert env["FSDP_ACTIVATION_CHECKPOINTING"] == "false"  # train.gradient_checkpointing instead
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    layer = env["FSDP_TRANSFORMER_CLS_TO_WRAP"]
    assert hasattr(modeling_llama, layer)  # a real decoder layer class name
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()  # reads the environment as a launched process does
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.transformer_cls_names_to_wrap == [layer]
    assert str(plugin.state_dict_type).endswith("FULL_STATE_DICT")


def test_deepspeed_config_launches_zero3() -> None:
    args, env = _launch_env(CONFIGS / "deepspeed-zero3.yaml")
    assert args.use_deepspeed and not args.use_fsdp
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"
    # `auto` values are filled from the Trainer's arguments (our train.* keys) at start-up
    assert env["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] == "auto"
    assert env["ACCELERATE_GRADIENT_CLIPPING"] == "auto"
