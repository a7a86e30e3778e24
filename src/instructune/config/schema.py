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
from instructune.config.dtypes import DtypeName
from instructune.config.grpo import GRPOConfig, check_grpo
from instructune.config.methods import (
    IA3Config,
    LoraConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    QuantizationConfig,
)
from instructune.config.sampling import SamplingConfig
from instructune.config.synthesize import SynthesizeConfig

EMBEDDED_MODEL = "smollm2-135m-instruct"
Method = Literal["lora", "qlora", "full", "prompt_tuning", "prefix_tuning", "ia3"]
"""Which parameters train: LoRA adapters, LoRA on a 4-bit base, every weight, virtual prompt
embeddings (prompt tuning), per-layer key/value prefixes (prefix tuning) or IA3 scaling vectors."""
ADAPTER_METHODS: tuple[Method, ...] = ("lora", "qlora", "prompt_tuning", "prefix_tuning", "ia3")
"""Methods whose run saves a peft adapter (adapter_config.json), not the whole model."""
PROMPT_METHODS: tuple[Method, ...] = ("prompt_tuning", "prefix_tuning")
"""Methods that add virtual tokens in front of the input: nothing to merge into weights."""


# The registries' names (`data.formats.FORMATS`, `data.templates.TEMPLATES`), kept here so that
# config imports nothing from the rest of the package; tests/config/test_names.py keeps them equal.
FORMAT_NAMES = (
    "alpaca",
    "columns",
    "dolly",
    "messages",
    "natural_instructions",
    "preference",
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
    dtype: Literal["auto", DtypeName] = "auto"
    """Weights dtype at load. `auto` follows `train.precision` when training, else float32."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = False


MAX_RECORD_BYTES = 16 * 1024 * 1024
"""Default largest row (a JSON lines line, a JSON array element, a CSV record or cell) read from a
data file: far above any real instruction example, and what bounds a reader's memory."""


class DataSource(StrictModel):
    path: str
    """A file (.json, .jsonl, .csv, .tsv, .parquet), a `datasets` folder, or a Hub dataset id."""
    format: str | None = None
    """Row format from the registry (alpaca, sharegpt, messages, dolly, text, columns,
    natural_instructions, preference). Omitted: detected from the columns, and the choice is
    reported."""
    columns: dict[str, str] | None = None
    """Maps our field names to the file's columns, e.g. {instruction: question, output: answer}."""
    split: str | None = None
    """Split name for `datasets` sources (Hub id or saved DatasetDict)."""
    max_rows: int | None = Field(default=None, gt=0)
    """Read at most this many rows (after the file order), for quick runs."""
    max_record_bytes: int = Field(default=MAX_RECORD_BYTES, ge=1024)
    """Largest row read, in bytes (16 MiB): a JSON lines line or JSON array element over it is a
    malformed row (`on_error` fails or skips it, naming file and line), a CSV/TSV record or cell
    over it stops the read naming the line. Only this much of a line is ever held in memory."""

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
    reasoning: Literal["keep", "drop"] = "keep"
    """Assistant reasoning (`reasoning_content`, a leading `<think>…</think>` in the text):
    `keep` trains it as the template renders it; `drop` removes it from every assistant turn (and
    rejected answer) before rendering, counted per source as `reasoning_dropped`."""
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


Objective = Literal["sft", "dpo", "reward", "grpo"]


class DPOConfig(StrictModel):
    """`train.objective: dpo`: Direct Preference Optimization on preference pairs."""

    beta: float = Field(default=0.1, gt=0)
    """Strength of the pull towards the reference model (IPO: its regularization tau)."""
    loss: Literal["sigmoid", "ipo", "robust"] = "sigmoid"
    """`sigmoid` (DPO; with `label_smoothing` the conservative cDPO form), `ipo` (squared loss on
    per-token log-ratios, as TRL), `robust` (rDPO: unbiased under `label_smoothing` label noise)."""
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5)
    """Assumed share of flipped preference labels (sigmoid and robust losses)."""
    precompute_ref: bool = False
    """Compute the reference log-probs of every pair once before training (one no-grad pass)
    instead of a reference forward per step."""

    @model_validator(mode="after")
    def _smoothing_applies(self) -> DPOConfig:
        if self.loss == "ipo" and self.label_smoothing > 0:
            raise ValueError("dpo.label_smoothing has no effect with dpo.loss: ipo; set it to 0")
        return self


class TrainConfig(StrictModel):
    objective: Objective = "sft"
    """`sft` (next-token loss on responses), `dpo` (preference pairs, see `dpo:`), `reward`
    (a reward model: a one-output head on the base scores the answer's end-of-turn token,
    trained on preference pairs with the Bradley-Terry loss) or `grpo` (experimental online RL
    against a reward run, see `grpo:`). `method` still says which parameters train (`lora`,
    `qlora` or `full` for `reward`)."""
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
    compile: bool | Literal["auto"] = "auto"
    """torch.compile the decoder layers' training forward (training/compile.py): fuses the
    elementwise ops, ~25% faster on CPU after a one-time compile (~20 s, cached on disk). `auto`:
    on for models of 50M+ parameters with dense weights (not qlora)."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """`auto`: bf16 where the hardware supports it (CPU included), else fp32."""
    kernels: Literal["auto", "liger", "native"] = "auto"
    """Loss, layer and attention kernels (training/kernels.py). `auto`: on a CUDA GPU, Liger's
    fused linear cross-entropy and RMSNorm/RoPE/SwiGLU kernels where `liger_kernel` is installed
    (`instructune[gpu]`), and varlen attention for packed rows; our chunked loss and the model's
    own layers otherwise, and always on CPU. `liger`: Liger or an error. `native`: our kernels
    everywhere (the reference path)."""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    neftune_noise_alpha: float | None = Field(default=None, gt=0)
    group_by_length: bool = False
    auto_find_batch_size: bool = False
    loss_chunk_size: int = Field(default=256, gt=0)
    """Trained positions per LM-head chunk: bounds the memory of the vocabulary projection
    (chunk x vocab fp32 values); 256 keeps that buffer in cache-friendly sizes on CPU."""
    seed: int = 42
    logging_steps: int = Field(default=10, gt=0)
    eval_steps: int | None = Field(default=None, gt=0)
    save_steps: int | None = Field(default=None, gt=0)
    save_total_limit: int | None = Field(default=2, gt=0)
    report_to: list[ReportTarget] = ["none"]
    num_threads: int | None = Field(default=None, gt=0)
    """torch intra-op threads, fixed. Default: one per core that other processes leave free,
    measured at start-up and after every step (training/threads.py)."""

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
    type: Literal["classification", "generation", "loss", "preference"] = "generation"
    """`preference`: held-out pairs (format: preference); accuracy = how often the chosen answer
    has the higher log-probability, compared with the base item by item."""
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


class EvalConfig(SamplingConfig):
    """The generation tasks' sampling keys (`max_new_tokens`, `temperature`: 0 = greedy, `top_p`,
    `top_k`, `repetition_penalty`, `stop`) sit in this section itself; row i samples with seed
    `seed + i`."""

    compare_base: bool = True
    tasks: list[EvalTaskConfig] = []
    batch_size: int = Field(default=8, gt=0)
    max_new_tokens: int = Field(default=128, ge=1)
    regression_threshold: float = Field(default=0.02, ge=0)
    """Absolute drop of a task's main metric that counts as a regression."""
    fail_on_regression: bool = False
    seed: int = 0  # type: ignore[assignment]  # always set: seeds torch and each generated row
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
    dpo: DPOConfig = DPOConfig()
    grpo: GRPOConfig = GRPOConfig()
    prompt_tuning: PromptTuningConfig = PromptTuningConfig()
    prefix_tuning: PrefixTuningConfig = PrefixTuningConfig()
    ia3: IA3Config = IA3Config()
    quantization: QuantizationConfig = QuantizationConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig | None = None
    build: BuildConfig | None = None
    """`instructune build`: instruction rows from labelled data (see `config/build.py`)."""
    synthesize: SynthesizeConfig | None = None
    """`instructune synthesize`: LLM-generated instruction data."""
    adapter: str | None = None
    """A training output_dir (or adapter folder) to evaluate/serve on top of `model`."""
    adapters: dict[str, str] | None = None
    """Several adapter runs evaluated in one report, {name: output_dir}, e.g. {a: runs/a, b: runs/b,
    ab: runs/a+b}: each is compared with the base (paired tests). Can't be combined with
    `adapter`."""
    output_dir: str = "runs/default"

    @field_validator("output_dir")
    @classmethod
    def _output_dir_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("output_dir must not be empty")
        return v

    @model_validator(mode="after")
    def _one_adapter_choice(self) -> Config:
        if self.adapter is not None and self.adapters:
            raise ValueError("adapter and adapters can't both be set: put every run in adapters")
        reserved = {"base", "tuned", "comparison", "comparisons", "regressions", "meta"}
        taken = sorted(reserved & set(self.adapters or {}))
        if taken:
            raise ValueError(f"adapters: names {taken} are reserved; choose other names")
        return self

    @model_validator(mode="after")
    def _preference_objectives(self) -> Config:
        objective = self.train.objective
        if objective != "sft" and self.method in PROMPT_METHODS:
            raise ValueError(
                f"train.objective: {objective} works with method lora, qlora, ia3 or full, not "
                f"{self.method}"
            )
        if objective == "reward" and self.method == "ia3":
            raise ValueError("train.objective: reward works with method lora, qlora or full")
        if objective != "sft" and self.train.group_by_length:
            raise ValueError(f"train.group_by_length is for sft; set it false for {objective}")
        if objective == "grpo":
            check_grpo(self)
        return self

    @model_validator(mode="after")
    def _prompt_methods_unpacked(self) -> Config:
        # Virtual tokens are put before each row; packed rows would share them and attend across
        # examples (peft drops the position ids packing relies on).
        if self.method in PROMPT_METHODS and self.data is not None and self.data.packing:
            raise ValueError(
                f"method: {self.method} needs data.packing: false (virtual tokens go before each "
                "row, and packed examples would see each other)"
            )
        return self

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)
