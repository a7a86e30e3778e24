"""Chat in the studio is `serve`: each chosen run (with its adapters) is loaded once with
`inference.loading.load_run` into `inference.server`'s `ServerState` and app, and the page talks
to that app's `/v1/chat/completions` (streamed, OpenAI-shaped) under `/engine/<key>/`. Prompts,
limits, sampling, batching and streaming are therefore exactly the server's.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from instructune.inference.sampling import SamplingParams
from instructune.inference.server import Limits, ServerState, create_app, serve_state

ENGINE_PREFIX = "/engine/"


@dataclass
class Loaded:
    key: str
    run: str
    adapters: list[str]
    state: ServerState
    app: Any


class ChatHub:
    """The loaded runs, by key; the decode thread of each runs until `close`."""

    def __init__(self, max_batch_size: int = 4) -> None:
        self.max_batch_size = max_batch_size
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(run: str, adapters: Sequence[str]) -> str:
        return hashlib.sha256("\n".join([run, *adapters]).encode()).hexdigest()[:16]

    def load(self, run: str, run_path: str, adapters: Sequence[tuple[str, str]]) -> Loaded:
        """Load `run_path` (+ adapter runs, as `serve --adapter`) unless already loaded.
        `run` and the adapters' first items are the names the page knows them by."""
        from instructune.inference.loading import load_run

        key = self.key(run, [a for a, _ in adapters])
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
            bundle = load_run(run_path, adapters=[p for _, p in adapters])
            # No key on the inner app: the studio checks every request before it gets here.
            state = serve_state(
                bundle,
                defaults=SamplingParams(),
                limits=Limits(),
                api_key=None,
                max_batch_size=self.max_batch_size,
            )
            state.scheduler.start()
            loaded = Loaded(key, run, [a for a, _ in adapters], state, create_app(state))
            self._loaded[key] = loaded
            return loaded

    def get(self, key: str) -> Loaded | None:
        return self._loaded.get(key)

    def render(self, key: str, messages: list[dict[str, str]]) -> str:
        """The prompt the engine sends for `messages`: the training prefix, byte for byte."""
        loaded = self._loaded.get(key)
        if loaded is None:
            raise KeyError(f"no model loaded under {key!r}; load the run first")
        return loaded.state.engine.render(messages)

    def close(self) -> None:
        with self._lock:
            for loaded in self._loaded.values():
                loaded.state.scheduler.stop()
            self._loaded.clear()

    async def dispatch(self, scope: dict[str, Any], receive: Any, send: Any) -> bool:
        """Forward an `/engine/<key>/v1/...` request to that run's server app; False when the
        key is unknown (the caller answers 404)."""
        rest = scope["path"][len(ENGINE_PREFIX) :]
        key, _, tail = rest.partition("/")
        loaded = self._loaded.get(key)
        if loaded is None:
            return False
        inner = dict(scope, path="/" + tail, raw_path=("/" + tail).encode(), root_path="")
        await loaded.app(inner, receive, send)
        return True
