"""Experimental: `train.objective: grpo`, online RL with TRL's GRPOTrainer against a reward run.

`run_train` hands a grpo config to `run_grpo`, which keeps its conventions: it claims
`output_dir` the same way, writes `config.yaml` + `manifest.json`, `metrics.jsonl` (one record per
logged step: loss, reward, its spread over the group, answer lengths, KL), `training_curves.png`,
`train_results.json`, and saves the adapter (or model) with tokenizer and `template.jinja`, so
`eval`, `generate`, `chat` and `merge` load the run like any other.

Each step samples `grpo.num_generations` answers per prompt from the policy (the run's model with
its method applied), scores them with the reward model trained by `train.objective: reward` (the
same scoring as its training: the answer rendered with the reward run's template, the reward read
at the answer's end-of-turn token) and optimizes the group-relative advantage. Prompts are the
conversations of `data.train` without their last answer (`data/prompts.py`).

TRL renders the prompts with the tokenizer's chat template, so the run's template must be `chat`
(the config refuses others). Not supported yet: resuming (`--resume`, `train.save_steps`) and
evaluation during training.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from instructune.config import Config, ConfigError, DataConfig
from instructune.config.schema import ADAPTER_METHODS
from instructune.data.examples import IGNORE_INDEX
from instructune.data.prompts import PreparedPrompts, prepare_prompts
from instructune.models.identity import BASE_MODEL_KEY, base_identity
from instructune.rundir import (
    CHECKPOINTS_DIR,
    METRICS_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    MetricsLog,
    RunDir,
)
from instructune.training.callbacks import StepClock

if TYPE_CHECKING:
    from instructune.training.run import TrainResult

log = logging.getLogger(__name__)

ONLINE_METRICS = (
    "loss",
    "learning_rate",
    "grad_norm",
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "completions/mean_length",
    "completions/clipped_ratio",
    "kl",
    "entropy",
)
"""What `metrics.jsonl` keeps of TRL's GRPO log (the rest is in its own names per reward)."""


class RewardModelScorer:
    """A TRL reward function over a `train.objective: reward` run: one float per completion."""

    __name__ = "reward_model"  # TRL logs each reward function under its name

    def __init__(self, run: str | Path, batch_size: int = 8) -> None:
        from instructune.bundle import (
            load_adapter,
            load_base,
            load_run_template,
            load_run_tokenizer,
        )
        from instructune.models import pad_token_id

        source = RunDir(Path(run))
        if not source.path.is_dir():
            raise FileNotFoundError(
                f"grpo.reward_model: no run folder {str(run)!r}; train the reward model first "
                "(e.g. instructune train configs/reward.yaml)"
            )
        cfg = source.config()
        if cfg is None or cfg.train.objective != "reward":
            found = f"a train.objective: {cfg.train.objective} run" if cfg else "not a run folder"
            raise ValueError(
                f"grpo.reward_model: {str(run)!r} is {found}; it must be the output_dir of a "
                "run trained with train.objective: reward"
            )
        base = source.base_model() if source.kind == "adapter" else cfg.model
        if source.kind == "model":
            base = cfg.model.model_copy(update={"path": str(source.path), "gguf_file": None})
        model = load_base(base, reward_head=True)
        if source.kind == "adapter":
            model = load_adapter(model, source.path)
        self.tokenizer = load_run_tokenizer(source, base)
        model.config.pad_token_id = pad_token_id(self.tokenizer)
        self.model = model.eval()
        self.template = load_run_template(source, self.tokenizer)
        self.data_cfg = cfg.data
        self.batch_size = batch_size

    def to(self, device: Any) -> RewardModelScorer:
        """Score on `device` (the policy's: its process's GPU under DDP)."""
        self.model.to(device)
        return self

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any
    ) -> list[float | None]:
        import torch

        from instructune.data.conversation import Conversation, Message
        from instructune.data.tokenize import encode_conversations
        from instructune.training.dpo import _pad
        from instructune.training.reward import sequence_rewards

        convs = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            turns = [Message(m["role"], m["content"]) for m in prompt]
            text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
            convs.append(Conversation([*turns, Message("assistant", text)], f"completion {i}"))
        if self.data_cfg is None:
            raise ValueError("the reward run's config has no data section")
        data_cfg = self.data_cfg.model_copy(
            update={"audit": False, "truncation": "truncate_prompt"}
        )
        examples = encode_conversations(convs, self.template, self.tokenizer, data_cfg).examples
        by_source = {e.source: e for e in examples}
        rewards: list[float | None] = []
        pad = self.model.config.pad_token_id
        for lo in range(0, len(convs), self.batch_size):
            rows = [by_source.get(c.source) for c in convs[lo : lo + self.batch_size]]
            kept = [r for r in rows if r is not None]
            if len(kept) != len(rows):
                raise ValueError("a completion could not be encoded for the reward model")
            width = max(len(r.input_ids) for r in kept)
            batch = {
                "input_ids": _pad([r.input_ids for r in kept], pad, width),
                "labels": _pad([r.labels for r in kept], IGNORE_INDEX, width),
                "attention_mask": _pad(
                    [np.ones(len(r.input_ids), np.int64) for r in kept], 0, width
                ),
            }
            device = self.model.device
            with torch.inference_mode():
                rewards += sequence_rewards(
                    self.model, {k: v.to(device) for k, v in batch.items()}
                ).tolist()
        return rewards


class OnlineMetricsCallback(TrainerCallback):
    """`metrics.jsonl` for grpo: one record per logged step with `ONLINE_METRICS`, the tokens
    TRL has fed (prompts and sampled answers) and the seconds spent in steps."""

    def __init__(self, path: Path, clock: StepClock) -> None:
        self.log = MetricsLog(path)
        self.clock = clock

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return  # the end-of-training summary: run_grpo writes its own
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
        record |= {k: logs[k] for k in ONLINE_METRICS if k in logs}
        record |= {"tokens": state.num_input_tokens_seen, "elapsed_s": self.clock.seconds}
        self.log.write(record)


def run_grpo(
    cfg: Config, resume: bool = False, overwrite: bool = False, callbacks: Sequence[Any] = ()
) -> TrainResult:
    """`train.objective: grpo`: the policy `cfg.model` + `cfg.method` trained by TRL's
    GRPOTrainer on the prompts of `cfg.data.train` against `cfg.grpo.reward_model`."""
    import torch
    from transformers import set_seed

    from instructune.models import describe_model, load_tokenizer, resolve_dtype
    from instructune.noise import silence_known_noise
    from instructune.rundir import claim_output_dir, data_inputs
    from instructune.training.checkpoints import claim_training_outputs
    from instructune.training.plots import plot_training_curves
    from instructune.training.run import TrainResult

    data, reward_run = _check_can_run(cfg, resume)
    out = cfg.output_path
    claim_output_dir(out, command="train", inputs=[*data_inputs(data), reward_run])
    silence_known_noise()
    claim_training_outputs(out, out / CHECKPOINTS_DIR, False, overwrite)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    set_seed(cfg.train.seed)
    scorer = RewardModelScorer(reward_run)  # a wrong path fails before the policy loads

    tokenizer = load_tokenizer(cfg.model)
    prepared = prepare_prompts(data, tokenizer, cfg.grpo.max_completion_length)
    dtype = resolve_dtype(cfg.train.precision, cfg.model.dtype)
    clock = StepClock()
    trainer = _trainer(cfg, dtype, tokenizer, prepared, scorer, clock, callbacks)
    main = trainer.is_world_process_zero()
    extra = _manifest_extra(cfg, prepared, describe_model(trainer.model), dtype)
    extra[BASE_MODEL_KEY] = base_identity(trainer.model)  # not trained yet: the base's weights
    if main:
        (out / METRICS_FILE).unlink(missing_ok=True)
        RunDir(out).write_manifest(cfg, "train", extra)
    output = trainer.train()
    metrics = _final_metrics(trainer.state, output, clock, len(prepared.train))
    if main:
        _save(trainer, cfg, tokenizer, prepared.template.source_text, out)
        plot_training_curves(out / METRICS_FILE, out / PLOT_FILE)
        (out / RESULTS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        RunDir(out).write_manifest(cfg, "train", extra | {"results": metrics})
    log.info("grpo: %d steps, wrote %s", trainer.state.global_step, out)
    return TrainResult(out, metrics, trainer.model, tokenizer, prepared)


def _check_can_run(cfg: Config, resume: bool) -> tuple[DataConfig, str]:
    """The data section and the reward run, after refusing what this experimental objective
    can't do."""
    if cfg.data is None or cfg.grpo.reward_model is None:
        raise ConfigError("train.objective: grpo needs a `data:` section and grpo.reward_model")
    if resume:
        raise ConfigError("--resume: train.objective: grpo (experimental) can't resume yet")
    missing = [name for name in ("trl", "datasets") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"train.objective: grpo needs {' and '.join(missing)}: pip install 'instructune[rl]'"
        )
    return cfg.data, cfg.grpo.reward_model


def _trainer(
    cfg: Config,
    dtype: Any,
    tokenizer: Any,
    prepared: PreparedPrompts,
    scorer: RewardModelScorer,
    clock: StepClock,
    callbacks: Sequence[Any],
) -> Any:
    """TRL's GRPOTrainer over the policy (`cfg.model` with `cfg.method` applied, as SFT's);
    the scorer moved to the policy's device."""
    from trl import GRPOTrainer

    from instructune.models import apply_method, load_model
    from instructune.training.args import report_callbacks

    model = load_model(cfg.model, dtype, cfg.method, cfg.quantization, for_training=True)
    model = apply_method(
        model, cfg.method, cfg.lora, cfg.train.gradient_checkpointing, cfg, tokenizer
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=scorer,
        args=grpo_args(cfg, dtype),
        train_dataset=_dataset(prepared),
        processing_class=tokenizer,
        callbacks=[
            clock,
            OnlineMetricsCallback(cfg.output_path / METRICS_FILE, clock),
            *report_callbacks(cfg.train.report_to, cfg.output_path),
            *callbacks,
        ],
    )
    scorer.to(trainer.accelerator.device)
    return trainer


def grpo_args(cfg: Config, dtype: Any) -> Any:
    """TRL's GRPOConfig from `cfg.train` (the same mapping as SFT's TrainingArguments) and
    `cfg.grpo`."""
    import torch
    from trl import GRPOConfig as TRLGRPOConfig

    from instructune.training.args import (
        check_train_config,
        optimizer_kwargs,
        precision_kwargs,
        schedule_kwargs,
        scheduler_kwargs,
        trainer_report_to,
    )

    train, grpo = cfg.train, cfg.grpo
    check_train_config(cfg, dtype)
    cuda = bool(torch.cuda.is_available())
    return TRLGRPOConfig(
        output_dir=str(cfg.output_path / CHECKPOINTS_DIR),
        run_name=cfg.output_path.name,
        seed=train.seed,
        data_seed=train.seed,
        per_device_train_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        **optimizer_kwargs(train),
        **scheduler_kwargs(train),
        max_grad_norm=train.max_grad_norm or 0.0,
        **precision_kwargs(dtype),
        **schedule_kwargs(train, has_eval=False),
        report_to=trainer_report_to(train.report_to) or "none",
        # `apply_method` switched checkpointing on or off already (TRL's default is on)
        gradient_checkpointing=False,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        num_generations=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        beta=grpo.beta,
        temperature=grpo.temperature,
    )


def _dataset(prepared: PreparedPrompts) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p} for p in prepared.train])


def _save(trainer: Any, cfg: Config, tokenizer: Any, template_text: str, out: Path) -> None:
    from instructune.models import save_adapter

    if cfg.method in ADAPTER_METHODS:
        save_adapter(trainer.model, tokenizer, template_text, out)
        return
    trainer.save_model(str(out))
    RunDir(out).write_template(template_text)


def _final_metrics(state: Any, output: Any, clock: StepClock, prompts: int) -> dict[str, Any]:
    """Steps, losses, the logged reward at the first and last logged step, tokens and time."""
    logged = [r for r in state.log_history if "reward" in r and "loss" in r]
    return {
        "global_step": state.global_step,
        "epoch": state.epoch,
        "train_loss": output.training_loss,
        "final_loss": logged[-1]["loss"] if logged else None,
        "reward_first": logged[0]["reward"] if logged else None,
        "reward_last": logged[-1]["reward"] if logged else None,
        "prompts": prompts,
        "tokens": state.num_input_tokens_seen,
        "train_seconds": clock.seconds,
        "train_runtime_s": output.metrics.get("train_runtime"),
    }


def _manifest_extra(
    cfg: Config, prepared: PreparedPrompts, model: dict[str, Any], dtype: Any
) -> dict[str, Any]:
    return {
        "data_hashes": prepared.hashes,
        "inputs": {s.path: s.sha256 for s in prepared.sources},
        "template": prepared.template.name,
        "model": model,
        "dtype": str(dtype).removeprefix("torch."),
        "train_prompts": len(prepared.train),
        "prompt_tokens": prepared.prompt_tokens,
        "dropped": dict(prepared.dropped),
        "reward_model": str(cfg.grpo.reward_model),
    }
