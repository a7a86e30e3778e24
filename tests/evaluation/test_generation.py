"""Generation tasks: the training template's prompt, batched == unbatched, stops and stop rate."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from instructune.config import EvalConfig
from instructune.data.conversation import Conversation, Message
from instructune.data.templates import load_template
from instructune.evaluation.generation import (
    Generated,
    generate,
    prompt_item,
    stop_rate,
)
from instructune.inference.engine import Engine, SamplingParams

PROMPTS = [
    "What is the capital of France?",
    "Translate: good morning.",
    "Hi",
    "The quick brown fox " * 5,
]


def _conv(text: str, answer: str = "Paris.") -> Conversation:
    return Conversation([Message("user", text), Message("assistant", answer)], "t:1")


def test_prompt_is_training_template_with_generation_prompt(tiny_tok: Any) -> None:
    template = load_template("chat", tiny_tok)
    conv = Conversation(
        [
            Message("system", "Be brief."),
            Message("user", "Q1"),
            Message("assistant", "A1"),
            Message("user", "Q2"),
            Message("assistant", "A2"),
        ],
        "t:1",
    )
    item = prompt_item(conv, template)
    assert item.reference == "A2"
    assert item.prompt == template.render(conv.messages[:4], add_generation_prompt=True)
    assert item.prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_batched_greedy_equals_one_by_one(tiny_model: Any, pad_is_eos: bool) -> None:
    from ..tiny import tiny_tokenizer

    tok = tiny_tokenizer(pad_is_eos=pad_is_eos)
    template = load_template("chat", tok)
    prompts = [prompt_item(_conv(p), template).prompt for p in PROMPTS]
    settings = EvalConfig(max_new_tokens=6)
    batched = generate(Engine(tiny_model, tok, template, max_batch_size=4), prompts, settings)
    one = Engine(tiny_model, tok, template, max_batch_size=1)
    single = [generate(one, [p], settings)[0] for p in prompts]
    assert batched == single
    assert all(g.n_new_tokens == 6 or g.stopped for g in batched)


def test_sampling_is_seeded(tiny_model: Any, tiny_tok: Any) -> None:
    template = load_template("chat", tiny_tok)
    prompts = [prompt_item(_conv(p), template).prompt for p in PROMPTS]
    engine = Engine(tiny_model, tiny_tok, template)

    def run(seed: int) -> list[str]:
        settings = EvalConfig(max_new_tokens=8, temperature=1.5, seed=seed)
        return [g.text for g in generate(engine, prompts, settings)]

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        # what `do_sample: true, temperature: 1.5, top_p: 0.9` meant: sample at 1.5, row seeds 7+i
        (
            {"temperature": 1.5, "top_p": 0.9, "seed": 7},
            {"temperature": 1.5, "top_p": 0.9, "seed": 7},
        ),
        # what `do_sample: false` (any temperature) meant: greedy
        ({"seed": 7}, {"temperature": 0.0, "seed": 7}),
    ],
)
def test_eval_section_samples_as_the_engine_with_the_same_params(
    tiny_model: Any, tiny_tok: Any, section: dict[str, Any], expected: dict[str, Any]
) -> None:
    template = load_template("chat", tiny_tok)
    prompts = [prompt_item(_conv(p), template).prompt for p in PROMPTS]
    engine = Engine(tiny_model, tiny_tok, template)
    got = generate(engine, prompts, EvalConfig(max_new_tokens=8, **section))
    seed = expected.pop("seed")
    params = [SamplingParams(max_new_tokens=8, **expected, seed=seed + i) for i in range(4)]
    assert [g.text for g in got] == [c.text.strip() for c in engine.generate(prompts, params)]


def test_stop_detection_and_rate(tiny_model: Any, tiny_tok: Any) -> None:
    template = load_template("chat", tiny_tok)
    prompt = prompt_item(_conv(PROMPTS[0]), template).prompt
    ids = torch.tensor([tiny_tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        first_id = int(tiny_model(ids).logits[0, -1].argmax())
    # the model's own greedy first token as the stop token: empty output, stopped after 1 token
    engine = Engine(tiny_model, tiny_tok, template, stop_ids=[first_id])
    stopped = generate(engine, [prompt], EvalConfig(max_new_tokens=3))[0]
    assert stopped == Generated(text="", n_new_tokens=1, stopped=True)
    # a token that never comes: runs to max_new_tokens
    engine = Engine(tiny_model, tiny_tok, template, stop_ids=[len(tiny_tok) + 1])
    ran = generate(engine, [prompt], EvalConfig(max_new_tokens=3))[0]
    assert not ran.stopped and ran.n_new_tokens == 3
    assert stop_rate([stopped, ran]) == 0.5
