"""Typed configuration: schema (pydantic) and YAML loading with dotted overrides."""

from instructune.config.build import BuildConfig, BuildSource
from instructune.config.loading import COMMAND_SECTIONS, ConfigError, dump_config, load_config
from instructune.config.methods import LoraConfig, QuantizationConfig
from instructune.config.schema import (
    Config,
    DataConfig,
    DataSource,
    EvalConfig,
    EvalTaskConfig,
    ModelConfig,
    TrainConfig,
)

__all__ = [
    "COMMAND_SECTIONS",
    "BuildConfig",
    "BuildSource",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataSource",
    "EvalConfig",
    "EvalTaskConfig",
    "LoraConfig",
    "ModelConfig",
    "QuantizationConfig",
    "TrainConfig",
    "dump_config",
    "load_config",
]
