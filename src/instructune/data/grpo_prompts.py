"""Prompts for online RL (`train.objective: grpo`): the data's conversations without their answer.

The rows are read, deduplicated and counted exactly as for SFT (`load_splits`); each one's prompt
is its turns before the last assistant turn. Prompts seen before (preference pairs often share
one) and prompts too long to leave room for `max_completion_length` tokens under
`data.max_length` are dropped and counted.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from instructune.config import DataConfig

Prompt = list[dict[str, str]]
"""Chat messages `[{role, content}, ...]` ending before the answer, as TRL takes them."""


@dataclass
class PreparedPrompts:
    """The prompt data stage's result: what `run_train` reads from `PreparedData` too."""

    template: Any
    train: list[Prompt]
    sources: list[Any]
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_rows: list[dict[str, str]] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    """Tokens of every kept prompt rendered with the generation prompt (one pass over them)."""


def prepare_prompts(cfg: DataConfig, tokenizer: Any, max_completion_length: int) -> PreparedPrompts:
    """The unique prompts of `cfg.train` that leave room for an answer under `cfg.max_length`."""
    from instructune.data.pipeline import load_splits
    from instructune.data.templates import load_template

    template = load_template(cfg.template, tokenizer)
    splits = load_splits(cfg)
    budget = cfg.max_length - max_completion_length
    dropped, rows = Counter(splits.dropped), list(splits.dropped_rows)
    seen: set[str] = set()
    prompts: list[Prompt] = []
    tokens = 0
    for conv in splits.train:
        last = max((i for i, m in enumerate(conv.messages) if m.role == "assistant"), default=None)
        turns = conv.messages[:last] if last is not None else conv.messages
        prompt = [{"role": m.role, "content": m.content} for m in turns]
        key = json.dumps(prompt, sort_keys=True)
        length = _prompt_length(tokenizer, prompt) if key not in seen else 0
        reason = None
        if not any(m["role"] == "user" for m in prompt):
            reason = "no_user_turn"
        elif key in seen:
            reason = "duplicate_prompt"
        elif length > budget:
            reason = "prompt_too_long"
        if reason is not None:
            dropped[reason] += 1
            rows.append({"stage": "train", "source": conv.source, "reason": reason, "detail": ""})
            continue
        seen.add(key)
        prompts.append(prompt)
        tokens += length
    if not prompts:
        raise ValueError(
            f"no prompts left for grpo ({dict(dropped)}); check data.train and that data."
            f"max_length ({cfg.max_length}) leaves room for grpo.max_completion_length"
        )
    digest = hashlib.sha256("\n".join(json.dumps(p) for p in prompts).encode()).hexdigest()
    return PreparedPrompts(
        template=template,
        train=prompts,
        sources=splits.sources,
        dropped=+dropped,
        dropped_rows=rows,
        hashes={"train": digest},
        prompt_tokens=tokens,
    )


def _prompt_length(tokenizer: Any, prompt: Prompt) -> int:
    """Tokens of the prompt as TRL renders it: the chat template with the generation prompt."""
    encoded = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)
    return len(encoded["input_ids"])
