"""The one typed config: YAML is validated into these models once, at load.

Every model forbids unknown keys so that a typo is an error naming the key, never a silent default.
Field docstrings are the reference documentation for the YAML keys (see docs/config.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from instructune.config.base import StrictModel
from instructune.config.build import BuildConfig
from instructune.config.synthesize import SynthesizeConfig

EMBEDDED_MODEL = "smollm2-135m-instruct"
Method = Literal["lora", "qlora", "full"]
"""How training changes the model: LoRA adapters, LoRA on a 4-bit base, or every weight."""


# The registries' names (`data.formats.FORMATS`, `data.templates.TEMPLATES`), kept here so that
# config imports nothing from the rest of the package; tests/config/test_names.py keeps them equal.
FORMAT_NAMES = (
    "alpaca",
    "columns",
    "dolly",
    "messages",
    "natural_instructions",
    "sharegpt",
    "text",
)
TEMPLATE_NAMES = ("alpaca", "alpaca_nl", "chat")


def known_format(v: str | None) -> str | None:
    """A row format from the registry (data sources and eval tasks share it), or None: detect."""
    if v is None or v in FORMAT_NAMES:
        return v
    raise ValueError(f"unknown format {v!r}; choose one of {list(FORMAT_NAMES)} or omit it")


class ModelConfig(StrictModel):
    path: str = EMBEDDED_MODEL
    """A local Hugging Face folder, a Hub id, a `.gguf` file, or `smollm2-135m-instruct`."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `path` is a Hub id."""
    gguf_file: str | None = None
    """File name inside `path` when `path` is a folder or Hub repo holding GGUF files."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weights dtype at load. `auto` follows `train.precision` when training, else float32."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = False


class DataSource(StrictModel):
    path: str
    """A file (.json, .jsonl, .csv, .tsv, .parquet), a `datasets` folder, or a Hub dataset id."""
    format: str | None = None
    """Row format from the registry (alpaca, sharegpt, messages, dolly, text, columns,
    natural_instructions). Omitted: detected from the columns, and the choice is reported."""
    columns: dict[str, str] | None = None
    """Maps our field names to the file's columns, e.g. {instruction: question, output: answer}."""
    split: str | None = None
    """Split name for `datasets` sources (Hub id or saved DatasetDict)."""
    max_rows: int | None = Field(default=None, gt=0)
    """Read at most this many rows (after the file order), for quick runs."""

    _known_format = field_validator("format")(lambda v: known_format(v))


class DataConfig(StrictModel):
    train: list[DataSource] = Field(min_length=1)
    eval: list[DataSource] | None = None
    """Explicit eval sources. Can't be combined with `eval_fraction`."""
    eval_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Share of the train rows held out for eval (seeded; stratified by label when present)."""
    template: str = "chat"
    """`chat` (the tokenizer's chat template), `alpaca` (the Stanford Alpaca prompt), `alpaca_nl`
    (the same with a newline after "### Response:", for responses starting with `/`, `:` or the
    like), or a path to a `.jinja` file that renders `messages` the way a chat template does."""
    system_prompt: str | None = None
    """Inserted as the system turn of conversations that have none."""
    max_length: int = Field(default=512, gt=8)
    packing: bool = True
    """Pack examples into `max_length` rows; attention never crosses examples."""
    train_on_inputs: bool = False
    """Also train on prompt tokens (system/user turns and template text)."""
    train_on_turns: Literal["all", "last"] = "all"
    """Which assistant turns of a multi-turn conversation carry loss."""
    truncation: Literal["turns", "truncate_prompt", "drop"] = "turns"
    """Examples over `max_length`: `turns` keeps the leading whole turns that fit (at least one
    trained assistant turn, else the row is dropped); `truncate_prompt` cuts the middle of the
    longest user texts (marked `[...]`), keeping template, system prompt and responses; `drop`
    drops the row. Cut rows are counted as truncated, dropped ones listed in summary.json."""
    on_error: Literal["fail", "skip"] = "fail"
    """A malformed row stops the run naming file and line, or is skipped and counted."""
    dedup: bool = True
    """Drop exact duplicates (normalized text) and report how many."""
    seed: int = 42
    audit: bool = True
    """Stop on label problems (no trained token, missing EOS, pad==eos masking, template drift)."""
    show_examples: int = Field(default=2, ge=0)
    """How many tokenized examples `prepare` renders with the trained spans marked."""

    @field_validator("template")
    @classmethod
    def _known_template(cls, v: str) -> str:
        if v in TEMPLATE_NAMES or v.endswith((".jinja", ".j2")):
            return v
        raise ValueError(
            f"unknown template {v!r}; choose one of {list(TEMPLATE_NAMES)} or a path to a .jinja "
            "file"
        )

    @model_validator(mode="after")
    def _eval_choice(self) -> DataConfig:
        if self.eval and self.eval_fraction > 0:
            raise ValueError(
                "data.eval and data.eval_fraction can't both be set: choose explicit eval files "
                "or a held-out fraction of data.train"
            )
        return self


class LoraConfig(StrictModel):
    r: int = Field(default=16, gt=0)
    alpha: float = Field(default=32, gt=0)
    """LoRA scaling numerator (the update is scaled by alpha / r); 0 would train nothing."""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    layers_to_transform: list[int] | None = None
    use_rslora: bool = False
    use_dora: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] | None = None


class QuantizationConfig(StrictModel):
    """bitsandbytes 4-bit settings used by `method: qlora`."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    double_quant: bool = True


OptimizerName = Literal[
    "adamw_torch",
    "adafactor",
    "sgd",
    "adamw_bnb_8bit",
    "paged_adamw_32bit",
    "paged_adamw_8bit",
    "lion",
]
SchedulerName = Literal[
    "constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear"
]
ReportTarget = Literal["none", "tensorboard", "wandb", "mlflow"]


class TrainConfig(StrictModel):
    optimizer: OptimizerName = "adamw_torch"
    learning_rate: float = Field(default=2.0e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler: SchedulerName = "cosine"
    lr_cycles: int = Field(default=1, gt=0)
    """Number of restarts for `cosine_with_restarts`."""
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    warmup_steps: int | None = Field(default=None, ge=0)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    """Stop after this many optimizer steps (overrides `epochs`)."""
    micro_batch_size: int = Field(default=4, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """`auto`: bf16 where the hardware supports it (CPU included), else fp32."""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    neftune_noise_alpha: float | None = Field(default=None, gt=0)
    group_by_length: bool = False
    auto_find_batch_size: bool = False
    loss_chunk_size: int = Field(default=1024, gt=0)
    """Trained positions per LM-head chunk: bounds the memory of the vocabulary projection."""
    seed: int = 42
    logging_steps: int = Field(default=10, gt=0)
    eval_steps: int | None = Field(default=None, gt=0)
    save_steps: int | None = Field(default=None, gt=0)
    save_total_limit: int | None = Field(default=2, gt=0)
    report_to: list[ReportTarget] = ["none"]
    num_threads: int | None = Field(default=None, gt=0)
    """torch intra-op threads; default: what torch picks (all cores)."""

    @model_validator(mode="after")
    def _warmup_choice(self) -> TrainConfig:
        if self.warmup_steps is not None and self.warmup_ratio > 0:
            raise ValueError(
                "train.warmup_ratio and train.warmup_steps can't both be set: choose one"
            )
        return self


class EvalTaskConfig(StrictModel):
    name: str
    path: str
    format: str | None = None
    columns: dict[str, str] | None = None
    type: Literal["classification", "generation", "loss"] = "generation"
    options: list[str] | None = None
    """Label set for classification; omitted: from the data (label column or OPTIONS clause)."""
    metrics: list[str] = ["exact_match", "f1", "rouge_l"]
    """Generation metrics; the first one is the task's main metric (regression check, report)."""
    score: Literal["sum", "mean"] = "sum"
    """Classification option score: `sum` = log p(option + end-of-turn | prompt), whose softmax
    over the options is the probability used for ECE/Brier; `mean` = per-token mean (length-
    normalized), for option sets whose token lengths differ a lot."""
    max_examples: int | None = Field(default=None, gt=0)
    regression_check: bool = False
    """A general held-out set: flag tuned-vs-base drops beyond `eval.regression_threshold`."""

    _known_format = field_validator("format")(lambda v: known_format(v))


class EvalConfig(StrictModel):
    compare_base: bool = True
    tasks: list[EvalTaskConfig] = []
    batch_size: int = Field(default=8, gt=0)
    max_new_tokens: int = Field(default=128, gt=0)
    do_sample: bool = False
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1.0)
    regression_threshold: float = Field(default=0.02, ge=0)
    """Absolute drop of a task's main metric that counts as a regression."""
    fail_on_regression: bool = False
    seed: int = 0
    bootstrap_resamples: int = Field(default=10000, gt=0)
    """Resamples of the paired bootstrap behind the p-values of continuous metrics."""
    show_examples: int = Field(default=3, ge=0)
    """Generations (and classification items) per task shown in report.md/report.html."""
    lm_eval_tasks: list[str | dict[str, Any]] = []
    """lm-evaluation-harness tasks run on the same in-memory models (needs `instructune[lmeval]`):
    registry names, or task config dicts such as a local JSONL multiple-choice task
    (`dataset_path: json`, `dataset_kwargs: {data_files: {test: file.jsonl}}`)."""
    lm_eval_limit: int | None = Field(default=None, gt=0)
    """Evaluate at most this many documents per lm-eval task."""


class Config(StrictModel):
    model: ModelConfig = ModelConfig()
    data: DataConfig | None = None
    method: Method = "lora"
    lora: LoraConfig = LoraConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig | None = None
    build: BuildConfig | None = None
    """`instructune build`: instruction rows from labelled data (see `config/build.py`)."""
    synthesize: SynthesizeConfig | None = None
    """`instructune synthesize`: LLM-generated instruction data."""
    adapter: str | None = None
    """A training output_dir (or adapter folder) to evaluate/serve on top of `model`."""
    output_dir: str = "runs/default"

    @field_validator("output_dir")
    @classmethod
    def _output_dir_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("output_dir must not be empty")
        return v

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)
