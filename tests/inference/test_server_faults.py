"""The server under hostile clients and shutdown, on real sockets: the schema pages stay closed
with a key set, bodies that parse but no client means get a 400, clients that hang up on a
non-streaming request free their rows at once, and SIGTERM drains (503 for new requests, running
ones cut with an OpenAI error, exit 0) in a real `instructune serve` process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from instructune.inference.engine import Engine

from .wire import free_port, raw

pytestmark = pytest.mark.xdist_group("serve")
KEY = "sk-faults"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def _load(port: int) -> dict[str, Any]:
    return dict(raw(port, "GET", "/health")[1])


def _wait_for(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def _endless_engine(tiny_model: Any, tiny_tok: Any, max_batch_size: int = 8) -> Engine:
    """An engine whose stop token never comes: every request runs its max_tokens."""
    from instructune.data.templates import load_template

    template = load_template("chat", tiny_tok)
    stop = [len(tiny_tok) + 5]
    return Engine(tiny_model, tiny_tok, template, max_batch_size=max_batch_size, stop_ids=stop)


@pytest.fixture
def served(tiny_model: Any, tiny_tok: Any) -> Iterator[tuple[int, Any]]:
    """uvicorn in a thread on loopback, with an API key; yields (port, state)."""
    import uvicorn

    from instructune.inference.server import Limits, ServerState, create_app

    engine = _endless_engine(tiny_model, tiny_tok, max_batch_size=2)
    state = ServerState(engine, {"tiny": None}, limits=Limits(max_tokens=1000), api_key=KEY)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(lambda: _healthy(port), 60, "the server did not come up")
    try:
        yield port, state
    finally:
        server.should_exit = True
        thread.join(30)


def _healthy(port: int) -> bool:
    try:
        return raw(port, "GET", "/health")[0] == 200
    except OSError:
        return False


def _chat_body(max_tokens: int, content: str = "Hi", stream: bool = False) -> bytes:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}]}
    return json.dumps({**body, "max_tokens": max_tokens, "stream": stream}).encode()


def test_schema_pages_are_off_with_or_without_the_key(served: tuple[int, Any]) -> None:
    port, _ = served
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        for headers in ({}, AUTH):
            status, data = raw(port, "GET", path, headers=headers)
            assert status == 404, (path, status)
            assert data["error"]["type"] == "not_found_error", data
    assert raw(port, "GET", "/v1/models")[0] == 401  # the key is in force


def test_deep_json_and_lone_surrogates_are_client_errors(served: tuple[int, Any]) -> None:
    port, _ = served
    deep = b'{"model": "tiny", "messages": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    shallow_deep = b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "user": '
    shallow_deep += b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}"
    surrogate = b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}'
    surrogate_key = b'{"model": "tiny", "\\udfff": 1, "messages": []}'
    prompt = b'{"model": "tiny", "prompt": "a \\ud83d b", "max_tokens": 2}'
    cases = [
        ("/v1/chat/completions", deep),
        ("/v1/chat/completions", shallow_deep),
        ("/v1/chat/completions", surrogate),
        ("/v1/chat/completions", surrogate_key),
        ("/v1/completions", prompt),
    ]
    for path, body in cases:
        assert len(body) < 1 << 20
        status, data = raw(port, "POST", path, body, AUTH)
        assert status == 400, (body[:80], status, data)
        assert data["error"]["type"] == "invalid_request_error", data
    # a valid surrogate pair (an emoji) is fine
    pair = b'{"model": "tiny", "prompt": "a \\ud83d\\ude00 b", "max_tokens": 2}'
    assert raw(port, "POST", "/v1/completions", pair, AUTH)[0] == 200


def _hang_up_after_sending(port: int, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_non_streaming_clients_that_hang_up_free_their_rows(served: tuple[int, Any]) -> None:
    """Five abandoned max_tokens=1000 requests (2 running, 3 queued): all dropped within a few
    decode steps of the hang-up, and the next request is answered at once."""
    port, _ = served
    socks = [_hang_up_after_sending(port, _chat_body(1000, f"Hi {i}")) for i in range(5)]
    _wait_for(lambda: _load(port)["running"] == 2, 30, "the requests were not admitted")
    before = _load(port)["forwards"]
    for s in socks:
        s.close()
    _wait_for(lambda: _load(port)["running"] + _load(port)["waiting"] == 0, 60, "rows left")
    decoded = _load(port)["forwards"] - before
    # each of them alone would take 1000 more forwards; detecting a hang-up takes a few
    assert decoded < 300, decoded
    started = time.monotonic()
    status, data = raw(port, "POST", "/v1/chat/completions", _chat_body(4), AUTH)
    assert status == 200 and data["choices"][0]["finish_reason"] == "length"
    assert time.monotonic() - started < 30


# ----------------------------------------------------------------------------- SIGTERM drain


@pytest.fixture(scope="module")
def endless_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with a long context whose greedy decoding never picks a special token (their
    output rows are zero, below the best of 400 random logits), so requests run max_tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ..tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight[tok.all_special_ids] = 0
    path = tmp_path_factory.mktemp("endless") / "tiny"  # served as model "tiny"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _stream_lines(port: int, body: bytes, out: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body=body, headers=AUTH)
    resp = conn.getresponse()
    out.append(str(resp.status))
    out.extend(line.decode().strip() for line in resp if line.strip())
    conn.close()
    out.append(str(time.monotonic()))


def test_sigterm_drains_then_exits_zero(endless_model_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "instructune", "serve", str(endless_model_dir)]
    cmd += ["--port", str(port), "--api-key", KEY, "--max-tokens-cap", "8000"]
    cmd += ["--drain-timeout", "10"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: proc.poll() is not None or _healthy(port), 120, "no server")
        assert proc.poll() is None, proc.communicate()[0].decode()
        answers: dict[str, Any] = {}
        stream: list[str] = []

        def ask(name: str, max_tokens: int) -> None:
            answers[name] = raw(port, "POST", "/v1/chat/completions", _chat_body(max_tokens), AUTH)
            answers[f"{name} at"] = time.monotonic()

        threads = [
            threading.Thread(target=ask, args=("long", 8000)),
            threading.Thread(
                target=_stream_lines, args=(port, _chat_body(8000, stream=True), stream)
            ),
        ]
        for t in threads:
            t.start()
        _wait_for(lambda: _load(port)["running"] == 2, 60, "the long requests did not start")
        threads.append(threading.Thread(target=ask, args=("short", 5)))
        threads[-1].start()  # a request the drain lets finish
        started = lambda: "short" in answers or _load(port)["running"] == 3  # noqa: E731
        _wait_for(started, 60, "the short request did not start")
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: raw(port, "GET", "/health")[0] == 503, 10, "health not draining")
        status, refused = raw(port, "POST", "/v1/chat/completions", _chat_body(4), AUTH)
        assert status == 503 and refused["error"]["code"] == "draining", refused
        for t in threads:
            t.join(60)
        out, _ = proc.communicate(timeout=120)  # interpreter teardown is slow on a busy CPU
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = out.decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log and "CancelledError" not in log, log
    # every answer within the drain time (10 s) and a margin for a slow machine
    last = max(answers["long at"], answers["short at"], float(stream.pop()))
    assert last - signalled < 10 + 10, last - signalled
    # finished within the drain: a normal answer
    status, data = answers["short"]
    assert status == 200 and data["choices"][0]["finish_reason"] == "length", data
    # cut when the drain time ran out: an OpenAI error body, not a plain-text 500
    status, data = answers["long"]
    assert status == 503 and "shutting down" in data["error"]["message"], (status, data)
    assert stream[0] == "200" and stream[-1] == "data: [DONE]", stream[-3:]
    cut = json.loads(stream[-2].removeprefix("data: "))
    assert "shutting down" in cut["error"]["message"], stream[-3:]
