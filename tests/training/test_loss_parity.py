"""Our loss paths equal the model's own maths on every architecture we check, Gemma's logit
softcap included: the SFT trainer's fused loss (and its gradients) equals
`model(labels=...).loss`, DPO sequence log-probs and evaluation's token log-probs equal a
reference computed from the model's own `logits` (which carry the softcap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instructune.data.preference import Pair
from instructune.evaluation.loss import sequence_logprobs
from instructune.models.logprobs import logit_softcap, sequence_logps, trained_hidden
from instructune.models.losses import chunked_token_losses
from instructune.training.dpo import PairCollator
from instructune.training.trainer import InstructTrainer

IGNORE = -100
VOCAB = 128
PAD = 0
SOFTCAP = 2.0  # small, so capping changes the loss measurably (Gemma 2 ships 30.0)


def _gemma(version: int) -> Any:
    """A tiny Gemma 2 or Gemma 3 (text) model with a final-logit softcap."""
    import transformers

    config_class, model_class = {
        2: (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
        3: (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM),
    }[version]
    config = config_class(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=128,
        final_logit_softcapping=SOFTCAP,
        attn_implementation="eager",
        pad_token_id=PAD,
    )
    return model_class(config)


def _llama() -> Any:
    from ..tiny import tiny_llama

    return tiny_llama(VOCAB)


MODELS = {"gemma2": lambda: _gemma(2), "gemma3": lambda: _gemma(3), "llama": _llama}


def _model(name: str) -> Any:
    torch.manual_seed(0)
    model = MODELS[name]()
    # random init leaves logits near 0, where a cap changes nothing: scale the head up
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    return model


def _batch(seed: int) -> dict[str, torch.Tensor]:
    """Two right-padded rows with trained answers at their ends."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (2, 20), generator=gen)
    mask = torch.ones_like(ids)
    ids[1, 14:], mask[1, 14:] = PAD, 0
    labels = torch.full_like(ids, IGNORE)
    labels[0, 9:] = ids[0, 9:]
    labels[1, 6:14] = ids[1, 6:14]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _trainer(model: Any, tmp_path: Path) -> InstructTrainer:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    return InstructTrainer(model=model, args=args, loss_chunk_size=7, pad_token_id=PAD)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sft_loss_and_gradients_equal_the_models_own(name: str, tmp_path: Path) -> None:
    model = _model(name)
    assert logit_softcap(model) == (None if name == "llama" else SOFTCAP)
    batch = _batch(1)
    model.train()
    model.zero_grad()
    theirs = model(**batch, use_cache=False).loss
    theirs.backward()
    their_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    ours = _trainer(model, tmp_path).compute_loss(model, batch)
    assert isinstance(ours, torch.Tensor)
    ours.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert their_grads
    for n, p in model.named_parameters():
        if n in their_grads:
            torch.testing.assert_close(p.grad, their_grads[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_without_the_cap_the_loss_would_differ(name: str) -> None:
    """Guards the test above: on these models, an uncapped loss is measurably different."""
    model = _model(name).eval()
    batch = _batch(1)
    with torch.no_grad():
        theirs = model(**batch, use_cache=False).loss
        hidden, targets = trained_hidden(model, batch)
        uncapped = chunked_token_losses(model.get_output_embeddings(), hidden, targets).mean()
    assert abs(float(uncapped) - float(theirs)) > 0.1


def _reference_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-row sum of log p(target) from the model's own logits (softcap applied inside)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(dim=1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dpo_and_eval_logprobs_equal_the_models_logits(name: str) -> None:
    model = _model(name).eval()
    gen = np.random.default_rng(2)
    pairs = []
    for i, (n, k) in enumerate([(18, 6), (12, 4)]):
        prompt = gen.integers(1, VOCAB, n - k)
        rows = []
        for _ in range(2):
            ids = np.concatenate([prompt, gen.integers(1, VOCAB, k)])
            labels = np.full(len(ids), IGNORE)
            labels[n - k :] = ids[n - k :]
            rows += [ids, labels]
        pairs.append(Pair(*rows, source=f"p:{i}", prompt_len=n - k))
    batch = PairCollator(PAD)(pairs)
    with torch.no_grad():
        reference = _reference_logps(model, batch)
        ours = sequence_logps(model, batch, chunk_size=5)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)

    sequences = [(p.chosen_ids, p.chosen_labels) for p in pairs]
    sequences += [(p.rejected_ids, p.rejected_labels) for p in pairs]
    per_token = sequence_logprobs(model, sequences, PAD, batch_size=3, chunk_size=5)
    sums = torch.tensor([float(lp.sum()) for lp in per_token])
    torch.testing.assert_close(sums, reference.double().float(), rtol=1e-5, atol=1e-5)
