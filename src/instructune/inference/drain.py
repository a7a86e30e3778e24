"""Running the server, and stopping it without dropping a request on the floor.

The first SIGTERM or SIGINT starts a drain: new requests get a 503 (and `/health` says
`draining`, so a load balancer stops sending), while the running and queued ones go on decoding
for up to `drain_timeout_s` (`serve --drain-timeout`, default 20 s). Whatever is unfinished then
is cut between two decode steps with an OpenAI error ("the server is shutting down"): a
non-streaming request gets a 503 JSON error body, a stream an `error` event and `data: [DONE]`.
Only then does uvicorn close the sockets, so no handler is cancelled mid-answer (no
CancelledError tracebacks), and the process exits 0. A second signal cuts at once.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from types import FrameType

    from instructune.inference.server import ServerState

log = logging.getLogger(__name__)

_AFTER_CUT_S = 5.0
"""After a cut, handlers only write their error answer; uvicorn's own wait is bounded by this."""
CUT_MESSAGE = "the server is shutting down"


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain before its shutdown (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout_s = drain_timeout_s
        self._drain_deadline: float | None = None
        self._cut_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: only flags here; `on_tick` (on the event loop) acts on them.
        self._captured_signals.append(sig)
        now = time.monotonic()
        if self._drain_deadline is None:
            self.state.draining = True
            self._drain_deadline = now + self.drain_timeout_s
        else:
            self._drain_deadline = now  # a second signal: cut now

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and not self.should_exit:
            # ticks are 0.1 s apart: a progress line every 5 s
            self._drain_step(self._drain_deadline, log_progress=counter % 50 == 0)
        return await super().on_tick(counter)

    def _drain_step(self, deadline: float, log_progress: bool) -> None:
        scheduler, now = self.state.scheduler, time.monotonic()
        if self._cut_at is not None:
            self.should_exit = scheduler.idle or now - self._cut_at > _AFTER_CUT_S
        elif scheduler.idle:
            log.info("drained: every request is answered")
            self.should_exit = True
        elif now >= deadline:
            log.warning("drain time is over, cutting the unfinished requests: %s", scheduler.load)
            scheduler.cut(CUT_MESSAGE)
            self._cut_at = now
        elif log_progress:
            left = deadline - now
            log.info("draining, up to %.0f s more: %s", left, scheduler.load)


def run_serve(state: ServerState, host: str, port: int, drain_timeout_s: float) -> int:
    """Serve until SIGTERM/SIGINT, drain, exit 0 (see the module docstring)."""
    from instructune.inference.server import create_app

    if host not in ("127.0.0.1", "localhost", "::1") and state.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use it", host)
    log.info("serving %s on http://%s:%d/v1", ", ".join(state.models), host, port)
    config = uvicorn.Config(
        create_app(state),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=int(_AFTER_CUT_S),
    )
    # uvicorn re-raises a handled SIGINT/SIGTERM at the handler it found once it is done; a
    # no-op there makes the clean shutdown exit with status 0 instead of dying by the signal.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        DrainingServer(config, state, drain_timeout_s).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _ignore(signum: int, frame: Any) -> None:
    """The handler uvicorn re-raises a handled SIGINT/SIGTERM at: nothing left to do."""
