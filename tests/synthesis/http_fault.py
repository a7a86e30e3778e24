"""A loopback HTTP server speaking the OpenAI chat-completions wire format, with injected faults.

It answers with the scripted world (so whole runs work over it) unless a queued fault says
otherwise: 429, 500, 400, a hang longer than the client timeout, a malformed body, or a completion
cut by the length limit. It records request headers and the peak number of requests in flight.
Used to test the `openai` backend's retries and error handling over real sockets.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from world import answer

from instructune.inference.sampling import SamplingParams
from instructune.synthesis.backends import Request, Response


class FaultServer:
    def __init__(self, delay: float = 0.0) -> None:
        self.faults: deque[str] = deque()
        self.always: str | None = None
        self.fail_after: int | None = None
        """Answer 500 to every request after this many answered ones (an endpoint going down)."""
        self.answered = 0
        self.delay = delay
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def next_fault(self) -> str | None:
        with self.lock:
            if self.fail_after is not None and self.answered >= self.fail_after:
                return "500"
            self.answered += 1
            return self.faults.popleft() if self.faults else self.always

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.auth.append(self.headers.get("Authorization"))
                with server.lock:
                    server.in_flight += 1
                    server.peak = max(server.peak, server.in_flight)
                try:
                    time.sleep(server.delay)
                    self._respond(body, server.next_fault())
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _respond(self, body: dict[str, Any], fault: str | None) -> None:
                if fault == "hang":
                    time.sleep(3)
                    return
                if fault in ("429", "500", "400", "401"):
                    error = {"error": {"message": f"injected {fault}", "type": "test"}}
                    return self._send(int(fault), error)
                if fault == "malformed":
                    return self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
                prompt = body["messages"][-1]["content"]
                params = SamplingParams(
                    body["max_tokens"], body["temperature"], seed=body.get("seed")
                )
                out = answer(Request(prompt, params))
                text = out.text if isinstance(out, Response) else out
                finish = "length" if fault == "length" else "stop"
                return self._send(200, _completion(body["model"], text, finish, prompt))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _completion(model: str, text: str, finish: str, prompt: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(text.split()),
            "total_tokens": len(prompt.split()) + len(text.split()),
        },
    }
