"""The proof that packing is safe: losses from one packed batch equal per-example forwards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from instructune.config.schema import DataConfig, DataSource
from instructune.data.collate import PackedCollator, PaddedCollator
from instructune.data.conversation import Conversation, Message
from instructune.data.examples import Example
from instructune.data.packing import pack
from instructune.data.templates import load_template
from instructune.data.tokenize import encode_conversations
from instructune.models.logprobs import causal_lm_parts, per_example_losses, trained_hidden
from instructune.models.losses import chunked_token_losses

PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Translate to German: good morning.", "Guten Morgen!"),
    ("Say yes", "yes"),
    ("The quick brown fox jumps over the lazy dog.", "The lazy dog. 0123456789 True False"),
    ("We will build 10,000 km of subway lines", "in the next ten years. OPTIONS: - yes - no"),
    ("Is it True?", "False"),
]


def _examples(tok: Any, train_on_inputs: bool = False) -> Sequence[Example]:
    convs = [
        Conversation([Message("user", u), Message("assistant", a)], f"t:{i}")
        for i, (u, a) in enumerate(PAIRS)
    ]
    convs.append(
        Conversation(
            [
                Message("user", "Say yes"),
                Message("assistant", "yes"),
                Message("user", "Is it?"),
                Message("assistant", "no"),
            ],
            "t:multi",
        )
    )
    cfg = DataConfig(train=[DataSource(path="x")], train_on_inputs=train_on_inputs)
    return encode_conversations(convs, load_template("chat", tok), tok, cfg).examples


def _reference(model: Any, ex: Example) -> float:
    """One example alone through the model's own forward and logits: summed next-token CE."""
    ids = torch.as_tensor(ex.input_ids, dtype=torch.long)[None]
    labels = torch.as_tensor(ex.labels, dtype=torch.long)[None]
    logits = model(input_ids=ids, use_cache=False).logits.float()
    loss = F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum")
    return float(loss)


def _packed_losses(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    _, head = causal_lm_parts(model)
    hidden, targets = trained_hidden(model, batch)
    return per_example_losses(batch, chunked_token_losses(head, hidden, targets, chunk_size=7))


def _by_example(packed: list[Any], seg_losses: torch.Tensor) -> dict[int, float]:
    out = {}
    for row, p in enumerate(packed):
        for seg, idx in enumerate(p.indices.tolist()):
            out[idx] = float(seg_losses[row, seg])
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("train_on_inputs", [False, True])
def test_packed_losses_equal_per_example_losses(
    tiny_tok: Any, tiny_model: Any, attn: str, train_on_inputs: bool
) -> None:
    tiny_model.set_attn_implementation(attn)
    tiny_model.eval()
    examples = _examples(tiny_tok, train_on_inputs)
    packed = pack(examples, max_length=96)
    assert len(packed) >= 2 and any(len(p.lengths) >= 3 for p in packed)  # rows pack + pad
    batch = PackedCollator(tiny_tok.pad_token_id)(packed)
    with torch.no_grad():
        got = _by_example(packed, _packed_losses(tiny_model, batch))
        want = {i: _reference(tiny_model, ex) for i, ex in enumerate(examples)}
    assert got.keys() == want.keys()
    for i in want:
        assert got[i] == pytest.approx(want[i], abs=1e-5, rel=1e-5), examples[i].source
    # nothing trained lands on the padding segment
    lengths = [len(p) for p in packed]
    for row, n in enumerate(lengths):
        if n < batch["input_ids"].shape[1]:
            assert (batch["labels"][row, n:] == -100).all()


def test_no_target_crosses_examples(tiny_tok: Any) -> None:
    packed = pack(_examples(tiny_tok, train_on_inputs=True), max_length=64)
    batch = PackedCollator(tiny_tok.pad_token_id)(packed)
    starts = batch["position_ids"][:, 1:] == 0  # position j+1 starts an example (or the padding)
    assert starts.any()
    assert (batch["labels"][:, 1:][starts] == -100).all()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_negative_control_without_segments_losses_differ(
    tiny_tok: Any, tiny_model: Any, attn: str
) -> None:
    """The proof can fail: plain arange positions (one causal sequence per row) leak context."""
    tiny_model.set_attn_implementation(attn)
    tiny_model.eval()
    examples = _examples(tiny_tok)
    packed = pack(examples, max_length=64)
    batch = PackedCollator(tiny_tok.pad_token_id)(packed)
    length = batch["input_ids"].shape[1]
    leaky = {**batch, "position_ids": torch.arange(length).expand_as(batch["input_ids"])}
    with torch.no_grad():
        want = {i: _reference(tiny_model, ex) for i, ex in enumerate(examples)}
        # attribute the leaky token losses to examples with the true segments
        hidden, targets = trained_hidden(tiny_model, leaky)
        token_losses = chunked_token_losses(causal_lm_parts(tiny_model)[1], hidden, targets)
        got = _by_example(packed, per_example_losses(batch, token_losses))
    diffs = [abs(got[i] - want[i]) for i in want]
    assert max(diffs) > 1e-3
    # examples placed first in their row see no foreign context and still match
    firsts = {int(p.indices[0]) for p in packed}
    assert all(abs(got[i] - want[i]) < 1e-4 for i in firsts)


def test_negative_control_with_kv_cache_losses_differ(tiny_tok: Any, tiny_model: Any) -> None:
    """With a KV cache transformers ignores the packed segments: why trained_hidden disables it."""
    tiny_model.eval()
    examples = _examples(tiny_tok)
    packed = pack(examples, max_length=96)
    batch = PackedCollator(tiny_tok.pad_token_id)(packed)
    decoder, head = causal_lm_parts(tiny_model)
    with torch.no_grad():
        hidden = decoder(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=True
        ).last_hidden_state
        keep = batch["labels"][:, 1:] != -100
        losses = chunked_token_losses(head, hidden[:, :-1][keep], batch["labels"][:, 1:][keep])
        got = _by_example(packed, per_example_losses(batch, losses))
        want = {i: _reference(tiny_model, ex) for i, ex in enumerate(examples)}
    assert max(abs(got[i] - want[i]) for i in want) > 1e-3


def test_padded_batch_matches_per_example(tiny_tok: Any, tiny_model: Any) -> None:
    tiny_model.eval()
    examples = _examples(tiny_tok)
    batch = PaddedCollator(tiny_tok.pad_token_id)(examples)
    with torch.no_grad():
        seg = _packed_losses(tiny_model, batch)
        want = [_reference(tiny_model, ex) for ex in examples]
    assert seg[:, 0].tolist() == pytest.approx(want, abs=1e-5, rel=1e-5)


def test_causal_lm_parts_rejects_a_body(tiny_model: Any) -> None:
    decoder, head = causal_lm_parts(tiny_model)
    assert decoder is tiny_model.model and head is tiny_model.lm_head
    with pytest.raises(TypeError, match="not a causal LM"):
        causal_lm_parts(tiny_model.model)


def test_causal_lm_parts_unwraps_peft(tiny_model: Any) -> None:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"]))
    decoder, head = causal_lm_parts(peft_model)
    assert decoder is peft_model.get_base_model().model
    assert head is peft_model.get_base_model().lm_head


def test_lora_on_a_bf16_base_computes_in_bf16_with_fp32_gradients(tiny_tok: Any) -> None:
    """adapter_autocast: the adapter matmuls see bf16 inputs (no float32 copy of activations),
    its float32 weights get float32 gradients, and the same model still runs outside it."""
    from peft import LoraConfig, get_peft_model

    from ..tiny import tiny_llama

    model = tiny_llama(len(tiny_tok)).to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    seen: list[torch.dtype] = []
    lora_a = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"]
    lora_a.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].dtype))
    batch = PaddedCollator(tiny_tok.pad_token_id)(list(_examples(tiny_tok))[:2])
    hidden, targets = trained_hidden(model, batch)
    chunked_token_losses(causal_lm_parts(model)[1], hidden, targets).mean().backward()
    assert seen == [torch.bfloat16] and hidden.dtype == torch.bfloat16
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)
    with torch.no_grad():  # outside the context peft casts the input up to float32 again
        model(input_ids=batch["input_ids"])
    assert seen[-1] == torch.float32
