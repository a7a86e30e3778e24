"""Conversations → (input_ids, labels): trained spans from prefix renders, checked on tokens.

For every trained assistant turn i the template renders three texts: the generation prompt
`P = render(messages[:i], add_generation_prompt=True)`, the conversation through the turn
`C = render(messages[:i+1])` and the whole conversation `F`. `P` must be a prefix of `C` and `C`
of `F` (string check), and tokenize(P) and tokenize(C) must be prefixes of tokenize(F): otherwise
the model would be trained on a prompt that serving never sends. Where tokenize(P) is not (a token
spans P's end: Qwen3.5's `<think>\n` + `\n</think>`), turn i is tokenized as tokenize(P) +
tokenize(rest of the turn), what serving feeds and the model generates, as the last turn of its
example (`turn_boundaries.RowTokens.at_boundary`; counted in `boundary_turns`). The trained span
of turn i runs from the end of tokenize(P) up to and including the first end-of-turn token after
it. A template that renders history differently from the newest turn (Qwen3, DeepSeek-R1,
Mistral's system prompt) makes `render_conversation` return several texts, each turn in the
context serving gives it; `EncodeResult.template_splits` counts them.

`data.turn_boundaries` says how this is exact without tokenizing every prefix in full.

`text`-format rows (a lone assistant message) use `raw_template` whatever `template` is: the whole
text plus eos is the response, with no prompt.

Examples are stored flat (`Examples`: one int32 array of ids and one of labels per chunk), spans,
labels and truncation are computed with numpy over a chunk, and an `Example` is a view made on
access.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instructune.config.schema import DataConfig
from instructune.data.audit import AuditError, render_example
from instructune.data.conversation import ON_ERROR_HINT, Conversation, Dropped
from instructune.data.examples import Examples, build_block
from instructune.data.pieces import PieceKey as _Key
from instructune.data.pieces import Vocab as _Vocab
from instructune.data.template_sandbox import TemplateLimitError
from instructune.data.templates import (
    Template,
    TemplateError,
    TemplateMismatch,
    is_raw_conversation,
    raw_template,
)
from instructune.data.truncation import SHRINK_ROUNDS, leading_turns, shrink_prompt, through_turn
from instructune.data.turn_boundaries import BoundaryInsideToken, RowTokens
from instructune.data.turns import Rendered, render_conversation

__all__ = ["EncodeResult", "encode_conversations"]

CHUNK = 256  # conversations per tokenizer batch: bounds intermediates, keeps the batch large


@dataclass(slots=True)
class EncodeResult:
    examples: Examples
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_rows: list[Dropped] = field(default_factory=list)
    """Every dropped row: where and why."""
    truncated: int = 0
    template_splits: Counter[str] = field(default_factory=Counter)
    """Rows the template's own rendering made into several examples (see
    `turns.render_conversation`): `split_rows` (rows), `extra_examples` (examples beyond one per
    row), `rebuilt_turns` (turns trained as generation prompt + response), `boundary_turns`
    (turns tokenized as tokens(prompt) + tokens(rest of turn), see `RowTokens.at_boundary`)."""


def encode_conversations(
    convs: Collection[Conversation],
    template: Template,
    tokenizer: Any,
    cfg: DataConfig,
    keep_conversations: int | None = None,
) -> EncodeResult:
    """Render, tokenize and label conversations; see the module docstring for the guarantees.

    A row the template can't render (`template_error`), whose prefixes don't match
    (`template_mismatch`, a `TemplateMismatch` under on_error=fail), that is too long
    (`too_long`, per `truncation`) or that has nothing to train (`no_trained_tokens`, an
    `AuditError` under on_error=fail) is dropped and counted in `dropped`.

    `convs` is read once, in order (a draining iterable frees rows as they are encoded).
    Examples keep their `conversation` (what `audit` re-renders prompts from): all of them, or
    with `keep_conversations=n` only about n spread evenly over the input.
    """
    result = EncodeResult(Examples())
    total = len(convs)
    if not total:
        return result
    stride = 1 if keep_conversations is None else max(1, -(-total // max(keep_conversations, 1)))
    encoder = _Encoder(template, raw_template(tokenizer), _Vocab(tokenizer), cfg, result, stride)
    with ThreadPoolExecutor(max_workers=1) as pool:
        encoder.run(convs, 0, pool)
        # `truncate_prompt`: rows still too long are cut again and re-encoded (appended last)
        for _ in range(SHRINK_ROUNDS):
            if not encoder.overflow:
                break
            todo, encoder.overflow = encoder.overflow, []
            encoder.rounds += 1
            shrunk = []
            for conv, n in todo:
                cut = shrink_prompt(conv, n, cfg.max_length, encoder.vocab.count)
                if cut is None:
                    encoder.drop(conv.source, "too_long", f"{n} tokens; no prompt text left to cut")
                else:
                    shrunk.append(cut)
            encoder.run(shrunk, total, pool)
    for conv, n in encoder.overflow:
        encoder.drop(conv.source, "too_long", f"{n} tokens after {SHRINK_ROUNDS} prompt cuts")
    return result


def _chunks(convs: Iterable[Conversation]) -> Iterator[list[Conversation]]:
    chunk: list[Conversation] = []
    for conv in convs:
        chunk.append(conv)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_Errors = list[tuple[Exception, str, str]]  # (error, source, template name) of a chunk's renders
_Started = tuple[list["RowTokens"], _Errors, dict[_Key, int], "Future[dict[_Key, list[int]]]"]


@dataclass(slots=True)
class _Encoder:
    """Chunks go through `start` (render, split, submit the new pieces to the tokenizer) and then
    `finish` (ids, boundaries, spans, labels). `encode_conversations` starts chunk k+1 before
    finishing chunk k, so rendering overlaps the Rust encoding (which releases the GIL)."""

    template: Template
    raw: Template
    vocab: _Vocab
    cfg: DataConfig
    result: EncodeResult
    stride: int
    overflow: list[tuple[Conversation, int]] = field(default_factory=list)
    """`truncate_prompt` rows still too long after this round: (conversation, tokens)."""
    rounds: int = 0

    def run(self, convs: Iterable[Conversation], seen: int, pool: ThreadPoolExecutor) -> None:
        """Encode `convs` chunk by chunk, starting chunk k+1 before finishing chunk k."""
        pending = None
        for lo, chunk in enumerate(_chunks(convs)):
            started = self.start(chunk, seen + lo * CHUNK, pool)
            if pending is not None:
                self.finish(*pending)
            pending = started
        if pending is not None:
            self.finish(*pending)

    def drop(self, source: str, reason: str, detail: str = "") -> None:
        self.result.dropped[reason] += 1
        self.result.dropped_rows.append(Dropped(source, reason, detail))

    def start(self, convs: list[Conversation], seen: int, pool: ThreadPoolExecutor) -> _Started:
        import jinja2

        rows: list[RowTokens] = []
        errors: _Errors = []
        for i, conv in enumerate(convs):
            tmpl = self.raw if is_raw_conversation(conv.messages) else self.template
            try:
                parts = render_conversation(
                    conv, tmpl, self.cfg.system_prompt, self.cfg.train_on_turns
                )
            except (TemplateMismatch, jinja2.TemplateError) as e:
                errors.append((e, conv.source, tmpl.name))  # raised or counted by `finish`
                continue
            self._count_splits(parts)
            keep = (seen + i) % self.stride == 0
            rows.extend(RowTokens(r, tmpl.name, keep, self.vocab, len(parts) > 1) for r in parts)
        counts: dict[_Key, int] = {}
        cache = self.vocab.cache
        for row in rows:
            for key in row.keys(self.vocab):
                if key not in cache:
                    counts[key] = counts.get(key, 0) + 1
        return rows, errors, counts, pool.submit(self.vocab.encode, counts)

    def finish(
        self,
        rows: list[RowTokens],
        errors: _Errors,
        counts: dict[_Key, int],
        future: Future[dict[_Key, list[int]]],
    ) -> None:
        cfg, vocab = self.cfg, self.vocab
        for error in errors:
            self._fail_or_count(*error)
        table = future.result()
        vocab.remember(table, counts)
        table.update(vocab.cache)
        kept: list[RowTokens] = []
        flat: list[int] = []
        todo = deque(rows)
        while todo:
            row = todo.popleft()
            row.assemble(table, vocab, flat)
            too_long = row.n > cfg.max_length
            if too_long and cfg.truncation != "turns":  # cheap early exit: no boundary work
                if cfg.truncation == "truncate_prompt" and self.rounds < SHRINK_ROUNDS:
                    self.overflow.append((row.conv, row.n))
                else:
                    self.drop(row.conv.source, "too_long", f"{row.n} tokens")
                del flat[len(flat) - row.n :]
                continue
            try:
                row.locate(table, vocab)
            except BoundaryInsideToken as b:
                del flat[len(flat) - row.n :]
                todo.extendleft(reversed(self._at_boundary(row, b.turn, table)))
                continue
            except TemplateMismatch as e:
                self._fail_or_count(e, row.conv.source, row.name)
                del flat[len(flat) - row.n :]
                continue
            if too_long and not self._keep_leading_turns(row, flat):
                continue
            self.result.truncated += self.rounds > 0  # a `truncate_prompt` row that now fits
            kept.append(row)
        del table, rows, counts
        self._store(kept, np.array(flat, np.int32))

    def _at_boundary(self, row: RowTokens, k: int, table: dict[_Key, list[int]]) -> list[RowTokens]:
        """`row.at_boundary(k)`, counted, with the pieces its rows need added to `table`."""
        vocab, splits = self.vocab, self.result.template_splits
        rows = row.at_boundary(k, vocab)
        splits["boundary_turns"] += 1
        if len(rows) > 1:
            splits["split_rows"] += not row.split
            splits["extra_examples"] += 1
        counts = {key: 1 for r in rows for key in r.keys(vocab) if key not in table}
        table.update(vocab.encode(counts))
        return rows

    def _keep_leading_turns(self, row: RowTokens, flat: list[int]) -> bool:
        """`turns` truncation of a too-long row (in place): True when at least one trained turn
        fits, else the row is dropped (its ids removed from `flat`) and False."""
        k = leading_turns(row.tbounds, self.cfg.max_length)
        if k == 0:
            self.drop(
                row.conv.source,
                "too_long",
                f"{row.n} tokens; the first trained turn ends "
                f"at token {row.tbounds[1] if row.tbounds else row.n}",
            )
            del flat[len(flat) - row.n :]
            return False
        end = row.tbounds[2 * k - 1]
        del flat[len(flat) - (row.n - end) :]
        # a row's trained turns are its last ones (`train_on_turns: last`, a template split)
        trained = row.conv.assistant_indices()[-(len(row.tbounds) // 2) :]
        row.conv = through_turn(row.conv, trained, k)
        row.n, row.tbounds = end, row.tbounds[: 2 * k]
        self.result.truncated += 1
        return True

    def _count_splits(self, parts: list[Rendered]) -> None:
        splits = self.result.template_splits
        if len(parts) > 1:
            splits["split_rows"] += 1
            splits["extra_examples"] += len(parts) - 1
        rebuilt = sum(r.rebuilt for r in parts)
        if rebuilt:
            splits["rebuilt_turns"] += rebuilt

    def _fail_or_count(self, e: Exception, source: str, name: str) -> None:
        reason = "template_mismatch" if isinstance(e, TemplateMismatch) else "template_error"
        if isinstance(e, TemplateLimitError):  # the template itself is at fault: every row would be
            raise TemplateError(f"template {name!r} at {source}: {e}") from e
        if self.cfg.on_error == "skip":
            # a mismatch's first line is what `reason` says already; its token lines say where
            lines = (e.problem if isinstance(e, TemplateMismatch) else str(e)).splitlines()
            shown = lines[1:3] if isinstance(e, TemplateMismatch) and len(lines) > 2 else lines[:1]
            self.drop(source, reason, " ".join(line.strip() for line in shown))
            return
        if isinstance(e, TemplateMismatch):
            raise e
        raise TemplateError(
            f"template {name!r} at {source}: the template raised: {e}; {ON_ERROR_HINT}"
        ) from e

    def _store(self, rows: list[RowTokens], ids: np.ndarray) -> None:
        """Spans, truncation and labels of the kept rows (numpy over the chunk) → a block."""
        if not rows:
            return
        cfg, result = self.cfg, self.result
        built = build_block(
            ids,
            [r.n for r in rows],
            [r.tbounds for r in rows],
            [r.conv for r in rows],
            [r.keep for r in rows],
            self.vocab.is_eot,
            cfg.max_length,
            cfg.train_on_inputs,
        )
        for ex in built.untrained:
            if cfg.on_error == "fail":
                render = render_example(ex, self.vocab.tokenizer)
                raise AuditError(f"{ex.source}: no trained token; {ON_ERROR_HINT}\n{render}")
            self.drop(ex.source, "no_trained_tokens")
        if built.block is not None:
            result.examples.append(built.block)
