"""The decode loop's state: rows, their KV cache and attention mask, one forward per step.

A `DecodeBatch` holds left-padded rows that share one `DynamicCache`. `add` prefills new rows
(left-padded together, position ids from the mask) and, when the batch already runs, left-pads
both caches to a common length and joins them, so requests join between steps (continuous
batching). `step` feeds every row its last token with its own position id; each row samples with
its own parameters and generator, checks its own stop tokens and stop strings, and finishes on its
own. `pop_finished` removes finished rows from the cache and trims columns no row attends to.
Models whose cache is not a plain `DynamicLayer` stack (sliding windows, ...) can't be joined
mid-flight: `can_join` is then False and new rows wait until the batch is empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from instructune.inference.sampling import SamplingParams, make_generator, penalize, sample
from instructune.models.peft_methods import prefix_mask, virtual_prefix, virtual_token_count


@dataclass(eq=False)
class Row:
    """One prompt being continued; `text` is the output so far, already cut at a stop string."""

    prompt_ids: list[int]
    params: SamplingParams
    tag: Any = None
    """The caller's handle (a prompt index, a request): the batch never reads it."""
    generated: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    """"stop" (stop token or string), "length" (max_new_tokens or context) or "abort"."""
    streamed: int = 0
    generator: torch.Generator | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def take_delta(self) -> str:
        """Text not handed out yet, held back while it could still become a stop string or is an
        incomplete UTF-8 character."""
        end = len(self.text)
        if not self.finished:
            if self.text.endswith("\ufffd"):
                end = len(self.text.rstrip("\ufffd"))
            end -= _partial_stop(self.text[:end], self.params.stop)
        delta = self.text[self.streamed : max(end, self.streamed)]
        self.streamed += len(delta)
        return delta


def _partial_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class DecodeBatch:
    """Rows decoding together on one model; see the module docstring."""

    def __init__(
        self,
        model: Any,
        decode: Callable[[list[int]], str],
        stop_ids: Sequence[int],
        pad_id: int,
        max_length: int,
    ) -> None:
        self.model = model
        self.decode = decode
        self.stop_ids = frozenset(stop_ids)
        # Prompt/prefix tuning: peft's forward would put the virtual tokens before every step's
        # input, so they go into the cache once at prefill and the base model decodes after them.
        self.virtual = virtual_token_count(model)
        self.forward = model.get_base_model() if self.virtual else model
        self.pad_id = pad_id
        self.max_length = max_length
        self.device = next(model.parameters()).device
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def can_join(self) -> bool:
        """Whether rows can be added while others run (a plain DynamicLayer cache)."""
        from transformers.cache_utils import DynamicLayer

        return self.cache is None or all(type(x) is DynamicLayer for x in self.cache.layers)

    @torch.inference_mode()
    def add(self, rows: Sequence[Row]) -> None:
        """Prefill `rows` together and sample their first token; join them to the batch."""
        if not rows:
            return
        if self.rows and not self.can_join:
            raise RuntimeError("this model's cache can't take rows mid-flight; wait for empty")
        for row in rows:
            if not row.prompt_ids:
                raise ValueError("empty prompt: nothing to continue")
            if len(row.prompt_ids) >= self.max_length:
                raise ValueError(
                    f"prompt of {len(row.prompt_ids)} tokens does not fit the model's context "
                    f"of {self.max_length} tokens"
                )
            row.generator = make_generator(row.params, self.device)
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            mask[i, width - len(row.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        from transformers import DynamicCache

        if self.virtual:
            cache = virtual_prefix(self.model, len(rows))
            mask = prefix_mask(mask, self.virtual)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, self.virtual :]
        else:
            cache = DynamicCache(config=self.model.config)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.forward(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._join(out.past_key_values, mask)
        self.rows.extend(rows)
        self._advance(list(rows), out.logits[:, -1, :])

    @torch.inference_mode()
    def step(self) -> None:
        """One token for every unfinished row."""
        live = [r for r in self.rows if not r.finished]
        if not live:
            return
        last = [r.generated[-1] if r.generated else self.pad_id for r in self.rows]
        ids = torch.tensor(last, dtype=torch.long, device=self.device)[:, None]
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        positions = self.mask.sum(-1, keepdim=True) - 1
        out = self.forward(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        self._advance(self.rows, out.logits[:, -1, :])

    def pop_finished(self) -> list[Row]:
        """Remove and return finished rows; drop cache columns no remaining row attends to."""
        done = [r for r in self.rows if r.finished]
        if not done:
            return []
        keep = [i for i, r in enumerate(self.rows) if not r.finished]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, self.mask[:0, :0]
            return done
        index = torch.tensor(keep, device=self.device)
        self.mask = self.mask[index]
        if not self.can_join:  # e.g. sliding-window layers keep their own length bookkeeping
            self.cache.batch_select_indices(index)
            return done
        lead = int((self.mask.cumsum(-1) == 0).sum(-1).min())  # all-padding columns on the left
        self.mask = self.mask[:, lead:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, lead:]
            layer.values = layer.values[index, :, lead:]
        return done

    def abort(self, row: Row) -> None:
        """Finish `row` now (client gone, timeout); `pop_finished` removes it."""
        if not row.finished:
            row.finish_reason = "abort"

    def _join(self, cache: Any, mask: torch.Tensor) -> None:
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_lpad(old.keys, width, 2), _lpad(new.keys, width, 2)])
            old.values = torch.cat([_lpad(old.values, width, 2), _lpad(new.values, width, 2)])
        self.mask = torch.cat([_lpad(self.mask, width, 1), _lpad(mask, width, 1)])

    def _advance(self, rows: Sequence[Row], logits: torch.Tensor) -> None:
        """Sample each unfinished row's next token from its logits row, then check its stops."""
        logits = logits.float()
        for i, row in enumerate(rows):
            if row.finished:
                continue
            scores = logits[i]
            if row.params.repetition_penalty != 1.0:
                seen = torch.tensor(row.prompt_ids + row.generated, device=scores.device)
                scores = penalize(scores, seen, row.params.repetition_penalty)
            token = sample(scores, row.params, row.generator)
            row.generated.append(token)
            self._check(row, token)

    def _check(self, row: Row, token: int) -> None:
        if token in self.stop_ids:
            row.finish_reason = "stop"
            return
        text = self.decode(row.generated)
        for stop in row.params.stop:
            # only the new tail can hold a new occurrence
            at = text.find(stop, max(0, len(row.text) - len(stop)))
            if at >= 0:
                text, row.finish_reason = text[:at], "stop"
        row.text = text
        if row.finished:
            return
        total = len(row.prompt_ids) + len(row.generated)
        if len(row.generated) >= row.params.max_new_tokens or total >= self.max_length:
            row.finish_reason = "length"


def _lpad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` left-padded with zeros along `dim` to `width` (zero mask ⇒ never attended)."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
