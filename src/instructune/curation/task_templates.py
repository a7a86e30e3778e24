"""Task templates for `build` (labelled rows → instruction and answer): config lists, YAML/JSON
files, promptsource `|||` texts, FLAN JSON, built-ins.

Every kind compiles to a `BuildTemplate` rendered in the same immutable Jinja sandbox as chat
templates (`instructune.data.templates`). Row values enter only as context variables, so a row
holding `{{ 7 * 7 }}` or `{answer}` renders literally: data is never parsed as a template.

FLAN's `{field}` placeholders become `{{ field }}`; its literal text is emitted as Jinja string
literals wherever it contains Jinja syntax, so FLAN text can't be misread either.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from instructune.config.build import BuildSource, FlanTemplates, TemplateSpec
from instructune.curation.builtin import BUILTIN_SETS
from instructune.data.readers import read_json_file
from instructune.data.template_sandbox import sandbox_environment
from instructune.data.templates import TemplateError

__all__ = ["SPECIAL", "BuildTemplate", "load_templates"]

SPECIAL = frozenset({"answer", "options_", "answer_choices"})
"""Placeholders the builder fills; every other placeholder names a field of the row."""
_ANSWERISH = frozenset({"answer", "answer_choices"})
_SPLIT = "|||"


@dataclass(frozen=True)
class BuildTemplate:
    id: str
    text: str
    """The template's source text (hashed into the lineage)."""
    prompt: Any
    target: Any | None
    """None for promptsource templates: `prompt` renders both sides around `|||`."""
    answer_choices: Any | None
    variables: frozenset[str]
    inverted: bool

    def fields(self) -> frozenset[str]:
        return self.variables - SPECIAL

    def choices(self, context: Mapping[str, Any]) -> list[str] | None:
        if self.answer_choices is None:
            return None
        return [c.strip() for c in self.answer_choices.render(context).split(_SPLIT)]

    def render(self, context: Mapping[str, Any]) -> tuple[str, str]:
        """(prompt, target), both stripped; the caller checks neither is empty."""
        self.prompt.environment.new_render()  # one loop budget per row, as for chat templates
        if self.target is None:
            text = self.prompt.render(context)
            if _SPLIT not in text:
                raise TemplateError(
                    f"template {self.id!r} rendered no '|||' between prompt and target"
                )
            prompt, target = text.split(_SPLIT, 1)
            return prompt.strip(), target.strip()
        return self.prompt.render(context).strip(), self.target.render(context).strip()


def load_templates(source: BuildSource) -> list[BuildTemplate]:
    """The source's templates, compiled; TemplateError names the template and the problem."""
    spec = source.templates
    if isinstance(spec, FlanTemplates):
        return _flan(spec, source)
    if isinstance(spec, str):
        specs = _specs_from_name(spec, source.name)
    elif spec is None:
        return []
    else:
        specs = list(spec)
    if not specs:
        raise TemplateError(f"source {source.name!r}: the template list is empty")
    return [
        _compile(s, f"{source.name}/{i}", source.label is not None) for i, s in enumerate(specs)
    ]


def template_hash(templates: list[BuildTemplate]) -> str:
    digest = hashlib.sha256()
    for t in templates:
        digest.update(f"{t.id}\x1f{t.text}\x1e".encode())
    return digest.hexdigest()


def _specs_from_name(spec: str, source: str) -> list[TemplateSpec]:
    if spec in BUILTIN_SETS:
        return [TemplateSpec.model_validate(t) for t in BUILTIN_SETS[spec]]
    path = Path(spec)
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise TemplateError(
            f"source {source!r}: templates {spec!r} is neither a built-in set "
            f"({', '.join(sorted(BUILTIN_SETS))}) nor a .yaml/.json file"
        )
    if not path.is_file():
        raise FileNotFoundError(f"source {source!r}: template file {spec} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise TemplateError(f"{spec}: not valid YAML/JSON: {e}") from None
    if isinstance(raw, dict) and isinstance(raw.get("templates"), list):
        raw = raw["templates"]
    if not isinstance(raw, list):
        raise TemplateError(
            f"{spec}: expected a list of templates ({{prompt, target}} or {{jinja}})"
        )
    specs = []
    for i, item in enumerate(raw):
        try:
            specs.append(TemplateSpec.model_validate(item))
        except ValidationError as e:
            problem = "; ".join(
                f"{'.'.join(map(str, p['loc'])) or 'item'}: {p['msg']}" for p in e.errors()
            )
            raise TemplateError(f"{spec}: template {i}: {problem}") from None
    return specs


def _compile(spec: TemplateSpec, default_id: str, has_label: bool) -> BuildTemplate:
    import jinja2
    import jinja2.meta

    env = _sandbox()
    name = spec.id or default_id
    parts = {"prompt": spec.prompt, "target": spec.target, "jinja": spec.jinja}
    parts["answer_choices"] = spec.answer_choices
    compiled: dict[str, Any] = {}
    variables: dict[str, set[str]] = {}
    for key, text in parts.items():
        if text is None:
            continue
        try:
            ast = env.parse(text)
            compiled[key] = env.from_string(text)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"template {name!r} ({key}): Jinja syntax error: {e}") from None
        variables[key] = set(jinja2.meta.find_undeclared_variables(ast))
    all_vars = frozenset(set().union(*variables.values()))
    if spec.inverted is not None:
        inverted = spec.inverted
    elif spec.jinja is not None:
        inverted = False  # promptsource targets share one text with the prompt: can't tell
    else:
        inverted = has_label and not (variables["target"] & (_ANSWERISH | {"label"}))
    text = "\x1f".join(f"{k}={v}" for k, v in parts.items() if v is not None)
    return BuildTemplate(
        id=name,
        text=text,
        prompt=compiled.get("prompt", compiled.get("jinja")),
        target=compiled.get("target"),
        answer_choices=compiled.get("answer_choices"),
        variables=all_vars,
        inverted=inverted,
    )


@functools.cache
def _sandbox() -> Any:
    """One sandbox for every build template (created on first use, not at import)."""
    return sandbox_environment()


# ----------------------------------------------------------------------------- FLAN

_FLAN_FIELD = re.compile(r"\{(\w+)\}")
_JINJA_SYNTAX = ("{{", "}}", "{%", "%}", "{#", "#}")


def flan_to_jinja(text: str) -> str:
    """`{field}` → `{{ field }}`; literal text with Jinja syntax becomes a string literal."""
    out: list[str] = []
    pos = 0
    for match in _FLAN_FIELD.finditer(text):
        out.append(_literal(text[pos : match.start()]))
        out.append("{{ " + match.group(1) + " }}")
        pos = match.end()
    out.append(_literal(text[pos:]))
    return "".join(out)


def _literal(text: str) -> str:
    if any(s in text for s in _JINJA_SYNTAX) or "{" in text or "}" in text:
        return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"
    return text


def _flan(spec: FlanTemplates, source: BuildSource) -> list[BuildTemplate]:
    path = Path(spec.flan)
    if not path.is_file():
        raise FileNotFoundError(
            f"source {source.name!r}: FLAN templates file {spec.flan} does not exist"
        )
    tasks = read_json_file(path, TemplateError)
    if not isinstance(tasks, dict):
        raise TemplateError(f"{spec.flan}: expected {{task: [[input, target], ...]}}")
    if spec.task not in tasks:
        close = difflib.get_close_matches(spec.task, list(tasks), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TemplateError(
            f"source {source.name!r}: unknown FLAN task {spec.task!r} in {spec.flan}{hint} "
            f"(tasks: {', '.join(sorted(tasks))})"
        )
    pairs = tasks[spec.task]
    if not isinstance(pairs, list) or not pairs:
        raise TemplateError(f"{spec.flan}: task {spec.task!r} has no templates")
    for i, pair in enumerate(pairs):
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise TemplateError(f"{spec.flan}: {spec.task}[{i}] is not an [input, target] pair")
    # FLAN inversions: a target that isn't the task's usual one ({answer} for classifiers,
    # {summary} for summarizers...) is an input field written from the others.
    main = Counter(frozenset(_FLAN_FIELD.findall(t)) for _, t in pairs).most_common(1)[0][0]
    return [
        _compile(
            TemplateSpec(
                id=f"{spec.task}/{i}",
                prompt=flan_to_jinja(prompt),
                target=flan_to_jinja(target),
                inverted=frozenset(_FLAN_FIELD.findall(target)) != main,
            ),
            f"{spec.task}/{i}",
            source.label is not None,
        )
        for i, (prompt, target) in enumerate(pairs)
    ]
