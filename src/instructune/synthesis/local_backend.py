"""The `local` backend: the project's inference engine, in-process and batched.

`backend.model` is anything `load_bundle` accepts: the embedded default, a model folder or Hub id,
or a training output_dir (base + adapter, rendered with the run's own template).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from instructune.synthesis.backends import GenParams, Request, Response

if TYPE_CHECKING:
    from instructune.config.schema import SynthBackendConfig


class LocalBackend:
    kind = "local"

    def __init__(self, cfg: SynthBackendConfig, engine: Any = None) -> None:
        self.model = cfg.model
        self.endpoint = f"local model {cfg.model}"
        self.batch_size = cfg.batch_size
        if engine is None:
            from instructune.artifacts import load_bundle
            from instructune.inference.engine import Engine

            engine = Engine.from_bundle(load_bundle(cfg.model))
        self.engine = engine

    def complete(self, requests: Sequence[Request]) -> Iterator[tuple[int, Response]]:
        # One batch shares its sampling parameters; the per-request seed only makes cache keys
        # distinct, so batches group on everything else and take their first request's seed.
        groups: dict[GenParams, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(replace(req.params, seed=None), []).append(i)
        for params, indices in groups.items():
            # Similar lengths together: less padding per batch.
            indices.sort(key=lambda i: len(requests[i].prompt))
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                seed = requests[chunk[0]].params.seed
                done = self._generate(requests, chunk, params, seed)
                yield from zip(chunk, done, strict=True)

    def _generate(
        self, requests: Sequence[Request], chunk: list[int], params: GenParams, seed: int | None
    ) -> list[Response]:
        from instructune.inference.engine import SamplingParams

        sampling = SamplingParams(
            max_new_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=params.stop,
            seed=seed,
        )
        conversations = [[{"role": "user", "content": requests[i].prompt}] for i in chunk]
        completions = self.engine.chat(conversations, sampling)
        return [
            Response(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens)
            for c in completions
        ]

    def close(self) -> None:
        pass
