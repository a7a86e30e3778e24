"""Every family of the matrix, through the real pipeline from a model folder like a download.

- masks: the trained tokens of each assistant turn are its answer and the template's end-of-turn
  token, exactly once, nothing of header, user or system text;
- serving: the prompt `generate`/`serve` render for that turn tokenizes to exactly the tokens
  training put before the answer, and generation stops at the end-of-turn token;
- loss: what training computes equals the model's own `forward(labels=...)` on the same tokens;
- templates that render history differently from the newest turn: split/rebuilt as documented,
  counted in summary.json.
"""

from __future__ import annotations

from typing import Any

import jinja2
import numpy as np
import pytest
import torch

from instructune.models.labels import IGNORE_INDEX

from .helpers import CONVERSATIONS, SYSTEM, TOOL_CALL, TOOLS, Case

THINK_OPEN = "<think>\n"
EMPTY_THINK = {"qwen3": "<think>\n\n</think>\n\n", "qwen3.5": "\n</think>\n\n"}
"""What a template writes before an answer without reasoning, rendered as the newest turn."""

SPLITS: dict[str, dict[str, int]] = {
    # Qwen3 renders an answer with a (possibly empty) <think> block only after the last user turn
    # (plain, reasoning and the tool call's first answer)
    "qwen3": {"split_rows": 3, "extra_examples": 3},
    # Qwen3.5 too; its generation prompt also opens `<think>\n`, and an answer without reasoning
    # continues `\n</think>`: "\n\n" is one token of the whole text, so those 5 turns are
    # tokenized as tokens(prompt) + tokens(rest), which splits the tool call's row once more
    "qwen3.5": {"split_rows": 3, "extra_examples": 3, "boundary_turns": 5},
    # R1 opens `<think>\n` in the generation prompt and strips reasoning from rendered answers
    "r1-distill-qwen": {"split_rows": 2, "extra_examples": 2, "rebuilt_turns": 5},
    "r1-distill-llama": {"split_rows": 2, "extra_examples": 2, "rebuilt_turns": 5},
    # Mistral writes the system prompt into the last user message only: a generation prompt has
    # it, no rendered answer's context does; the 2 turns after a system prompt are rebuilt
    "mistral": {"split_rows": 1, "extra_examples": 1, "rebuilt_turns": 2},
}
"""Rows each family's template splits (the rest split none): `summary.json["template_splits"]`."""


PROMPT_OPENS_THINK = ("r1-distill-qwen", "r1-distill-llama", "qwen3.5")
"""Families whose generation prompt ends `<think>\n`."""


def expected_answer(family: str, content: str) -> str:
    """The text trained for an answer (its end-of-turn token aside), as the template renders it
    as the newest turn, after the generation prompt."""
    if family in PROMPT_OPENS_THINK and content.startswith(THINK_OPEN):
        return content[len(THINK_OPEN) :]  # the generation prompt wrote it
    if THINK_OPEN not in content:
        return EMPTY_THINK.get(family, "") + content
    return content


def trained_turns(case: Case, name: str) -> list[tuple[Any, int, int]]:
    """(example, start, end) of each trained run of conversation `name`, in order."""
    out = []
    for ex in case.prepared.train:
        if not ex.source.endswith(case.sources[name]):
            continue
        mask = np.concatenate([[False], ex.labels != IGNORE_INDEX, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(mask))
        out.extend((ex, int(lo), int(hi)) for lo, hi in zip(edges[::2], edges[1::2], strict=True))
    return out


def answers(case: Case, name: str) -> list[tuple[int, str]]:
    """(message index, expected trained text) of each assistant turn of `name`."""
    msgs = CONVERSATIONS[name]
    return [
        (i, expected_answer(case.family.name, m["content"]))
        for i, m in enumerate(msgs)
        if m["role"] == "assistant"
    ]


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_trained_tokens_are_each_answer_and_its_end_of_turn(case: Case, name: str) -> None:
    tok = case.tokenizer
    eot = tok.convert_tokens_to_ids(case.family.end_of_turn)
    got = []
    for ex, lo, hi in trained_turns(case, name):
        ids = ex.input_ids[lo:hi].tolist()
        assert ids[-1] == eot and ids.count(eot) == 1, tok.convert_ids_to_tokens(ids)
        got.append(tok.decode(ids[:-1]))
    assert got == [text for _, text in answers(case, name)]


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_serving_prompt_is_the_training_prefix(case: Case, name: str, engine: Any) -> None:
    msgs = CONVERSATIONS[name]
    turns = trained_turns(case, name)
    assert len(turns) == len(answers(case, name))
    for (i, _), (ex, lo, _) in zip(answers(case, name), turns, strict=True):
        prompt = engine.render(msgs[:i])
        assert engine.encode(prompt) == ex.input_ids[:lo].tolist(), prompt


def test_system_prompt_reaches_the_model(case: Case, engine: Any) -> None:
    """Every family shows the system text to the model: in its own turn, or (no system role)
    where the family's convention puts it; never dropped, never an error."""
    prompt = engine.render(CONVERSATIONS["plain"][:2])
    assert prompt.count(SYSTEM) == 1
    assert prompt.index(SYSTEM) < prompt.index("USERMARK1")
    if case.family.system in ("first user turn", "rejected"):
        assert f"{SYSTEM}\n\nUSERMARK1" in prompt  # Gemma 3's own layout (folded for Gemma 2)


def test_generation_stops_at_the_end_of_turn_token(case: Case, engine: Any) -> None:
    from instructune.inference.engine import SamplingParams

    eot = case.tokenizer.convert_tokens_to_ids(case.family.end_of_turn)
    assert eot in engine.stop_ids
    # an LM head that always predicts the end-of-turn token: the engine must stop right there
    head = torch.nn.Linear(engine.model.config.hidden_size, engine.model.config.vocab_size)
    torch.nn.init.zeros_(head.weight)
    head.bias.data = torch.nn.functional.one_hot(torch.tensor(eot), head.out_features) * 10.0
    kept, engine.model.lm_head = engine.model.lm_head, head
    try:
        (done,) = engine.generate(
            [engine.render(CONVERSATIONS["single"][:1])], SamplingParams(max_new_tokens=5)
        )
    finally:
        engine.model.lm_head = kept
    assert (done.finish_reason, done.completion_tokens, done.text) == ("stop", 1, "")


def test_template_splits_are_counted(case: Case) -> None:
    assert case.summary["template_splits"] == SPLITS.get(case.family.name, {})
    names = [*CONVERSATIONS, *(["tool_call"] if case.family.tools else [])]
    per_row = [len({id(ex) for ex, _, _ in trained_turns(case, name)}) for name in names]
    extra = sum(n - 1 for n in per_row)
    assert extra == SPLITS.get(case.family.name, {}).get("extra_examples", 0)


def test_training_loss_equals_the_models_own(case: Case) -> None:
    """`token_losses`, what SFT, DPO, reward and eval all assemble losses with, on a prepared
    example equals the model's own loss (Gemma's final-logit softcap included)."""
    from transformers import AutoModelForCausalLM

    from instructune.models.logprobs import causal_lm_parts, token_losses, trained_hidden
    from instructune.models.losses import chunked_token_losses

    model = AutoModelForCausalLM.from_pretrained(case.folder, dtype=torch.float32).eval()
    with torch.no_grad():  # logits far from 0, where Gemma's cap (30) bends them
        model.get_output_embeddings().weight.mul_(300.0)
    ex = case.prepared.train[0]
    batch = {
        "input_ids": torch.tensor(ex.input_ids, dtype=torch.long)[None],
        "labels": torch.tensor(ex.labels, dtype=torch.long)[None],
    }
    with torch.no_grad():
        theirs = model(**batch).loss
        ours = token_losses(model, batch).mean()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    if case.family.arch.startswith("gemma"):  # the cap is in play: without it the loss differs
        with torch.no_grad():
            hidden, targets = trained_hidden(model, batch)
            uncapped = chunked_token_losses(causal_lm_parts(model)[1], hidden, targets).mean()
        assert abs(float(uncapped) - float(theirs)) > 1e-3


@pytest.fixture
def engine(case: Case) -> Any:
    """The engine `generate`/`serve` load from the folder: once per family (loading is the cost)."""
    from instructune.inference.loading import load_engine

    if case.engine is None:
        case.engine = load_engine(str(case.folder), dtype="float32")
    return case.engine


def test_tool_calls_and_results(case: Case, engine: Any) -> None:
    """The call and the final answer are trained, each once and ending at an end-of-turn token;
    the tool's result, the tool definitions and the user text never are; serving renders the
    same prompts (tools included). Families whose template can't render tool turns: Gemma
    (strict user/model alternation) and R1 (its generation prompt continues no call) stop with
    the template's reason; Phi-3.5's template leaves tool results out of the prompt."""
    from instructune.data.conversation import TOOLS as TOOLS_KEY
    from instructune.data.conversation import Conversation
    from instructune.data.messages import parse_messages, parse_tools
    from instructune.data.templates import TemplateMismatch, end_of_turn_ids
    from instructune.data.turns import render_conversation

    tools = parse_tools(TOOLS, "tools", "test")
    assert tools is not None
    if not case.family.tools:
        if case.family.name == "phi-3.5":
            prompt = engine.render(TOOL_CALL[:3], tools=tools)
            assert "get_weather" in prompt and "TOOLRESULT" not in prompt
            return
        msgs = parse_messages(TOOL_CALL, "messages", "t:1", "openai")
        conv = Conversation(msgs, "t:1", meta={TOOLS_KEY: tools})
        with pytest.raises((TemplateMismatch, jinja2.TemplateError)):
            render_conversation(conv, engine.template, None, "all")
        return
    tok = case.tokenizer
    eots = end_of_turn_ids(tok)
    turns = trained_turns(case, "tool_call")
    assert len(turns) == 2
    texts = []
    for ex, lo, hi in turns:
        ids = ex.input_ids[lo:hi].tolist()
        assert ids[-1] in eots and sum(t in eots for t in ids) == 1, tok.convert_ids_to_tokens(ids)
        texts.append(tok.decode(ids[:-1]))
    call, answer = texts
    assert "get_weather" in call and "Paris" in call
    assert answer == EMPTY_THINK.get(case.family.name, "") + "ANSWER6 It is 18 degrees."
    for text in texts:
        assert not any(m in text for m in ("USERMARK", "TOOLRESULT", "DESCMARK"))
    for i, (ex, lo, _) in zip((1, 3), turns, strict=True):
        prompt = engine.render(TOOL_CALL[:i], tools=tools)
        assert "DESCMARK" in prompt and engine.encode(prompt) == ex.input_ids[:lo].tolist()
