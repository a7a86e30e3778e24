"""Items → instruction rows: template choice, OPTIONS, few-shot exemplars, inversion, rationale.

Every random choice for a row comes from its own generator, seeded by (build seed, source, row
index), so a row renders the same whatever else the build holds. Exemplars are drawn from the
source's *train* items only (never the row itself): the caller passes that pool, which the split
made before anything rendered, so no eval row can appear in a train prompt.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instructune.config.build import BuildConfig, BuildSource
from instructune.curation.options import OptionsClause, render_options
from instructune.curation.sources import Item
from instructune.curation.task_templates import BuildTemplate
from instructune.data.conversation import Message, RowError, row_error
from instructune.data.templates import TemplateError

__all__ = ["RATIONALE_FORMAT", "Example", "TableRenderer", "item_example"]

RATIONALE_FORMAT = "{rationale}\nSo the final answer is {answer}."
"""Chain-of-thought targets (FLAN 2022 CoT): the rationale, then the answer."""

TokenCounter = Callable[[str], int]


@dataclass(slots=True)
class Example:
    messages: list[Message]
    meta: dict[str, Any]
    rejected: str | None = None
    """A preference row's rejected answer; `messages` then ends with the chosen one."""

    def to_json(self) -> dict[str, Any]:
        turns = [{"role": m.role, "content": m.content} for m in self.messages]
        if self.rejected is None:
            return {"messages": turns, "meta": self.meta}
        # the `preference` row shape the data readers take: prompt turns, chosen, rejected
        chosen = turns.pop()["content"]
        return {"messages": turns, "chosen": chosen, "rejected": self.rejected, "meta": self.meta}

    def prompt_text(self) -> str:
        return "\n".join(m.content for m in self.messages if m.role != "assistant")

    def target_text(self) -> str:
        return "\n".join(m.content for m in self.messages if m.role == "assistant")


def item_example(item: Item, template_id: str, shots: int) -> Example:
    """A pre-rendered item (Super-NaturalInstructions instance, oasst conversation)."""
    return Example(list(item.messages or []), _meta(item, template_id, shots, False), item.rejected)


def _meta(item: Item, template: str, shots: int, inverted: bool) -> dict[str, Any]:
    return {
        "source": item.source,
        "template": template,
        "shots": shots,
        "inverted": inverted,
        "label": item.label,
        "row": item.location,
        "index": item.index,
    }


class TableRenderer:
    """Renders one table source's items through its templates."""

    def __init__(
        self,
        source: BuildSource,
        templates: list[BuildTemplate],
        train_pool: list[Item],
        build: BuildConfig,
        count_tokens: TokenCounter,
    ) -> None:
        self.source = source
        self.regular = [t for t in templates if not t.inverted]
        self.inverted = [t for t in templates if t.inverted]
        if not self.regular:
            raise TemplateError(f"source {source.name!r}: every template is an inversion")
        if source.inversions > 0 and not self.inverted:
            raise TemplateError(
                f"source {source.name!r}: inversions: {source.inversions} but none of its "
                "templates is an inversion (mark one with `inverted: true`)"
            )
        self.pool = train_pool
        self.build = build
        self.count_tokens = count_tokens

    def render(self, item: Item) -> Example:
        """One row; RowError (naming row, template and problem) when it can't render."""
        rng = random.Random(f"{self.build.seed}/{self.source.name}/{item.index}")
        use_inverted = bool(self.inverted) and rng.random() < self.source.inversions
        template = rng.choice(self.inverted if use_inverted else self.regular)
        k = rng.choice(self.source.shots)
        choices = self._choices(template, item)
        clause = render_options(choices, self.build.options.style, self.build.options.without, rng)
        prompt, target = self._render_one(template, item, clause)
        exemplars = self._exemplars(item, k, rng, template, clause)
        full, shots = self._with_exemplars(prompt, target, exemplars)
        messages = [Message("user", full), Message("assistant", target)]
        return Example(messages, _meta(item, template.id, shots, template.inverted))

    def _exemplars(
        self,
        item: Item,
        k: int,
        rng: random.Random,
        template: BuildTemplate,
        clause: OptionsClause,
    ) -> list[tuple[str, str]]:
        """k train rows other than `item`, rendered like it (same template and OPTIONS)."""
        if k == 0 or not self.pool:
            return []
        drawn = rng.sample(range(len(self.pool)), min(k + 1, len(self.pool)))
        rendered: list[tuple[str, str]] = []
        for other in (self.pool[i] for i in drawn if self.pool[i].index != item.index):
            try:
                rendered.append(self._render_one(template, other, clause))
            except RowError:
                continue  # that row fails on its own turn (counted there), not as an exemplar
        return rendered[:k]

    def _with_exemplars(
        self, prompt: str, target: str, exemplars: list[tuple[str, str]]
    ) -> tuple[str, int]:
        """(prompt with exemplars before it, how many), dropping exemplars from the end while
        prompt + target are over the token budget."""
        budget = self.build.fewshot.max_length
        used = len(exemplars)
        while used and budget is not None:
            size = self.count_tokens(self._join(prompt, exemplars[:used]))
            if size + self.count_tokens(target) <= budget:
                break
            used -= 1
        return self._join(prompt, exemplars[:used]), used

    def _join(self, prompt: str, exemplars: list[tuple[str, str]]) -> str:
        delims = self.build.fewshot
        parts = [p + delims.answer_delimiter + t for p, t in exemplars]
        return delims.example_delimiter.join([*parts, prompt])

    def _choices(self, template: BuildTemplate, item: Item) -> list[str]:
        if self.source.options is not None:
            return list(self.source.options.values())
        if template.answer_choices is not None:
            return template.choices(self._fields(template, item)) or []
        return []

    def _render_one(
        self, template: BuildTemplate, item: Item, clause: OptionsClause
    ) -> tuple[str, str]:
        context = self._context(template, item, clause)
        try:
            prompt, target = template.render(context)
        except TemplateError:
            raise
        except Exception as e:  # jinja2 errors of a user template: name row and template
            raise row_error(
                item.location, "template error", f"template {template.id!r}: {e}"
            ) from None
        for side, text in (("prompt", prompt), ("target", target)):
            if not text:
                raise row_error(
                    item.location,
                    f"empty {side}",
                    f"template {template.id!r} rendered an empty {side}",
                )
        rationale = self._rationale(item)
        if rationale and not template.inverted:
            target = RATIONALE_FORMAT.format(rationale=rationale, answer=target)
        return prompt, target

    def _rationale(self, item: Item) -> str:
        if self.source.rationale is None or item.row is None:
            return ""
        value = item.row.get(self.source.rationale)
        return value.strip() if isinstance(value, str) else ""

    def _context(
        self, template: BuildTemplate, item: Item, clause: OptionsClause
    ) -> dict[str, Any]:
        context = self._fields(template, item)
        context["answer_choices"] = self._choices(template, item)
        context["options_"] = clause.text
        context["answer"] = self._answer(template, item, clause)
        return context

    def _fields(self, template: BuildTemplate, item: Item) -> dict[str, Any]:
        row = item.row or {}
        source = self.source
        context: dict[str, Any] = {}
        for name in template.fields():
            value = row.get(source.fields.get(name, name))
            if template.target is None and name == source.label and isinstance(value, str):
                value = int(value) if value.isdigit() else value  # promptsource indexes choices
            context[name] = value
        return context

    def _answer(self, template: BuildTemplate, item: Item, clause: OptionsClause) -> Any:
        source = self.source
        if source.label is None:
            return (item.row or {}).get(source.fields.get("answer", "answer"))
        label = item.label or ""
        if source.options is None:
            return label
        if clause.letters is not None and not template.inverted:
            return clause.letters[list(source.options).index(label)]
        return source.options[label]
