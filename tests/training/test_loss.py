"""The training loss equals a plain reference: full logits + F.cross_entropy over every trained
target of the whole accumulated step, as one big batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from instructune.training.trainer import InstructTrainer, count_targets, count_tokens

IGNORE = -100


def _batch(seed: int, rows: int, length: int, trained: list[int]) -> dict[str, torch.Tensor]:
    """Rows of random tokens; row i has `trained[i]` trained labels at its end. Row 0 holds two
    packed segments (positions restart mid-row)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 300, (rows, length), generator=gen)
    labels = torch.full_like(ids, IGNORE)
    for i, n in enumerate(trained):
        labels[i, length - n :] = ids[i, length - n :]
    positions = torch.arange(length).repeat(rows, 1)
    half = length // 2
    positions[0, half:] = torch.arange(length - half)
    labels[0, half] = IGNORE  # an example's first label is never trained
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def _reference_grads(
    model: Any, batches: list[dict[str, torch.Tensor]], smoothing: float
) -> tuple[float, dict[str, torch.Tensor]]:
    big = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    model.zero_grad()
    # use_cache=False: with a KV cache transformers ignores packing and attends across segments.
    logits = model(
        input_ids=big["input_ids"], position_ids=big["position_ids"], use_cache=False
    ).logits
    targets = big["labels"][:, 1:]
    keep = targets != IGNORE
    loss = F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], label_smoothing=smoothing)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _trainer(model: Any, tmp_path: Path, smoothing: float) -> InstructTrainer:
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path), gradient_accumulation_steps=2, report_to="none", use_cpu=True
    )
    return InstructTrainer(
        model=model, args=args, loss_chunk_size=7, label_smoothing=smoothing, pad_token_id=3
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_accumulated_grads_equal_one_big_batch(
    tiny_model: Any, tmp_path: Path, smoothing: float
) -> None:
    # 3 + 4 trained targets in the first micro-batch, 20 + 11 in the second: a mean of
    # per-micro-batch means would weight the first micro-batch's tokens ~4x too much.
    batches = [_batch(0, 2, 24, [4, 4]), _batch(1, 2, 24, [21, 11])]
    ref_loss, ref_grads = _reference_grads(tiny_model, batches, smoothing)

    trainer = _trainer(tiny_model, tmp_path, smoothing)
    tiny_model.zero_grad()
    samples, n_items = trainer.get_batch_samples(iter(batches), 2, torch.device("cpu"))
    assert n_items is not None and int(n_items) == sum(count_targets(b["labels"]) for b in batches)
    step_loss = sum(float(trainer.training_step(tiny_model, b, n_items)) for b in samples)

    assert step_loss == pytest.approx(ref_loss, rel=1e-5)
    for name, param in tiny_model.named_parameters():
        assert param.grad is not None, name
        torch.testing.assert_close(param.grad, ref_grads[name], rtol=1e-4, atol=1e-6)


def test_mean_of_micro_batch_means_would_differ(tiny_model: Any, tmp_path: Path) -> None:
    """Guards the test above: with these batches the naive normalization is measurably wrong."""
    batches = [_batch(0, 2, 24, [4, 4]), _batch(1, 2, 24, [21, 11])]
    ref_loss, _ = _reference_grads(tiny_model, batches, 0.0)
    naive = sum(_reference_grads(tiny_model, [b], 0.0)[0] for b in batches) / 2
    assert abs(naive - ref_loss) > 1e-3


def test_trained_hidden_is_the_final_normed_decoder_state(tiny_model: Any) -> None:
    """trained_hidden runs the model's own forward (so DDP/PEFT wrappers run) and skips the LM
    head; the states it selects must be the decoder body's final normed output."""
    from instructune.models.logprobs import causal_lm_parts, trained_hidden

    batch = _batch(2, 2, 20, [5, 9])
    tiny_model.eval()
    with torch.no_grad():
        hidden, targets = trained_hidden(tiny_model, batch)
        decoder, _ = causal_lm_parts(tiny_model)
        body = decoder(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).last_hidden_state
    keep = batch["labels"][:, 1:] != IGNORE
    torch.testing.assert_close(hidden, body[:, :-1][keep])
    assert torch.equal(targets, batch["labels"][:, 1:][keep])


def test_eval_loss_is_plain_mean_without_smoothing(tiny_model: Any, tmp_path: Path) -> None:
    batch = _batch(3, 2, 24, [6, 13])
    ref_loss, _ = _reference_grads(tiny_model, [batch], 0.0)
    trainer = _trainer(tiny_model, tmp_path, smoothing=0.2)
    tiny_model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(tiny_model, batch)
    assert isinstance(loss, torch.Tensor)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)


def test_count_tokens_skips_packed_padding_tail() -> None:
    ids = torch.tensor([[5, 6, 7, 8, 3, 3], [5, 6, 7, 8, 9, 10]])
    positions = torch.tensor([[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]])
    batch = {"input_ids": ids, "position_ids": positions, "labels": ids}
    assert count_tokens(batch, pad_token_id=3) == 4 + 6
    padded = {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 0, 0, 0, 0]] * 2)}
    assert count_tokens(padded, pad_token_id=3) == 4
