"""The one sampling vocabulary: how a prompt is continued, for `eval:`, `synthesize:` and the
`generate`/`chat`/`serve` flags.

Temperature 0 is greedy decoding; there is no separate `do_sample` switch. The engine's runtime
type (`inference.sampling.SamplingParams`) is built from this model in one place,
`SamplingParams.from_config`; the command-line flags take their defaults from here.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from instructune.config.base import StrictModel

RENAMED_KEYS = {
    "do_sample": "temperature alone chooses: write `temperature: T` (T > 0) for do_sample: true, "
    "or `temperature: 0` (the default) for greedy",
    "max_tokens": "it is now `max_new_tokens`",
}
"""Keys of earlier sampling vocabularies, with what to write instead."""


class SamplingConfig(StrictModel):
    """Sampling settings; the defaults are those of `generate`, `chat` and `serve`."""

    max_new_tokens: int = Field(default=256, ge=1)
    """Most tokens generated per prompt."""
    temperature: float = Field(default=0.0, ge=0.0, le=100.0)
    """0 is greedy decoding; > 0 samples from softmax(logits / temperature)."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: int = Field(default=0, ge=0)
    """Keep the k most likely tokens; 0 keeps all."""
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    """CTRL-style penalty (> 1 discourages) on every token of the prompt and the output so far."""
    stop: list[str] = []
    """Strings that end the output; the output is cut before the first one."""
    seed: int | None = None
    """Seed of the sampling generator; omitted: a fresh one (sampling only)."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, instead in RENAMED_KEYS.items():
                if key in data:
                    raise PydanticCustomError(
                        "renamed_key",
                        "`{key}` is no longer a key: {instead}",
                        {"key": key, "instead": instead},
                    )
        return data

    @field_validator("stop")
    @classmethod
    def _nonempty_stops(cls, v: list[str]) -> list[str]:
        if not all(v):
            raise ValueError("stop strings must not be empty")
        return v
