"""The sections of the parameter-efficient methods (`lora:`, `prompt_tuning:`, `prefix_tuning:`,
`ia3:`) and of `method: qlora`'s 4-bit quantization (`quantization:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from instructune.config.base import StrictModel
from instructune.config.dtypes import DtypeName


class LoraConfig(StrictModel):
    r: int = Field(default=16, gt=0)
    alpha: float = Field(default=32, gt=0)
    """LoRA scaling numerator (the update is scaled by alpha / r); 0 would train nothing."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter's input. 0 by default: each dropout draws a random mask and copies
    the activation of every adapted layer (about 10% of a CPU training step, docs/performance.md)
    for a regularizer short fine-tunes rarely need."""
    target_modules: list[str] | Literal["all-linear"] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    layers_to_transform: list[int] | None = None
    use_rslora: bool = False
    use_dora: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] | None = None


class PromptTuningConfig(StrictModel):
    """`method: prompt_tuning`: trained embeddings of virtual tokens put before every input."""

    num_virtual_tokens: int = Field(default=20, gt=0)
    init_text: str | None = None
    """Initialise the virtual tokens with this text's token embeddings (repeated or cut to
    `num_virtual_tokens`), e.g. "Classify whether the sentence makes a promise:"; omitted:
    random initialisation."""


class PrefixTuningConfig(StrictModel):
    """`method: prefix_tuning`: trained key/value vectors of virtual tokens in every layer."""

    num_virtual_tokens: int = Field(default=20, gt=0)
    projection: bool = False
    """Reparameterise the prefix through a two-layer MLP during training (peft's
    `prefix_projection`)."""


class IA3Config(StrictModel):
    """`method: ia3`: learned vectors that rescale keys, values and feed-forward activations."""

    target_modules: list[str] = ["k_proj", "v_proj", "down_proj"]
    feedforward_modules: list[str] = ["down_proj"]
    """Of `target_modules`, those whose input (not output) is rescaled; must be a subset."""

    @model_validator(mode="after")
    def _feedforward_subset(self) -> IA3Config:
        extra = [m for m in self.feedforward_modules if m not in self.target_modules]
        if extra:
            raise ValueError(
                f"ia3.feedforward_modules {extra} are not in ia3.target_modules "
                f"{self.target_modules}: feed-forward modules must be targets too"
            )
        return self


class QuantizationConfig(StrictModel):
    """bitsandbytes 4-bit settings used by `method: qlora`."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: DtypeName = "bfloat16"
    double_quant: bool = True
