"""What every method works with: the client, prompts, tally, row sink, RNG and progress bar."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

from instructune.config.synthesize import SynthesizeConfig
from instructune.inference.sampling import SamplingParams
from instructune.synthesis.backends import Request, Response, params_record
from instructune.synthesis.client import Client
from instructune.synthesis.output import RowSink, Tally
from instructune.synthesis.prompts import Prompts

Purpose = Literal["generate", "answer", "judge"]
# Yes/no and same/different judgements need a word or two.
_JUDGE_MAX_TOKENS = 8


@dataclass
class Progress:
    """A tqdm bar over kept instructions showing requests/s and kept/dropped counts."""

    bar: Any = None

    def update(self, ctx: SynthContext) -> None:
        if self.bar is None:
            return
        self.bar.n = min(ctx.tally.kept_instructions, self.bar.total)
        self.bar.set_postfix(
            {
                "req/s": f"{ctx.client.requests_per_s():.2f}",
                "kept": ctx.tally.kept_instructions,
                "dropped": ctx.tally.dropped_instructions,
                "cached": ctx.client.stats.cache_hits,
            },
            refresh=True,
        )


@dataclass
class SynthContext:
    cfg: SynthesizeConfig
    client: Client
    prompts: Prompts
    tally: Tally
    sink: RowSink
    progress: Progress = field(default_factory=Progress)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.cfg.seed)

    @property
    def target(self) -> int:
        return self.cfg.num_instructions

    def remaining(self) -> int:
        return self.cfg.num_instructions - self.tally.kept_instructions

    def params(self, purpose: Purpose) -> SamplingParams:
        """`generate`: the configured sampling; `answer`: greedy; `judge`: greedy, a few tokens.
        Each request's seed is set by the client."""
        s = self.cfg.sampling
        if purpose == "generate":
            return SamplingParams.from_config(s)
        if purpose == "answer":
            return SamplingParams(max_new_tokens=s.max_new_tokens)
        return SamplingParams(max_new_tokens=_JUDGE_MAX_TOKENS)

    def ask(self, prompts: list[str], purpose: Purpose) -> list[tuple[Request, Response]]:
        requests = [self.client.request(p, self.params(purpose)) for p in prompts]
        responses = self.client.run(requests)
        self.progress.update(self)
        return list(zip(requests, responses, strict=True))

    def emit(
        self,
        *,
        instruction: str,
        input: str,
        output: str,
        round_: int,
        operation: str,
        parent_id: str | None,
        request: Request,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Write one `messages` row with its lineage; returns the row id."""
        row_id = f"{self.cfg.method}-{self.sink.count:06d}"
        user = f"{instruction}\n\n{input}" if input else instruction
        meta = {
            "method": self.cfg.method,
            "instruction": instruction,
            "input": input,
            "round": round_,
            "operation": operation,
            "parent_id": parent_id,
            "backend": self.client.backend.kind,
            "model": self.client.backend.model,
            "sampling": params_record(request.params),
            "prompt_hash": self.client.key(request),
            **(extra or {}),
        }
        self.sink.emit(
            {
                "id": row_id,
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": output},
                ],
                "meta": meta,
            }
        )
        return row_id
