"""`export --format gguf` on tiny in-process llamas: llama.cpp's names, permutation and metadata,
read back with transformers' GGUF loader (logits, tokenizer, chat template) for every dtype."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from instructune.bundle import load_bundle
from instructune.cli.main import main
from instructune.rundir import RunDir
from instructune.ship.export import run_export
from instructune.ship.gguf_export import permute


def _fields(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t for t in reader.tensors}


def _tensor(tensors: dict[str, Any], name: str) -> np.ndarray:
    from gguf import dequantize

    t = tensors[name]
    return np.asarray(dequantize(t.data, t.tensor_type))


def _save(model: Any, tok: Any, folder: Path) -> Path:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_lora_run_exports_merged_with_llama_cpp_layout(tiny_lora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.gguf"
    result = run_export(tiny_lora_run, out, dtype="f32")
    assert result.parity.max_abs_diff < 1e-5 and result.parity.argmax_agreement == 1.0
    report = json.loads((tmp_path / "model.parity.json").read_text())
    assert report["merged_adapters"] == [tiny_lora_run.name]
    assert report["tokenizer_roundtrip"]["mismatches"] == []
    assert report["tokenizer_roundtrip"]["chat_template_equal"]

    bundle = load_bundle(tiny_lora_run)
    merged = bundle.model.merge_and_unload()
    cfg, tok = merged.config, bundle.tokenizer
    fields, tensors = _fields(out)
    expected = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{i}.{part}.weight"
        for i in range(cfg.num_hidden_layers)
        for part in (
            [
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ]
        )
    }
    assert set(tensors) == expected
    # q/k rows are stored in llama.cpp's interleaved rotary order (the GGUF loader undoes it).
    q = merged.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    k = merged.model.layers[1].self_attn.k_proj.weight.detach().numpy()
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    assert np.array_equal(_tensor(tensors, "blk.0.attn_q.weight"), permute(q, heads, heads))
    assert np.array_equal(_tensor(tensors, "blk.1.attn_k.weight"), permute(k, heads, kv))
    assert not np.array_equal(permute(q, heads, heads), q)
    v = merged.model.layers[0].self_attn.v_proj.weight.detach().numpy()
    assert np.array_equal(_tensor(tensors, "blk.0.attn_v.weight"), v)

    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == 0
    assert fields["llama.block_count"] == cfg.num_hidden_layers
    assert fields["llama.context_length"] == cfg.max_position_embeddings
    assert fields["llama.embedding_length"] == cfg.hidden_size
    assert fields["llama.feed_forward_length"] == cfg.intermediate_size
    assert fields["llama.attention.head_count"] == heads
    assert fields["llama.attention.head_count_kv"] == kv
    assert fields["llama.rope.dimension_count"] == cfg.hidden_size // heads
    assert fields["llama.rope.freq_base"] == pytest.approx(cfg.rope_parameters["rope_theta"])
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg.rms_norm_eps)
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2"
    by_id = {i: t for t, i in tok.get_vocab().items()}
    assert fields["tokenizer.ggml.tokens"] == [by_id[i] for i in range(cfg.vocab_size)]
    assert fields["tokenizer.ggml.token_type"][:4] == [3, 3, 3, 3]  # the specials are CONTROL
    assert set(fields["tokenizer.ggml.token_type"][4:]) == {1}  # the rest NORMAL
    assert len(fields["tokenizer.ggml.merges"]) > 100
    assert fields["tokenizer.ggml.bos_token_id"] == tok.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert fields["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == RunDir(tiny_lora_run).template_text()


@pytest.mark.parametrize(
    ("dtype", "matrix_type"), [("f16", "F16"), ("bf16", "BF16"), ("q8_0", "Q8_0")]
)
def test_dtypes_round_trip_within_tolerance(
    tiny_model_dir: Path, tmp_path: Path, dtype: str, matrix_type: str
) -> None:
    out = tmp_path / f"m-{dtype}.gguf"
    result = run_export(tiny_model_dir, out, dtype=dtype)
    assert result.parity.passed and result.parity.storage in ("float16", "bfloat16", "q8_0")
    assert 0 < result.parity.max_abs_diff <= result.parity.tolerance  # lossy, within bounds
    _, tensors = _fields(out)
    kinds = {t.name: t.tensor_type.name for t in tensors.values()}
    assert {k for n, k in kinds.items() if n.endswith("norm.weight")} == {"F32"}
    assert {k for n, k in kinds.items() if not n.endswith("norm.weight")} == {matrix_type}


def test_parity_catches_a_missing_rotary_permutation(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from instructune.ship import gguf_export
    from instructune.ship.parity import ParityError

    # Fault injection: the writer's q/k permutation left out. The loader still un-permutes.
    monkeypatch.setattr(gguf_export, "permute", lambda weights, n_head, n_head_kv: weights)
    with pytest.raises(ParityError, match=r"parity FAILED \(gguf f32 vs model"):
        run_export(tiny_model_dir, tmp_path / "wrong.gguf", dtype="f32")
    report = json.loads((tmp_path / "wrong.parity.json").read_text())
    assert not report["parity"]["passed"]


def test_tied_embeddings_and_explicit_head_dim(tiny_tok: Any, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,  # not hidden/heads: llama.cpp needs attention.key_length
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    folder = _save(LlamaForCausalLM(config), tiny_tok, tmp_path / "tied")
    out = tmp_path / "tied.gguf"
    result = run_export(folder, out, dtype="f32")
    assert result.parity.max_abs_diff < 1e-5
    fields, tensors = _fields(out)
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert fields["llama.attention.key_length"] == 32
    assert fields["llama.rope.dimension_count"] == 32


def test_unsupported_architecture_and_tokenizer(tiny_tok: Any, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from ..tiny import tiny_llama

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tok), n_embd=32, n_layer=1, n_head=2))
    folder = _save(gpt2, tiny_tok, tmp_path / "gpt2")
    with pytest.raises(ValueError, match=r"supports \['llama'\] models .*this model is 'gpt2'"):
        run_export(folder, tmp_path / "g.gguf")

    words = Tokenizer(models.BPE(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator(["hello world"] * 4, trainers.BpeTrainer(special_tokens=["<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<unk>")
    tok.chat_template = tiny_tok.chat_template
    folder = _save(tiny_llama(64), tok, tmp_path / "words")
    with pytest.raises(ValueError, match=r"byte-level BPE tokenizers .*\['gpt-2', 'smollm'"):
        run_export(folder, tmp_path / "w.gguf")
    assert not (tmp_path / "g.gguf").exists() and not (tmp_path / "w.gguf").exists()


def test_cli_export_and_its_errors(tiny_lora_run: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "cli.gguf"
    assert main(["export", str(tiny_lora_run), "--out", str(out), "--dtype", "q8_0"]) == 0
    printed = capsys.readouterr().out
    assert "parity ok (gguf q8_0 vs merged, q8_0)" in printed and f"wrote {out}" in printed
    assert main(["export", str(tiny_lora_run), "--out", str(out)]) == 1
    assert "exists; choose a new file name" in capsys.readouterr().err
    assert main(["export", str(tiny_lora_run), "--out", str(tmp_path / "x.bin")]) == 1
    assert "must be a .gguf file name" in capsys.readouterr().err
