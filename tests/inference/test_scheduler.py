"""The decode thread's `load` snapshot: what a client reads after its answer is already final.

`/health` reports `running` and `forwards`; a test (or a load balancer) that waits for
`running == 0` must then see no more forwards. Before, the decode thread removed the finished row
and told the client before counting that step's forward, so a reading right after the answer
was one forward short of the quiescent count (the CI flake `assert 604 == 603`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from instructune.inference.engine import Engine, SamplingParams
from instructune.inference.scheduler import Event, Scheduler, make_request


def test_load_is_final_when_the_client_hears_the_end(tiny_model: Any, tiny_tok: Any) -> None:
    from instructune.data.templates import load_template

    template = load_template("chat", tiny_tok)
    engine = Engine(tiny_model, tiny_tok, template, max_batch_size=1, stop_ids=[len(tiny_tok) + 5])
    scheduler = Scheduler(engine, batch_window_s=0)

    async def one_request() -> tuple[dict[str, int], dict[str, int]]:
        request = make_request(engine.row("Hi", SamplingParams(max_new_tokens=6)), None, 60)
        heard: list[dict[str, int]] = []
        send = request.send

        def send_and_look(event: Event) -> None:  # the moment the client learns it is done
            if event.finish_reason is not None:
                heard.append(scheduler.load)
            send(event)

        request.send = send_and_look  # type: ignore[method-assign]
        scheduler.submit(request)
        while (await asyncio.wait_for(request.events.get(), 60)).finish_reason is None:
            pass
        await asyncio.sleep(0.3)  # the decode thread idles: nothing may change any more
        return heard[0], scheduler.load

    scheduler.start()
    try:
        at_answer, quiet = asyncio.run(one_request())
    finally:
        scheduler.stop()
    assert quiet == {"waiting": 0, "running": 0, "forwards": 6}
    assert at_answer == quiet
