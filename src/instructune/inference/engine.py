"""The one inference engine: chat, batch generation, evaluation, the server and synthesis use it.

Prompts are rendered with the run's own template, so what the engine sends is byte for byte the
prefix training learned to continue (`data.turns.render_conversation` renders the same
`template.render(messages[:i], add_generation_prompt=True)`). Decoding is our own loop over a
`DecodeBatch` (left-padded prefill, then one step per token with the KV cache): every row has its
own sampling parameters, stop tokens, stop strings and seed, finishes on its own, and frees its
slot for the next prompt between steps. Greedy output equals `model.generate(do_sample=False)`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from instructune.inference.batch import DecodeBatch, Row
from instructune.inference.sampling import SamplingParams
from instructune.inference.stops import (
    TemplateLike,
    encode_text,
    end_of_turn,
    stop_token_ids,
)
from instructune.models.loading import pad_token_id

if TYPE_CHECKING:
    from instructune.data.conversation import Message

__all__ = ["Completion", "Engine", "SamplingParams", "Stream"]

DEFAULT_MAX_BATCH = 8
_FALLBACK_CONTEXT = 2048
GREEDY = SamplingParams()
"""The default: greedy, up to 256 new tokens."""


@dataclass(frozen=True)
class Completion:
    """One finished generation; `index` is the prompt's position in the call."""

    text: str
    finish_reason: str
    """"stop" (EOS, end-of-turn token or a stop string) or "length" (max_new_tokens, context)."""
    prompt_tokens: int
    completion_tokens: int
    """Tokens generated, the stop token included."""
    index: int = 0


class Engine:
    """A model, its tokenizer and the run's template, ready to continue conversations."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        template: TemplateLike,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH,
        name: str = "model",
        stop_ids: Sequence[int] | None = None,
    ) -> None:
        """`stop_ids` replaces the template's stop tokens (EOS, end-of-turn) when given."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size}: must be >= 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.max_batch_size = max_batch_size
        self.name = name
        self.stop_ids = list(stop_ids) if stop_ids else stop_token_ids(template, tokenizer)
        self.end_of_turn = end_of_turn(template, tokenizer)[0]
        self.pad_id = pad_token_id(tokenizer)
        config = getattr(model, "config", None)
        self.max_length = int(getattr(config, "max_position_embeddings", None) or _FALLBACK_CONTEXT)

    @classmethod
    def from_bundle(cls, bundle: Any, **kwargs: Any) -> Engine:
        """An engine over `bundle.load_bundle(...)`'s model, tokenizer and template."""
        kwargs.setdefault("name", bundle.name)
        return cls(bundle.model, bundle.tokenizer, bundle.template, **kwargs)

    # ------------------------------------------------------------------ prompts

    def render(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: str | None = None,
    ) -> str:
        """The conversation as the template renders it, ready for the assistant's turn.

        Dict messages are read by `data.messages.parse_message` (the rules training reads data
        with); `tools` is the canonical JSON `data.messages.parse_tools` makes."""
        from instructune.data.conversation import TOOLS, Message
        from instructune.data.messages import parse_message

        converted = [
            m if isinstance(m, Message) else parse_message(m, f"messages[{i}]", "request", "openai")
            for i, m in enumerate(messages)
        ]
        meta = {TOOLS: tools} if tools else None
        return self.template.render(
            converted, add_generation_prompt=add_generation_prompt, meta=meta
        )

    def encode(self, prompt: str) -> list[int]:
        return encode_text(self.tokenizer, prompt)

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def new_batch(self) -> DecodeBatch:
        """An empty decode batch on this engine's model (the server's scheduler drives one)."""
        return DecodeBatch(self.model, self.decode, self.stop_ids, self.pad_id, self.max_length)

    def row(self, prompt: str | list[int], params: SamplingParams, tag: Any = None) -> Row:
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        return Row(ids, params, tag)

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams | Sequence[SamplingParams] = GREEDY,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Completion]:
        """Continue every prompt; up to `max_batch_size` rows decode together, a finished row's
        slot going to the next prompt (longest prompts first, to pad little). `on_done(1)` is
        called per finished prompt (a progress bar's `update`)."""
        per_row = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(per_row) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(per_row)} sampling params")
        rows = [self.row(p, sp, i) for i, (p, sp) in enumerate(zip(prompts, per_row, strict=True))]
        pending = deque(sorted(rows, key=lambda r: len(r.prompt_ids), reverse=True))
        out: list[Completion | None] = [None] * len(rows)
        for row in self._drive(pending):
            out[row.tag] = _completion(row)
            if on_done is not None:
                on_done(1)
        return [c for c in out if c is not None]

    def chat(
        self,
        conversations: Sequence[Sequence[Message | Mapping[str, str]]],
        params: SamplingParams | Sequence[SamplingParams] = GREEDY,
    ) -> list[Completion]:
        """`generate` on each conversation rendered with the template's generation prompt."""
        return self.generate([self.render(c) for c in conversations], params)

    def stream(self, prompt: str, params: SamplingParams = GREEDY) -> Stream:
        """One prompt's continuation as text deltas while it is decoded (a possible stop string
        is held back until it can't match); `.completion` is set once iteration ends."""
        return Stream(self, self.row(prompt, params))

    def _drive(self, pending: deque[Row]) -> Iterator[Row]:
        """Decode `pending` with continuous batching; yield rows as they finish."""
        batch = self.new_batch()
        while pending or batch:
            free = self.max_batch_size - len(batch)
            if pending and free > 0 and (not batch or batch.can_join):
                batch.add([pending.popleft() for _ in range(min(free, len(pending)))])
            else:
                batch.step()
            yield from batch.pop_finished()


class Stream:
    """Iterate for text deltas; afterwards `completion` holds the finished result."""

    def __init__(self, engine: Engine, row: Row) -> None:
        self._engine = engine
        self._row = row
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        batch = self._engine.new_batch()
        row = self._row
        batch.add([row])
        while True:
            delta = row.take_delta()
            if delta:
                yield delta
            if row.finished:
                self.completion = _completion(row)
                return
            batch.step()


def _completion(row: Row) -> Completion:
    return Completion(
        text=row.text,
        finish_reason=row.finish_reason or "length",
        prompt_tokens=len(row.prompt_ids),
        completion_tokens=len(row.generated),
        index=row.tag if isinstance(row.tag, int) else 0,
    )
