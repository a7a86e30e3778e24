"""Sampling parameters and the per-row choice of the next token.

Every row of a decode batch carries its own `SamplingParams` and its own seeded generator, so a
request's output does not depend on which other requests share its forward pass. The logits
pipeline follows `transformers.generate`'s order (repetition penalty, temperature, top-k, top-p),
and temperature 0 is greedy: the argmax of the penalized logits, exactly what `generate` picks
with `do_sample=False`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from instructune.config.sampling import SamplingConfig

if TYPE_CHECKING:
    from argparse import Namespace

    import torch

# The runtime type restates no default: every one is `SamplingConfig`'s (documented there).
_DEFAULT = SamplingConfig()


@dataclass(frozen=True)
class SamplingParams:
    """How one prompt is continued (the fields of `config.SamplingConfig`); validated on
    construction, errors name the field. Frozen and cheap: one per request row."""

    max_new_tokens: int = _DEFAULT.max_new_tokens
    temperature: float = _DEFAULT.temperature
    top_p: float = _DEFAULT.top_p
    top_k: int = _DEFAULT.top_k
    repetition_penalty: float = _DEFAULT.repetition_penalty
    stop: tuple[str, ...] = tuple(_DEFAULT.stop)
    seed: int | None = _DEFAULT.seed

    @classmethod
    def from_config(cls, cfg: SamplingConfig | Namespace, **overrides: Any) -> SamplingParams:
        """The one conversion from the config's vocabulary: a `SamplingConfig` (a YAML section)
        or the CLI's parsed flags, which carry the same names; `overrides` replace fields, e.g. a
        per-row `seed`."""
        values = {f.name: getattr(cfg, f.name) for f in fields(cls)}
        values.update(overrides)
        return cls(**{**values, "stop": tuple(values["stop"])})

    def __post_init__(self) -> None:
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "an integer >= 1"),
            ("temperature", 0.0 <= self.temperature <= 100.0, "a number in [0, 100]"),
            ("top_p", 0.0 < self.top_p <= 1.0, "a number in (0, 1]"),
            ("top_k", self.top_k >= 0, "an integer >= 0"),
            ("repetition_penalty", self.repetition_penalty > 0.0, "a number > 0"),
            ("stop", all(isinstance(s, str) and s for s in self.stop), "non-empty strings"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be {allowed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """The row's own generator (None for greedy rows, which draw nothing)."""
    import torch

    if params.greedy:
        return None
    gen = torch.Generator(device=device)
    if params.seed is None:
        gen.seed()
    else:
        gen.manual_seed(params.seed)
    return gen


def penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """`RepetitionPenaltyLogitsProcessor` for one row: seen tokens' logits divided (or, when
    negative, multiplied) by the penalty."""
    import torch

    scores = logits.gather(0, seen)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(0, seen, scores)


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p on one row's (already penalized) float logits [vocab],
    as `transformers`' `TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`: the
    tokens they drop get -inf."""
    import torch

    logits = logits / params.temperature
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # like TopPLogitsWarper: drop the low tail whose mass is <= 1 - top_p, keep at least one
        drop = cum <= 1 - params.top_p
        drop[-1] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def sample(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """The next token of one row from its (already penalized) float logits [vocab]."""
    import torch

    if params.greedy:
        return int(logits.argmax())
    probs = warp(logits, params).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=gen))
