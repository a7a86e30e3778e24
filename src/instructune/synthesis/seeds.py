"""Seed tasks: the Self-Instruct seed shape or plain instruction/input/output rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructune.data.readers import iter_json_lines, read_json_file, unreadable_reason


@dataclass(frozen=True)
class Instance:
    input: str
    output: str


@dataclass(frozen=True)
class SeedTask:
    id: str
    instruction: str
    instances: tuple[Instance, ...]
    is_classification: bool | None = None
    constraints: str = ""


def _text(row: dict[str, Any], key: str, where: str, required: bool) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise ValueError(f"{where}: missing field {key!r}")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _instances(row: dict[str, Any], where: str) -> tuple[Instance, ...]:
    if "instances" not in row:
        if "output" not in row:
            return ()
        return (Instance(_text(row, "input", where, False), _text(row, "output", where, True)),)
    raw = row["instances"]
    if not isinstance(raw, list):
        raise ValueError(f"{where}: field 'instances' must be a list of {{input, output}}")
    out = []
    for j, inst in enumerate(raw):
        if not isinstance(inst, dict):
            raise ValueError(f"{where}: instances[{j}] must be an object with input and output")
        at = f"{where}: instances[{j}]"
        out.append(Instance(_text(inst, "input", at, False), _text(inst, "output", at, True)))
    return tuple(out)


def parse_seed(row: Any, where: str, index: int) -> SeedTask:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a seed task must be a JSON object")
    instruction = _text(row, "instruction", where, True).strip()
    if not instruction:
        raise ValueError(f"{where}: field 'instruction' is empty")
    is_cls = row.get("is_classification")
    if is_cls is not None and not isinstance(is_cls, bool):
        raise ValueError(f"{where}: field 'is_classification' must be true or false")
    return SeedTask(
        id=str(row.get("id", f"seed_{index}")),
        instruction=instruction,
        instances=_instances(row, where),
        is_classification=is_cls,
        constraints=_text(row, "constraints", where, False),
    )


def load_seeds(path: str | Path) -> list[SeedTask]:
    """Read seed tasks from JSONL (one object a line) or JSON (a list); errors name file:line."""
    path = Path(path)
    if reason := unreadable_reason(path):
        raise ValueError(f"synthesize.seeds: {path} {reason}")
    if not path.is_file():
        raise FileNotFoundError(f"synthesize.seeds: no such file {path}")
    seeds: list[SeedTask] = []
    if path.suffix == ".json":
        rows = read_json_file(path)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of seed tasks")
        seeds = [parse_seed(r, f"{path}: row {i + 1}", i) for i, r in enumerate(rows)]
    else:
        for _, where, row in iter_json_lines(path):
            seeds.append(parse_seed(row, where, len(seeds)))
    if not seeds:
        raise ValueError(f"{path}: no seed tasks")
    return seeds
