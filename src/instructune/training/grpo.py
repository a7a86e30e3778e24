"""Experimental: `train.objective: grpo`, online RL with TRL's GRPOTrainer against a reward run.

`GRPOObjective` is one more objective of `run_train`'s lifecycle (objectives.py), so a grpo run
claims `output_dir`, seeds, sets threads, compiles, checkpoints on Ctrl-C, saves and reports like
any other: `config.yaml` + `manifest.json`, `metrics.jsonl` (one record per logged step: loss,
reward, its spread over the group, answer lengths, KL), `training_curves.png`,
`train_results.json`, and the adapter (or model) with tokenizer and `template.jinja`, so `eval`,
`generate`, `chat` and `merge` load the run like any other.

Each step samples `grpo.num_generations` answers per prompt from the policy (the run's model with
its method applied), scores them with the reward model trained by `train.objective: reward` (the
same scoring as its training: the answer rendered with the reward run's template, the reward read
at the answer's end-of-turn token) and optimizes the group-relative advantage. Prompts are the
conversations of `data.train` without their last answer (`data/grpo_prompts.py`).

TRL renders the prompts with the tokenizer's chat template, so the run's template must be `chat`
(the config refuses others). Not supported yet: resuming (`--resume`, `train.save_steps`; a Ctrl-C
checkpoint is saved but can't be continued) and evaluation during training.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerState

from instructune.config import Config, ConfigError, DataConfig
from instructune.data.grpo_prompts import PreparedPrompts, prepare_prompts
from instructune.models.labels import IGNORE_INDEX
from instructune.rundir import MetricsLog, RunDir, data_inputs
from instructune.training.args import report_callbacks, shared_kwargs
from instructune.training.callbacks import LogReader, StepClock

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

        from instructune.data.collate import pad_rows
        from instructune.data.conversation import Conversation, Message
        from instructune.data.tokenize import encode_conversations
        from instructune.models.rewards import sequence_rewards

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
                "input_ids": pad_rows([r.input_ids for r in kept], pad, width),
                "labels": pad_rows([r.labels for r in kept], IGNORE_INDEX, width),
                "attention_mask": pad_rows(
                    [np.ones(len(r.input_ids), np.int64) for r in kept], 0, width
                ),
            }
            device = self.model.device
            with torch.inference_mode():
                rewards += sequence_rewards(
                    self.model, {k: v.to(device) for k, v in batch.items()}
                ).tolist()
        return rewards


class OnlineMetricsCallback(LogReader):
    """`metrics.jsonl` for grpo: one record per logged step with `ONLINE_METRICS`, the tokens
    TRL has fed (prompts and sampled answers) and the seconds spent in steps."""

    def __init__(self, path: Path, clock: StepClock) -> None:
        self.log = MetricsLog(path)
        self.clock = clock

    def read(self, state: TrainerState, logs: dict[str, Any]) -> None:
        if not state.is_world_process_zero or "loss" not in logs:
            return  # the end-of-training summary: the objective's `metrics` writes its own
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
        record |= {k: logs[k] for k in ONLINE_METRICS if k in logs}
        record |= {"tokens": state.num_input_tokens_seen, "elapsed_s": self.clock.seconds}
        self.log.write(record)


class GRPOObjective:
    """`train.objective: grpo`: the policy `cfg.model` + `cfg.method` trained by TRL's
    GRPOTrainer on the prompts of `cfg.data.train` against `cfg.grpo.reward_model`."""

    resumable = False

    def __init__(self, cfg: Config, resume: bool) -> None:
        self.cfg = cfg
        self.data, self.reward_run = _check_can_run(cfg, resume)
        self.clock = StepClock()

    def inputs(self) -> list[str]:
        return [*data_inputs(self.data), self.reward_run]

    def prepare(self, tokenizer: Any) -> PreparedPrompts:
        self.scorer = RewardModelScorer(self.reward_run)  # a wrong path fails before the policy
        self.prepared = prepare_prompts(self.data, tokenizer, self.cfg.grpo.max_completion_length)
        return self.prepared

    def load_model(self, dtype: Any, tokenizer: Any) -> Any:
        from instructune.models import load_model

        cfg = self.cfg
        return load_model(cfg.model, dtype, cfg.method, cfg.quantization, for_training=True)

    def apply_kernels(self, model: Any) -> None:
        return None  # TRL computes its own loss: `train.kernels` has nothing to replace

    def trainer(
        self, model: Any, tokenizer: Any, dtype: Any, checkpoint: Path | None, hooks: list[Any]
    ) -> Any:
        """TRL's GRPOTrainer (with atomic checkpoints) over the policy; the scorer moved to the
        policy's device."""
        run = RunDir(self.cfg.output_path)
        trainer = _trainer_class()(
            model=model,
            reward_funcs=self.scorer,
            args=grpo_args(self.cfg, dtype),
            train_dataset=_dataset(self.prepared),
            processing_class=tokenizer,
            callbacks=[
                self.clock,
                OnlineMetricsCallback(run.metrics_file, self.clock),
                *report_callbacks(self.cfg.train.report_to, run.path),
                *hooks,
            ],
        )
        self.scorer.to(trainer.accelerator.device)
        return trainer

    def manifest(self, checkpoint: Path | None) -> dict[str, Any]:
        prepared = self.prepared
        return {
            "train_prompts": len(prepared.train),
            "prompt_tokens": prepared.prompt_tokens,
            "dropped": dict(prepared.dropped),
            "reward_model": str(self.cfg.grpo.reward_model),
        }

    def metrics(self, trainer: Any, output: Any) -> dict[str, Any]:
        """Steps, losses, the logged reward at the first and last logged step, tokens and time."""
        state = trainer.state
        logged = [r for r in state.log_history if "reward" in r and "loss" in r]
        return {
            "global_step": state.global_step,
            "epoch": state.epoch,
            "train_loss": output.training_loss,
            "final_loss": logged[-1]["loss"] if logged else None,
            "reward_first": logged[0]["reward"] if logged else None,
            "reward_last": logged[-1]["reward"] if logged else None,
            "prompts": len(self.prepared.train),
            "tokens": state.num_input_tokens_seen,
            "train_seconds": self.clock.seconds,
            "train_runtime_s": output.metrics.get("train_runtime"),
        }


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


def grpo_args(cfg: Config, dtype: Any) -> Any:
    """TRL's GRPOConfig from `cfg.train` (the same mapping as SFT's TrainingArguments) and
    `cfg.grpo`."""
    from trl import GRPOConfig as TRLGRPOConfig

    grpo = cfg.grpo
    checkpoints = RunDir(cfg.output_path).checkpoints_dir
    return TRLGRPOConfig(
        **shared_kwargs(cfg, checkpoints, dtype, has_eval=False),
        # `apply_method` switched checkpointing on or off already (TRL's default is on)
        gradient_checkpointing=False,
        num_generations=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        beta=grpo.beta,
        temperature=grpo.temperature,
    )


@functools.cache
def _trainer_class() -> type:
    """GRPOTrainer saving checkpoints like ours (a Ctrl-C's is complete or invisible); built on
    first use: trl is an optional dependency."""
    from trl import GRPOTrainer

    from instructune.training.checkpoints import AtomicCheckpoints

    return type("GRPORunTrainer", (AtomicCheckpoints, GRPOTrainer), {})


def _dataset(prepared: PreparedPrompts) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p} for p in prepared.train])
