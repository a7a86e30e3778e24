"""The OPTIONS clause: FLAN's fixed rendering, or Flan 2022's varied headers and item markers."""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FIXED_HEADER", "HEADERS", "MARKERS", "OptionsClause", "render_options"]

FIXED_HEADER = "OPTIONS:"
FIXED_MARKER = "- "
HEADERS = (
    "OPTIONS:",
    "Options:",
    "Choose from:",
    "Pick from:",
    "Choices:",
    "Available options:",
    "Select from the following.",
    "Possible answers:",
    "Pick your answer from:",
    "Answer choices:",
)
# `{}` is replaced by the item's letter; lettered markers make the target that letter.
MARKERS = ("- ", "* ", "+ ", "[+] ", "(A) ", "A. ", "(a) ", "a) ")


@dataclass(frozen=True, slots=True)
class OptionsClause:
    text: str
    """The clause (`options_`), or "" when the row is rendered without options."""
    letters: tuple[str, ...] | None = None
    """With a lettered marker: the letter of each option, in order (the target becomes one)."""


def render_options(
    choices: Sequence[str], style: str, without: float, rng: random.Random
) -> OptionsClause:
    """The clause for one row; `rng` is the row's own generator (seeded by row)."""
    if not choices or (without > 0 and rng.random() < without):
        return OptionsClause("")
    if style == "fixed":
        return OptionsClause("\n".join([FIXED_HEADER, *(FIXED_MARKER + c for c in choices)]))
    header = rng.choice(HEADERS)
    marker = rng.choice(MARKERS)
    letter_case = _letter_case(marker)
    if letter_case is None:
        return OptionsClause("\n".join([header, *(marker + c for c in choices)]))
    alphabet = string.ascii_uppercase if letter_case == "upper" else string.ascii_lowercase
    if len(choices) > len(alphabet):
        return OptionsClause("\n".join([header, *(FIXED_MARKER + c for c in choices)]))
    letters = tuple(alphabet[: len(choices)])
    lines = [
        marker.replace("A", x).replace("a", x) + c for x, c in zip(letters, choices, strict=True)
    ]
    return OptionsClause("\n".join([header, *lines]), letters)


def _letter_case(marker: str) -> str | None:
    if "A" in marker:
        return "upper"
    if "a" in marker:
        return "lower"
    return None
