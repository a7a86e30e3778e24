"""`SamplingParams`: validation, the one conversion from the config's vocabulary, and the logits
pipeline (repetition penalty → temperature → top-k → top-p) against transformers' processors."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from instructune.config import EvalConfig
from instructune.config.sampling import SamplingConfig
from instructune.inference.sampling import SamplingParams, make_generator, penalize, sample, warp

# (repetition_penalty, temperature, top_k, top_p): each stage alone and all together, with values
# where a different order of the stages gives different logits
PIPELINES = [
    (1.0, 0.7, 0, 1.0),
    (1.0, 1.0, 5, 1.0),
    (1.0, 1.0, 0, 0.6),
    (1.5, 1.0, 0, 1.0),
    (1.3, 0.5, 12, 0.8),
    (0.8, 2.0, 7, 0.3),
    (1.2, 0.3, 1, 0.9),
    (1.0, 3.0, 0, 0.5),
    (1.0, 0.25, 0, 0.9),
    (1.0, 0.5, 10, 0.7),
]


def _transformers(rp: float, t: float, k: int, p: float) -> LogitsProcessorList:
    """What `model.generate(do_sample=True, ...)` applies, in its order."""
    chain: list[Any] = [RepetitionPenaltyLogitsProcessor(rp)] if rp != 1.0 else []
    chain.append(TemperatureLogitsWarper(t))
    if k:
        chain.append(TopKLogitsWarper(k))
    if p < 1.0:
        chain.append(TopPLogitsWarper(p))
    return LogitsProcessorList(chain)


@pytest.mark.parametrize(("rp", "t", "k", "p"), PIPELINES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_pipeline_equals_transformers(
    rp: float, t: float, k: int, p: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, generator=g) * 3
    seen = torch.randint(0, 64, (10,), generator=g)
    ref = _transformers(rp, t, k, p)(seen[None], logits[None].clone())[0]
    params = SamplingParams(temperature=t, top_k=k, top_p=p, repetition_penalty=rp)
    ours = warp(penalize(logits, seen, rp) if rp != 1.0 else logits, params)
    kept = ours > float("-inf")
    assert torch.equal(kept, ref > float("-inf"))
    assert torch.allclose(ours[kept], ref[kept], atol=1e-5)


def test_sample_draws_only_kept_tokens_in_their_proportions() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    params = SamplingParams(temperature=0.8, top_k=4, top_p=0.9, seed=0)
    probs = warp(logits, params).softmax(-1)
    gen = make_generator(params, torch.device("cpu"))
    draws = torch.tensor([sample(logits, params, gen) for _ in range(4000)])
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    assert set(draws.tolist()) == set(torch.nonzero(probs).flatten().tolist())
    assert torch.allclose(freq, probs, atol=0.03)


def test_greedy_is_the_argmax_and_draws_nothing() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    params = SamplingParams(top_k=1, top_p=0.1)  # temperature 0: warpers don't apply
    assert params.greedy and make_generator(params, torch.device("cpu")) is None
    assert sample(logits, params, None) == 1


def test_seeded_rows_draw_the_same_tokens() -> None:
    logits = torch.zeros(1000)
    params = SamplingParams(temperature=1.0, seed=5)

    def draws(p: SamplingParams) -> list[int]:
        gen = make_generator(p, torch.device("cpu"))
        return [sample(logits, p, gen) for _ in range(20)]

    assert draws(params) == draws(params)
    assert draws(params) != draws(SamplingParams(temperature=1.0, seed=6))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", 0),
        ("temperature", -0.1),
        ("temperature", 100.5),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("top_k", -1),
        ("repetition_penalty", 0.0),
        ("stop", ("ok", "")),
    ],
)
def test_bad_values_are_refused_by_params_and_config_alike(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(f"{field}={value!r}: must be ")):
        SamplingParams(**{field: value})
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: list(value) if field == "stop" else value})


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 0.0), ("temperature", 100.0), ("top_p", 1.0), ("top_k", 0)],
)
def test_edge_values_are_accepted_by_params_and_config_alike(field: str, value: Any) -> None:
    assert getattr(SamplingParams(**{field: value}), field) == value
    assert getattr(SamplingConfig(**{field: value}), field) == value


def test_defaults_are_the_configs() -> None:
    assert SamplingParams() == SamplingParams.from_config(SamplingConfig())
    assert SamplingParams().greedy
    assert [f.name for f in fields(SamplingParams)] == list(SamplingConfig.model_fields)


def test_from_config_carries_every_field_and_overrides() -> None:
    cfg = SamplingConfig(
        max_new_tokens=9,
        temperature=0.4,
        top_p=0.8,
        top_k=3,
        repetition_penalty=1.1,
        stop=["\n\n", "END"],
        seed=2,
    )
    assert SamplingParams.from_config(cfg, seed=11) == SamplingParams(
        max_new_tokens=9,
        temperature=0.4,
        top_p=0.8,
        top_k=3,
        repetition_penalty=1.1,
        stop=("\n\n", "END"),
        seed=11,
    )


def test_eval_section_maps_to_params() -> None:
    # eval's own defaults: 128 new tokens, greedy, seed 0
    assert SamplingParams.from_config(EvalConfig()) == SamplingParams(max_new_tokens=128, seed=0)
    sampled = SamplingParams.from_config(EvalConfig(temperature=1.5, top_p=0.9))
    assert (sampled.temperature, sampled.top_p, sampled.greedy) == (1.5, 0.9, False)
