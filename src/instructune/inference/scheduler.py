"""The server's decode thread: requests join one running batch between steps (continuous batching).

HTTP handlers `submit` a `Request` (a prompt's ids, its sampling parameters, the adapter its model
name chose) and read its events from an asyncio queue. One thread owns the model: it admits
waiting requests into the running `DecodeBatch` (rows left-padded and prefilled together, then
joined to the cache), steps the whole batch once, and hands each row's new text to its request.
When it is idle, the first request waits `batch_window_s` for company, so a burst shares its
first forward too. Rows of different adapters never share a batch: the batch serves one adapter
until it drains; while another adapter's requests wait longer than `fair_wait_s`, no new rows join,
so it drains. A full queue refuses new requests (`QueueFull`: the server answers 429); rows whose
client left or whose deadline passed are aborted between steps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from instructune.inference.batch import DecodeBatch, Row
    from instructune.inference.engine import Engine

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More requests wait than `max_queue`."""


@dataclass(frozen=True)
class Event:
    """Text for a request: `delta` as it comes, then one final event (finish_reason set)."""

    delta: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass(eq=False)
class Request:
    row: Row
    adapter: str | None
    deadline: float
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    arrived: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    """Set by the handler when the client is gone; the row is dropped at the next step."""

    def send(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            self.cancelled = True


class Scheduler:
    """Owns the engine's model on one thread; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int = 64,
        batch_window_s: float = 0.01,
        fair_wait_s: float = 2.0,
    ) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.batch_window_s = batch_window_s
        self.fair_wait_s = fair_wait_s
        self.waiting: deque[Request] = deque()
        self.cond = threading.Condition()
        self.batch: DecodeBatch = engine.new_batch()
        self.running: dict[Row, Request] = {}
        self.adapter: str | None = None
        self._stop = threading.Event()
        self._cut: str | None = None
        self._thread = threading.Thread(target=self._loop, name="instructune-decode", daemon=True)
        self.forwards = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current step, fail what is still queued or running, join the thread."""
        self._stop.set()
        with self.cond:
            self.cond.notify_all()
        self._thread.join(timeout)

    def cut(self, message: str) -> None:
        """Fail every queued and running request with `message` after the current step."""
        with self.cond:
            self._cut = message
            self.cond.notify_all()

    @property
    def idle(self) -> bool:
        with self.cond:
            return not self.waiting and not self.running

    def submit(self, request: Request) -> None:
        with self.cond:
            if self._stop.is_set():
                raise QueueFull("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are already waiting")
            self.waiting.append(request)
            self.cond.notify()

    @property
    def load(self) -> dict[str, int]:
        """A consistent snapshot: `_deliver` changes `running` and `forwards` under the same lock,
        so `running == 0` is never read before the last forward is counted."""
        with self.cond:
            return {
                "waiting": len(self.waiting),
                "running": len(self.running),
                "forwards": self.forwards,
            }

    # ------------------------------------------------------------------ the decode thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self.cond:
                cut, self._cut = self._cut, None
            if cut is not None:
                self._fail_all(cut)
                continue
            admitted = self._admit()
            try:
                if admitted:
                    self.batch.add([r.row for r in admitted])
                elif self.running:
                    self.batch.step()
                else:
                    continue
            except Exception as err:  # keep serving: fail this batch's requests, start afresh
                log.exception("decode step failed")
                self._fail_all(f"generation failed: {err}")
                continue
            self._deliver()
        self._fail_all("the server is shutting down")

    def _admit(self) -> list[Request]:
        """Waiting requests that join the batch now (waits for work, or a window, when idle)."""
        with self.cond:
            if not self.running:
                if not self.waiting:
                    self.cond.wait(timeout=0.1)
                    return []
                self._window()
            self._drop_gone()
            free = self.engine.max_batch_size - len(self.running)
            if not self.waiting or free <= 0 or (self.running and not self.batch.can_join):
                return []
            if not self.running:
                self._switch(self.waiting[0].adapter)
            elif self._others_starving():
                return []
            chosen = [r for r in self.waiting if r.adapter == self.adapter][:free]
            for r in chosen:
                self.waiting.remove(r)
                self.running[r.row] = r
            return chosen

    def _window(self) -> None:
        """Idle and a request came: give a burst `batch_window_s` to arrive (cond held)."""
        end = time.monotonic() + self.batch_window_s
        while len(self.waiting) < self.engine.max_batch_size and not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            self.cond.wait(timeout=left)

    def _drop_gone(self) -> None:
        now = time.monotonic()
        for r in [r for r in self.waiting if r.cancelled or now > r.deadline]:
            self.waiting.remove(r)
            r.send(Event(finish_reason="abort", error="timeout" if not r.cancelled else None))
        for row, r in self.running.items():
            if r.cancelled or now > r.deadline:
                self.batch.abort(row)

    def _others_starving(self) -> bool:
        now = time.monotonic()
        return any(
            r.adapter != self.adapter and now - r.arrived > self.fair_wait_s for r in self.waiting
        )

    def _switch(self, adapter: str | None) -> None:
        if adapter != self.adapter and adapter is not None:
            self.engine.model.set_adapter(adapter)
        self.adapter = adapter

    def _deliver(self) -> None:
        for row in self.batch.rows:
            request = self.running[row]
            delta = row.take_delta()
            if delta:
                request.send(Event(delta=delta))
        with self.cond:  # one step for `load`: the forward is counted as its rows leave
            self.forwards += 1
            finished = [(row, self.running.pop(row)) for row in self.batch.pop_finished()]
        for row, request in finished:
            timed_out = row.finish_reason == "abort" and not request.cancelled
            request.send(
                Event(
                    finish_reason=row.finish_reason,
                    prompt_tokens=len(row.prompt_ids),
                    completion_tokens=len(row.generated),
                    error="timeout" if timed_out else None,
                )
            )

    def _fail_all(self, message: str) -> None:
        with self.cond:
            stranded = [*self.running.values(), *self.waiting]
            self.running.clear()
            self.waiting.clear()
        self.batch = self.engine.new_batch()
        for request in stranded:
            request.send(Event(finish_reason="abort", error=message))


def make_request(
    row: Row, adapter: str | None, timeout_s: float, loop: Any | None = None
) -> Request:
    """A request for the running event loop (call from a handler)."""
    return Request(
        row=row,
        adapter=adapter,
        deadline=time.monotonic() + timeout_s,
        loop=loop or asyncio.get_running_loop(),
    )
