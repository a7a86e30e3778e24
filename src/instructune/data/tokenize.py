"""Conversations → (input_ids, labels): trained spans from prefix renders, checked on tokens.

For every trained assistant turn i the template renders three texts: the generation prompt
`P = render(messages[:i], add_generation_prompt=True)`, the conversation through the turn
`C = render(messages[:i+1])` and the whole conversation `F`. `P` must be a prefix of `C` and `C`
of `F` (string check), and tokenize(P) and tokenize(C) must be prefixes of tokenize(F): otherwise
the model would be trained on a prompt that serving never sends. Where tokenize(P) is not (a token
spans P's end: Qwen3.5's `<think>\n` + `\n</think>`), turn i is tokenized as tokenize(P) +
tokenize(rest of the turn), what serving feeds and the model generates, as the last turn of its
example (`_Row.at_boundary`; counted in `boundary_turns`). The trained span of turn i runs
from the end of tokenize(P) up to and including the first end-of-turn token after it. A template
that renders history differently from the newest turn (Qwen3, DeepSeek-R1, Mistral's system
prompt) makes `render_conversation` return several texts, each turn in the context serving gives
it; `EncodeResult.template_splits` counts them.

How that is exact without tokenizing every prefix in full: a fast tokenizer first splits text at
added-token occurrences (`<|im_start|>`, eos, ...) and normalizes, pre-tokenizes and encodes each
piece between them on its own (`_Vocab.split` does the same split with regexes). So tokenize(F) is
the concatenation of its pieces' ids, and for a boundary b inside a piece [s, e) of F,
tokenize(F[:b]) = tokenize(F[:s]) + tokenize(F[s:b]): the check is that tokenize(F[s:b]) is a
prefix of tokenize(F[s:e]). Pieces repeat across rows (the system prompt, `assistant\\n`, `\\n`),
so each distinct piece is encoded once per chunk and the repeating ones are kept for later chunks;
only the pieces (never offsets) are encoded, in batches. The one position-dependent step, a
Metaspace pre-tokenizer prepending "▁" to the piece at offset 0 only (`prepend_scheme: first`), is
reproduced by encoding every other piece after an added token. When the split argument does not
hold (an added token with lstrip/rstrip/single_word, a normalized added token under a normalizer,
a backend that does not split special tokens), the whole text is one piece: F and every prefix
F[:b] are tokenized in full. Exact either way; `audit` re-checks the property independently by
tokenizing generation prompts in full.

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
from instructune.data.examples import (
    Example,
    Examples,
    build_block,
    build_labels,
)
from instructune.data.pieces import PieceKey as _Key
from instructune.data.pieces import Vocab as _Vocab
from instructune.data.template_sandbox import TemplateLimitError
from instructune.data.templates import (
    Template,
    TemplateError,
    TemplateMismatch,
    end_of_turn_ids,
    is_raw_conversation,
    raw_template,
)
from instructune.data.truncation import SHRINK_ROUNDS, leading_turns, shrink_prompt, through_turn
from instructune.data.turns import Rendered, render_conversation
from instructune.models.labels import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "EncodeResult",
    "Example",
    "Examples",
    "build_labels",
    "end_of_turn_ids",
]

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
    (turns tokenized as tokens(prompt) + tokens(rest of turn), see `_Row.at_boundary`)."""


class _Boundary(Exception):
    """A trained turn's generation prompt ends inside a token of the row's whole text."""

    def __init__(self, turn: int) -> None:
        super().__init__(turn)
        self.turn = turn  # its index among the row's trained turns


class _Row:
    """One rendered conversation on its way to tokens: pieces, char and token boundaries."""

    __slots__ = ("bounds", "conv", "keep", "n", "name", "parts", "split", "tbounds", "text")

    def __init__(
        self, r: Rendered, name: str, keep: bool, vocab: _Vocab, split: bool, cut: int = 0
    ) -> None:
        self.conv, self.text, self.name, self.keep = r.conv, r.text, name, keep
        self.split = split  # its conversation already counts in `split_rows`
        self.bounds = [b for pair in r.bounds for b in pair]  # non-decreasing
        # `cut`: tokenized as tokens(text[:cut]) + tokens(text[cut:]), an empty "added token"
        # (no id) between the two (see `at_boundary`)
        self.parts = (
            [*vocab.split(r.text[:cut]), "", *vocab.split(r.text[cut:])]
            if cut
            else vocab.split(r.text)
        )
        self.n = 0
        self.tbounds: list[int] = []

    def at_boundary(self, k: int, vocab: _Vocab) -> list[_Row]:
        """This row made into rows where its k-th trained turn's generation prompt ends inside a
        token of the whole text (Qwen3.5: the prompt's `<think>\n` + the answer's `\n</think>`
        is one `\n\n`): turns through k, cut after turn k's end and tokenized as tokens(prompt)
        + tokens(rest), what serving feeds the model before it generates the answer; and the
        turns after k, trained in the whole text as before (their prompts, history included,
        are tokenized whole when served)."""
        pairs = list(zip(self.bounds[::2], self.bounds[1::2], strict=True))
        trained = self.conv.assistant_indices()[-len(pairs) :]
        head = Rendered(
            through_turn(self.conv, trained, k + 1), self.text[: pairs[k][1]], pairs[: k + 1]
        )
        rows = [_Row(head, self.name, self.keep, vocab, self.split, cut=pairs[k][0])]
        if k + 1 < len(pairs):
            rest = Rendered(self.conv, self.text, pairs[k + 1 :])
            rows.append(_Row(rest, self.name, self.keep, vocab, True))
        return rows

    def keys(self, vocab: _Vocab) -> Iterator[_Key]:
        """Every text this row needs encoded: its pieces and the prefix pieces boundaries cut."""
        pos, k, bounds = 0, 0, self.bounds
        for j, part in enumerate(self.parts):
            end = pos + len(part)
            if j % 2 == 0 and part:
                yield vocab.key(part, pos == 0)
                while k < len(bounds) and bounds[k] < end:
                    if bounds[k] > pos:
                        yield vocab.key(self.text[pos : bounds[k]], pos == 0)
                    k += 1
            pos = end

    def assemble(self, table: dict[_Key, list[int]], vocab: _Vocab, flat: list[int]) -> None:
        """Append this row's ids to `flat`: its pieces' ids and the added tokens between."""
        before, pos = len(flat), 0
        for j, part in enumerate(self.parts):
            if j % 2:
                if part:
                    flat.append(vocab.added_id[part])
            elif part:
                flat += table[vocab.key(part, pos == 0)]
            pos += len(part)
        self.n = len(flat) - before

    def locate(self, table: dict[_Key, list[int]], vocab: _Vocab) -> None:
        """Token index of each boundary, after checking its prefix tokenizes as a prefix."""
        out, pos, k, bounds, n = self.tbounds, 0, 0, self.bounds, 0
        for j, part in enumerate(self.parts):
            end = pos + len(part)
            while k < len(bounds) and bounds[k] <= pos:
                out.append(n)
                k += 1
            if j % 2:
                if k < len(bounds) and bounds[k] < end:
                    raise TemplateMismatch(
                        self.name,
                        self.conv.source,
                        f"a prefix ends inside the added token at char {pos}",
                    )
                n += 1 if part else 0
            elif part:
                whole = table[vocab.key(part, pos == 0)]
                while k < len(bounds) and bounds[k] < end:
                    pre = table[vocab.key(self.text[pos : bounds[k]], pos == 0)]
                    if whole[: len(pre)] != pre:
                        raise (
                            _Boundary(k // 2)
                            if k % 2 == 0
                            else self._mismatch(self.text[pos : bounds[k]], pre, whole, vocab)
                        )
                    out.append(n + len(pre))
                    k += 1
                n += len(whole)
            pos = end
        out.extend([n] * (len(bounds) - k))

    def _mismatch(self, tail: str, pre: list[int], whole: list[int], vocab: _Vocab) -> Exception:
        conv_tok = vocab.tokenizer.convert_ids_to_tokens
        return TemplateMismatch(
            self.name,
            self.conv.source,
            "a prefix of the conversation tokenizes differently on its own than inside the "
            f"whole conversation (the model would never see this prompt at generation):\n"
            f"  prefix tail {tail[-60:]!r} → {conv_tok(pre)[-12:]}\n"
            f"  in full text             → {conv_tok(whole[: len(pre)])[-12:]}\n"
            + (
                "Use `data.template: alpaca_nl` (a newline after '### Response:'), or set "
                "`data.on_error: skip` to drop such rows (each is counted and listed)."
                if self.name == "alpaca"
                else "Make the prompt end at a token boundary (e.g. a newline after the response "
                "marker), or set `data.on_error: skip` to drop such rows."
            ),
        )


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
_Started = tuple[list["_Row"], _Errors, dict[_Key, int], "Future[dict[_Key, list[int]]]"]


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

        rows: list[_Row] = []
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
            rows.extend(_Row(r, tmpl.name, keep, self.vocab, len(parts) > 1) for r in parts)
        counts: dict[_Key, int] = {}
        cache = self.vocab.cache
        for row in rows:
            for key in row.keys(self.vocab):
                if key not in cache:
                    counts[key] = counts.get(key, 0) + 1
        return rows, errors, counts, pool.submit(self.vocab.encode, counts)

    def finish(
        self,
        rows: list[_Row],
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
        kept: list[_Row] = []
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
            except _Boundary as b:
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

    def _at_boundary(self, row: _Row, k: int, table: dict[_Key, list[int]]) -> list[_Row]:
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

    def _keep_leading_turns(self, row: _Row, flat: list[int]) -> bool:
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

    def _store(self, rows: list[_Row], ids: np.ndarray) -> None:
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
