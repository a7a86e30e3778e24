"""Batched generation with exactly the training template, and the prompt helpers scoring shares.

A prompt is `template.render(messages before the last assistant turn, add_generation_prompt=True)`,
the same text training rendered before the response it learned. Generation stops at the
tokenizer's EOS or the template's end-of-turn token (found by rendering a probe conversation, so
it works for ChatML, Llama-3, Alpaca-with-eos and custom templates alike). The stop rate (share of
outputs that ended on a stop token before `max_new_tokens`) tells whether a fine-tune learned to
end its answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from instructune.config import EvalTaskConfig
    from instructune.data.conversation import Conversation, Message
    from instructune.evaluation.compare import TaskOutcome

_PROBE = "\x00instructune-probe\x00"


class TemplateLike(Protocol):
    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        meta: Mapping[str, str] | None = None,
    ) -> str: ...


@dataclass(frozen=True)
class PromptItem:
    """One eval item: the rendered prompt, the reference response and where it came from."""

    prompt: str
    reference: str
    source: str
    label: str | None = None


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0


@dataclass(frozen=True)
class Generated:
    text: str
    n_new_tokens: int
    stopped: bool
    """Ended on an EOS/end-of-turn token before `max_new_tokens`."""


def prompt_item(conv: Conversation, template: TemplateLike) -> PromptItem:
    """Split a conversation at its last assistant turn into (rendered prompt, reference)."""
    turns = conv.assistant_indices()
    if not turns:
        raise ValueError(f"{conv.source}: no assistant turn to evaluate against")
    last = turns[-1]
    prompt_messages = conv.messages[:last]
    if not any(m.role == "user" for m in prompt_messages):
        raise ValueError(f"{conv.source}: no user turn before the response (a text-only row?)")
    prompt = template.render(prompt_messages, add_generation_prompt=True, meta=conv.meta or None)
    return PromptItem(prompt, conv.messages[last].content, conv.source, conv.label)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered template text: the template writes BOS itself when it wants one."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def end_of_turn(template: TemplateLike, tokenizer: Any) -> tuple[str, int | None]:
    """(text after an assistant message up to its end-of-turn token, that token's id).

    Rendering `[user, assistant=PROBE]` and reading what follows PROBE gives the template's own
    end of a turn, e.g. `<|im_end|>` for ChatML or `</s>` for Alpaca. The id is the first special
    token there; None when the template ends turns with plain text only.
    """
    from instructune.data.conversation import Message

    text = template.render([Message("user", "hi"), Message("assistant", _PROBE)])
    after = text[text.index(_PROBE) + len(_PROBE) :] if _PROBE in text else ""
    specials = sorted(
        (t for t in tokenizer.all_special_tokens if t and t in after),
        key=after.index,
    )
    if not specials:
        return "", None
    token = specials[0]
    return after[: after.index(token) + len(token)], int(tokenizer.convert_tokens_to_ids(token))


def stop_token_ids(template: TemplateLike, tokenizer: Any) -> list[int]:
    """EOS, the template's end-of-turn token and the known end-of-turn tokens of the vocabulary.

    The same set training's labels end at (`data.tokenize.end_of_turn_ids`), so a generation stops
    exactly where a trained response ends.
    """
    from instructune.data.tokenize import end_of_turn_ids

    ids: list[int] = []
    eos = tokenizer.eos_token_id
    first = [*(eos if isinstance(eos, list) else [eos]), end_of_turn(template, tokenizer)[1]]
    for candidate in [*first, *sorted(end_of_turn_ids(tokenizer))]:
        if candidate is not None and int(candidate) not in ids:
            ids.append(int(candidate))
    if not ids:
        raise ValueError("the tokenizer has no EOS token and the template no end-of-turn token")
    return ids


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    stop_ids: Sequence[int],
) -> list[Generated]:
    """Generate for every prompt: left-padded batches of similar length, seeded per batch."""
    import torch

    encoded = [encode_text(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    pad_id = _pad_id(tokenizer, stop_ids)
    config = _generation_config(settings, stop_ids, pad_id)
    results: list[Generated | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for b, start in enumerate(range(0, len(order), settings.batch_size)):
            batch = order[start : start + settings.batch_size]
            ids, mask = _left_pad([encoded[i] for i in batch], pad_id, device)
            # Seeding each batch makes sampled outputs independent of batches evaluated before.
            torch.manual_seed(settings.seed + b)
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            for row, i in enumerate(batch):
                results[i] = _decode(tokenizer, out[row, ids.shape[1] :].tolist(), stop_ids)
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]


def stop_rate(outputs: Sequence[Generated]) -> float:
    return sum(o.stopped for o in outputs) / len(outputs) if outputs else 0.0


def _pad_id(tokenizer: Any, stop_ids: Sequence[int]) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else int(stop_ids[0])


def _generation_config(settings: GenerationSettings, stop_ids: Sequence[int], pad_id: int) -> Any:
    from transformers import GenerationConfig

    # A fresh config, not the checkpoint's generation_config.json: its sampling defaults (e.g.
    # temperature 0.2) would silently change what "greedy" means between models.
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
        if settings.do_sample
        else {"do_sample": False}
    )
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        **sampling,
    )


def _left_pad(rows: list[list[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[r, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _decode(tokenizer: Any, new_ids: list[int], stop_ids: Sequence[int]) -> Generated:
    """Cut at the first stop token (padding follows it in a batch) and decode the rest."""
    stops = set(stop_ids)
    cut = next((k for k, t in enumerate(new_ids) if t in stops), None)
    kept = new_ids if cut is None else new_ids[:cut]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    return Generated(
        text=text.strip(),
        n_new_tokens=len(new_ids) if cut is None else cut + 1,
        stopped=cut is not None,
    )


def evaluate_generation(
    model: Any,
    tokenizer: Any,
    template: TemplateLike,
    items: Sequence[PromptItem],
    task: EvalTaskConfig,
    settings: GenerationSettings,
) -> tuple[TaskOutcome, list[dict[str, Any]]]:
    """Generate for every item, score with the task's metrics; outcome and prediction records."""
    from instructune.evaluation.compare import TaskOutcome
    from instructune.evaluation.metrics import GENERATION_METRICS

    unknown = [m for m in task.metrics if m not in GENERATION_METRICS]
    if unknown:
        raise ValueError(
            f"eval task {task.name!r}: unknown metric(s) {unknown}; choose from "
            f"{sorted(GENERATION_METRICS)}"
        )
    stops = stop_token_ids(template, tokenizer)
    outputs = generate(model, tokenizer, [it.prompt for it in items], settings, stops)
    per_item: dict[str, list[float]] = {
        m: [
            GENERATION_METRICS[m](o.text, it.reference)
            for o, it in zip(outputs, items, strict=True)
        ]
        for m in task.metrics
    }
    per_item["stopped"] = [float(o.stopped) for o in outputs]
    metrics: dict[str, Any] = {m: sum(v) / len(v) for m, v in per_item.items() if m != "stopped"}
    metrics.update(stop_rate=stop_rate(outputs), n=len(items))
    records = [
        {
            "task": task.name,
            "type": "generation",
            "source": it.source,
            "prompt": it.prompt,
            "reference": it.reference,
            "output": o.text,
            "stopped": o.stopped,
            "n_new_tokens": o.n_new_tokens,
            "scores": {m: per_item[m][k] for m in task.metrics},
        }
        for k, (it, o) in enumerate(zip(items, outputs, strict=True))
    ]
    main = task.metrics[0] if task.metrics else "stop_rate"
    return TaskOutcome(task.name, "generation", metrics, per_item, main), records
