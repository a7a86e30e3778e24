"""The `local` backend: the project's inference engine, in-process and batched.

`backend.model` is anything `load_bundle` accepts: the embedded default, a model folder or Hub id,
or a training output_dir (base + adapter, rendered with the run's own template). Every request
keeps its own sampling parameters and seed (the engine samples per row), so an answer doesn't
depend on which other requests shared its batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from instructune.synthesis.backends import Request, Response

if TYPE_CHECKING:
    from instructune.config.synthesize import SynthBackendConfig

# Requests handed to the engine per call: enough to keep `batch_size` rows decoding (finished rows
# are refilled), few enough that results reach the cache often.
_CHUNK_BATCHES = 4


class LocalBackend:
    kind = "local"

    def __init__(self, cfg: SynthBackendConfig, engine: Any = None) -> None:
        from instructune.config.schema import EMBEDDED_MODEL

        self.model: str = cfg.model or EMBEDDED_MODEL
        self.endpoint = f"local model {self.model}"
        self.batch_size = cfg.batch_size
        self._engine = engine

    @property
    def engine(self) -> Any:
        """Loaded on first use: a rerun answered wholly from the cache never loads the model."""
        if self._engine is None:
            from instructune.bundle import load_bundle
            from instructune.inference.engine import Engine

            bundle = load_bundle(self.model)
            self._engine = Engine.from_bundle(bundle, max_batch_size=self.batch_size)
        return self._engine

    def complete(self, requests: Sequence[Request]) -> Iterator[tuple[int, Response]]:
        if not requests:
            return
        chunk = self.batch_size * _CHUNK_BATCHES
        for start in range(0, len(requests), chunk):
            part = requests[start : start + chunk]
            params = [r.params for r in part]
            conversations = [[{"role": "user", "content": r.prompt}] for r in part]
            for j, c in enumerate(self.engine.chat(conversations, params)):
                yield (
                    start + j,
                    Response(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens),
                )

    def close(self) -> None:
        pass
