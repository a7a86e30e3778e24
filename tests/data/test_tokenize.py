"""Tokenize: spans from prefix renders, checked on tokens, with tiny and real tokenizers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instructune.config.schema import DataConfig, DataSource
from instructune.data import tokenize as tk
from instructune.data.audit import AuditError, audit
from instructune.data.conversation import Conversation, Message
from instructune.data.examples import Example, build_labels
from instructune.data.templates import TemplateMismatch, load_template
from instructune.data.tokenize import encode_conversations

ALPACA = Path("/work/shared/data/alpaca/alpaca_5000.json")
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def _cfg(**kw: Any) -> DataConfig:
    return DataConfig(train=[DataSource(path="x")], **kw)


def _conv(*turns: str, source: str = "f.jsonl:1", system: str | None = None) -> Conversation:
    roles = ["user", "assistant"] * len(turns)
    msgs = [Message(r, t) for r, t in zip(roles, turns, strict=False)]  # type: ignore[arg-type]
    if system is not None:
        msgs.insert(0, Message("system", system))
    return Conversation(msgs, source)


def _trained_runs(ex: Example, tok: Any) -> list[str]:
    """Decoded maximal runs of trained labels (the label values, not the input ids)."""
    mask = ex.labels != -100
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return [
        tok.decode(ex.labels[a:b].tolist()) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


def _encode(
    tok: Any, convs: list[Conversation], template: str = "chat", **kw: Any
) -> tk.EncodeResult:
    return encode_conversations(convs, load_template(template, tok), tok, _cfg(**kw))


def _alpaca_convs(n: int) -> list[Conversation]:
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))[:n]
    out = []
    for i, r in enumerate(rows):
        user = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
        msgs = [Message("user", user), Message("assistant", r["output"])]
        meta = {"instruction": r["instruction"], "input": r["input"]}
        out.append(Conversation(msgs, f"alpaca_5000.json:{i}", meta=meta))
    return out


@pytest.mark.parametrize("tok_name", ["tiny_tok", "smol_tok"])
def test_chat_labels_cover_exactly_the_response_and_its_eos(
    tok_name: str, request: pytest.FixtureRequest
) -> None:
    tok = request.getfixturevalue(tok_name)
    (ex,) = _encode(
        tok, [_conv("What is the capital of France?", "Paris is the capital.")]
    ).examples
    assert _trained_runs(ex, tok) == ["Paris is the capital.<|im_end|>"]
    text = tok.decode(ex.input_ids.tolist())
    assert text.endswith("Paris is the capital.<|im_end|>\n")  # the "\n" is there, untrained
    assert ex.labels[-1] == -100 and ex.input_ids[-1] != tok.eos_token_id
    assert len(ex.labels) == len(ex.input_ids) and ex.labels[0] == -100
    assert ex.input_ids.dtype == np.int32 and ex.labels.dtype == np.int32
    if tok_name == "smol_tok":  # its template injects a default system prompt: never trained
        assert SMOL_SYSTEM in text
        assert all(SMOL_SYSTEM not in run for run in _trained_runs(ex, tok))


def test_chat_render_equals_hf_apply_chat_template(smol_tok: Any) -> None:
    conv = _conv("Hi", "Hello!", "Bye", "Ciao")
    (ex,) = _encode(smol_tok, [conv]).examples
    hf = smol_tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in conv.messages], tokenize=False
    )
    assert ex.input_ids.tolist() == smol_tok(hf, add_special_tokens=False)["input_ids"]


def test_multi_turn_all_vs_last(tiny_tok: Any) -> None:
    conv = _conv("Say yes", "yes", "Say no", "no")
    (all_turns,) = _encode(tiny_tok, [conv]).examples
    (last,) = _encode(tiny_tok, [conv], train_on_turns="last").examples
    assert _trained_runs(all_turns, tiny_tok) == ["yes<|im_end|>", "no<|im_end|>"]
    assert _trained_runs(last, tiny_tok) == ["no<|im_end|>"]
    assert np.array_equal(all_turns.input_ids, last.input_ids)


def test_train_on_inputs_trains_all_but_the_first_token(tiny_tok: Any) -> None:
    (ex,) = _encode(tiny_tok, [_conv("Say yes", "yes")], train_on_inputs=True).examples
    assert ex.labels[0] == -100
    assert np.array_equal(ex.labels[1:], ex.input_ids[1:])
    assert len(ex.spans) == 1  # the response is still known, for the audit


def test_eos_exactly_once_at_the_end_of_each_trained_response(smol_tok: Any) -> None:
    convs = [*_alpaca_convs(200), _conv("a", "b", "c", "d", "e", "f", source="multi")]
    result = _encode(smol_tok, convs)
    assert len(result.examples) >= 195
    eos = smol_tok.eos_token_id
    for ex in result.examples:
        for start, end in ex.spans:
            response = ex.labels[start:end]
            assert (response != -100).all()
            assert response[-1] == eos and (response[:-1] != eos).all(), ex.source
        assert (ex.labels == eos).sum() == len(ex.spans)


def test_raw_text_rows_train_all_text_and_eos(tiny_tok: Any) -> None:
    conv = Conversation([Message("assistant", "The quick brown fox")], "t.txt:1")
    (ex,) = _encode(tiny_tok, [conv], system_prompt="ignored for text rows").examples
    assert tiny_tok.decode(ex.input_ids.tolist()) == "The quick brown fox<|im_end|>"
    assert ex.labels[0] == -100 and np.array_equal(ex.labels[1:], ex.input_ids[1:])


def test_system_prompt_inserted_when_missing(tiny_tok: Any) -> None:
    convs = [_conv("q", "a"), _conv("q", "a", system="Own system.")]
    a, b = _encode(tiny_tok, convs, system_prompt="Be brief.").examples
    assert "<|im_start|>system\nBe brief.<|im_end|>" in tiny_tok.decode(a.input_ids.tolist())
    assert "Own system." in tiny_tok.decode(b.input_ids.tolist())
    assert "Be brief." not in tiny_tok.decode(b.input_ids.tolist())


def test_truncation_drop_counts_too_long(tiny_tok: Any) -> None:
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 10
    result = _encode(tiny_tok, [_conv(long_prompt, "yes"), _conv("q", "yes")], max_length=40)
    assert result.dropped == {"too_long": 1}
    assert result.truncated == 0 and len(result.examples) == 1


def test_truncate_prompt_keeps_the_response(tiny_tok: Any) -> None:
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 10
    convs = [_conv(long_prompt, "Paris is the capital."), _conv("q", long_prompt, source="x:2")]
    result = _encode(tiny_tok, convs, max_length=60, truncation="truncate_prompt")
    assert result.dropped == {"too_long": 1}  # the second one's response alone is too long
    assert [d.source for d in result.dropped_rows] == ["x:2"]
    (ex,) = result.examples
    assert result.truncated == 1 and 40 < len(ex.input_ids) <= 60 and ex.cut == 0
    assert _trained_runs(ex, tiny_tok) == ["Paris is the capital.<|im_end|>"]
    text = tiny_tok.decode(ex.input_ids.tolist())
    # the template's structure stays; the cut is inside the user content, marked
    assert text.startswith("<|im_start|>user\nThe quick brown fox") and " [...] " in text
    assert text.endswith(
        "lazy dog. <|im_end|>\n<|im_start|>assistant\nParis is the capital.<|im_end|>\n"
    )
    audit(result.examples, tiny_tok, load_template("chat", tiny_tok))


def test_user_jinja_file_end_to_end(tiny_tok: Any, tmp_path: Path) -> None:
    path = tmp_path / "qa.jinja"
    path.write_text(
        "{% for m in messages %}{% if m.role == 'user' %}<|im_start|>Q: {{ m.content }}\n"
        "{% else %}A:\n{{ m.content + eos_token }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}A:\n{% endif %}"
    )
    (ex,) = _encode(tiny_tok, [_conv("Say yes", "yes")], template=str(path)).examples
    assert tiny_tok.decode(ex.input_ids.tolist()) == "<|im_start|>Q: Say yes\nA:\nyes<|im_end|>\n"
    assert _trained_runs(ex, tiny_tok) == ["yes<|im_end|>"]


MISMATCH = (  # the generation prompt ends "A: " but the conversation renders "A:" + content
    "{% for m in messages %}{% if m.role == 'user' %}Q: {{ m.content }}\n"
    "{% else %}A:{{ m.content + eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}A: {% endif %}"
)


def test_generation_prompt_mismatch_is_loud(tiny_tok: Any, tmp_path: Path) -> None:
    path = tmp_path / "drift.jinja"
    path.write_text(MISMATCH)
    with pytest.raises(TemplateMismatch) as err:
        _encode(tiny_tok, [_conv("Say yes", "yes", source="rows.jsonl:7")], template=str(path))
    message = str(err.value)
    assert str(path) in message and "rows.jsonl:7" in message
    assert "'Q: Say yes\\nA: '" in message and "'Q: Say yes\\nA:yes" in message
    result = _encode(tiny_tok, [_conv("Say yes", "yes")], template=str(path), on_error="skip")
    assert result.dropped == {"template_mismatch": 1} and not result.examples


def test_trailing_space_prompt_is_tokenized_as_served(tiny_tok: Any, tmp_path: Path) -> None:
    """Strings nest ("A: " + "yes") but " yes" is one token inside the whole: the turn is
    tokenized as serving sends it, tokens(prompt) + tokens(answer), and counted."""
    path = tmp_path / "space.jinja"
    path.write_text(
        "{% for m in messages %}{% if m.role == 'user' %}Q: {{ m.content }}\n"
        "{% else %}A: {{ m.content + eos_token }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}A: {% endif %}"
    )
    whole = tiny_tok("Q: Say yes\nA: yes", add_special_tokens=False)["input_ids"]
    prompt = tiny_tok("Q: Say yes\nA: ", add_special_tokens=False)["input_ids"]
    assert whole[: len(prompt)] != prompt  # the merge this test is about
    result = _encode(tiny_tok, [_conv("Say yes", "yes", source="s:1")], template=str(path))
    (ex,) = result.examples
    answer = tiny_tok("yes" + tiny_tok.eos_token + "\n", add_special_tokens=False)["input_ids"]
    assert ex.input_ids.tolist() == prompt + answer
    assert _trained_runs(ex, tiny_tok) == ["yes" + tiny_tok.eos_token]
    assert result.template_splits == {"boundary_turns": 1} and not result.dropped


def test_boundary_turn_ends_its_example_and_later_turns_keep_whole_history(
    tiny_tok: Any, tmp_path: Path
) -> None:
    """Two boundary turns: the first is cut after its end, tokenized at its prompt's end; the
    second is trained after its prompt tokenized whole (the history as serving tokenizes it)."""
    path = tmp_path / "space.jinja"
    path.write_text(
        "{% for m in messages %}{% if m.role == 'user' %}Q: {{ m.content }}\n"
        "{% else %}A: {{ m.content + eos_token }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}A: {% endif %}"
    )
    eos = tiny_tok.eos_token

    def tok(text: str) -> list[int]:
        return list(tiny_tok(text, add_special_tokens=False)["input_ids"])

    result = _encode(tiny_tok, [_conv("Say yes", "yes", "Say no", "no")], template=str(path))
    first, second = result.examples
    prompt2 = f"Q: Say yes\nA: yes{eos}\nQ: Say no\nA: "
    assert first.input_ids.tolist() == tok("Q: Say yes\nA: ") + tok(f"yes{eos}\n")
    assert second.input_ids.tolist() == tok(prompt2) + tok(f"no{eos}\n")
    assert [_trained_runs(ex, tiny_tok) for ex in (first, second)] == [[f"yes{eos}"], [f"no{eos}"]]
    assert result.template_splits == {"boundary_turns": 2, "split_rows": 1, "extra_examples": 1}


def test_token_level_boundary_alpaca_recipe(smol_tok: Any) -> None:
    """Stanford's "### Response:" + output: an output starting with "-" merges into ":-" in the
    whole text; trained after the prompt's own tokens, as `generate` sends it."""
    conv = _alpaca_convs(11)[10]
    assert conv.messages[1].content.startswith("-")
    result = _encode(smol_tok, [conv], template="alpaca")
    (ex,) = result.examples
    prompt_text = load_template("alpaca", smol_tok).render(conv.messages[:1], True, conv.meta)
    prompt = smol_tok(prompt_text, add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: len(prompt)].tolist() == prompt and ex.spans[0, 0] == len(prompt)
    assert _trained_runs(ex, smol_tok) == [conv.messages[1].content + smol_tok.eos_token]
    assert result.template_splits == {"boundary_turns": 1} and not result.dropped


def test_no_trained_tokens_skip_counts_fail_raises(tiny_tok: Any) -> None:
    conv = Conversation([Message("user", "only a question")], "q.jsonl:3")
    assert _encode(tiny_tok, [conv], on_error="skip").dropped == {"no_trained_tokens": 1}
    with pytest.raises(AuditError, match=r"q.jsonl:3: no trained token"):
        _encode(tiny_tok, [conv])


@pytest.mark.parametrize("template", ["chat", "alpaca"])
def test_fast_prefix_check_equals_full_prefix_tokenization(
    smol_tok: Any, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kept example (brute force): each trained turn's prompt tokenizes on its own to the
    tokens before its span; the turn through its end does too, or (a boundary turn, the last of
    its example) the example is tokens(prompt) + tokens(rest of the turn)."""
    convs = [*_alpaca_convs(300), _conv("Hi", " Hello", "\nBye", "  Ciao  ", source="ws")]
    fast = _encode(smol_tok, convs, template, on_error="skip")
    tmpl = load_template(template, smol_tok)
    boundary = 0

    def tok(text: str) -> list[int]:
        return list(smol_tok(text, add_special_tokens=False)["input_ids"])

    for ex in fast.examples:
        assert ex.conversation is not None
        msgs = ex.conversation.messages
        meta = ex.conversation.meta or None
        trained = [i for i, m in enumerate(msgs) if m.role == "assistant"][-len(ex.spans) :]
        ids = ex.input_ids.tolist()
        for j, i in enumerate(trained):
            prompt, turn = tmpl.render(msgs[:i], True, meta), tmpl.render(msgs[: i + 1], meta=meta)
            assert ids[: len(tok(prompt))] == tok(prompt), ex.source
            assert ex.spans[j, 0] == len(tok(prompt))
            if ids[: len(tok(turn))] != tok(turn):
                boundary += 1
                assert j == len(trained) - 1 and turn.startswith(prompt), ex.source
                assert ids == (tok(prompt) + tok(turn[len(prompt) :]))[: len(ids)], ex.source
                span = ids[ex.spans[j, 0] : ex.spans[j, 1]]
                assert span[-1] == smol_tok.convert_tokens_to_ids("<|im_end|>"), ex.source
    assert boundary == fast.template_splits.get("boundary_turns", 0)

    real_init = tk._Vocab.__init__

    def slow_init(self: Any, tokenizer: Any) -> None:
        real_init(self, tokenizer)
        self.split_exact = False  # every boundary tokenizes its whole prefix

    monkeypatch.setattr(tk._Vocab, "__init__", slow_init)
    slow = _encode(smol_tok, convs, template, on_error="skip")
    assert fast.dropped == slow.dropped
    assert [e.source for e in fast.examples] == [e.source for e in slow.examples]
    for a, b in zip(fast.examples, slow.examples, strict=True):
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.labels, b.labels)


def test_build_labels_is_the_one_mask() -> None:
    ids = np.arange(10, 20, dtype=np.int32)
    spans = np.array([[2, 4], [7, 9]], dtype=np.int32)
    assert build_labels(ids, spans, False).tolist() == (
        [-100, -100, 12, 13, -100, -100, -100, 17, 18, -100]
    )
    assert build_labels(ids, spans, True).tolist() == [-100, *range(11, 20)]
    assert build_labels(ids, np.array([[0, 3]], np.int32), False)[0] == -100


def _assert_prefix_exact(tok: Any, examples: Any, template: str = "chat") -> None:
    """Brute force: the whole render's own tokens, and every prompt's, are what was trained."""
    tmpl = load_template(template, tok)
    for ex in examples:
        msgs, meta = ex.conversation.messages, ex.conversation.meta or None
        whole = tok(tmpl.render(msgs, meta=meta), add_special_tokens=False)["input_ids"]
        assert ex.input_ids.tolist() == whole, ex.source
        turns = [i for i, m in enumerate(msgs) if m.role == "assistant"]
        for (start, _), i in zip(ex.spans, turns, strict=True):
            prompt = tok(tmpl.render(msgs[:i], True, meta), add_special_tokens=False)["input_ids"]
            assert whole[: len(prompt)] == prompt and start == len(prompt), ex.source


def _chatml_tok(pre_tokenizer: Any, normalizer: Any = None) -> Any:
    from tokenizers import Tokenizer, models, trainers
    from transformers import PreTrainedTokenizerFast

    from ..tiny import CHATML_TEMPLATE, CORPUS

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    bpe = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizer
    bpe.normalizer = normalizer
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", unk_token="<|endoftext|>", pad_token="<pad>"
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


CONVS = [
    _conv("What is the capital of France?", "Paris is the capital.", source="a"),
    _conv("Say yes", " yes", "The quick brown fox", "jumps over the lazy dog.", source="b"),
    _conv("Translate: good morning", "Guten Morgen!", system="You are a helpful assistant."),
]


def test_metaspace_first_pieces_are_encoded_after_an_added_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Metaspace(prepend_scheme=first) prepends "▁" at offset 0 only: the one offset-dependent
    step, reproduced by encoding the other pieces after an added token (else ids would differ)."""
    from tokenizers import pre_tokenizers

    tok = _chatml_tok(pre_tokenizers.Metaspace(prepend_scheme="first"))
    assert tk._Vocab(tok).anchor is not None
    result = _encode(tok, CONVS)
    assert len(result.examples) == 3
    _assert_prefix_exact(tok, result.examples)

    real_init = tk._Vocab.__init__

    def no_anchor(self: Any, tokenizer: Any) -> None:
        real_init(self, tokenizer)
        self.anchor = None

    monkeypatch.setattr(tk._Vocab, "__init__", no_anchor)
    wrong = _encode(tok, CONVS, on_error="skip").examples
    assert [e.input_ids.tolist() for e in wrong] != [e.input_ids.tolist() for e in result.examples]


def test_normalized_added_token_under_a_normalizer_tokenizes_whole_prefixes() -> None:
    from tokenizers import AddedToken, normalizers, pre_tokenizers

    tok = _chatml_tok(pre_tokenizers.ByteLevel(add_prefix_space=False), normalizers.Lowercase())
    tok.add_tokens([AddedToken("<sep>", normalized=True)])
    assert not tk._Vocab(tok).split_exact
    convs = [*CONVS, _conv("one <SEP> two", "three <sep> four", source="sep")]
    result = _encode(tok, convs)
    assert len(result.examples) == 4
    _assert_prefix_exact(tok, result.examples)


def test_examples_are_views_over_flat_blocks(
    tiny_tok: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    convs = [_conv(f"Say {w}", w, source=f"s:{i}") for i, w in enumerate(["yes", "no"] * 300)]
    monkeypatch.setattr(tk, "CHUNK", 64)  # several blocks
    examples = _encode(tiny_tok, convs).examples
    assert isinstance(examples, tk.Examples) and len(examples.blocks) > 1
    assert len(examples) == 600 and [e.source for e in examples] == [c.source for c in convs]
    assert examples[-1].source == "s:599"
    assert [e.source for e in examples[598:]] == ["s:598", "s:599"]
    with pytest.raises(IndexError):
        examples[600]
    ex = examples[130]
    assert ex.input_ids.dtype == np.int32 and ex.labels.dtype == np.int32
    ex.labels[:] = -100  # a view: writes through to the store
    assert (examples[130].labels == -100).all()
    assert examples.lengths().tolist() == [len(e) for e in examples]
    assert all(e.conversation is not None for e in examples)
    tmpl = load_template("chat", tiny_tok)
    few = encode_conversations(convs, tmpl, tiny_tok, _cfg(), keep_conversations=10).examples
    assert 10 <= len(few.conversation_indices()) <= 12
    again = _encode(tiny_tok, convs).examples
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(few, again, strict=True))
    audit(few, tiny_tok, tmpl)  # prompt checks run on the examples that kept a conversation
