"""Logit parity: the proof that a merged or exported model computes what the trained one did.

The same token ids go through a reference model (base + adapter) and a candidate (the merged
folder reloaded from disk, or the GGUF file read back); the report holds the largest absolute
logit difference, the mean one, and how often the two agree on the next token. Tolerances depend
on the candidate's storage: float32 only reorders arithmetic, float16/bfloat16 round every weight,
q8_0 quantizes them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from instructune.data.templates import Template
    from instructune.rundir import RunDir

log = logging.getLogger(__name__)

# storage → (absolute tolerance, tolerance relative to the reference's largest |logit|, least
# share of positions whose argmax must agree). float32 differs by summation order only; a float16
# weight keeps 11 bits of mantissa, bfloat16 8, q8_0 8 bits per block of 32 scaled by the block's
# largest value, and the errors add up over the layers. Measured on SmolLM2-135M (GGUF export vs
# the float32 model, 190 tokens, largest |logit| 38.8): f32 0, f16 0.045, bf16 0.28, q8_0 1.32
# (mean 0.22, argmax 96.8%). The bounds leave a margin over those; a q/k rotary permutation left
# out of an f32 export is caught (tests/ship/test_export.py).
TOLERANCES: dict[str, tuple[float, float, float]] = {
    "float32": (1e-4, 1e-4, 0.99),
    "float16": (1e-2, 1e-2, 0.95),
    "bfloat16": (5e-2, 5e-2, 0.9),
    "q8_0": (5e-2, 8e-2, 0.85),
}

# Used when the run recorded no eval data (or it can't be read any more): short chats that every
# chat or alpaca template renders, with the assistant turn so its tokens are compared too.
BUILTIN_CHATS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Explain in one sentence why the sky is blue.", "Air scatters blue sunlight the most."),
    ("List three prime numbers.", "2, 3 and 5 are prime numbers."),
    ("Translate 'good morning' to German.", "Guten Morgen!"),
)


class ParityError(ValueError):
    """The candidate's logits are further from the reference's than the tolerance allows."""


@dataclass
class ParityReport:
    reference: str
    candidate: str
    storage: str
    """The candidate's weight storage the tolerance is chosen by (float32, bfloat16, q8_0 …)."""
    prompts: int
    tokens: int
    prompt_source: str
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float
    reference_max_abs_logit: float
    tolerance: float
    min_argmax_agreement: float

    @property
    def passed(self) -> bool:
        return (
            self.max_abs_diff <= self.tolerance
            and self.argmax_agreement >= self.min_argmax_agreement
        )

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"parity {verdict} ({self.candidate} vs {self.reference}, {self.storage}): "
            f"max |Δlogit| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}), "
            f"mean {self.mean_abs_diff:.3g}, argmax agreement {self.argmax_agreement:.1%} "
            f"(at least {self.min_argmax_agreement:.0%}) over {self.tokens} tokens of "
            f"{self.prompts} prompts from {self.prompt_source}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def check(self) -> None:
        """Raise ParityError (one line, the summary) when the candidate is out of tolerance."""
        if not self.passed:
            raise ParityError(self.summary())


def parity_prompts(
    run: RunDir | None, template: Template, tokenizer: Any, count: int = 4, max_tokens: int = 256
) -> tuple[list[list[int]], str]:
    """Token ids of `parity_texts` (at most `max_tokens` each); and where they came from."""
    texts, source = parity_texts(run, template, count)
    return encode_texts(tokenizer, texts, max_tokens), source


def encode_texts(tokenizer: Any, texts: Sequence[str], max_tokens: int = 256) -> list[list[int]]:
    """Ids of rendered texts (the template writes any BOS itself), cut to `max_tokens`."""
    ids = [list(tokenizer(t, add_special_tokens=False)["input_ids"])[:max_tokens] for t in texts]
    return [i for i in ids if len(i) > 1]


def parity_texts(run: RunDir | None, template: Template, count: int = 4) -> tuple[list[str], str]:
    """Up to `count` held-out conversations (the run's eval split when it recorded one), else the
    built-in chats, each rendered in full with `template`; and where they came from."""
    from instructune.data.conversation import Message

    texts, source = _held_out_texts(run, template, count)
    if not texts:
        texts = [
            template.render([Message("user", q), Message("assistant", a)])
            for q, a in BUILTIN_CHATS[:count]
        ]
        source = f"built-in chats ({source})"
    return texts, source


def _held_out_texts(run: RunDir | None, template: Template, count: int) -> tuple[list[str], str]:
    """The eval conversations training held out, rendered; ([], why not) when there are none."""
    try:
        cfg = run.config() if run is not None else None
    except ValueError as err:
        return [], f"the run's config can't be read: {err}"
    if cfg is None or cfg.data is None:
        return [], "the run recorded no data config"
    if not cfg.data.eval and cfg.data.eval_fraction == 0:
        return [], "the run held out no eval data"
    from instructune.data.pipeline import load_sources, load_splits
    from instructune.data.templates import is_raw_conversation

    try:  # explicit eval files are read alone; a held-out fraction needs the train split redone
        if cfg.data.eval:
            held_out = load_sources(cfg.data.eval, cfg.data)[0]
        else:
            held_out = load_splits(cfg.data).eval
    except (OSError, ValueError) as err:  # moved or edited data: fall back, saying why
        return [], f"its eval data can't be read: {err}"
    chats = [c for c in held_out if not is_raw_conversation(c.messages)][:count]
    texts = [template.render(c.messages, meta=c.meta or None) for c in chats]
    where = ", ".join(s.path for s in cfg.data.eval) if cfg.data.eval else "eval_fraction"
    return texts, f"the run's eval data ({where})"


def compute_logits(model: Any, prompts: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Float32 CPU logits of each prompt, one forward per prompt (no padding to get wrong)."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for ids in prompts:
            batch = torch.tensor([list(ids)], dtype=torch.long, device=device)
            out.append(model(input_ids=batch).logits[0].float().cpu())
    return out


def compare_logits(
    reference: Sequence[torch.Tensor],
    candidate: Sequence[torch.Tensor],
    *,
    storage: str,
    names: tuple[str, str],
    prompt_source: str,
) -> ParityReport:
    """The parity report of `candidate` against `reference` logits (same prompts, same order)."""
    import torch

    if storage not in TOLERANCES:
        raise ValueError(f"no parity tolerance for storage {storage!r}; known: {list(TOLERANCES)}")
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"parity needs the same prompts: {len(reference)} vs {len(candidate)}")
    ref = torch.cat(list(reference))
    cand = torch.cat(list(candidate))
    if ref.shape != cand.shape:
        raise ValueError(f"logit shapes differ: {tuple(ref.shape)} vs {tuple(cand.shape)}")
    diff = (ref - cand).abs()
    scale = float(ref.abs().max())
    atol, rtol, agreement = TOLERANCES[storage]
    return ParityReport(
        reference=names[0],
        candidate=names[1],
        storage=storage,
        prompts=len(reference),
        tokens=int(ref.shape[0]),
        prompt_source=prompt_source,
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        argmax_agreement=float((ref.argmax(-1) == cand.argmax(-1)).float().mean()),
        reference_max_abs_logit=scale,
        tolerance=atol + rtol * scale,
        min_argmax_agreement=agreement,
    )


__all__ = [
    "TOLERANCES",
    "ParityError",
    "ParityReport",
    "compare_logits",
    "compute_logits",
    "encode_texts",
    "parity_prompts",
    "parity_texts",
]
