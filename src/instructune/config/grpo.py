"""The `grpo:` section: online RL (TRL's GRPOTrainer) against a trained reward model.

Kept apart from `schema.py` (which imports it) so each module stays small; like the rest of the
config it imports nothing from the package at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from instructune.config.base import StrictModel

if TYPE_CHECKING:
    from instructune.config.schema import Config

GRPO_METHODS = ("lora", "qlora", "ia3", "full")
"""Methods GRPO trains: the adapter ones disable their adapter for the KL reference (`beta`)."""


class GRPOConfig(StrictModel):
    """`train.objective: grpo` (experimental): sample `num_generations` answers per prompt of
    `data.train`, score them with `reward_model`, and push the policy towards the answers that
    score above their group's mean (Group Relative Policy Optimization, TRL's GRPOTrainer)."""

    reward_model: str | None = None
    """The output_dir of a `train.objective: reward` run (e.g. `runs/reward` of
    configs/reward.yaml); its score of each sampled answer is the reward. Required."""
    num_generations: int = Field(default=4, ge=2)
    """Answers sampled per prompt; each one's advantage is its reward against the group's mean,
    so a group needs two at least. `train.micro_batch_size × train.gradient_accumulation_steps`
    (the answers scored per generation round) must be a multiple of it."""
    max_completion_length: int = Field(default=64, gt=0)
    """Tokens sampled per answer at most; prompts longer than `data.max_length` minus this are
    dropped (counted in the manifest)."""
    beta: float = Field(default=0.0, ge=0.0)
    """KL penalty towards the starting model. 0 (TRL's default) needs no reference; above 0 the
    reference is the base with the adapter disabled, so `method: full` needs 0."""
    temperature: float = Field(default=1.0, gt=0.0)
    """Sampling temperature of the answers (also applied to the log-probs TRL trains on)."""


def check_grpo(cfg: Config) -> None:
    """What `train.objective: grpo` can't run with, as a ValueError naming the keys."""
    grpo, data, train = cfg.grpo, cfg.data, cfg.train
    if grpo.reward_model is None:
        raise ValueError(
            "train.objective: grpo needs grpo.reward_model: the output_dir of a run trained with "
            "train.objective: reward (e.g. runs/reward from configs/reward.yaml)"
        )
    if cfg.method not in GRPO_METHODS:
        raise ValueError(
            f"train.objective: grpo works with method {', '.join(GRPO_METHODS)}, not {cfg.method}"
        )
    if cfg.method == "full" and grpo.beta > 0:
        raise ValueError(
            "grpo.beta > 0 with method: full would load a second copy of the model as the KL "
            "reference; use method lora/ia3 (the reference is the base, adapter disabled) or "
            "grpo.beta: 0"
        )
    if data is not None and data.template != "chat":
        raise ValueError(
            f"train.objective: grpo needs data.template: chat, not {data.template!r}: TRL renders "
            "the prompts with the tokenizer's chat template, and only `chat` trains the same text"
        )
    if data is not None and (data.eval or data.eval_fraction > 0):
        raise ValueError(
            "train.objective: grpo does not evaluate during training; remove data.eval / "
            "data.eval_fraction and evaluate the run with `instructune eval`"
        )
    if data is not None and grpo.max_completion_length >= data.max_length:
        raise ValueError(
            f"grpo.max_completion_length ({grpo.max_completion_length}) must be below "
            f"data.max_length ({data.max_length}), which bounds prompt + answer"
        )
    per_round = train.micro_batch_size * train.gradient_accumulation_steps
    if per_round % grpo.num_generations:
        raise ValueError(
            f"train.micro_batch_size × train.gradient_accumulation_steps ({per_round}) must be a "
            f"multiple of grpo.num_generations ({grpo.num_generations}): each round scores whole "
            "groups of answers"
        )
    if train.save_steps is not None:
        raise ValueError(
            "train.save_steps: grpo runs can't resume from checkpoints yet (experimental); "
            "remove it"
        )
