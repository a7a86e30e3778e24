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

import numpy as np
import pytest
import torch

from instructune.data.examples import IGNORE_INDEX

from .helpers import CONVERSATIONS, SYSTEM, Case

THINK_OPEN = "<think>\n"
EMPTY_THINK = {"qwen3": "<think>\n\n</think>\n\n"}
"""What a template writes before an answer without reasoning, rendered as the newest turn."""

SPLITS: dict[str, dict[str, int]] = {
    # Qwen3 renders an answer with a (possibly empty) <think> block only after the last user turn
    "qwen3": {"split_rows": 2, "extra_examples": 2},
    # R1 opens `<think>\n` in the generation prompt and strips reasoning from rendered answers
    "r1-distill-qwen": {"split_rows": 2, "extra_examples": 2, "rebuilt_turns": 5},
    "r1-distill-llama": {"split_rows": 2, "extra_examples": 2, "rebuilt_turns": 5},
    # Mistral writes the system prompt into the last user message only: a generation prompt has
    # it, no rendered answer's context does; the 2 turns after a system prompt are rebuilt
    "mistral": {"split_rows": 1, "extra_examples": 1, "rebuilt_turns": 2},
}
"""Rows each family's template splits (the rest split none): `summary.json["template_splits"]`."""


def expected_answer(family: str, content: str) -> str:
    """The text trained for an answer (its end-of-turn token aside), as the template renders it
    as the newest turn, after the generation prompt."""
    if family.startswith("r1-") and content.startswith(THINK_OPEN):
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
    engine.model.lm_head = head
    (done,) = engine.generate(
        [engine.render(CONVERSATIONS["single"][:1])], SamplingParams(max_new_tokens=5)
    )
    assert (done.finish_reason, done.completion_tokens, done.text) == ("stop", 1, "")


def test_template_splits_are_counted(case: Case) -> None:
    assert case.summary["template_splits"] == SPLITS.get(case.family.name, {})
    per_row = {
        name: len({id(ex) for ex, _, _ in trained_turns(case, name)}) for name in CONVERSATIONS
    }
    extra = sum(n - 1 for n in per_row.values())
    assert extra == SPLITS.get(case.family.name, {}).get("extra_examples", 0)


def test_training_loss_equals_the_models_own(case: Case) -> None:
    from transformers import AutoModelForCausalLM

    from instructune.training.forward import causal_lm_parts, chunked_token_losses, trained_hidden

    model = AutoModelForCausalLM.from_pretrained(case.folder, dtype=torch.float32).eval()
    ex = case.prepared.train[0]
    batch = {
        "input_ids": torch.tensor(ex.input_ids, dtype=torch.long)[None],
        "labels": torch.tensor(ex.labels, dtype=torch.long)[None],
    }
    with torch.no_grad():
        theirs = model(**batch).loss
        hidden, targets = trained_hidden(model, batch)
        _, head = causal_lm_parts(model)
        softcap = getattr(model.config, "final_logit_softcapping", None)
        ours = chunked_token_losses(head, hidden, targets, logit_softcap=softcap).mean()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.fixture
def engine(case: Case) -> Any:
    from instructune.inference.loading import load_engine

    return load_engine(str(case.folder), dtype="float32")
