"""Generation tasks: the training template's prompt, generated on the inference engine, scored.

A prompt is `template.render(messages before the last assistant turn, add_generation_prompt=True)`,
the same text training rendered before the response it learned; `inference.engine.Engine` decodes
it and stops at EOS or the template's end-of-turn token. The stop rate (share of outputs that ended
on a stop token before `max_new_tokens`) tells whether a fine-tune learned to end its answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from instructune.config import EvalConfig, EvalTaskConfig
    from instructune.data.conversation import Conversation
    from instructune.evaluation.compare import TaskOutcome
    from instructune.inference.engine import Engine
    from instructune.inference.stops import TemplateLike


@dataclass(frozen=True)
class PromptItem:
    """One eval item: the rendered prompt, the reference response and where it came from."""

    prompt: str
    reference: str
    source: str
    label: str | None = None


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


def generate(engine: Engine, prompts: Sequence[str], settings: EvalConfig) -> list[Generated]:
    """Generate for every prompt on the engine with the `eval:` section's sampling; row i samples
    with seed `settings.seed + i`, so an output does not depend on the batch it shared."""
    from instructune.inference.sampling import SamplingParams

    params = [
        SamplingParams.from_config(settings, seed=settings.seed + i) for i in range(len(prompts))
    ]
    was_training = engine.model.training
    try:
        done = engine.generate(prompts, params)
    finally:
        engine.model.train(was_training)
    return [Generated(c.text.strip(), c.completion_tokens, c.finish_reason == "stop") for c in done]


def stop_rate(outputs: Sequence[Generated]) -> float:
    return sum(o.stopped for o in outputs) / len(outputs) if outputs else 0.0


def evaluate_generation(
    model: Any,
    tokenizer: Any,
    template: TemplateLike,
    items: Sequence[PromptItem],
    task: EvalTaskConfig,
    settings: EvalConfig,
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
    from instructune.inference.engine import Engine

    engine = Engine(model, tokenizer, template, max_batch_size=settings.batch_size)
    outputs = generate(engine, [it.prompt for it in items], settings)
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
