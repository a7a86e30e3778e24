"""Prompt tuning, prefix tuning and IA3 through `run_train`: exactly their parameters train, the
run folder loads back through `load_bundle`, the loss path and the engine's cached decoding agree
with peft's own full forward, and `merge` takes IA3 but refuses the virtual-token methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from instructune.bundle import load_bundle
from instructune.config import Config
from instructune.inference.engine import Engine, SamplingParams
from instructune.models.logprobs import causal_lm_parts, trained_hidden
from instructune.models.losses import chunked_token_losses
from instructune.ship.merge import run_merge
from instructune.training.run import run_train

from .conftest import alpaca_rows
from .test_methods import Snapshot, _changed

METHODS = {
    "prompt_tuning": (
        {"prompt_tuning": {"num_virtual_tokens": 5, "init_text": "Answer the sum:"}},
        lambda n: "prompt_encoder" in n,
    ),
    "prefix_tuning": (
        {"prefix_tuning": {"num_virtual_tokens": 4}},
        lambda n: "prompt_encoder" in n,
    ),
    "ia3": ({"ia3": {"target_modules": ["k_proj", "v_proj", "down_proj"]}}, lambda n: "ia3_" in n),
}


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 3-step run per method, with the snapshot of its parameters before training."""
    root = tmp_path_factory.mktemp("methods")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(24)), encoding="utf-8")
    out: dict[str, Any] = {}
    for method, (section, _) in METHODS.items():
        raw = {
            "model": {"path": str(tiny_model_dir)},
            "data": {"train": [{"path": str(data)}], "max_length": 96, "packing": False},
            "method": method,
            "train": {"max_steps": 3, "micro_batch_size": 2, "learning_rate": 5e-2},
            "output_dir": str(root / f"run-{method.split('_')[0]}"),
        }
        snapshot = Snapshot()
        result = run_train(Config.model_validate(raw | section), callbacks=[snapshot])
        out[method] = (result, snapshot)
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_exactly_the_methods_parameters_change(runs: dict[str, Any], method: str) -> None:
    result, snapshot = runs[method]
    expected = {n for n in snapshot.before if METHODS[method][1](n)}
    assert expected, "nothing to train"
    assert snapshot.trainable == expected
    assert _changed(snapshot, result.model) == expected
    assert (result.out_dir / "adapter_model.safetensors").is_file()
    assert (result.out_dir / "adapter_config.json").is_file()
    # what was saved is what trained: the reloaded adapter's tensors equal the trained ones
    trained = {n.replace(".default", ""): p for n, p in result.model.named_parameters()}
    loaded = load_bundle(result.out_dir)
    name = loaded.adapters[0]
    for n, p in loaded.model.named_parameters():
        if METHODS[method][1](n):
            torch.testing.assert_close(p, trained[n.replace(f".{name}", "")].detach())


def test_prompt_tuning_starts_from_the_init_text(tiny_model_dir: Path, tiny_tok: Any) -> None:
    from instructune.models import apply_method

    from ..tiny import tiny_llama

    cfg = Config.model_validate({"prompt_tuning": {"num_virtual_tokens": 7, "init_text": "a b"}})
    model = apply_method(tiny_llama(len(tiny_tok)), "prompt_tuning", cfg.lora, False, cfg, tiny_tok)
    ids = tiny_tok("a b", add_special_tokens=False)["input_ids"]
    expected = model.get_input_embeddings()(torch.tensor((ids * 7)[:7]))
    weight = model.prompt_encoder["default"].embedding.weight
    assert torch.equal(weight, expected)


@pytest.mark.parametrize("method", list(METHODS))
def test_loss_path_equals_pefts_forward(runs: dict[str, Any], method: str) -> None:
    """Our trained-positions loss (eval and training use it) equals peft's own labelled forward."""
    bundle = load_bundle(runs[method][0].out_dir)
    ids = bundle.tokenizer("Hello there, what is two plus two?", return_tensors="pt").input_ids
    labels = ids.clone()
    labels[:, :3] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        hidden, targets = trained_hidden(bundle.model, batch)
        _, head = causal_lm_parts(bundle.model)
        ours = chunked_token_losses(head, hidden, targets).mean()
        theirs = bundle.model(**batch).loss
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", list(METHODS))
def test_engine_decodes_like_pefts_full_forward(runs: dict[str, Any], method: str) -> None:
    """Greedy tokens from the cached, left-padded engine equal argmax of peft's uncached forward
    of the whole sequence, step by step (prompts of different lengths decode together)."""
    bundle = load_bundle(runs[method][0].out_dir)
    engine = Engine.from_bundle(bundle)
    prompts = ["Hi", "What is 12 plus 12? Answer in words, please."]
    params = SamplingParams(max_new_tokens=6)
    got = engine.generate(prompts, params)
    for prompt, completion in zip(prompts, got, strict=True):
        ids = engine.encode(prompt)
        for _ in range(completion.completion_tokens):
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = bundle.model(input_ids=x, attention_mask=torch.ones_like(x)).logits
            ids.append(int(logits[0, -1].argmax()))
            if ids[-1] in engine.stop_ids:
                break
        expected = ids[len(engine.encode(prompt)) :]
        assert engine.decode(expected) == completion.text or expected[-1] in engine.stop_ids
        assert len(expected) == completion.completion_tokens


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_merge_refuses_virtual_token_methods(
    runs: dict[str, Any], method: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=f"method: {method} run.*nothing to merge"):
        run_merge(runs[method][0].out_dir, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_ia3_merges_with_parity(runs: dict[str, Any], tmp_path: Path) -> None:
    result = run_merge(runs["ia3"][0].out_dir, tmp_path / "merged")
    assert result.parity.passed
    assert load_bundle(tmp_path / "merged").adapters == []


def test_prompt_methods_need_unpacked_rows() -> None:
    with pytest.raises(ValueError, match=r"method: prefix_tuning needs data\.packing: false"):
        Config.model_validate({"method": "prefix_tuning", "data": {"train": [{"path": "x.jsonl"}]}})
