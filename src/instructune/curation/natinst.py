"""Super-NaturalInstructions task files under Tk-Instruct's encodings.

The prompt layout follows Tk-Instruct's `ni_collator.py` (Wang et al., 2022): "Definition: …",
then k " Positive Example i -" blocks (input, output, optionally the explanation), optionally
negative examples, then "Now complete the following example -\\nInput: …\\nOutput:". The
examples come from the task's own `Positive Examples`/`Negative Examples`, never from its
instances, so an eval instance can't leak into a train prompt. The target is an instance's first
output. The file is read by the same reader `prepare` uses for `natural_instructions`.
"""

from __future__ import annotations

import string
from typing import Any

from instructune.config.build import BuildSource
from instructune.curation.sources import Item, SkipCounter, read_source_rows
from instructune.data.conversation import DataError, Message, RowError, row_error

__all__ = ["natinst_items"]


def natinst_items(source: BuildSource, skips: SkipCounter) -> list[Item]:
    opts = source.natural_instructions
    items: list[Item] = []
    for location, task in read_source_rows(source, skips):
        definition = _definition(task, location)
        pos = _examples(task, "Positive Examples", opts.num_positive, location)
        neg = _examples(task, "Negative Examples", opts.num_negative, location)
        encoding = opts.encoding
        head = f"Definition: {_period(definition)}\n\n"
        if encoding != "definition":
            head += "".join(_example(e, "Positive", i, encoding) for i, e in enumerate(pos, 1))
        if encoding in ("pos_neg", "pos_neg_expl"):
            head += "".join(_example(e, "Negative", i, encoding) for i, e in enumerate(neg, 1))
        instances = task.get("Instances")
        if not isinstance(instances, list):
            raise DataError(f"{location}: 'Instances' must be a list of {{input, output}}")
        for i, instance in enumerate(instances[: opts.max_instances], start=1):
            where = f"{location} Instances[{i}]"
            try:
                items.append(_instance_item(source.name, len(items), where, head, instance))
            except RowError as e:
                skips.handle(e)
    if not items:
        raise DataError(f"source {source.name!r} ({source.path}): no usable instances")
    return items


def _instance_item(name: str, index: int, where: str, head: str, instance: Any) -> Item:
    if not isinstance(instance, dict):
        raise row_error(where, "wrong type for instance", f"got {type(instance).__name__}")
    text = instance.get("input")
    outputs = instance.get("output")
    if isinstance(outputs, list):
        outputs = outputs[0] if outputs else None
    if not isinstance(text, str) or not text.strip():
        raise row_error(where, "missing field 'input'", "an instance needs a non-empty input")
    if not isinstance(outputs, str) or not outputs.strip():
        raise row_error(where, "missing field 'output'", "an instance needs a non-empty output")
    prompt = f"{head}Now complete the following example -\nInput: {_period(text.strip())}\nOutput:"
    messages = [Message("user", prompt), Message("assistant", outputs.strip())]
    group = str(instance.get("id", index))
    return Item(name, index, where, group, f"{text}\n{outputs}", messages=messages)


def _definition(task: dict[str, Any], location: str) -> str:
    value = task.get("Definition")
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{location}: a task file needs a non-empty 'Definition'")
    return value.strip()


def _examples(task: dict[str, Any], key: str, k: int, location: str) -> list[dict[str, Any]]:
    examples = task.get(key) or []
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise DataError(f"{location}: {key!r} must be a list of {{input, output}} objects")
    return examples[:k]


def _example(example: dict[str, Any], kind: str, i: int, encoding: str) -> str:
    text = f" {kind} Example {i} -\n"
    text += f"Input: {_period(str(example.get('input', '')).strip())}\n"
    text += f" Output: {_period(str(example.get('output', '')).strip())}\n"
    if encoding == "pos_neg_expl" and example.get("explanation"):
        text += f" Explanation: {_period(str(example['explanation']).strip())}\n"
    return text + "\n"


def _period(text: str) -> str:
    return text if text and text[-1] in string.punctuation else text + "."
