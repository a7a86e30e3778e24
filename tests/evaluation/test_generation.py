"""Generation: the training template's prompt, batched == unbatched, stops and stop rate."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from instructune.data.conversation import Conversation, Message
from instructune.data.templates import load_template
from instructune.evaluation.generation import (
    GenerationSettings,
    _decode,
    end_of_turn,
    generate,
    prompt_item,
    stop_rate,
    stop_token_ids,
)

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


def test_stop_ids_include_end_of_turn(tiny_tok: Any) -> None:
    chat = load_template("chat", tiny_tok)
    assert end_of_turn(chat, tiny_tok) == (
        "<|im_end|>",
        tiny_tok.convert_tokens_to_ids("<|im_end|>"),
    )
    assert tiny_tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(chat, tiny_tok)
    alpaca = load_template("alpaca", tiny_tok)
    assert tiny_tok.eos_token_id in stop_token_ids(alpaca, tiny_tok)


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_batched_greedy_equals_one_by_one(tiny_model: Any, pad_is_eos: bool) -> None:
    from instructune.testing.tiny import tiny_tokenizer

    tok = tiny_tokenizer(pad_is_eos=pad_is_eos)
    template = load_template("chat", tok)
    prompts = [prompt_item(_conv(p), template).prompt for p in PROMPTS]
    stops = stop_token_ids(template, tok)
    batched = generate(
        tiny_model, tok, prompts, GenerationSettings(max_new_tokens=6, batch_size=4), stops
    )
    single = [
        generate(tiny_model, tok, [p], GenerationSettings(max_new_tokens=6, batch_size=1), stops)[0]
        for p in prompts
    ]
    assert batched == single


def test_sampling_is_seeded(tiny_model: Any, tiny_tok: Any) -> None:
    template = load_template("chat", tiny_tok)
    prompts = [prompt_item(_conv(p), template).prompt for p in PROMPTS]
    stops = stop_token_ids(template, tiny_tok)

    def run(seed: int) -> list[str]:
        settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, seed=seed)
        return [g.text for g in generate(tiny_model, tiny_tok, prompts, settings, stops)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_stop_detection_and_rate(tiny_model: Any, tiny_tok: Any) -> None:
    template = load_template("chat", tiny_tok)
    prompt = prompt_item(_conv(PROMPTS[0]), template).prompt
    ids = torch.tensor([tiny_tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        first_id = int(tiny_model(ids).logits[0, -1].argmax())
    # the model's own greedy first token as the stop token: empty output, stopped after 1 token
    settings = GenerationSettings(max_new_tokens=3)
    stopped = generate(tiny_model, tiny_tok, [prompt], settings, [first_id])[0]
    assert stopped.stopped and stopped.n_new_tokens == 1 and stopped.text == ""
    out = _decode(tiny_tok, [5, 6, 2, 3, 3], [2])
    assert out.stopped and out.n_new_tokens == 3 and out.text == tiny_tok.decode([5, 6]).strip()
    assert not _decode(tiny_tok, [5, 6, 7], [2]).stopped
    assert stop_rate([out, _decode(tiny_tok, [5], [2])]) == 0.5
