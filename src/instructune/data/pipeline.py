"""The data stage end to end: sources → conversations → split → tokens+labels → audit → packs.

`prepare_dataset(data_cfg, tokenizer)` is what `prepare`, `train` and `eval` all call, so the
examples a model is trained on are exactly the ones `instructune prepare --dump` shows.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instructune.config import DataConfig, DataSource
from instructune.data.audit import audit
from instructune.data.conversation import Conversation
from instructune.data.examples import Example, Examples
from instructune.data.lineage import dataset_hash
from instructune.data.loading import load_conversations
from instructune.data.packing import Packed, pack, packing_efficiency
from instructune.data.split import dedup, train_eval_split
from instructune.data.templates import Template, load_template
from instructune.data.tokenize import EncodeResult, encode_conversations
from instructune.models.labels import IGNORE_INDEX

PROMPT_CHECKS = 1000
"""Generation prompts the audit re-tokenizes per split; train keeps only those conversations."""


@dataclass
class SourceReport:
    path: str
    format: str
    detected: bool
    reason: str
    rows_read: int
    kept: int
    dropped: dict[str, int]
    errors: list[str]
    sha256: str
    adjusted: dict[str, int] = field(default_factory=dict)


@dataclass
class SplitStats:
    """Token statistics of one split (train or eval) after tokenization."""

    examples: int
    tokens: int
    trained_tokens: int
    lengths: list[int]
    packed_rows: int | None = None
    packing_efficiency: float | None = None

    @property
    def trained_fraction(self) -> float:
        return self.trained_tokens / self.tokens if self.tokens else 0.0


@dataclass
class PreparedData:
    template: Template
    train: Examples
    eval: Examples
    train_packed: list[Packed] | None
    eval_packed: list[Packed] | None
    sources: list[SourceReport]
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_rows: list[dict[str, str]] = field(default_factory=list)
    """Every dropped row: {stage (read, dedup, train, eval), source, reason, detail}."""
    truncated: int = 0
    template_splits: Counter[str] = field(default_factory=Counter)
    """Rows the chat template made into several examples (`EncodeResult.template_splits`)."""
    stats: dict[str, SplitStats] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    eval_conversations: list[Conversation] = field(default_factory=list)


def load_sources(
    sources: list[DataSource], cfg: DataConfig, dropped_rows: list[dict[str, str]] | None = None
) -> tuple[list[Conversation], list[SourceReport]]:
    """Read every source (format detected when omitted) into conversations, with a report each;
    rows dropped while reading are appended to `dropped_rows`."""
    conversations: list[Conversation] = []
    reports: list[SourceReport] = []
    for source in sources:
        result = load_conversations(source, cfg.on_error, cfg.system_prompt, cfg.reasoning)
        conversations.extend(result.conversations)
        reports.append(
            SourceReport(
                path=source.path,
                format=result.format,
                detected=result.detected,
                reason=result.reason,
                rows_read=result.rows_read,
                kept=len(result.conversations),
                dropped=dict(result.dropped),
                errors=list(result.errors),
                sha256=result.file_hash,
                adjusted=dict(result.adjusted),
            )
        )
        if dropped_rows is not None:
            dropped_rows.extend({"stage": "read", **d.as_dict()} for d in result.dropped_rows)
    return conversations, reports


def prepare_dataset(cfg: DataConfig, tokenizer: Any) -> PreparedData:
    """Run the whole data stage; every dropped row is counted in `dropped` by reason."""
    with _gc_paused():
        return _prepare(cfg, tokenizer)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while the stage allocates millions of acyclic objects (rows, pieces): each
    collection would walk every loaded conversation again. What is left is collected after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class Splits:
    """The conversations of each split before tokenization, as training divides them."""

    train: list[Conversation]
    eval: list[Conversation]
    sources: list[SourceReport]
    dropped: Counter[str]
    dropped_rows: list[dict[str, str]] = field(default_factory=list)
    """Rows dropped while reading and deduplicating: {stage, source, reason, detail}."""


def load_splits(cfg: DataConfig) -> Splits:
    """Read the sources, drop duplicates, and hold out eval (its files, or `eval_fraction`)."""
    rows: list[dict[str, str]] = []
    train_convs, reports = load_sources(cfg.train, cfg, rows)
    dropped: Counter[str] = Counter()
    for report in reports:
        dropped.update(report.dropped)
    if cfg.dedup:
        train_convs, duplicates = dedup(train_convs)
        dropped["duplicate"] += len(duplicates)
        rows.extend(
            {"stage": "dedup", "source": c.source, "reason": "duplicate", "detail": ""}
            for c in duplicates
        )
    if cfg.eval:
        eval_convs, eval_reports = load_sources(cfg.eval, cfg, rows)
        reports.extend(eval_reports)
        for report in eval_reports:
            dropped.update({f"eval_{k}": v for k, v in report.dropped.items()})
    else:
        train_convs, eval_convs = train_eval_split(train_convs, cfg.eval_fraction, cfg.seed)
    return Splits(train_convs, eval_convs, reports, dropped, rows)


def _prepare(cfg: DataConfig, tokenizer: Any) -> PreparedData:
    template = load_template(cfg.template, tokenizer)
    splits = load_splits(cfg)
    train_convs, eval_convs = splits.train, splits.eval
    reports, dropped, rows = splits.sources, splits.dropped, splits.dropped_rows
    del splits
    # train rows are freed as they are encoded; only the audit's sample keeps its conversation
    train_enc = encode_conversations(
        _Drain(train_convs), template, tokenizer, cfg, keep_conversations=PROMPT_CHECKS
    )
    eval_enc = encode_conversations(eval_convs, template, tokenizer, cfg)
    dropped.update(train_enc.dropped)
    dropped.update({f"eval_{k}": v for k, v in eval_enc.dropped.items()})
    for stage, enc in (("train", train_enc), ("eval", eval_enc)):
        rows.extend({"stage": stage, **d.as_dict()} for d in enc.dropped_rows)
    if cfg.audit:
        audit(train_enc.examples, tokenizer, template, PROMPT_CHECKS)
        audit(eval_enc.examples, tokenizer, template, PROMPT_CHECKS)
    prepared = PreparedData(
        template=template,
        train=train_enc.examples,
        eval=eval_enc.examples,
        train_packed=pack(train_enc.examples, cfg.max_length) if cfg.packing else None,
        eval_packed=pack(eval_enc.examples, cfg.max_length) if cfg.packing else None,
        sources=reports,
        dropped=+dropped,
        dropped_rows=rows,
        truncated=train_enc.truncated + eval_enc.truncated,
        template_splits=train_enc.template_splits + eval_enc.template_splits,
        eval_conversations=_kept_conversations(eval_convs, eval_enc),
    )
    prepared.stats = {
        "train": split_stats(prepared.train, prepared.train_packed, cfg.max_length),
        "eval": split_stats(prepared.eval, prepared.eval_packed, cfg.max_length),
    }
    prepared.hashes = {
        "train": dataset_hash(prepared.train.pairs()),
        "eval": dataset_hash(prepared.eval.pairs()),
    }
    return prepared


class _Drain:
    """A list read once, front to back, letting go of each item as it is handed out."""

    def __init__(self, items: list[Conversation]) -> None:
        self.items = items
        self.size = len(items)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, item: object) -> bool:
        return item in self.items

    def __iter__(self) -> Iterator[Conversation]:
        items = self.items
        items.reverse()
        while items:
            yield items.pop()


def _kept_conversations(convs: list[Conversation], enc: EncodeResult) -> list[Conversation]:
    """The conversations whose encoding survived (matched by source), for generation-style eval."""
    kept = set(enc.examples.sources())
    return [c for c in convs if c.source in kept]


def split_stats(
    examples: Sequence[Example], packed: list[Packed] | None, max_length: int
) -> SplitStats:
    if isinstance(examples, Examples):
        lengths = examples.lengths().tolist()
        trained = examples.trained_tokens()
    else:
        lengths = [len(e.input_ids) for e in examples]
        trained = int(sum(int(np.count_nonzero(e.labels != IGNORE_INDEX)) for e in examples))
    stats = SplitStats(
        examples=len(examples), tokens=int(sum(lengths)), trained_tokens=trained, lengths=lengths
    )
    if packed is not None:
        stats.packed_rows = len(packed)
        stats.packing_efficiency = packing_efficiency(packed, max_length) if packed else 0.0
    return stats
