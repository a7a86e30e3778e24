"""Conversations → (input_ids, labels): trained spans from prefix renders, checked on tokens.

For every trained assistant turn i the template renders three texts: the generation prompt
`P = render(messages[:i], add_generation_prompt=True)`, the conversation through the turn
`C = render(messages[:i+1])` and the whole conversation `F`. `P` must be a prefix of `C` and `C`
of `F` (string check), and tokenize(P) and tokenize(C) must be prefixes of tokenize(F): otherwise
the model would be trained on a prompt that serving never sends. The trained span of turn i runs
from the end of tokenize(P) up to and including the first end-of-turn token after it.

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

import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instructune.config.schema import DataConfig
from instructune.data.audit import AuditError, render_example
from instructune.data.conversation import Conversation
from instructune.data.examples import (
    IGNORE_INDEX,
    Example,
    Examples,
    build_block,
    build_labels,
)
from instructune.data.templates import (
    Rendered,
    Template,
    TemplateError,
    TemplateMismatch,
    end_of_turn_ids,
    is_raw_conversation,
    raw_template,
    render_conversation,
)

__all__ = ["IGNORE_INDEX", "EncodeResult", "Example", "Examples", "build_labels"]

CHUNK = 256  # conversations per tokenizer batch: bounds intermediates, keeps the batch large
_KEEP_PIECES = 1 << 16  # repeating pieces remembered across chunks, at most


@dataclass(slots=True)
class EncodeResult:
    examples: Examples
    dropped: Counter[str] = field(default_factory=Counter)
    truncated: int = 0


_Key = str | tuple[str]  # a piece, or (piece,): encoded after an added token (see `_Vocab.key`)


class _Vocab:
    """Per-call tokenizer facts: added/end-of-turn tables, the piece splitter, the piece cache."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(
                f"{type(tokenizer).__name__} has no Rust backend; data preparation needs a fast "
                "tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True))"
            )
        self.backend: Any = backend
        size = max(len(tokenizer), self.backend.get_vocab_size(with_added_tokens=True))
        added = self.backend.get_added_tokens_decoder()
        self.added_id = {t.content: i for i, t in added.items()}
        self.is_eot = np.zeros(size, dtype=bool)
        for tid in end_of_turn_ids(tokenizer):
            self.is_eot[tid] = True
        unsplit = getattr(self.backend, "encode_special_tokens", False)
        flags = any(t.lstrip or t.rstrip or t.single_word for t in added.values())
        normalized = self.backend.normalizer is not None and any(
            t.normalized for t in added.values()
        )
        self.split_exact = not (unsplit or flags or normalized)
        # added tokens are matched leftmost-longest, raw ones first, then normalized ones
        self.splitters = [
            _alternation([t.content for t in added.values() if t.normalized is norm])
            for norm in (False, True)
        ]
        self.anchor = next(iter(self.added_id), None) if _prepends_first(self.backend) else None
        self.cache: dict[_Key, list[int]] = {}

    def split(self, text: str) -> list[str]:
        """Text pieces at even and added tokens at odd positions, as the backend splits them."""
        if not self.split_exact:
            return [text]
        parts = [text]
        for rx in self.splitters:
            if rx is not None:
                parts = [
                    q for i, p in enumerate(parts) for q in (rx.split(p) if i % 2 == 0 else [p])
                ]
        return parts

    def key(self, piece: str, at_start: bool) -> _Key:
        """A text piece's cache key: `(piece,)` where it is to be encoded after an added token."""
        return piece if at_start or self.anchor is None else (piece,)

    def encode(self, counts: dict[_Key, int]) -> dict[_Key, list[int]]:
        """Ids of each key (`counts`: key → uses in the chunk)."""
        todo = list(counts)
        anchor = self.anchor or ""
        texts = [k if isinstance(k, str) else anchor + k[0] for k in todo]
        encs = self.backend.encode_batch_fast(texts, add_special_tokens=False) if todo else []
        return {
            k: e.ids if isinstance(k, str) else e.ids[1:] for k, e in zip(todo, encs, strict=True)
        }

    def remember(self, table: dict[_Key, list[int]], counts: dict[_Key, int]) -> None:
        """Keep the pieces a chunk used more than once (system prompt, role headers) for later."""
        room = _KEEP_PIECES - len(self.cache)
        if room > 0:
            self.cache.update([(k, table[k]) for k, n in counts.items() if n > 1][:room])


def _alternation(tokens: list[str]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    ordered = sorted(tokens, key=len, reverse=True)  # at one position the longest match wins
    return re.compile("(" + "|".join(re.escape(t) for t in ordered) + ")")


def _prepends_first(backend: Any) -> bool:
    """A Metaspace pre-tokenizer that prepends "▁" to the text's first piece only."""
    pre = backend.pre_tokenizer
    if pre is None:
        return False

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first":
                return True
            return any(walk(v) for v in node.values())
        return isinstance(node, list) and any(walk(v) for v in node)

    return walk(json.loads(pre.__getstate__()))


class _Row:
    """One rendered conversation on its way to tokens: pieces, char and token boundaries."""

    __slots__ = ("bounds", "conv", "keep", "n", "name", "parts", "tbounds", "text")

    def __init__(self, r: Rendered, name: str, keep: bool, vocab: _Vocab) -> None:
        self.conv, self.text, self.name, self.keep = r.conv, r.text, name, keep
        self.bounds = [b for pair in r.bounds for b in pair]  # non-decreasing
        self.parts = vocab.split(r.text)
        self.n = 0
        self.tbounds: list[int] = []

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
                n += 1
            elif part:
                whole = table[vocab.key(part, pos == 0)]
                while k < len(bounds) and bounds[k] < end:
                    pre = table[vocab.key(self.text[pos : bounds[k]], pos == 0)]
                    if whole[: len(pre)] != pre:
                        raise self._mismatch(self.text[pos : bounds[k]], pre, whole, vocab)
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
            "Make the prompt end at a token boundary (e.g. a newline after the response "
            "marker), or set `data.on_error: skip` to drop such rows.",
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
        pending = None
        for lo, chunk in enumerate(_chunks(convs)):
            started = encoder.start(chunk, lo * CHUNK, pool)
            if pending is not None:
                encoder.finish(*pending)
            pending = started
        if pending is not None:
            encoder.finish(*pending)
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

    def start(self, convs: list[Conversation], seen: int, pool: ThreadPoolExecutor) -> _Started:
        import jinja2

        rows: list[_Row] = []
        errors: _Errors = []
        for i, conv in enumerate(convs):
            tmpl = self.raw if is_raw_conversation(conv.messages) else self.template
            try:
                r = render_conversation(conv, tmpl, self.cfg.system_prompt, self.cfg.train_on_turns)
            except (TemplateMismatch, jinja2.TemplateError) as e:
                errors.append((e, conv.source, tmpl.name))  # raised or counted by `finish`
                continue
            rows.append(_Row(r, tmpl.name, (seen + i) % self.stride == 0, self.vocab))
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
        cfg, result, vocab = self.cfg, self.result, self.vocab
        for error in errors:
            _fail_or_count(*error, cfg, result)
        table = future.result()
        vocab.remember(table, counts)
        table.update(vocab.cache)
        kept: list[_Row] = []
        flat: list[int] = []
        for row in rows:
            row.assemble(table, vocab, flat)
            if cfg.truncation == "drop" and row.n > cfg.max_length:
                result.dropped["too_long"] += 1  # cheap early exit: no boundary work
                del flat[len(flat) - row.n :]
                continue
            try:
                row.locate(table, vocab)
            except TemplateMismatch as e:
                _fail_or_count(e, row.conv.source, row.name, cfg, result)
                del flat[len(flat) - row.n :]
                continue
            kept.append(row)
        del table, rows, counts
        self._store(kept, np.array(flat, np.int32))

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
        if built.too_long:
            result.dropped["too_long"] += built.too_long
        for ex in built.untrained:
            if cfg.on_error == "fail":
                render = render_example(ex, self.vocab.tokenizer)
                raise AuditError(f"{ex.source}: no trained token\n{render}")
            result.dropped["no_trained_tokens"] += 1
        result.truncated += built.truncated
        if built.block is not None:
            result.examples.append(built.block)


def _fail_or_count(
    e: Exception, source: str, name: str, cfg: DataConfig, result: EncodeResult
) -> None:
    reason = "template_mismatch" if isinstance(e, TemplateMismatch) else "template_error"
    if cfg.on_error == "skip":
        result.dropped[reason] += 1
        return
    if isinstance(e, TemplateMismatch):
        raise e
    raise TemplateError(f"template {name!r} at {source}: the template raised: {e}") from e
