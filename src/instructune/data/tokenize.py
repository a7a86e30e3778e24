"""Conversations → (input_ids, labels): trained spans from prefix renders, checked on tokens.

For every trained assistant turn i the template renders three texts: the generation prompt
`P = render(messages[:i], add_generation_prompt=True)`, the conversation through the turn
`C = render(messages[:i+1])` and the whole conversation `F`. `P` must be a prefix of `C` and `C`
of `F` (string check), and tokenize(P) and tokenize(C) must be prefixes of tokenize(F): otherwise
the model would be trained on a prompt that serving never sends. The trained span of turn i runs
from the end of tokenize(P) up to and including the first end-of-turn token after it.

How the token-prefix property is guaranteed without tokenizing every prefix in full: a fast
tokenizer first splits text at added-token occurrences (`<|im_start|>`, eos, ...) and tokenizes each
piece on its own. So for a boundary b, let s be the start of the last added token in F before b,
found through the full encoding (its id is an added token and its char span is exact). Then
tokenize(F[:b]) = tokenize(F)[:t_s] + tokenize(F[s:b]), and we check that tokenize(F[s:b]) equals
the ids of F from t_s on. Those tails (`<|im_start|>assistant\\n`, `<|im_end|>\\n` for ChatML)
repeat across rows, so each distinct tail is tokenized once per call; templates without added tokens
before the boundary (alpaca) tokenize the whole prompt, once, in the same batch. The tail starts
with the added token, so no piece of it sits at offset 0 (where Metaspace may prepend "▁"), as in
F. When the split argument does not hold (an added token with lstrip/rstrip/single_word, or a
backend that does not split special tokens), every boundary tokenizes its whole prefix instead
(s = 0): exact, just slower. Every kept example satisfies the property either way; `audit`
re-checks it independently by tokenizing each generation prompt in full.

`text`-format rows (a lone assistant message) use `raw_template` whatever `template` is: the whole
text plus eos is the response, with no prompt.

Full texts and tails are tokenized in batches with the Rust backend (`encode_batch`), renders
use the template compiled once, and labels are built with numpy slices (no per-token Python).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instructune.config.schema import DataConfig
from instructune.data.audit import AuditError, render_example
from instructune.data.conversation import Conversation, Message
from instructune.data.templates import (
    Template,
    TemplateError,
    TemplateMismatch,
    end_of_turn_ids,
    is_raw_conversation,
    raw_template,
)

IGNORE_INDEX = -100
CHUNK = 2048  # conversations per tokenizer batch: bounds memory, keeps the Rust batch large


@dataclass(slots=True)
class Example:
    """One tokenized conversation. Labels are aligned with input_ids (transformers shifts them).

    `spans` are the trained responses as [start, end) token ranges (end includes the end-of-turn
    token); `conversation` and `cut` (tokens removed from the start by truncation) let `audit`
    re-render the generation prompts.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    source: str
    spans: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    conversation: Conversation | None = None
    cut: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(slots=True)
class EncodeResult:
    examples: list[Example]
    dropped: Counter[str] = field(default_factory=Counter)
    truncated: int = 0


class _Drop(Exception):
    """Internal: an example dropped under a policy (too long), never an error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def build_labels(input_ids: np.ndarray, spans: np.ndarray, train_on_inputs: bool) -> np.ndarray:
    """The one place labels are masked: trained spans keep their ids, everything else is -100.

    The first token is always -100: nothing predicts it, and with packing this is what keeps the
    last token of one example from being trained to predict the first token of the next.
    """
    if train_on_inputs:
        labels = input_ids.copy()
    else:
        labels = np.full_like(input_ids, IGNORE_INDEX)
        for start, end in spans:
            labels[start:end] = input_ids[start:end]
    labels[:1] = IGNORE_INDEX
    return labels


class _Vocab:
    """Per-call tokenizer facts: added/end-of-turn lookup tables and the tail cache."""

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
        added = tokenizer.added_tokens_decoder
        self.is_added = np.zeros(size, dtype=bool)
        self.is_added[list(added)] = True
        self.is_eot = np.zeros(size, dtype=bool)
        for tid in end_of_turn_ids(tokenizer):
            self.is_eot[tid] = True
        unsplit = getattr(self.backend, "encode_special_tokens", False)
        flags = any(t.lstrip or t.rstrip or t.single_word for t in added.values())
        self.split_exact = not (unsplit or flags)
        self.tails: dict[str, list[int]] = {}

    def encode(self, texts: list[str]) -> list[Any]:
        return self.backend.encode_batch(texts, add_special_tokens=False)  # type: ignore[no-any-return]

    def encode_tails(self, tails: set[str]) -> None:
        todo = [t for t in tails if t not in self.tails]
        if todo:
            encs = self.backend.encode_batch_fast(todo, add_special_tokens=False)
            self.tails.update(zip(todo, (e.ids for e in encs), strict=True))


@dataclass(slots=True)
class _Rendered:
    conv: Conversation
    text: str
    bounds: list[tuple[int, int]]  # per trained turn: (end of generation prompt, end of turn) chars


def _messages(conv: Conversation, cfg: DataConfig) -> list[Message]:
    msgs = conv.messages
    if cfg.system_prompt is not None and msgs and msgs[0].role != "system":
        msgs = [Message("system", cfg.system_prompt), *msgs]
    return msgs


def _render(conv: Conversation, template: Template, cfg: DataConfig) -> _Rendered:
    msgs = conv.messages if is_raw_conversation(conv.messages) else _messages(conv, cfg)
    if msgs is not conv.messages:
        conv = Conversation(msgs, conv.source, conv.label, conv.meta)
    dicts = [{"role": m.role, "content": m.content} for m in msgs]
    meta = conv.meta or None
    full = template.render_dicts(dicts, False, meta)
    turns = [i for i, m in enumerate(msgs) if m.role == "assistant"]
    if cfg.train_on_turns == "last":
        turns = turns[-1:]
    bounds = []
    for i in turns:
        prompt = template.render_dicts(dicts[:i], True, meta)
        turn = full if i + 1 == len(dicts) else template.render_dicts(dicts[: i + 1], False, meta)
        for part, whole, what in ((prompt, turn, "generation prompt"), (turn, full, "turn")):
            if not whole.startswith(part):
                raise TemplateMismatch(
                    template.name,
                    conv.source,
                    f"the {what} of message {i} is not a prefix of the conversation rendered "
                    f"{'through that turn' if part is prompt else 'in full'}:\n"
                    + _divergence(part, whole),
                )
        bounds.append((len(prompt), len(turn)))
    return _Rendered(conv, full, bounds)


def _divergence(part: str, whole: str, width: int = 40) -> str:
    k = next((j for j, (a, b) in enumerate(zip(part, whole, strict=False)) if a != b), len(whole))
    lo = max(0, k - width)
    return (
        f"  prefix render diverges at char {k}: ...{part[lo : k + width]!r}\n"
        f"  full render has:                   ...{whole[lo : k + width]!r}"
    )


def _tails(r: _Rendered, enc: Any, vocab: _Vocab, name: str) -> list[tuple[int, str]]:
    """For each boundary char b: (token index t_s where the tail starts, tail text F[s:b])."""
    ids = np.asarray(enc.ids, dtype=np.int32)
    starts: list[int] = []
    idx: list[int] = []
    if vocab.split_exact:
        idx = np.flatnonzero(vocab.is_added[ids]).tolist()
        starts = [enc.token_to_chars(t)[0] for t in idx]
    out = []
    for b in (b for pair in r.bounds for b in pair):
        k = bisect.bisect_left(starts, b) - 1
        if k < 0:
            out.append((0, r.text[:b]))
            continue
        s, t_s = starts[k], idx[k]
        if enc.token_to_chars(t_s)[1] > b:
            raise TemplateMismatch(
                name, r.conv.source, f"a prefix ends inside the added token at char {s}"
            )
        out.append((t_s, r.text[s:b]))
    return out


def _token_bounds(
    r: _Rendered, ids: list[int], tails: list[tuple[int, str]], vocab: _Vocab, name: str
) -> list[int]:
    """Token index of each boundary, after checking the prefix's ids are a prefix of `ids`."""
    out = []
    for t_s, tail in tails:
        tail_ids = vocab.tails[tail]
        t_b = t_s + len(tail_ids)
        if ids[t_s:t_b] != tail_ids:
            conv_tok = vocab.tokenizer.convert_ids_to_tokens
            raise TemplateMismatch(
                name,
                r.conv.source,
                "a prefix of the conversation tokenizes differently on its own than inside the "
                f"whole conversation (the model would never see this prompt at generation):\n"
                f"  prefix tail {tail[-60:]!r} → {conv_tok(tail_ids)[-12:]}\n"
                f"  in full text             → {conv_tok(ids[t_s:t_b])[-12:]}\n"
                "Make the prompt end at a token boundary (e.g. a newline after the response "
                "marker), or set `data.on_error: skip` to drop such rows.",
            )
        out.append(t_b)
    return out


def _spans(ids: np.ndarray, tbounds: list[int], vocab: _Vocab) -> np.ndarray:
    spans = np.zeros((len(tbounds) // 2, 2), dtype=np.int32)
    for j in range(len(spans)):
        start, turn_end = tbounds[2 * j], tbounds[2 * j + 1]
        eot = np.flatnonzero(vocab.is_eot[ids[start:turn_end]])
        # no end-of-turn token: keep the whole turn; the audit reports it
        spans[j] = (start, start + int(eot[0]) + 1 if len(eot) else turn_end)
    return spans


def _truncate(
    ids: np.ndarray, spans: np.ndarray, cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    n = len(ids)
    if n <= cfg.max_length:
        return ids, spans, 0
    cut = n - cfg.max_length
    # the first kept token is never trained (labels[0] = -100), so a kept span must start > cut
    if cfg.truncation == "drop" or len(spans) == 0 or spans[-1, 0] <= cut:
        raise _Drop("too_long")
    spans = spans[spans[:, 0] > cut] - cut
    return ids[cut:], spans, cut


def _example(
    r: _Rendered, ids: list[int], tbounds: list[int], vocab: _Vocab, cfg: DataConfig
) -> Example:
    arr = np.asarray(ids, dtype=np.int32)
    arr, spans, cut = _truncate(arr, _spans(arr, tbounds, vocab), cfg)
    labels = build_labels(arr, spans, cfg.train_on_inputs)
    ex = Example(arr, labels, r.conv.source, spans, r.conv, cut)
    if not (labels != IGNORE_INDEX).any():
        if cfg.on_error == "skip":
            raise _Drop("no_trained_tokens")
        raise AuditError(
            f"{r.conv.source}: no trained token\n{render_example(ex, vocab.tokenizer)}"
        )
    return ex


def encode_conversations(
    convs: Sequence[Conversation], template: Template, tokenizer: Any, cfg: DataConfig
) -> EncodeResult:
    """Render, tokenize and label conversations; see the module docstring for the guarantees.

    A row the template can't render (`template_error`), whose prefixes don't match
    (`template_mismatch`, a `TemplateMismatch` under on_error=fail), that is too long
    (`too_long`, per `truncation`) or that has nothing to train (`no_trained_tokens`, an
    `AuditError` under on_error=fail) is dropped and counted in `dropped`.
    """
    vocab = _Vocab(tokenizer)
    raw = raw_template(tokenizer)
    result = EncodeResult([])
    for lo in range(0, len(convs), CHUNK):
        _encode_chunk(convs[lo : lo + CHUNK], template, raw, vocab, cfg, result)
    return result


def _encode_chunk(
    convs: Sequence[Conversation],
    template: Template,
    raw: Template,
    vocab: _Vocab,
    cfg: DataConfig,
    result: EncodeResult,
) -> None:
    import jinja2

    rendered: list[_Rendered] = []
    for conv in convs:
        tmpl = raw if is_raw_conversation(conv.messages) else template
        try:
            rendered.append(_render(conv, tmpl, cfg))
        except (TemplateMismatch, jinja2.TemplateError) as e:
            _fail_or_count(e, cfg, result, conv.source, tmpl.name)
    encs = vocab.encode([r.text for r in rendered])
    pending = []
    for r, enc in zip(rendered, encs, strict=True):
        name = "raw" if is_raw_conversation(r.conv.messages) else template.name
        if cfg.truncation == "drop" and len(enc.ids) > cfg.max_length:
            result.dropped["too_long"] += 1  # cheap early exit: no tail work for dropped rows
            continue
        try:
            pending.append((r, enc.ids, _tails(r, enc, vocab, name)))
        except TemplateMismatch as e:
            _fail_or_count(e, cfg, result, r.conv.source, name)
    vocab.encode_tails({tail for _, _, tails in pending for _, tail in tails})
    for r, ids, tails in pending:
        name = "raw" if is_raw_conversation(r.conv.messages) else template.name
        try:
            tbounds = _token_bounds(r, ids, tails, vocab, name)
            ex = _example(r, ids, tbounds, vocab, cfg)
        except TemplateMismatch as e:
            _fail_or_count(e, cfg, result, r.conv.source, name)
            continue
        except _Drop as d:
            result.dropped[d.reason] += 1
            continue
        result.truncated += ex.cut > 0
        result.examples.append(ex)


def _fail_or_count(
    e: Exception, cfg: DataConfig, result: EncodeResult, source: str, name: str
) -> None:
    reason = "template_mismatch" if isinstance(e, TemplateMismatch) else "template_error"
    if cfg.on_error == "skip":
        result.dropped[reason] += 1
        return
    if isinstance(e, TemplateMismatch):
        raise e
    raise TemplateError(f"template {name!r} at {source}: the template raised: {e}") from e
