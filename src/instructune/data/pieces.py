"""The tokenizer facts `encode_conversations` works with: added and end-of-turn token tables, the
split of a text into the pieces a fast tokenizer encodes independently, and a cache of piece ids.

See `instructune.data.turn_boundaries` for why encoding pieces is exact.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from instructune.data.templates import end_of_turn_ids

_KEEP_PIECES = 1 << 16  # repeating pieces remembered across chunks, at most

PieceKey = str | tuple[str]  # a piece, or (piece,): encoded after an added token (see `_Vocab.key`)


class Vocab:
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
        self.cache: dict[PieceKey, list[int]] = {}

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

    def key(self, piece: str, at_start: bool) -> PieceKey:
        """A text piece's cache key: `(piece,)` where it is to be encoded after an added token."""
        return piece if at_start or self.anchor is None else (piece,)

    def encode(self, counts: dict[PieceKey, int]) -> dict[PieceKey, list[int]]:
        """Ids of each key (`counts`: key → uses in the chunk)."""
        todo = list(counts)
        anchor = self.anchor or ""
        texts = [k if isinstance(k, str) else anchor + k[0] for k in todo]
        encs = self.backend.encode_batch_fast(texts, add_special_tokens=False) if todo else []
        return {
            k: e.ids if isinstance(k, str) else e.ids[1:] for k, e in zip(todo, encs, strict=True)
        }

    def count(self, text: str) -> int:
        """Tokens of `text` on its own (an estimate's input, not a boundary computation)."""
        return len(self.backend.encode(text, add_special_tokens=False).ids)

    def remember(self, table: dict[PieceKey, list[int]], counts: dict[PieceKey, int]) -> None:
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
