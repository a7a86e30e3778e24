"""The one message parser (`data.messages`): every entry point reads a conversation the same way,
tools and tool calls reach the template (or the system prompt), tool results are never trained,
and reasoning is trained as the template renders it (or dropped with `data.reasoning: drop`).

Real chat templates (Qwen2.5, Qwen3, Llama 3.1) come from tests/fixtures/templates; their
output is compared with transformers' own `apply_chat_template` on the same messages.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from instructune.config import DataConfig, DataSource
from instructune.data.conversation import TOOLS, Conversation, Message, RowError
from instructune.data.formats import FORMATS
from instructune.data.messages import TOOLS_HEADER
from instructune.data.pipeline import prepare_dataset
from instructune.data.preference import rejected_conversation
from instructune.data.split import dedup
from instructune.data.templates import Template, compile_template
from instructune.data.tokenize import encode_conversations
from instructune.inference.engine import Engine
from instructune.inference.generate import prompt_conversation
from instructune.inference.openai_api import ChatRequest
from instructune.models.labels import IGNORE_INDEX

from ..tiny import CHATML_TEMPLATE, tiny_llama, tiny_tokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "templates"
QWEN25 = "Qwen-Qwen2.5-7B-Instruct"
QWEN3 = "Qwen-Qwen3-0.6B"
LLAMA31 = "meta-llama-Llama-3.1-8B-Instruct"
LLAMA_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"]

TOOLS_LIST = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}
# One conversation in OpenAI form: content parts, a tool call (arguments as a JSON string, as
# OpenAI sends them), its result, and the final answer.
OPENAI = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in"}, {"type": "text", "text": "Paris?"}],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "content": "18C, sunny"},
    {"role": "assistant", "content": "It is 18C and sunny."},
]
# The same conversation as LLaMA-Factory's ShareGPT (glaive) rows write it.
SHAREGPT = {
    "conversations": [
        {"from": "human", "value": "Weather in\nParis?"},
        {"from": "function_call", "value": json.dumps(CALL)},
        {"from": "observation", "value": "18C, sunny"},
        {"from": "gpt", "value": "It is 18C and sunny."},
    ],
    "system": "Be brief.",
    "tools": json.dumps(TOOLS_LIST),
}


def _template(name: str, tok: Any) -> Template:
    source = CHATML_TEMPLATE if name == "chatml" else (FIXTURES / f"{name}.jinja").read_text()
    return compile_template(name, source, tok)


def _tokenizer(name: str) -> Any:
    tok = tiny_tokenizer()
    if name == LLAMA31:
        tok.add_special_tokens({"additional_special_tokens": LLAMA_SPECIALS})
    return tok


def _hf_render(tok: Any, name: str, messages: list[dict[str, Any]], **kw: Any) -> str:
    """transformers' own render of OpenAI messages (arguments as objects, parts joined)."""
    hf = copy.deepcopy(messages)
    for m in hf:
        if isinstance(m["content"], list):
            m["content"] = "\n".join(p["text"] for p in m["content"])
        m["content"] = m["content"] or ""
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    tok = copy.deepcopy(tok)
    tok.chat_template = (FIXTURES / f"{name}.jinja").read_text()
    return str(tok.apply_chat_template(hf, tokenize=False, **kw))


@pytest.mark.parametrize("name", [QWEN25, QWEN3, LLAMA31, "chatml"])
def test_every_entry_point_renders_the_same_prompt(name: str) -> None:
    """Training (messages, sharegpt and preference rows), `generate` rows and the OpenAI server
    read the same conversation into the same prompt, byte for byte, and training's tokens for
    the answer's prompt are exactly that prompt's tokens."""
    tok = _tokenizer(name)
    template = _template(name, tok)
    prompt = OPENAI[:-1]

    def render(messages: list[Message], meta: dict[str, str] | None) -> str:
        return template.render(messages, add_generation_prompt=True, meta=meta)

    messages_row = FORMATS["messages"].to_conversation(
        {"messages": OPENAI, "tools": TOOLS_LIST}, "m:1"
    )
    sharegpt_row = FORMATS["sharegpt"].to_conversation(SHAREGPT, "s:1")
    pref = {
        "messages": prompt,
        "chosen": OPENAI[-1]["content"],
        "rejected": "No idea.",
        "tools": TOOLS_LIST,
    }
    pref_row = FORMATS["preference"].to_conversation(pref, "p:1")
    generate_row = prompt_conversation({"messages": prompt, "tools": TOOLS_LIST}, "g:1")
    request = ChatRequest.model_validate({"model": "m", "messages": prompt, "tools": TOOLS_LIST})
    engine = Engine(tiny_llama(len(tok)), tok, template)

    expected = render(messages_row.messages[:-1], messages_row.meta)
    assert "Weather in\nParis?" in expected  # content parts joined with a newline, everywhere
    assert "get_weather" in expected.split("Paris?")[0]  # the tool definitions come first
    assert render(sharegpt_row.messages[:-1], sharegpt_row.meta) == expected
    assert render(pref_row.messages[:-1], pref_row.meta) == expected
    assert render(generate_row.messages, generate_row.meta) == expected
    assert engine.render(request.conversation(), tools=request.tools_json()) == expected
    assert engine.render(prompt, tools=request.tools_json()) == expected  # dict messages

    cfg = DataConfig(train=[DataSource(path="x")], train_on_turns="last", max_length=2048)
    example = encode_conversations([messages_row], template, tok, cfg).examples[0]
    start = int(example.spans[-1, 0])
    assert (
        example.input_ids[:start].tolist() == tok(expected, add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize("name", [QWEN25, QWEN3, LLAMA31])
def test_tools_and_tool_calls_render_as_transformers_renders_them(name: str) -> None:
    """Templates that take `tools` and `tool_calls` get them structured: our render equals
    `apply_chat_template(messages, tools=...)` for the whole conversation and the prompt."""
    tok = _tokenizer(name)
    template = _template(name, tok)
    assert {"tools", "tool_calls"} <= template.uses
    conv = FORMATS["messages"].to_conversation({"messages": OPENAI, "tools": TOOLS_LIST}, "m:1")
    assert template.render(conv.messages, meta=conv.meta) == _hf_render(
        tok, name, OPENAI, tools=TOOLS_LIST
    )
    assert template.render(conv.messages[:-1], True, conv.meta) == _hf_render(
        tok, name, OPENAI[:-1], tools=TOOLS_LIST, add_generation_prompt=True
    )


def _trained(tok: Any, ids: Any, labels: Any) -> list[str]:
    """The trained runs of tokens, each decoded."""
    runs: list[list[int]] = []
    previous = False
    for i, y in zip(ids.tolist(), labels.tolist(), strict=True):
        if y != IGNORE_INDEX:
            if not previous:
                runs.append([])
            runs[-1].append(i)
        previous = y != IGNORE_INDEX
    return [tok.decode(run) for run in runs]


def test_glaive_sharegpt_tools_reach_the_prompt_and_only_assistant_turns_train(
    tmp_path: Path,
) -> None:
    """A LLaMA-Factory/glaive row's `tools` column is in the prompt (it was dropped before), the
    function call is trained like any assistant text, the observation never is."""
    tok = _tokenizer(QWEN25)
    data = tmp_path / "glaive.jsonl"
    data.write_text(json.dumps(SHAREGPT) + "\n", encoding="utf-8")
    cfg = DataConfig(
        train=[DataSource(path=str(data))],
        template=str(FIXTURES / f"{QWEN25}.jinja"),
        max_length=2048,
        packing=False,
    )
    example = prepare_dataset(cfg, tok).train[0]
    text = tok.decode(example.input_ids.tolist())
    assert '"description": "The weather in a city"' in text and "<tools>" in text
    trained = _trained(tok, example.input_ids, example.labels)
    call = f"<tool_call>\n{json.dumps(CALL)}\n</tool_call><|im_end|>"
    assert trained == [call, "It is 18C and sunny.<|im_end|>"]


def test_templates_without_tools_get_them_in_the_system_prompt() -> None:
    """A template that does not use `tools`/`tool_calls` (a plain ChatML one) gets the tool
    definitions appended to the system prompt and each call as a JSON line, trained."""
    tok = tiny_tokenizer()
    template = _template("chatml", tok)
    conv = FORMATS["sharegpt"].to_conversation(SHAREGPT, "s:1")
    text = template.render(conv.messages, meta=conv.meta)
    tools_line = json.dumps(TOOLS_LIST[0])
    assert text.startswith(
        f"<|im_start|>system\nBe brief.\n\n{TOOLS_HEADER}\n{tools_line}<|im_end|>"
    )
    assert f"<|im_start|>assistant\n{json.dumps(CALL)}<|im_end|>" in text
    assert "<|im_start|>tool\n18C, sunny<|im_end|>" in text
    cfg = DataConfig(train=[DataSource(path="x")], max_length=2048)
    ex = encode_conversations([conv], template, tok, cfg).examples[0]
    trained = _trained(tok, ex.input_ids, ex.labels)
    assert trained == [f"{json.dumps(CALL)}<|im_end|>", "It is 18C and sunny.<|im_end|>"]

    # no system turn: one is added holding the tools (the render rule used by every path)
    no_system = {**SHAREGPT, "system": ""}
    conv = FORMATS["sharegpt"].to_conversation(no_system, "s:2")
    assert template.render(conv.messages[:1], meta=conv.meta).startswith(
        f"<|im_start|>system\n{TOOLS_HEADER}\n{tools_line}<|im_end|>\n<|im_start|>user\n"
    )


def test_dedup_key_includes_tools_and_tool_calls() -> None:
    """Rows that differ only in their tools (or a call's arguments) are not duplicates."""
    other_tools = [{"name": "get_time", "parameters": {"type": "object", "properties": {}}}]
    rows = [SHAREGPT, {**SHAREGPT, "tools": json.dumps(other_tools)}, dict(SHAREGPT)]
    other_call = copy.deepcopy(SHAREGPT)
    other_call["conversations"][1]["value"] = json.dumps({**CALL, "arguments": {"city": "Rome"}})
    rows.append(other_call)
    convs = [FORMATS["sharegpt"].to_conversation(r, f"s:{i}") for i, r in enumerate(rows)]
    kept, dropped = dedup(convs)
    assert [c.source for c in kept] == ["s:0", "s:1", "s:3"] and len(dropped) == 1


@pytest.mark.parametrize(
    ("row", "problem", "served"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "unsupported content part 'image_url'",
            r"messages\.0\.content\.list\[ContentPart\]\.0\.type\n  Input should be 'text'",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}]},
            r"bad tool call in messages\[0\]\.tool_calls\[0\]",
            r"messages\.0\.tool_calls\.0\.function\.name",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}], "tools": "[{"},
            "bad JSON in 'tools'",
            "tools\n  Input should be a valid list",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}], "tools": [{"description": "x"}]},
            r"bad tool in tools\[0\]",
            r"bad tool in tools\[0\]",
        ),
    ],
)
def test_bad_messages_name_the_field(row: dict[str, Any], problem: str, served: str) -> None:
    """A data row fails naming file, line and field; a request is a validation error (a 400)
    naming the field."""
    with pytest.raises(RowError, match=f"m.jsonl:3: {problem}"):
        FORMATS["messages"].to_conversation(row, "m.jsonl:3")
    with pytest.raises(ValidationError, match=served):
        ChatRequest.model_validate({"model": "m", **row})


REASONING = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4.", "reasoning_content": "Two plus two is four."},
]


def test_reasoning_content_renders_as_transformers_and_is_trained() -> None:
    tok = tiny_tokenizer()
    template = _template(QWEN3, tok)
    conv = FORMATS["messages"].to_conversation({"messages": REASONING}, "r:1")
    assert template.render(conv.messages, meta=None) == _hf_render(tok, QWEN3, REASONING)
    cfg = DataConfig(train=[DataSource(path="x")], max_length=2048)
    ex = encode_conversations([conv], template, tok, cfg).examples[0]
    trained = _trained(tok, ex.input_ids, ex.labels)
    assert trained == ["<think>\nTwo plus two is four.\n</think>\n\n4.<|im_end|>"]


@pytest.mark.parametrize(
    ("name", "keep", "drop"),
    [
        # Qwen3 renders the last turn's reasoning block even when it is empty
        (
            QWEN3,
            "<think>\nTwo plus two is four.\n</think>\n\n4.<|im_end|>",
            "<think>\n\n</think>\n\n4.<|im_end|>",
        ),
        # a template without reasoning: it goes before the answer in <think> tags, or nowhere
        ("chatml", "<think>\nTwo plus two is four.\n</think>\n\n4.<|im_end|>", "4.<|im_end|>"),
    ],
)
@pytest.mark.parametrize("inline", [False, True])
def test_data_reasoning_keep_or_drop(
    tmp_path: Path, name: str, keep: str, drop: str, inline: bool
) -> None:
    """`data.reasoning`: reasoning given as `reasoning_content` or as `<think>` in the text is
    trained as the template renders it (`keep`) or removed and counted (`drop`)."""
    tok = tiny_tokenizer()
    messages = copy.deepcopy(REASONING)
    if inline:
        del messages[1]["reasoning_content"]
        messages[1]["content"] = "<think>\nTwo plus two is four.\n</think>\n\n4."
    data = tmp_path / "r.jsonl"
    data.write_text(json.dumps({"messages": messages}) + "\n", encoding="utf-8")
    template = str(FIXTURES / f"{name}.jinja") if name != "chatml" else "chat"
    for mode, want in (("keep", keep), ("drop", drop)):
        cfg = DataConfig(
            train=[DataSource(path=str(data))], template=template, reasoning=mode, packing=False
        )
        prepared = prepare_dataset(cfg, tok)
        ex = prepared.train[0]
        assert _trained(tok, ex.input_ids, ex.labels) == [want]
        counted = prepared.sources[0].adjusted.get("reasoning_dropped", 0)
        assert counted == (1 if mode == "drop" else 0)


def test_name_and_tool_call_ids_reach_templates_that_read_them() -> None:
    tok = tiny_tokenizer()
    source = (
        "{% for m in messages %}{{ m.role }}:{{ m.name }}:{{ m.tool_call_id }}:"
        "{% for c in m.tool_calls or [] %}{{ c.id }}={{ c.function.arguments.city }}{% endfor %};"
        "{% endfor %}"
    )
    template = compile_template("ids.jinja", source, tok)
    messages = [
        {"role": "user", "content": "hi", "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": CALL}]},
        {"role": "tool", "content": "18C", "tool_call_id": "c1", "name": "get_weather"},
    ]
    conv = prompt_conversation({"messages": messages}, "g:1")
    assert template.render(conv.messages) == "user:ann::;assistant:::c1=Paris;tool:get_weather:c1:;"


def test_tool_results_are_never_trained_even_with_train_on_turns_all() -> None:
    tok = tiny_tokenizer()
    template = _template(QWEN25, tok)
    conv = Conversation(
        [
            Message("user", "q"),
            FORMATS["messages"].to_conversation({"messages": OPENAI}, "m:1").messages[2],
            Message("tool", "RESULT"),
            Message("assistant", "done"),
        ],
        "t:1",
        meta={TOOLS: json.dumps(TOOLS_LIST)},
    )
    cfg = DataConfig(train=[DataSource(path="x")], max_length=2048)
    ex = encode_conversations([conv], template, tok, cfg).examples[0]
    trained = "".join(_trained(tok, ex.input_ids, ex.labels))
    assert "RESULT" in tok.decode(ex.input_ids.tolist()) and "RESULT" not in trained
    assert "get_weather" in trained


def test_only_a_string_starting_with_the_hh_marker_is_a_transcript() -> None:
    quoting = "The log said:\n\nHuman: hello\n\nAssistant: hi"
    row = {"prompt": "What did the log say?", "chosen": quoting, "rejected": "Nothing."}
    conv = FORMATS["preference"].to_conversation(row, "p:1")
    assert conv.messages == [
        Message("user", "What did the log say?"),
        Message("assistant", quoting),
    ]
    hh = {"chosen": "\n\nHuman: Q?\n\nAssistant: A.", "rejected": "\n\nHuman: Q?\n\nAssistant: B."}
    conv = FORMATS["preference"].to_conversation(hh, "p:2")
    assert conv.messages == [Message("user", "Q?"), Message("assistant", "A.")]
    assert rejected_conversation(conv).messages[-1] == Message("assistant", "B.")


def test_a_rejected_answer_keeps_its_tool_calls_and_reasoning() -> None:
    prompt = [{"role": "user", "content": "Weather in Paris?"}]
    call = {"role": "assistant", "content": None, "tool_calls": [{"function": CALL}]}
    guess = {"role": "assistant", "content": "Sunny.", "reasoning_content": "A guess."}
    row = {"chosen": [*prompt, call], "rejected": [*prompt, guess], "tools": TOOLS_LIST}
    conv = FORMATS["preference"].to_conversation(row, "p:1")
    assert conv.messages[-1].tool_calls[0].name == "get_weather"
    rejected = rejected_conversation(conv).messages[-1]
    assert (rejected.content, rejected.reasoning) == ("Sunny.", "A guess.")
    assert json.loads(conv.meta[TOOLS]) == TOOLS_LIST


def test_legacy_function_call_reads_as_a_tool_call() -> None:
    legacy = {
        "role": "assistant",
        "content": None,
        "function_call": {**CALL, "arguments": '{"city": "Paris"}'},
    }
    legacy_conv = prompt_conversation({"messages": [OPENAI[1], legacy]}, "g:1")
    conv = prompt_conversation({"messages": OPENAI[1:3]}, "g:2")
    assert legacy_conv.messages == conv.messages
    assert conv.messages[1].tool_calls[0].arguments == json.dumps(CALL["arguments"])
