"""OpenAssistant message trees → conversations.

Reads oasst "trees" exports (one tree per JSON line: `{message_tree_id, prompt: {text, role,
rank, deleted, lang, replies: [...]}}`; a bare root message is accepted too). Roles `prompter`
and `assistant` become user and assistant turns. Deleted messages (and their subtrees) and
messages outside `languages` are skipped and counted; a conversation ending in a user turn loses
that turn. `paths: best` follows the best-ranked reply (lowest `rank`; unranked after ranked, in
file order) from the root to a leaf; `paths: all` yields every root-to-leaf path, identical
conversations (after dropping trailing user turns) once. Every conversation of a tree shares its
`group`, so the split keeps whole trees on one side and no prefix leaks across it.

`output: pairs` turns sibling ranks into preference pairs instead: at each user message on the
selected paths whose kept (not deleted, right language) assistant replies include two or more
ranked ones, the best-ranked reply (lowest `rank`) is chosen and each lower-ranked reply
(`pair_with: each`) or the worst-ranked one (`pair_with: worst`) rejected; the prompt is the
conversation up to that user message. Turns with fewer than two ranked replies, unranked replies
beside ranked ones, ties with the best rank and identical texts are counted, never paired.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from instructune.config.build import BuildSource
from instructune.curation.sources import Item, SkipCounter, read_source_rows
from instructune.data.conversation import DataError, Message, Role, row_error

__all__ = ["oasst_items"]

_ROLES: dict[str, Role] = {"prompter": "user", "assistant": "assistant"}


def oasst_items(source: BuildSource, skips: SkipCounter, counts: Counter[str]) -> list[Item]:
    """Conversations of every tree; `counts` gets the messages and paths passed over."""
    items: list[Item] = []
    for tree_index, (location, row) in enumerate(read_source_rows(source, skips)):
        root = row.get("prompt", row)
        if not isinstance(root, dict) or "text" not in root:
            skips.handle(row_error(location, "not an oasst tree", "expected a 'prompt' message"))
            continue
        tree_id = str(row.get("message_tree_id", root.get("message_id", tree_index)))
        if not _usable(root, source, counts):
            continue
        if source.oasst.output == "pairs":
            items += _pair_items(root, (source, location, tree_id, len(items)), skips, counts)
            continue
        seen: set[tuple[str, ...]] = set()
        for path in _paths(root, source, counts):
            turns = _turns(path, location, skips)
            if turns is None:
                continue  # counted by `skips`
            key = tuple(m.content for m in turns)
            if not turns or key in seen:
                counts["path without an assistant reply" if not turns else "repeated path"] += 1
                continue
            seen.add(key)
            content = "\n".join(m.content for m in turns)
            items.append(Item(source.name, len(items), location, tree_id, content, messages=turns))
    if not items:
        what = "preference pairs" if source.oasst.output == "pairs" else "conversations"
        raise DataError(
            f"source {source.name!r} ({source.path}): no usable {what} ({dict(counts)})"
        )
    return items


_Where = tuple[BuildSource, str, str, int]
"""(source, location of the tree's row, tree id, index of the tree's first item)."""


def _pair_items(
    root: dict[str, Any], where: _Where, skips: SkipCounter, counts: Counter[str]
) -> list[Item]:
    source, location, tree_id, first = where
    items: list[Item] = []
    for path, chosen, rejected in _sibling_pairs(root, [], source, counts):
        good = _turns([*path, chosen], location, skips)
        bad = _turns([*path, rejected], location, skips)
        if not good or not bad:
            continue  # malformed (counted by `skips`) or no user turn before the reply
        if good[-1].content == bad[-1].content:
            counts["pairs: identical replies"] += 1
            continue
        content = "\n".join([*(m.content for m in good), bad[-1].content])
        items.append(
            Item(
                source.name, first + len(items), location, tree_id, content,
                messages=good, rejected=bad[-1].content,
            )
        )  # fmt: skip
    return items


def _sibling_pairs(
    node: dict[str, Any], prefix: list[dict[str, Any]], source: BuildSource, counts: Counter[str]
) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]]:
    """(path to a user message, chosen reply, rejected reply) along the paths `paths` selects."""
    path = [*prefix, node]
    replies = [r for r in node.get("replies") or [] if _usable(r, source, counts)]
    if node.get("role") == "prompter" and replies:
        ranked = sorted((r for r in replies if _rank(r) != float("inf")), key=_rank)
        if len(ranked) < 2:
            counts["pairs: turn with fewer than 2 ranked replies"] += 1
        else:
            if len(replies) > len(ranked):
                counts["pairs: unranked reply"] += len(replies) - len(ranked)
            best, rest = ranked[0], ranked[1:]
            for other in rest if source.oasst.pair_with == "each" else rest[-1:]:
                if _rank(other) == _rank(best):
                    counts["pairs: tied with the best rank"] += 1
                    continue
                yield path, best, other
    if source.oasst.paths == "best" and replies:
        replies = [replies[min(range(len(replies)), key=lambda i: (_rank(replies[i]), i))]]
    for reply in replies:
        yield from _sibling_pairs(reply, path, source, counts)


def _usable(message: Any, source: BuildSource, counts: Counter[str]) -> bool:
    if not isinstance(message, dict):
        counts["malformed message"] += 1
        return False
    if message.get("deleted"):
        counts["deleted message"] += 1
        return False
    languages = source.oasst.languages
    if languages is not None and message.get("lang") not in languages:
        counts["other language"] += 1
        return False
    return True


def _paths(
    node: dict[str, Any], source: BuildSource, counts: Counter[str]
) -> Iterator[list[dict[str, Any]]]:
    """Root-to-leaf paths from a usable `node` through usable replies."""
    replies = [r for r in node.get("replies") or [] if _usable(r, source, counts)]
    if not replies:
        yield [node]
        return
    if source.oasst.paths == "best":
        best = min(range(len(replies)), key=lambda i: (_rank(replies[i]), i))
        replies = [replies[best]]
    for reply in replies:
        for rest in _paths(reply, source, counts):
            yield [node, *rest]


def _rank(message: dict[str, Any]) -> float:
    rank = message.get("rank")
    return float(rank) if isinstance(rank, int | float) else float("inf")


def _turns(path: list[dict[str, Any]], location: str, skips: SkipCounter) -> list[Message] | None:
    """The path's turns without trailing user turns ([] without an assistant reply); None when
    a message is malformed (handled by `skips`)."""
    turns: list[Message] = []
    for depth, message in enumerate(path):
        role = _ROLES.get(str(message.get("role")))
        text = message.get("text")
        if role is None or not isinstance(text, str):
            skips.handle(
                row_error(
                    location,
                    "bad oasst message",
                    f"depth {depth}: role {message.get('role')!r} (expected prompter/assistant), "
                    "text must be a string",
                )
            )
            return None
        turns.append(Message(role, text))
    while turns and turns[-1].role == "user":
        turns.pop()
    if not turns or turns[0].role != "user" or len(turns) < 2:
        return []
    return turns
