"""Prompt templates: a conversation's messages → the exact text the model is trained on.

Three kinds, all Jinja rendered in an immutable sandbox the way `apply_chat_template` does
(trim_blocks, lstrip_blocks, `raise_exception`, special tokens in the context):

- `chat`: the tokenizer's own `chat_template`, so training text matches what serving sends.
- `alpaca`: the Stanford Alpaca recipe, character for character (see `ALPACA_TEMPLATE`), and
  `alpaca_nl`, the same with a newline after "### Response:" (see `ALPACA_NL_TEMPLATE`).
- a path to a `.jinja`/`.j2` file rendering `messages` like a chat template.

A `{% generation %}` block is accepted and rendered as plain text: trained spans come from rendering
prefixes (see `instructune.data.tokenize`), never from markers a template may or may not have.

This module is imported lazily by config validation, so it imports jinja2 only when a template is
compiled.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructune.data.conversation import TOOLS, Message
from instructune.data.messages import message_dicts, with_tools

if TYPE_CHECKING:
    import jinja2

_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)
_PREAMBLE_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request."
)

# How instruction/input are recovered: alpaca-format rows carry `meta["instruction"]` and
# `meta["input"]` (the user message joins them, which would not be the recipe's text), so the first
# user turn renders from meta when meta has an instruction; any other user turn renders its content
# as the instruction, without an input block. A system message replaces the preamble sentence.
# Multi-turn conversations repeat the Instruction/Response block. The response is the output
# followed directly by eos, exactly as Stanford Alpaca's `target = f"{output}{eos_token}"`.
ALPACA_TEMPLATE = (
    "{%- set ns = namespace(first_user=true) -%}"
    "{%- set from_meta = meta is not none and meta.get('instruction') is not none -%}"
    "{%- set first_input = (meta.get('input') or '') if from_meta else '' -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}{{ messages[0]['content'] }}"
    "{%- elif first_input -%}{{ preamble_input }}"
    "{%- else -%}{{ preamble_no_input }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if ns.first_user and from_meta -%}"
    "{{ '\\n\\n### Instruction:\\n' + meta['instruction'] }}"
    "{%- if first_input -%}{{ '\\n\\n### Input:\\n' + first_input }}{%- endif -%}"
    "{%- else -%}{{ '\\n\\n### Instruction:\\n' + message['content'] }}{%- endif -%}"
    "{%- set ns.first_user = false -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '\\n\\n### Response:' + message['content'] + eos_token }}"
    "{%- elif message['role'] == 'system' -%}"
    "{%- if not loop.first -%}"
    "{{ raise_exception('alpaca template: a system message is only allowed first') }}"
    "{%- endif -%}"
    "{%- else -%}"
    "{{ raise_exception('the alpaca template has no place for role ' + message['role'] + "
    "'; use data.template: chat for tool turns') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\\n\\n### Response:' }}{%- endif -%}"
)

# Responses whose first characters merge with the ":" of "### Response:" into one token
# (`/usr/bin`, `:)`, `// comment`) are trained after the prompt's own tokens (`tokenize`'s boundary
# turns); the common template fix is a newline after the marker, so the prompt ends at a token
# boundary whatever the response starts with.
ALPACA_NL_TEMPLATE = ALPACA_TEMPLATE.replace("### Response:'", "### Response:\\n'")

# `text`-format rows (one assistant message, no prompt): the whole text plus eos is the response.
RAW_TEMPLATE = "{%- for message in messages -%}{{ message['content'] + eos_token }}{%- endfor -%}"


END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>")
"""Tokens that end an assistant turn besides the tokenizer's eos (Llama 3, Gemma, Phi-3)."""


class TemplateError(ValueError):
    """A template that can't be loaded or rendered; the message says which and how to fix it."""


class TemplateMismatch(ValueError):
    """A prefix render (or its tokens) is not a prefix of the full conversation's render."""

    def __init__(self, template: str, source: str, problem: str) -> None:
        super().__init__(f"template {template!r} at {source}: {problem}")
        self.template = template
        self.source = source
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template. `render` is what tokenization and generation both call."""

    name: str
    source_text: str
    _compiled: jinja2.Template = field(repr=False)
    _context: Mapping[str, Any] = field(repr=False)
    end_of_turn: tuple[str, ...] = ()
    """The texts of the tokenizer's end-of-turn tokens (eos included) that this template writes."""
    fold_system: bool = False
    """The template raises on a system message (Gemma 2): it is rendered as the first user
    message's opening paragraph instead, the way Gemma 3's own template places it."""

    def turn_end(self, text: str, start: int) -> int:
        """End of the first end-of-turn token in `text` at or after `start`; else `len(text)`.

        A turn rendered last may carry text after its end-of-turn token that the same turn does
        not have inside a longer conversation (Phi-3.5 appends eos); only the text through the
        end-of-turn token is trained, so only that has to agree."""
        found = [j + len(t) for t in self.end_of_turn if (j := text.find(t, start)) >= 0]
        return min(found, default=len(text))

    @property
    def uses(self) -> frozenset[str]:
        """Names the source references (variables, attributes, constant subscripts): whether it
        takes `tools`, renders `tool_calls` or `reasoning_content` (see `referenced`)."""
        return referenced(self.source_text)

    def message_dicts(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """The messages as this template takes them (`data.messages.message_dicts`)."""
        return message_dicts(messages, self.uses)

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        meta: Mapping[str, str] | None = None,
    ) -> str:
        return self.render_dicts(self.message_dicts(messages), add_generation_prompt, meta)

    def render_dicts(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        meta: Mapping[str, str] | None = None,
    ) -> str:
        """`render` on already-converted messages (the tokenizer's hot loop renders prefixes).

        The row's tools (`meta["tools"]`) are given as `tools` or put in the system prompt
        (`data.messages.with_tools`).

        What `jinja2.Template.render` does, minus its per-call merge of globals into the context
        (`_context` holds them already): same sandbox, same output, same exceptions.
        """
        messages, tools = with_tools(messages, (meta or {}).get(TOOLS), self.uses)
        if self.fold_system:
            messages = _fold_system(messages)
        compiled = self._compiled
        compiled.environment.new_render()  # type: ignore[attr-defined]  # a fresh loop budget
        ctx = compiled.new_context(
            {
                **self._context,
                "messages": messages,
                "tools": tools,  # None without tools, as transformers passes them
                "documents": None,
                "add_generation_prompt": add_generation_prompt,
                "meta": meta,
            },
            shared=True,
        )
        try:
            return compiled.environment.concat(compiled.root_render_func(ctx))  # type: ignore[attr-defined,no-any-return]
        except Exception:
            compiled.environment.handle_exception()
            raise  # unreachable: handle_exception re-raises


def _chat(tokenizer: Any) -> tuple[str, str]:
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, dict):  # tokenizers with named templates keep the chat one as default
        source = source.get("default")
    if not source:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise TemplateError(
            f"the tokenizer {name!r} has no chat_template; set `data.template: alpaca` or give a "
            "path to a .jinja file"
        )
    return "chat", str(source)


def _alpaca(tokenizer: Any) -> tuple[str, str]:
    return "alpaca", ALPACA_TEMPLATE


def _alpaca_nl(tokenizer: Any) -> tuple[str, str]:
    return "alpaca_nl", ALPACA_NL_TEMPLATE


TEMPLATES: dict[str, Callable[[Any], tuple[str, str]]] = {
    "chat": _chat,
    "alpaca": _alpaca,
    "alpaca_nl": _alpaca_nl,
}
"""Registry of builtin templates: name → (tokenizer → (name, Jinja source))."""


def load_template(spec: str, tokenizer: Any) -> Template:
    """A registry name (`chat`, `alpaca`) or a path to a `.jinja`/`.j2` file, compiled once."""
    if spec in TEMPLATES:
        name, source = TEMPLATES[spec](tokenizer)
    elif spec.endswith((".jinja", ".j2")):
        path = Path(spec)
        if not path.is_file():
            raise TemplateError(f"template file {spec!r} does not exist")
        name, source = str(path), path.read_text(encoding="utf-8")
    else:
        raise TemplateError(
            f"unknown template {spec!r}; choose one of {sorted(TEMPLATES)} "
            "or a path to a .jinja file"
        )
    return compile_template(name, source, tokenizer)


def end_of_turn_ids(tokenizer: Any) -> frozenset[int]:
    """eos plus the known end-of-turn tokens this vocabulary has."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a few lookups, not a copy of the whole vocabulary
        found = (backend.token_to_id(t) for t in END_OF_TURN_TOKENS)
        ids.update(i for i in found if i is not None)
    else:
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return frozenset(ids)


@functools.lru_cache(maxsize=32)
def referenced(source: str) -> frozenset[str]:
    """Every name, attribute and constant subscript in a template's source: `tools` when it reads
    the variable, `tool_calls` for `message.tool_calls` or `message['tool_calls']`, ...
    (parsed once per template text)."""
    from jinja2 import nodes

    from instructune.data.template_sandbox import sandbox_environment

    names: set[str] = set()
    ast = sandbox_environment().parse(source)
    for node in ast.find_all((nodes.Name, nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Name):
            names.add(node.name)
        elif isinstance(node, nodes.Getattr):
            names.add(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            names.add(str(node.arg.value))
    return frozenset(names)


def is_raw_conversation(messages: Sequence[Message]) -> bool:
    """A `text`-format row: one assistant message and no prompt; rendered by `raw_template`."""
    return len(messages) == 1 and messages[0].role == "assistant"


def _fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
        return messages
    first = {**messages[1], "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
    return [first, *messages[2:]]


def _rejects_system(template: Template) -> bool:
    """Renders user/assistant but raises as soon as a system message comes first."""
    import jinja2

    pair = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    try:
        template.render_dicts(pair)
    except Exception:  # a template that needs more than this probe gives: nothing to learn
        return False
    try:
        template.render_dicts([{"role": "system", "content": "s"}, *pair])
    except jinja2.TemplateError:  # what `raise_exception` raises
        return True
    except Exception:
        return False
    return False


def raw_template(tokenizer: Any) -> Template:
    """The template for `text`-format rows: content + eos, no prompt (used whatever `template`)."""
    return compile_template("raw", RAW_TEMPLATE, tokenizer)


def compile_template(name: str, source: str, tokenizer: Any) -> Template:
    """Compile Jinja `source` once, with the tokenizer's special tokens in its context."""
    import jinja2

    from instructune.data.template_sandbox import sandbox_environment

    try:
        compiled = sandbox_environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template {name!r} has a Jinja syntax error: {e}") from e
    context: dict[str, Any] = {
        key: getattr(tokenizer, key, None)
        for key in ("bos_token", "eos_token", "pad_token", "unk_token")
    }
    context.update(preamble_input=_PREAMBLE_INPUT, preamble_no_input=_PREAMBLE_NO_INPUT)
    if "eos_token" in source and not context["eos_token"]:
        raise TemplateError(f"template {name!r} uses eos_token but the tokenizer has none")
    context = {**compiled.globals, **context}  # what render() would merge on every call
    ends = tuple(
        t for t in _end_of_turn_texts(tokenizer) if t in source or t == context["eos_token"]
    )
    template = Template(name, source, compiled, context, ends)
    if _rejects_system(template):
        template = dataclasses.replace(template, fold_system=True)
    return template


def _end_of_turn_texts(tokenizer: Any) -> list[str]:
    """The texts of `end_of_turn_ids(tokenizer)`."""
    ids = sorted(end_of_turn_ids(tokenizer))
    return [t for t in tokenizer.convert_ids_to_tokens(ids) if t]
