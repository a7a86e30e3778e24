"""YAML → Config, with dotted command-line overrides and errors that name the key.

`load_config("cfg.yaml", ["data.max_length=1024"])` reads the file, applies each override (the value
is parsed as YAML, so `true`, `3e-4` and `[a, b]` get their natural types), and validates once.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from instructune.config.schema import Config


class ConfigError(ValueError):
    """A config that can't be used; the message names the file, key path, value and the fix."""


# The sections each config-driven command needs (`load_config(require=...)`): the CLI checks them
# before running, the studio before launching.
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "validate": (),
    "prepare": ("data",),
    "train": ("data",),
    "eval": ("eval",),
    "build": ("build",),
    "synthesize": ("synthesize",),
}


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    require: Iterable[str] = (),
) -> Config:
    """Load, override and validate a config; `require` names sections a command needs."""
    source = str(path) if path is not None else "<defaults>"
    raw = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        _apply_override(raw, item)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, raw)) from None
    for section in require:
        if getattr(cfg, section) is None:
            raise ConfigError(f"{source}: this command needs a `{section}:` section")
    return cfg


MAX_YAML_VALUES = 100_000
"""Most values (scalars, lists, mappings) a YAML file may hold once its aliases are expanded:
far more than any config, far fewer than an alias bomb ("billion laughs") needs."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{self.name}: key {key!r} appears twice in one mapping (lines {seen[key]} and "
                    f"{line}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str, name: str) -> Any:
    """`yaml.safe_load` that errors on duplicate keys; `name` is used in messages."""
    loader = _UniqueKeyLoader(text)
    loader.name = name
    try:
        node = loader.get_single_node()  # type: ignore[no-untyped-call]
        if node is None:
            return None
        _check_expansion(node, name)
        return loader.construct_document(node)  # type: ignore[no-untyped-call]
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def _check_expansion(root: yaml.Node, name: str) -> None:
    """Refuse a document whose aliases expand to more than `MAX_YAML_VALUES` values.

    An alias is the same node object as its anchor, so the expanded size is computed once per
    distinct node (linear in the file), before anything is built: the loader shares aliased
    objects, but validation and error messages would walk (and copy) every expanded value.
    """
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes or (not children_done and id(node) in entered):
            continue
        children = _children(node)
        if not children_done and children:
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        # a recursive alias (`&a [*a]`) leaves a child unsized here; the constructor reports it
        sizes[id(node)] = 1 + sum(sizes.get(id(child), 1) for child in children)
        if sizes[id(node)] > MAX_YAML_VALUES:
            raise ConfigError(
                f"{name}: its YAML aliases (*name) expand to more than {MAX_YAML_VALUES} values "
                "(an alias bomb?); write the values out instead of nesting aliases"
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = safe_load_unique(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(err)}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    return raw


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` into the nested dict; numeric parts index lists (`data.train.0.path=x`)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    try:
        value = safe_load_unique(text, f"override {item!r}") if text else None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML: {_one_line(err)}"
        ) from None
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            node = node[_list_index(node, part, key)]
        else:
            if node.get(part) is None:
                node[part] = [] if nxt.isdigit() else {}
            node = node[part]
        if not isinstance(node, dict | list):
            where = ".".join(parts[: i + 1])
            raise ConfigError(
                f"override {item!r}: {where} is a value ({node!r}), not a section with keys; "
                f"set it directly, e.g. {where}=..."
            )
    last = parts[-1]
    if isinstance(node, list):
        index = int(last)
        if index == len(node):
            node.append(value)
        else:
            node[_list_index(node, last, key)] = value
    else:
        node[last] = value


def _one_line(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message (problem, context, a caret drawing) as one line."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def _list_index(node: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {key!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def format_validation_error(err: ValidationError, source: str, raw: dict[str, Any]) -> str:
    """One line per problem: `key.path: message (got value)` plus close matches for typos."""
    lines = [f"invalid config {source}:"]
    for problem in err.errors():
        loc = ".".join(str(p) for p in problem["loc"]) or "<top level>"
        msg = problem["msg"]
        if problem["type"] == "extra_forbidden":
            parent_loc, name = problem["loc"][:-1], str(problem["loc"][-1])
            allowed = _allowed_keys(parent_loc)
            guess = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            lines.append(f"  {loc}: unknown key{hint} (allowed: {', '.join(allowed)})")
            continue
        got = problem.get("input")
        shown = "" if isinstance(got, dict) else f" (got {_short_repr(got)})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def _short_repr(value: Any) -> str:
    """A value cut short for a message: a long list or text is not the point of the error."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring = 2, 5, 5, 80
    return short.repr(value)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found by walking `loc` from Config (list indices skipped)."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        inner = _model_of(field.annotation)
        if inner is None:
            return []
        model = inner
    return sorted(model.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, as written into every run's output directory."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
