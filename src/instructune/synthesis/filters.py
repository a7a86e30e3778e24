"""The papers' filters: Self-Instruct instruction and instance rules, Evol-Instruct elimination.

Each returns a drop reason (a short snake_case name counted in the report) or None to keep.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from functools import cache

from instructune.synthesis.backends import Response
from instructune.synthesis.seeds import Instance

# English function words: an answer made only of these (and punctuation) says nothing.
_STOP_WORDS_TEXT = """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves ok okay yes
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
# Evol-Instruct: an evolution that echoes the rewriting request itself failed (the paper's phrases
# plus the ones our own templates use).
SCAFFOLDING = (
    "#rewritten prompt#",
    "#given prompt#",
    "given prompt",
    "rewritten prompt",
    "rewritten instruction",
    "new instruction:",
    "original instruction",
    "the instruction below",
    "make it harder",
    "10 to 20 words",
)


@cache
def _keyword_re(word: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)


def instruction_drop_reason(
    text: str, keywords: Sequence[str], min_words: int, max_words: int
) -> str | None:
    """Self-Instruct's heuristic filters, before the ROUGE-L novelty check."""
    if not text:
        return "empty"
    words = len(text.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if any(_keyword_re(k).search(text) for k in keywords):
        return "keyword"
    if text[0] in string.punctuation:
        return "starts_with_punctuation"
    if not text[0].isascii():
        return "starts_with_non_ascii"
    return None


def clean_instances(
    instances: Sequence[Instance], cut_by_length: bool
) -> tuple[list[Instance], list[str], str | None]:
    """Self-Instruct's instance cleanup: (kept, per-instance drop reasons, whole-task drop reason).

    A generation cut by the length limit loses its last (unfinished) instance; one input with
    conflicting outputs drops the whole task (it is ambiguous, not just one bad example).
    """
    drops: list[str] = []
    items = list(instances)
    if cut_by_length and items:
        items.pop()
        drops.append("cut_by_length")
    kept: list[Instance] = []
    outputs_by_input: dict[str, set[str]] = {}
    for inst in items:
        reason = _instance_drop_reason(inst)
        if reason is None and inst in kept:
            reason = "duplicate_instance"
        if reason is not None:
            drops.append(reason)
            continue
        kept.append(inst)
        outputs_by_input.setdefault(inst.input, set()).add(inst.output)
    if any(len(outs) > 1 for outs in outputs_by_input.values()):
        return [], drops, "conflicting_outputs"
    if not kept:
        return [], drops, "no_valid_instances"
    return kept, drops, None


def _instance_drop_reason(inst: Instance) -> str | None:
    if not inst.output.strip():
        return "empty_output"
    if inst.input.strip() == inst.output.strip():
        return "input_equals_output"
    if inst.output.rstrip().endswith(":"):
        return "output_ends_with_colon"
    return None


def only_stop_words(text: str) -> bool:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return all(w in STOP_WORDS for w in words)


def evolution_failure(parent: str, evolved: str) -> str | None:
    """Evol-Instruct's elimination rules that look at the evolved instruction itself."""
    if not evolved.strip():
        return "empty_evolution"
    if " ".join(evolved.split()).lower() == " ".join(parent.split()).lower():
        return "no_information_gain"
    lowered = evolved.lower()
    if any(s in lowered for s in SCAFFOLDING):
        return "copies_prompt_scaffolding"
    return None


def answer_failure(answer: Response, sorry_max_words: int) -> str | None:
    """Evol-Instruct's elimination rules on the answer to an evolved instruction."""
    if answer.error:
        return "answer_error"
    if not answer.text.strip():
        return "empty_answer"
    if "sorry" in answer.text.lower() and len(answer.text.split()) < sorry_max_words:
        return "answer_says_sorry"
    if only_stop_words(answer.text):
        return "answer_only_stop_words"
    if answer.finish_reason == "length":
        return "answer_cut_by_length"
    return None
