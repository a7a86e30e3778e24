"""The engine: greedy == model.generate, continuous batching == one by one, stops, streaming,
sampling, and the rendered prompt == the prefix training learned to continue."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from instructune.data.conversation import Conversation, Message
from instructune.data.templates import load_template
from instructune.inference.engine import Completion, Engine
from instructune.inference.sampling import SamplingParams

QUESTIONS = [
    "What is the capital of France?",
    "Hi",
    "The quick brown fox " * 5,
    "Translate to German: good morning.",
    "x",
]


@pytest.fixture
def engine(tiny_model: Any, tiny_tok: Any) -> Engine:
    return Engine(tiny_model, tiny_tok, load_template("chat", tiny_tok), max_batch_size=2)


def _prompts(engine: Engine) -> list[str]:
    return [engine.render([Message("user", q)]) for q in QUESTIONS]


def _hf_greedy(engine: Engine, prompt: str, n: int) -> list[int]:
    from transformers import GenerationConfig

    ids = torch.tensor([engine.encode(prompt)])
    config = GenerationConfig(
        max_new_tokens=n, do_sample=False, eos_token_id=engine.stop_ids, pad_token_id=engine.pad_id
    )
    out = engine.model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
    )
    return [int(t) for t in out[0, ids.shape[1] :]]


def _greedy_matches_generate(engine: Engine, prompts: list[str], n: int) -> None:
    got = engine.generate(prompts, SamplingParams(max_new_tokens=n))
    for prompt, completion in zip(prompts, got, strict=True):
        ref = _hf_greedy(engine, prompt, n)
        stopped = bool(ref) and ref[-1] in engine.stop_ids
        text = engine.tokenizer.decode(ref[:-1] if stopped else ref, skip_special_tokens=True)
        assert completion.text == text
        assert completion.completion_tokens == len(ref)
        assert completion.finish_reason == ("stop" if stopped else "length")
        assert completion.prompt_tokens == len(engine.encode(prompt))


def test_greedy_equals_model_generate(engine: Engine) -> None:
    _greedy_matches_generate(engine, _prompts(engine), 12)


def test_continuous_batching_equals_one_by_one(engine: Engine) -> None:
    prompts = _prompts(engine)
    # different lengths so that rows finish at different steps and later prompts join mid-flight
    params = [SamplingParams(max_new_tokens=n) for n in (3, 9, 5, 12, 7)]
    batched = engine.generate(prompts, params)
    single = [engine.generate([p], sp)[0] for p, sp in zip(prompts, params, strict=True)]
    assert [c.index for c in batched] == list(range(len(prompts)))
    assert [(c.text, c.completion_tokens) for c in batched] == [
        (c.text, c.completion_tokens) for c in single
    ]


def test_sliding_window_cache_waits_for_an_empty_batch(tiny_tok: Any) -> None:
    """A cache that can't be joined mid-flight (sliding-window layers): rows start together,
    finish on their own, and still decode exactly as `model.generate` does."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tiny_tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
        max_position_embeddings=512,
    )
    model = MistralForCausalLM(config).eval()
    engine = Engine(model, tiny_tok, load_template("chat", tiny_tok), max_batch_size=2)
    batch = engine.new_batch()
    batch.add([engine.row(_prompts(engine)[0], SamplingParams(max_new_tokens=2))])
    assert not batch.can_join
    _greedy_matches_generate(engine, _prompts(engine), 10)
    params = [SamplingParams(max_new_tokens=n) for n in (3, 9, 5, 12, 7)]
    batched = engine.generate(_prompts(engine), params)
    single = [engine.generate([p], sp)[0] for p, sp in zip(_prompts(engine), params, strict=True)]
    assert [c.text for c in batched] == [c.text for c in single]


def test_stop_token_ends_generation(tiny_model: Any, tiny_tok: Any) -> None:
    template = load_template("chat", tiny_tok)
    plain = Engine(tiny_model, tiny_tok, template)
    prompt = _prompts(plain)[0]
    first = _hf_greedy(plain, prompt, 1)[0]
    stopping = Engine(tiny_model, tiny_tok, template, stop_ids=[first])
    assert stopping.generate([prompt], SamplingParams(max_new_tokens=5)) == [
        Completion("", "stop", len(plain.encode(prompt)), 1)
    ]


def test_stop_string_cuts_output_and_stream(engine: Engine) -> None:
    prompt = _prompts(engine)[0]
    full = engine.generate([prompt], SamplingParams(max_new_tokens=12))[0].text
    stop = full[4:6]
    assert stop and full.index(stop) == 4
    params = SamplingParams(max_new_tokens=12, stop=(stop, "never-there"))
    cut = engine.generate([prompt], params)[0]
    assert cut.text == full[:4] and cut.finish_reason == "stop"
    assert cut.completion_tokens < 12
    deltas = list(engine.stream(prompt, params))
    assert "".join(deltas) == cut.text
    assert list(engine.stream(prompt, SamplingParams(max_new_tokens=12)))  # streams something
    assert "".join(engine.stream(prompt, SamplingParams(max_new_tokens=12))) == full


def test_rendered_prompt_is_the_training_prefix(engine: Engine, tiny_tok: Any) -> None:
    from instructune.config.schema import DataConfig, DataSource
    from instructune.data.tokenize import encode_conversations
    from instructune.models.labels import IGNORE_INDEX

    messages = [
        Message("system", "Be brief."),
        Message("user", "What is the capital of France?"),
        Message("assistant", "Paris."),
        Message("user", "And of Germany?"),
        Message("assistant", "Berlin."),
    ]
    cfg = DataConfig(train=[DataSource(path="x")], train_on_turns="last")
    enc = encode_conversations([Conversation(messages, "t:1")], engine.template, tiny_tok, cfg)
    example = enc.examples[0]
    first_trained = next(i for i, y in enumerate(example.labels) if y != IGNORE_INDEX)
    prompt = engine.render(messages[:4])
    assert engine.encode(prompt) == list(example.input_ids[:first_trained])
    dicts = [{"role": m.role, "content": m.content} for m in messages[:4]]
    assert engine.render(dicts) == prompt  # OpenAI-style dict messages render the same


def test_sampling_is_seeded_per_row(engine: Engine) -> None:
    prompts = _prompts(engine)
    params = SamplingParams(max_new_tokens=8, temperature=1.5, top_p=0.95, top_k=50, seed=7)
    alone = engine.generate(prompts[:1], params)[0]
    together = engine.generate(prompts, params)
    assert together[0] == alone  # a row's sample does not depend on its batch
    other = engine.generate(prompts[:1], SamplingParams(max_new_tokens=8, temperature=1.5, seed=8))
    assert other[0].text != alone.text
    top1 = SamplingParams(max_new_tokens=8, temperature=1.0, top_k=1, seed=3)
    greedy = SamplingParams(max_new_tokens=8)
    assert engine.generate(prompts, top1) == engine.generate(prompts, greedy)


def test_prompt_longer_than_context_is_an_error(engine: Engine) -> None:
    with pytest.raises(ValueError, match="does not fit the model's context"):
        engine.generate(["word " * 1200])


@pytest.mark.slow
def test_embedded_greedy_equals_model_generate() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructune.models.embedded import ensure_embedded_model

    folder = ensure_embedded_model()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    engine = Engine(model, tok, load_template("chat", tok), max_batch_size=2)
    questions = ["What is the capital of France?", "Name a primary color.", "Say hi."]
    prompts = [engine.render([Message("user", q)]) for q in questions]
    _greedy_matches_generate(engine, prompts, 16)
