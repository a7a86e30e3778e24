"""Reading structure out of model answers: numbered lists, examples, labelled fields."""

from __future__ import annotations

import re

from instructune.synthesis.seeds import Instance

_NUMBERED = re.compile(r"^\s*(?:\*\*)?(\d{1,3})\s*[.)]\s*(?:\*\*)?\s*(.*\S)\s*$")
_LABEL_PREFIX = re.compile(
    r"^(?:\*\*)?(?:task|instruction)\s*\d*\s*:\s*(?:\*\*)?\s*", re.IGNORECASE
)
_NO_INPUT = {"", "none", "none.", "<noinput>", "n/a", "no input", "-", "null"}


def numbered_items(text: str) -> list[str]:
    """Items of a numbered list ("9. ...", "10) ..."), with "Task:"-style labels stripped."""
    items = []
    for line in text.splitlines():
        match = _NUMBERED.match(line)
        if match:
            item = _LABEL_PREFIX.sub("", match.group(2)).strip()
            items.append(item)
    return items


def _field(block: str, name: str, following: str) -> str | None:
    match = re.search(
        rf"^\s*{name}\s*:\s*(.*?)(?=^\s*(?:{following})\s*:|\Z)", block, re.S | re.M | re.I
    )
    return match.group(1).strip() if match else None


def no_input(text: str) -> str:
    return "" if text.strip().lower() in _NO_INPUT else text.strip()


def input_first_instances(text: str) -> list[Instance]:
    """`Example N / Input: ... / Output: ...` blocks (a lone `Output:` means no input)."""
    out = []
    for block in re.split(r"^\s*Example\s*\d+\s*:?\s*$", text, flags=re.M | re.I):
        output = _field(block, "Output", "Example|Task|Input")
        if output is None:
            continue
        inp = _field(block, "Input", "Output|Example|Task") or ""
        out.append(Instance(no_input(inp), output))
    return out


def output_first_instances(text: str) -> list[Instance]:
    """`Class label: ... / Input: ...` pairs; the label is the instance's output."""
    out = []
    for block in re.split(r"^(?=\s*Class label\s*:)", text, flags=re.M | re.I):
        label = _field(block, "Class label", "Input|Task")
        inp = _field(block, "Input", "Class label|Task")
        if label is not None and inp is not None:
            out.append(Instance(no_input(inp), label))
    return out


def labelled_fields(
    text: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, str] | None:
    """The `Name: value` fields of one example (values may span lines; `Names:` is accepted too);
    None if a required one is missing, "" for a missing optional one."""
    names = (*required, *optional)
    following = "|".join([*(f"{n}s?" for n in names), "Example"])
    found = {}
    for name in names:
        value = _field(text, f"{name}s?", following)
        if value is None and name in required:
            return None
        found[name.lower()] = value or ""
    return found


def example_blocks(text: str) -> list[str]:
    """The text split at `Example N` headers (the part before the first header included)."""
    return re.split(r"^\s*Example\s*\d+\s*:?\s*$", text, flags=re.M | re.I)


def yes_no(text: str, yes: str = "yes", no: str = "no") -> bool | None:
    """The leading yes/no of an answer (None when it starts with neither)."""
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return None
    if words[0] == yes:
        return True
    if words[0] == no:
        return False
    return None
