"""Filters over items (before the split) and rendered rows: dedup, decontamination, lengths.

Dedup and decontamination compare each item's `content` — the data its row holds, never the
template text — so two rows differing only in template are duplicates, and two different
sentences inside the same long template are not. They run before the train/eval split, so a
duplicate can't sit on both sides of it.

Decontamination: every eval text (each counted field of each eval row, on its own) is lowercased
and split into words (`\\w+`). Texts of at least `ngram` words contribute their n-grams; shorter
texts (of at least `min_words` words) are matched whole, as a contiguous word sequence. An item
whose content contains any of them is removed, and the report names the eval row and the match.
Counted fields: `decontaminate.fields`, or by default every string field except the answer
fields in `ANSWER_FIELDS`; `messages`/`conversations` rows count their user turns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from instructune.config.build import DecontaminateOptions, LengthFilter
from instructune.config.schema import DataSource
from instructune.curation.minhash import near_duplicates, shingle_words
from instructune.curation.render import Example
from instructune.curation.sources import Item
from instructune.data.conversation import RowError
from instructune.data.readers import iter_rows

__all__ = [
    "ANSWER_FIELDS",
    "Removed",
    "decontaminate",
    "exact_dedup",
    "length_problem",
    "near_dedup",
]

ANSWER_FIELDS = frozenset({"output", "response", "answer", "answers", "label", "target", "targets"})
"""Eval-row fields that don't count by default: answers are short and shared by many rows."""
_USER_ROLES = frozenset({"user", "human", "prompter"})


@dataclass(frozen=True, slots=True)
class Removed:
    item: Item
    reason: str
    matched: str
    """What it matched: the kept row (dedup) or the eval row and text (decontamination)."""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.item.source,
            "row": self.item.location,
            "reason": self.reason,
            "matched": self.matched,
            "detail": self.detail,
        }


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def exact_dedup(items: list[Item]) -> tuple[list[Item], list[Removed]]:
    first: dict[str, Item] = {}
    kept: list[Item] = []
    removed: list[Removed] = []
    for item in items:
        key = normalize(item.content)
        if key in first:
            removed.append(Removed(item, "exact duplicate", first[key].location))
        else:
            first[key] = item
            kept.append(item)
    return kept, removed


def near_dedup(
    items: list[Item], threshold: float
) -> tuple[list[Item], list[Removed], list[list[Item]]]:
    """Keep the first item of each MinHash cluster; (kept, removed, clusters)."""
    found = near_duplicates([i.content for i in items], threshold)
    gone = found.removed()
    removed = [
        Removed(items[i], "near duplicate", items[k].location, f"Jaccard ≥ {threshold}")
        for i, k in sorted(gone.items())
    ]
    kept = [item for i, item in enumerate(items) if i not in gone]
    return kept, removed, [[items[i] for i in cluster] for cluster in found.clusters]


def decontaminate(
    items: list[Item], opts: DecontaminateOptions
) -> tuple[list[Item], list[Removed]]:
    grams: dict[tuple[str, ...], str] = {}
    whole: dict[int, dict[tuple[str, ...], str]] = {}
    for where, text in _eval_texts(opts):
        words = shingle_words(text)
        if len(words) < opts.min_words:
            continue
        if len(words) < opts.ngram:
            whole.setdefault(len(words), {}).setdefault(tuple(words), where)
            continue
        for i in range(len(words) - opts.ngram + 1):
            grams.setdefault(tuple(words[i : i + opts.ngram]), where)
    # whole texts are shorter than n words, so the tables' window sizes never collide
    tables = {**whole, **({opts.ngram: grams} if grams else {})}
    kept: list[Item] = []
    removed: list[Removed] = []
    for item in items:
        hit = _first_hit(shingle_words(item.content), tables)
        if hit is None:
            kept.append(item)
        else:
            removed.append(Removed(item, "contaminated", hit[0], " ".join(hit[1])))
    return kept, removed


def _first_hit(
    words: list[str], tables: dict[int, dict[tuple[str, ...], str]]
) -> tuple[str, tuple[str, ...]] | None:
    """The first eval text (location, words) found in `words`, by window size."""
    for n in sorted(tables):
        table = tables[n]
        for window in zip(*(words[i:] for i in range(n)), strict=False):
            where = table.get(window)
            if where is not None:
                return where, window
    return None


def _eval_texts(opts: DecontaminateOptions) -> Iterator[tuple[str, str]]:
    """(eval row location + field, text) for each counted field of each eval row."""
    for path in opts.against:
        for location, row in iter_rows(DataSource(path=path)):
            if isinstance(row, RowError):
                raise row  # an unreadable eval row can't be checked: stop, naming it
            for key, value in row.items():
                if opts.fields is not None and key not in opts.fields:
                    continue
                if isinstance(value, str) and (opts.fields is not None or key not in ANSWER_FIELDS):
                    yield f"{location} field {key!r}", value
                elif key in ("messages", "conversations") and isinstance(value, list):
                    yield from _user_turns(location, key, value)


def _user_turns(location: str, key: str, turns: list[Any]) -> Iterator[tuple[str, str]]:
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            continue
        role = str(turn.get("role", turn.get("from", ""))).lower()
        text = turn.get("content", turn.get("value"))
        if role in _USER_ROLES and isinstance(text, str):
            yield f"{location} {key}[{i}]", text


def length_problem(example: Example, opts: LengthFilter) -> str | None:
    """The length filter a rendered row fails (`prompt too short` ...), or None."""
    for side, text in (("prompt", example.prompt_text()), ("target", example.target_text())):
        words = len(text.split())
        low = getattr(opts, f"min_{side}_words")
        high = getattr(opts, f"max_{side}_words")
        if low is not None and words < low:
            return f"{side} under {low} words"
        if high is not None and words > high:
            return f"{side} over {high} words"
    return None
