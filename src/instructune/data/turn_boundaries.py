"""One rendered conversation on its way to tokens (`RowTokens`): its pieces, its ids, and the
token index of each turn boundary, each checked to tokenize as a prefix of the whole text. The
guarantees this serves are stated in `data.tokenize`; `encode_conversations` drives it.

How that is exact without tokenizing every prefix in full: a fast tokenizer first splits text at
added-token occurrences (`<|im_start|>`, eos, ...) and normalizes, pre-tokenizes and encodes each
piece between them on its own (`pieces.Vocab.split` does the same split with regexes). So
tokenize(F) is the concatenation of its pieces' ids, and for a boundary b inside a piece [s, e) of
F, tokenize(F[:b]) = tokenize(F[:s]) + tokenize(F[s:b]): the check is that tokenize(F[s:b]) is a
prefix of tokenize(F[s:e]). Pieces repeat across rows (the system prompt, `assistant\\n`, `\\n`), so
each distinct piece is encoded once per chunk and the repeating ones are kept for later chunks; only
the pieces (never offsets) are encoded, in batches. The one position-dependent step, a Metaspace
pre-tokenizer prepending "▁" to the piece at offset 0 only (`prepend_scheme: first`), is reproduced
by encoding every other piece after an added token. When the split argument does not hold (an added
token with lstrip/rstrip/single_word, a normalized added token under a normalizer, a backend that
does not split special tokens), the whole text is one piece: F and every prefix F[:b] are tokenized
in full. Exact either way; `audit` re-checks the property independently by tokenizing generation
prompts in full.
"""

from __future__ import annotations

from collections.abc import Iterator

from instructune.data.pieces import PieceKey, Vocab
from instructune.data.templates import TemplateMismatch
from instructune.data.truncation import through_turn
from instructune.data.turns import Rendered

__all__ = ["BoundaryInsideToken", "RowTokens"]


class BoundaryInsideToken(Exception):
    """A trained turn's generation prompt ends inside a token of the row's whole text."""

    def __init__(self, turn: int) -> None:
        super().__init__(turn)
        self.turn = turn  # its index among the row's trained turns


class RowTokens:
    """One rendered conversation on its way to tokens: pieces, char and token boundaries."""

    __slots__ = ("bounds", "conv", "keep", "n", "name", "parts", "split", "tbounds", "text")

    def __init__(
        self, r: Rendered, name: str, keep: bool, vocab: Vocab, split: bool, cut: int = 0
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

    def at_boundary(self, k: int, vocab: Vocab) -> list[RowTokens]:
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
        rows = [RowTokens(head, self.name, self.keep, vocab, self.split, cut=pairs[k][0])]
        if k + 1 < len(pairs):
            rest = Rendered(self.conv, self.text, pairs[k + 1 :])
            rows.append(RowTokens(rest, self.name, self.keep, vocab, True))
        return rows

    def keys(self, vocab: Vocab) -> Iterator[PieceKey]:
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

    def assemble(self, table: dict[PieceKey, list[int]], vocab: Vocab, flat: list[int]) -> None:
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

    def locate(self, table: dict[PieceKey, list[int]], vocab: Vocab) -> None:
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
                            BoundaryInsideToken(k // 2)
                            if k % 2 == 0
                            else self._mismatch(self.text[pos : bounds[k]], pre, whole, vocab)
                        )
                    out.append(n + len(pre))
                    k += 1
                n += len(whole)
            pos = end
        out.extend([n] * (len(bounds) - k))

    def _mismatch(self, tail: str, pre: list[int], whole: list[int], vocab: Vocab) -> Exception:
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
