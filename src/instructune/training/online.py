"""Experimental: online RL with TRL's GRPOTrainer against a trained reward model.

`run_grpo(cfg, reward_run)` samples `num_generations` answers per prompt from the policy (the
run's model with LoRA), scores them with the reward model trained by `train.objective: reward`
(the same scoring as its training: the answer rendered with the reward run's template, the reward
read at the answer's end-of-turn token) and optimizes the group-relative advantage. Prompts are the
conversations of `cfg.data.train` without their last answer (preference rows included).

TRL renders the prompts with the tokenizer's chat template, so the run's template must be `chat`
(the template parity of SFT runs holds only then). The output folder is a LoRA run folder
(adapter, tokenizer, `template.jinja`, config and manifest) that `eval`, `generate` and `merge`
load like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instructune.config import Config, ConfigError
from instructune.data.examples import IGNORE_INDEX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GRPOSettings:
    num_generations: int = 4
    max_completion_length: int = 64
    beta: float = 0.0
    """KL coefficient against the base (TRL's default 0: no reference model)."""
    temperature: float = 1.0


class RewardModelScorer:
    """A TRL reward function over a `train.objective: reward` run: one float per completion."""

    __name__ = "reward_model"  # TRL logs each reward function under its name

    def __init__(self, run: str | Path, batch_size: int = 8) -> None:
        from instructune.artifacts import (
            RunDir,
            load_adapter,
            load_base,
            load_run_template,
            load_run_tokenizer,
        )
        from instructune.models import pad_token_id

        source = RunDir(Path(run))
        cfg = source.config()
        if cfg is None or cfg.train.objective != "reward":
            raise ValueError(f"{run} is not a reward model run (train.objective: reward)")
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
            with torch.inference_mode():
                rewards += sequence_rewards(self.model, batch).tolist()
        return rewards


def run_grpo(cfg: Config, reward_run: str | Path, settings: GRPOSettings = GRPOSettings()) -> Path:
    """GRPO on `cfg.data.train`'s prompts against `reward_run`; returns the output folder."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from instructune.artifacts import write_template
    from instructune.data.pipeline import load_splits
    from instructune.data.templates import load_template
    from instructune.manifest import write_manifest
    from instructune.models import bf16_supported, load_model, load_tokenizer, resolve_dtype

    if cfg.data is None:
        raise ConfigError("run_grpo needs a `data:` section (its rows give the prompts)")
    if cfg.data.template != "chat" or cfg.method != "lora":
        raise ConfigError("run_grpo (experimental) needs data.template: chat and method: lora")
    tokenizer = load_tokenizer(cfg.model)
    prompts = [
        [{"role": m.role, "content": m.content} for m in conv.messages[:-1]]
        for conv in load_splits(cfg.data).train
    ]
    dtype = resolve_dtype(cfg.train.precision, cfg.model.dtype)
    model = load_model(cfg.model, dtype, "full", None, for_training=True)
    args = GRPOConfig(
        output_dir=str(cfg.output_path / "checkpoints"),
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        beta=settings.beta,
        temperature=settings.temperature,
        per_device_train_batch_size=cfg.train.micro_batch_size,
        learning_rate=cfg.train.learning_rate,
        max_steps=cfg.train.max_steps or 1,
        seed=cfg.train.seed,
        bf16=bool(dtype == __import__("torch").bfloat16) and bf16_supported(),
        use_cpu=not __import__("torch").cuda.is_available(),
        logging_steps=cfg.train.logging_steps,
        report_to=[],
        save_strategy="no",
    )
    lora = cfg.lora
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=int(lora.alpha), lora_dropout=lora.dropout,
        target_modules=lora.target_modules, task_type="CAUSAL_LM",
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=RewardModelScorer(reward_run),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    out = cfg.output_path
    policy: Any = trainer.model
    policy.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_template(out, load_template("chat", tokenizer).source_text)
    history = [r for r in trainer.state.log_history if "reward" in r and "loss" in r]
    write_manifest(out, cfg, "grpo", {"grpo": {"reward_run": str(reward_run), "log": history}})
    log.info("GRPO: %d steps, wrote %s", trainer.state.global_step, out)
    return out
