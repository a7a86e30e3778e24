"""Requests carry the engine's `SamplingParams`; their cache key and meta record keep the shape
caches were written with, so a rerun after the sampling vocabulary changed still hits."""

from __future__ import annotations

import hashlib
import json

from instructune.inference.sampling import SamplingParams
from instructune.synthesis.backends import Request, params_record


def _legacy_key(model: str, prompt: str, params: dict[str, object]) -> str:
    blob = json.dumps(
        {"model": model, "prompt": prompt, "params": params}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def test_record_and_key_keep_the_cached_shape() -> None:
    params = SamplingParams(max_new_tokens=256, temperature=0.7, top_p=0.95, seed=12)
    legacy = {"max_tokens": 256, "temperature": 0.7, "top_p": 0.95, "stop": [], "seed": 12}
    assert params_record(params) == legacy
    request = Request("Name a colour.", params)
    assert request.key("local:m") == _legacy_key("local:m", "Name a colour.", legacy)
    # the key the same request had before (GenParams): an existing synth_cache.jsonl still hits
    assert request.key("local:m") == (
        "26ca5ba55a8aa86595e5d99990b29b2b4b89ac378fb0819a58325490c0d943d2"
    )


def test_extensions_enter_the_key_only_when_set() -> None:
    base = SamplingParams(max_new_tokens=8, temperature=0.5)
    record = params_record(SamplingParams(max_new_tokens=8, temperature=0.5, top_k=5))
    assert record == {**params_record(base), "top_k": 5}
    penalized = SamplingParams(max_new_tokens=8, temperature=0.5, repetition_penalty=1.2)
    assert params_record(penalized) == {**params_record(base), "repetition_penalty": 1.2}
    keys = {Request("p", p).key("m") for p in (base, penalized, SamplingParams(8, top_k=5))}
    assert len(keys) == 3
