"""The `synthesize:` section: how `instructune synthesize` generates instruction data.

Kept apart from `schema.py` (which imports it) so each module stays small; like the rest of the
config it imports nothing from the package at import time. Paths are relative to the working
directory, as everywhere else in the config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from instructune.config.base import StrictModel
from instructune.config.sampling import SamplingConfig

SynthMethod = Literal["self_instruct", "evol_instruct", "unnatural"]
EvolOperation = Literal[
    "add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input", "breadth"
]


class SynthBackendConfig(StrictModel):
    """Where `synthesize` sends its prompts."""

    type: Literal["local", "openai"] = "local"
    """`local`: the inference engine, in-process and batched; `openai`: an OpenAI-compatible
    endpoint."""
    model: str | None = None
    """local: a model path, Hub id or training output_dir (omitted: the embedded default,
    smollm2-135m-instruct); openai: the model name the endpoint serves (required)."""
    base_url: str | None = None
    """openai: the endpoint, e.g. http://127.0.0.1:8000/v1 (default: the OpenAI API)."""
    api_key_env: str | None = None
    """openai: the environment variable holding the API key (never written to any output);
    omitted: no key (local servers)."""
    concurrency: int = Field(default=8, gt=0)
    """openai: requests in flight at once."""
    batch_size: int = Field(default=8, gt=0)
    """local: prompts generated together in one batched forward."""
    timeout: float = Field(default=120.0, gt=0)
    """openai: seconds before a request counts as hung (then retried)."""
    max_retries: int = Field(default=5, ge=0)
    """openai: retries on refused connections, timeouts, 429 and 5xx, with exponential backoff
    and jitter; when they run out the run stops with an error naming the endpoint."""
    backoff: float = Field(default=0.5, gt=0)
    """openai: seconds the first retry waits at most (full jitter), doubling per retry, max 30."""
    max_requests: int | None = Field(default=None, gt=0)
    """Request budget: stop (keeping everything generated) after this many uncached requests."""
    price_prompt_per_1m: float = Field(default=0.0, ge=0)
    """USD per million prompt tokens, for the report's cost estimate."""
    price_completion_per_1m: float = Field(default=0.0, ge=0)
    """USD per million completion tokens, for the report's cost estimate."""

    @model_validator(mode="after")
    def _openai_needs_model(self) -> SynthBackendConfig:
        if self.type == "openai" and not self.model:
            raise ValueError(
                "synthesize.backend.model is required for type openai: the model name the "
                "endpoint serves"
            )
        return self


class SynthSamplingConfig(SamplingConfig):
    """How the creative requests (new instructions, evolutions, paraphrases) sample; answers,
    instances and yes/no judgements are greedy. Each request's seed derives from
    `synthesize.seed`, so `seed` is not set here."""

    max_new_tokens: int = Field(default=512, ge=1)
    """Completion length limit (answers too); answers cut by it (`finish_reason: length`) are
    handled per step."""
    temperature: float = Field(default=0.7, ge=0.0, le=100.0)

    @field_validator("seed")
    @classmethod
    def _no_seed(cls, v: int | None) -> int | None:
        if v is not None:
            raise ValueError("set synthesize.seed instead: each request's seed derives from it")
        return v


class SelfInstructConfig(StrictModel):
    prompt_instructions: int = Field(default=8, gt=1)
    """In-context instructions per generation prompt."""
    machine_instructions: int = Field(default=2, ge=0)
    """Of those, how many come from the machine-generated pool once it has any."""
    rouge_threshold: float = Field(default=0.7, gt=0, le=1.0)
    """Drop an instruction whose ROUGE-L F against any pool instruction is above this."""
    keywords: list[str] = [
        "image",
        "images",
        "graph",
        "graphs",
        "picture",
        "pictures",
        "file",
        "files",
        "map",
        "maps",
        "draw",
        "plot",
        "go to",
    ]
    """Drop instructions containing one of these words or phrases (tasks a text-only model can't
    do), matched on word boundaries, case-insensitively."""
    min_words: int = Field(default=4, gt=0)
    """Drop instructions with fewer words."""
    max_words: int = Field(default=150, gt=0)
    """Drop instructions with more words."""
    classify: bool = True
    """Ask the model whether each instruction is a classification task (output-first instances)."""
    max_instances: int = Field(default=3, gt=0)
    """Instances kept per instruction."""
    most_similar: int = Field(default=10, ge=0)
    """Most similar pool instructions (with scores) kept in each row's meta."""

    @model_validator(mode="after")
    def _word_range(self) -> SelfInstructConfig:
        if self.min_words > self.max_words:
            raise ValueError(
                f"synthesize.self_instruct.min_words ({self.min_words}) is above max_words "
                f"({self.max_words})"
            )
        if self.machine_instructions >= self.prompt_instructions:
            raise ValueError(
                "synthesize.self_instruct.machine_instructions must be below prompt_instructions "
                "(the prompt always shows human seed tasks)"
            )
        return self


class EvolInstructConfig(StrictModel):
    rounds: int = Field(default=4, gt=0)
    """Evolution rounds; each evolves the survivors of the previous round."""
    operations: list[EvolOperation] = [
        "add_constraints",
        "deepen",
        "concretize",
        "increase_reasoning",
        "complicate_input",
        "breadth",
    ]
    """Operations drawn uniformly for each instruction and round."""
    equality_check: bool = False
    """Also ask the model whether an evolution adds information over its parent."""
    sorry_max_words: int = Field(default=80, gt=0)
    """An answer containing "sorry" and shorter than this fails the evolution."""


class UnnaturalConfig(StrictModel):
    demonstrations: int = Field(default=3, gt=0)
    """Examples from the task pool shown to elicit a new instruction-input-constraints triple."""
    paraphrases: int = Field(default=2, ge=0)
    """Reformulations of each new instruction (same input and output)."""


class SynthesizeConfig(StrictModel):
    method: SynthMethod = "self_instruct"
    """`self_instruct`, `evol_instruct` or `unnatural`."""
    backend: SynthBackendConfig = SynthBackendConfig()
    """Where prompts go: `{type: local, model: ...}` or `{type: openai, base_url, model}`."""
    seeds: str
    """Seed tasks: JSONL/JSON rows with `instruction` and either `instances: [{input, output}]`
    (the Self-Instruct seed shape, optional `is_classification`) or `input`/`output`."""
    num_instructions: int = Field(default=200, gt=0)
    """Target number of kept instructions."""
    seed: int = 0
    """Seeds the choice of in-context examples and operations and each request's sampling seed:
    with a deterministic backend the same config and seed give byte-identical output."""
    sampling: SynthSamplingConfig = SynthSamplingConfig()
    request_batch_size: int = Field(default=8, gt=0)
    """Prompts issued per step (sent concurrently or batched by the backend)."""
    max_stale_steps: int = Field(default=20, gt=0)
    """Stop when this many steps in a row keep nothing (a model that only repeats itself)."""
    prompts_dir: str | None = None
    """A folder of prompt templates overriding the shipped ones (same file names)."""
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    evol_instruct: EvolInstructConfig = EvolInstructConfig()
    unnatural: UnnaturalConfig = UnnaturalConfig()
