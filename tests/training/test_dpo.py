"""DPO: the loss and its gradients equal TRL's DPOTrainer on the same batch; the reference (the
adapter disabled) equals a separately loaded base; a DPO run through `run_train` logs its
rewards and accuracy; preference rows of every shape are read with file:line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from instructune.config import Config, DataConfig, DataSource
from instructune.config.schema import DPOConfig
from instructune.data.preference import Pair, prepare_pairs
from instructune.training.dpo import (
    PairCollator,
    dpo_losses,
    reference_logps,
    sequence_logps,
)
from instructune.training.preference_trainer import PAIR_METRICS, window_means
from instructune.training.run import run_train

ROWS = [
    {
        "prompt": f"Is {i} even?",
        "chosen": "Yes." if i % 2 == 0 else "No.",
        "rejected": "Maybe, it depends.",
    }
    for i in range(12)
]


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _pairs(tmp_path: Path, tok: Any, rows: list[Any] = ROWS) -> list[Pair]:
    data = _write(tmp_path / "pairs.jsonl", rows)
    cfg = DataConfig(train=[DataSource(path=str(data), format="preference")], max_length=64)
    return prepare_pairs(cfg, tok).train


def _lora(tok: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    from ..tiny import tiny_llama

    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,  # random B: policy and reference differ from the start
        task_type="CAUSAL_LM",
    )
    return get_peft_model(tiny_llama(len(tok)), config)


def _trl_batch(trainer: Any, pairs: list[Pair]) -> dict[str, torch.Tensor]:
    """The same token ids through TRL's own collator: prompt, then exactly our trained answer."""
    rows = []
    for p in pairs:
        k = p.prompt_len
        end_c = int(np.flatnonzero(p.chosen_labels != -100)[-1]) + 1
        end_r = int(np.flatnonzero(p.rejected_labels != -100)[-1]) + 1
        rows.append(
            {
                "prompt_ids": p.chosen_ids[:k].tolist(),
                "chosen_ids": p.chosen_ids[k:end_c].tolist(),
                "rejected_ids": p.rejected_ids[k:end_r].tolist(),
            }
        )
    return dict(trainer.data_collator(rows))


@pytest.mark.parametrize(("loss", "smoothing"), [("sigmoid", 0.0), ("ipo", 0.0), ("robust", 0.1)])
def test_loss_and_gradients_equal_trl(
    tiny_tok: Any, tmp_path: Path, loss: str, smoothing: float
) -> None:
    from datasets import Dataset
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer as TrlDPOTrainer

    pairs = _pairs(tmp_path, tiny_tok)[:4]
    policy = _lora(tiny_tok)
    # TRL takes a PeftModel's current adapter as its reference; handed the base and the LoRA
    # config it adds a new adapter and references the base, as we do. The weights are copied in.
    from ..tiny import tiny_llama

    theirs_base = tiny_llama(len(tiny_tok))  # seeded: the weights _lora wrapped
    cfg = DPOConfig(beta=0.3, loss=loss, label_smoothing=smoothing)  # type: ignore[arg-type]

    batch = PairCollator(tiny_tok.pad_token_id)(pairs)
    ref = reference_logps(policy, None, batch, 1024)
    ours = dpo_losses(sequence_logps(policy, batch), ref, batch["labels"], cfg).losses.mean()
    ours.backward()

    args = TrlDPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.3,
        loss_type=[loss],
        label_smoothing=smoothing,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        use_cpu=True,
    )
    seed_rows = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    trainer = TrlDPOTrainer(
        model=theirs_base,
        args=args,
        train_dataset=seed_rows,
        processing_class=tiny_tok,
        peft_config=policy.peft_config["default"],
    )
    set_peft_model_state_dict(trainer.model, get_peft_model_state_dict(policy))
    assert all(
        torch.equal(p, dict(policy.named_parameters())[n])
        for n, p in trainer.model.named_parameters()
    )
    trainer.model.train()
    theirs = trainer.compute_loss(trainer.model, _trl_batch(trainer, pairs))
    theirs.backward()

    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in policy.named_parameters() if p.requires_grad}
    their_grads = {n: p.grad for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert grads.keys() == their_grads.keys() and grads
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, their_grads[name], rtol=1e-4, atol=1e-6)


def test_reference_is_the_base_with_the_adapter_disabled(
    tiny_tok: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    pairs = _pairs(tmp_path, tiny_tok)[:3]
    batch = PairCollator(tiny_tok.pad_token_id)(pairs)
    config = LoraConfig(
        r=4, target_modules=["q_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
    )
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        expected = sequence_logps(base, batch)
        tuned = sequence_logps(policy, batch)
    got = reference_logps(policy, None, batch, 1024)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(tuned, expected), "the adapter changes nothing: a vacuous test"


@pytest.mark.parametrize("precompute", [False, True])
def test_dpo_run_logs_rewards_and_saves_the_adapter(
    tiny_model_dir: Path, tmp_path: Path, precompute: bool
) -> None:
    data = _write(tmp_path / "pairs.jsonl", ROWS)
    cfg = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "data": {"train": [{"path": str(data)}], "max_length": 64},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "train": {
                "objective": "dpo",
                "max_steps": 4,
                "micro_batch_size": 4,
                "learning_rate": 5e-2,
                "logging_steps": 1,
                "lr_scheduler": "constant",
            },
            "dpo": {"beta": 0.5, "precompute_ref": precompute},
            "output_dir": str(tmp_path / "run"),
        }
    )
    result = run_train(cfg)
    records = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 4
    # LoRA B starts at zero: policy == reference, so the first loss is log 2 and rewards are 0
    assert steps[0]["loss"] == pytest.approx(np.log(2), abs=1e-4)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen"):
        assert all(np.isfinite(r[key]) for r in steps), key
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert steps[-1]["rewards/margins"] > 0
    assert (result.out_dir / "adapter_model.safetensors").is_file()
    assert result.metrics["trained_tokens"] > 0


HH = {
    "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Is 4 even?\n\nAssistant: Yes.",
    "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Is 4 even?\n\nAssistant: No.",
}
ULTRA = {
    "prompt": "Is 6 even?",
    "completions": [
        {"response": "No.", "overall_score": 2},
        {"response": "Yes, 6 is even.", "overall_score": 9},
        {"response": "Perhaps.", "overall_score": 5},
    ],
}
BINARIZED = {
    "prompt": "Is 8 even?",
    "chosen": [{"role": "user", "content": "Is 8 even?"}, {"role": "assistant", "content": "Yes."}],
    "rejected": [
        {"role": "user", "content": "Is 8 even?"},
        {"role": "assistant", "content": "No."},
    ],
}


def test_preference_shapes_become_one_schema(tiny_tok: Any, tmp_path: Path) -> None:
    pairs = _pairs(tmp_path, tiny_tok, [HH, ULTRA, BINARIZED])
    texts = [
        (
            tiny_tok.decode(p.chosen_ids[: p.prompt_len]),
            tiny_tok.decode(p.chosen_ids[p.prompt_len :]),
            tiny_tok.decode(p.rejected_ids[p.prompt_len :]),
        )
        for p in pairs
    ]
    assert "Hello!" in texts[0][0] and "Is 4 even?" in texts[0][0]
    assert texts[0][1].startswith("Yes.") and texts[0][2].startswith("No.")
    assert texts[1][1].startswith("Yes, 6 is even.") and texts[1][2].startswith("No.")
    assert "Is 8 even?" in texts[2][0] and texts[2][1].startswith("Yes.")
    for p in pairs:
        assert np.array_equal(p.chosen_ids[: p.prompt_len], p.rejected_ids[: p.prompt_len])
        # only the answer and its end-of-turn token are trained, and it ends on that token
        for ids, labels in ((p.chosen_ids, p.chosen_labels), (p.rejected_ids, p.rejected_labels)):
            trained = np.flatnonzero(labels != -100)
            assert trained[0] == p.prompt_len
            assert int(ids[trained[-1]]) == tiny_tok.convert_tokens_to_ids("<|im_end|>")


def test_bad_preference_rows_name_file_and_line(tiny_tok: Any, tmp_path: Path) -> None:
    bad = {"prompt": "Is 2 even?", "chosen": "Yes."}
    with pytest.raises(ValueError, match=r"pairs.jsonl:(line )?2: missing field 'rejected'"):
        _pairs(tmp_path, tiny_tok, [ROWS[0], bad])
    tie = {"prompt": "x", "completions": [{"text": "a", "score": 1}, {"text": "b", "score": 1}]}
    with pytest.raises(ValueError, match=r"pairs.jsonl:(line )?1: no preference"):
        _pairs(tmp_path, tiny_tok, [tie])


def test_window_means_sum_over_processes_before_dividing() -> None:
    """Two processes' windows (3 pairs and 1 pair) give the mean over all 4 pairs, not the mean
    of the two means; a process with no pairs still takes part in the sum."""
    windows = [
        ({"rewards/chosen": 3.0, "rewards/accuracies": 3.0}, 3),
        ({"rewards/chosen": -1.0, "rewards/accuracies": 0.0}, 1),
        ({}, 0),
    ]
    totals = [torch.tensor([w.get(k, 0.0) for k in PAIR_METRICS] + [n]) for w, n in windows]
    calls: list[torch.Tensor] = []

    def reduce(mine: torch.Tensor) -> torch.Tensor:
        calls.append(mine)
        return sum(totals, torch.zeros_like(mine))

    means = window_means(*windows[2], PAIR_METRICS, reduce)
    assert len(calls) == 1 and calls[0].tolist() == [0.0] * 5
    assert means["rewards/chosen"] == pytest.approx(0.5)
    assert means["rewards/accuracies"] == pytest.approx(0.75)
    assert means["rewards/margins"] == 0.0
    assert window_means(*windows[0], PAIR_METRICS)["rewards/chosen"] == pytest.approx(1.0)
    assert window_means({}, 0, PAIR_METRICS) == {}
