"""`instructune serve` live on loopback: the official openai client (chat, completions, streaming,
adapters by model name, errors as the client raises them), 100 malformed raw requests followed by
a good one, 429 from a full queue, 504 past the deadline, and a clean exit on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from instructune.bundle import load_bundle
from instructune.inference.engine import Engine, SamplingParams
from instructune.rundir import ADAPTER_WEIGHTS_FILE

from .wire import free_port, raw

pytestmark = pytest.mark.xdist_group("serve")
KEY = "sk-test-key"
N = 8


def _wait_healthy(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            status, _ = raw(port, "GET", "/health")
            if status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("server did not come up")


@pytest.fixture(scope="module")
def second_run(tiny_lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another adapter on the same base: the first one's weights with lora_B scaled."""
    from safetensors.torch import load_file, save_file

    second = tmp_path_factory.mktemp("adapters") / "second"
    shutil.copytree(tiny_lora_run, second)
    weights = load_file(second / ADAPTER_WEIGHTS_FILE)
    scaled = {k: v * 3 if "lora_B" in k else v for k, v in weights.items()}
    save_file(scaled, second / ADAPTER_WEIGHTS_FILE)
    return second


@pytest.fixture(scope="module")
def server(tiny_lora_run: Path, second_run: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "INSTRUCTUNE_API_KEY": KEY, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "instructune", "serve", str(tiny_lora_run)]
    cmd += ["--adapter", str(second_run), "--port", str(port), "--max-tokens-cap", "64"]
    cmd += ["--max-body-bytes", "20000", "--max-prompt-tokens", "200"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(server: tuple[int, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server[0]}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def engines(tiny_lora_run: Path, second_run: Path) -> dict[str, Engine]:
    first = Engine.from_bundle(load_bundle(tiny_lora_run))
    second = Engine.from_bundle(load_bundle(second_run))
    return {tiny_lora_run.name: first, "second": second}


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


def test_models_lists_run_and_adapters(client: openai.OpenAI, tiny_lora_run: Path) -> None:
    assert [m.id for m in client.models.list()] == [tiny_lora_run.name, "second"]


def test_chat_per_adapter_equals_engine(client: openai.OpenAI, engines: dict[str, Engine]) -> None:
    for name, engine in engines.items():
        out = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=N)
        ref = engine.chat([MESSAGES], SamplingParams(max_new_tokens=N))[0]
        assert out.choices[0].message.content == ref.text
        assert out.choices[0].finish_reason == ref.finish_reason
        assert out.usage is not None and out.model == name
        assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (
            ref.prompt_tokens,
            ref.completion_tokens,
        )


def test_concurrent_requests_for_two_adapters(
    client: openai.OpenAI, engines: dict[str, Engine]
) -> None:
    """Rows of different adapters never share a forward: each answer equals its adapter's own."""
    names = list(engines) * 4
    questions = [f"What is {i} plus {i}?" for i in range(len(names))]

    def ask(k: int) -> str | None:
        msgs = [{"role": "user", "content": questions[k]}]
        out = client.chat.completions.create(model=names[k], messages=msgs, max_tokens=N)  # type: ignore[arg-type]
        return out.choices[0].message.content

    with ThreadPoolExecutor(len(names)) as pool:
        got = list(pool.map(ask, range(len(names))))
    params = SamplingParams(max_new_tokens=N)
    refs = [
        engines[name].chat([[{"role": "user", "content": q}]], params)[0].text
        for name, q in zip(names, questions, strict=True)
    ]
    assert got == refs
    # the adapters answer differently, so a row decoded with the wrong one would show
    first, second = list(engines.values())
    assert any(
        first.chat([[{"role": "user", "content": q}]], params)[0].text
        != second.chat([[{"role": "user", "content": q}]], params)[0].text
        for q in questions
    )


def test_chat_stream_equals_non_stream(client: openai.OpenAI, tiny_lora_run: Path) -> None:
    kw: dict[str, Any] = {"model": tiny_lora_run.name, "messages": MESSAGES, "max_tokens": N}
    whole = client.chat.completions.create(**kw)
    chunks = list(
        client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_completions_raw_prompts(
    client: openai.OpenAI, engines: dict[str, Engine], tiny_lora_run: Path
) -> None:
    engine = engines[tiny_lora_run.name]
    prompts = ["The quick brown fox", "What is the capital"]
    out = client.completions.create(model=tiny_lora_run.name, prompt=prompts, max_tokens=N)
    refs = engine.generate(prompts, SamplingParams(max_new_tokens=N))
    assert [c.text for c in out.choices] == [r.text for r in refs]
    assert out.usage is not None
    assert out.usage.completion_tokens == sum(r.completion_tokens for r in refs)
    streamed = client.completions.create(
        model=tiny_lora_run.name, prompt=prompts[0], max_tokens=N, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == refs[0].text


def test_errors_as_the_client_raises_them(
    client: openai.OpenAI, server: tuple[int, Any], tiny_lora_run: Path
) -> None:
    name = tiny_lora_run.name
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=65)
    assert err.value.body["param"] == "max_tokens"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        long = [{"role": "user", "content": "fox " * 400}]
        client.chat.completions.create(model=name, messages=long)  # type: ignore[arg-type]
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=name, messages=MESSAGES, temperature=3)
    wrong = openai.OpenAI(
        base_url=f"http://127.0.0.1:{server[0]}/v1", api_key="nope", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def _bad_requests() -> list[tuple[str, str, bytes, dict[str, str]]]:
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    chat, comp = "/v1/chat/completions", "/v1/completions"
    good = {"model": "run", "messages": [{"role": "user", "content": "hi"}]}
    bodies: list[Any] = [
        b"{not json",
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'"a string"',
        b"null",
        {"messages": good["messages"]},
        {"model": "run"},
        {"model": 5, "messages": good["messages"]},
        {"model": "run", "messages": "hi"},
        {"model": "run", "messages": []},
        {"model": "run", "messages": [{"role": "robot", "content": "x"}]},
        {"model": "run", "messages": [{"role": "user"}]},
        {"model": "run", "messages": [{"role": "user", "content": 5}]},
        {**good, "max_tokens": "many"},
        {**good, "max_tokens": -1},
        {**good, "temperature": "hot"},
        {**good, "top_p": 0},
        {**good, "n": 3},
        {**good, "stream": "yes"},
        {**good, "stop": [""]},
        {**good, "unknown_field": 1},
        {**good, "model": "no-such-model"},
        {**good, "messages": [{"role": "user", "content": "x"}] * 300},
        {**good, "presence_penalty": 1.5},
    ]
    out = []
    for b in bodies:
        raw = b if isinstance(b, bytes) else json.dumps(b).encode()
        out.append(("POST", chat, raw, auth))
    out += [("POST", comp, json.dumps({"model": "run", "prompt": 5}).encode(), auth)]
    out += [("POST", comp, json.dumps({"model": "run"}).encode(), auth)]
    out += [("POST", chat, b"{" + b" " * 30000 + b"}", auth)]  # over --max-body-bytes
    out += [("POST", chat, json.dumps(good).encode(), {"Authorization": "Bearer wrong"})]
    out += [("POST", chat, json.dumps(good).encode(), {})]
    out += [("GET", "/v1/nothing-here", b"", auth), ("DELETE", "/v1/models", b"", auth)]
    return out


def test_hundred_bad_requests_then_a_good_one(server: tuple[int, Any], tiny_lora_run: Path) -> None:
    port = server[0]
    bad = _bad_requests()
    for i in range(100):
        method, path, body, headers = bad[i % len(bad)]
        status, data = raw(port, method, path, body or None, headers)
        assert 400 <= status < 500, (i, status, data)
        assert set(data["error"]) == {"message", "type", "param", "code"}, data
    good = {"model": tiny_lora_run.name, "messages": MESSAGES, "max_tokens": 4}
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    status, data = raw(port, "POST", "/v1/chat/completions", json.dumps(good).encode(), headers)
    assert status == 200 and data["choices"][0]["message"]["role"] == "assistant"
    assert data["usage"]["total_tokens"] > 0


def test_sigterm_shuts_down_cleanly(server: tuple[int, subprocess.Popen[bytes]]) -> None:
    _, proc = server
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    assert b"Shutting down" in out or b"Finished server process" in out


# ----------------------------------------------------------------------------- in-process


def _serve_in_thread(engine: Engine, **limits: Any) -> tuple[int, Any]:
    import uvicorn

    from instructune.inference.server import Limits, ServerState, create_app

    state = ServerState(engine, {"tiny": None}, limits=Limits(**limits))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    _wait_healthy(port)
    return port, server


def _chat(port: int, max_tokens: int) -> tuple[int, Any]:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]}
    body["max_tokens"] = max_tokens  # type: ignore[assignment]
    return raw(port, "POST", "/v1/chat/completions", json.dumps(body).encode())


def _send_and_hold(port: int, max_tokens: int) -> socket.socket:
    """A chat request sent on a raw socket whose answer is never read (close it to hang up)."""
    body = json.dumps(
        {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens}
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


def _wait_load(port: int, done: Any, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while not done(load := raw(port, "GET", "/health")[1]):
        assert time.monotonic() < deadline, load
        time.sleep(0.01)
    return dict(load)


def _client_leaves_mid_stream(port: int) -> None:
    """A streaming client that disconnects: its row is dropped long before its 900 tokens."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    body["max_tokens"] = 900  # type: ignore[assignment]
    before = raw(port, "GET", "/health")[1]["forwards"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode())
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read(64).startswith(b"data: ")
    conn.close()
    # `load` is one snapshot of the decode thread: once running is 0, forwards is final
    forwards = _wait_load(port, lambda load: load["running"] == 0)["forwards"]
    assert forwards - before < 450, forwards - before  # one forward per token otherwise
    time.sleep(0.2)
    assert raw(port, "GET", "/health")[1]["forwards"] == forwards  # nothing decodes any more


def test_full_queue_answers_429_and_deadline_504(tiny_model: Any, tiny_tok: Any) -> None:
    from instructune.data.templates import load_template

    # a stop token that never comes: every request runs its max_tokens
    template = load_template("chat", tiny_tok)
    engine = Engine(tiny_model, tiny_tok, template, max_batch_size=1, stop_ids=[len(tiny_tok) + 5])
    port, server = _serve_in_thread(engine, max_queue=1, max_tokens=1000, batch_window_s=0)
    try:
        # one request running and one waiting fill the queue, whatever the machine's speed
        holders = [_send_and_hold(port, 1000)]
        _wait_load(port, lambda load: load["running"] == 1)
        holders.append(_send_and_hold(port, 1000))
        _wait_load(port, lambda load: load["running"] == 1 and load["waiting"] == 1)
        assert [_chat(port, 4)[0] for _ in range(3)] == [429, 429, 429]
        for sock in holders:  # their clients hang up: both rows go
            sock.close()
        _wait_load(port, lambda load: load["running"] + load["waiting"] == 0)
        status, data = _chat(port, 4)  # the server goes on
        assert status == 200 and data["choices"][0]["finish_reason"] == "length"
        _client_leaves_mid_stream(port)
    finally:
        server.should_exit = True
    port, server = _serve_in_thread(engine, timeout_s=0.05, max_tokens=1000)
    try:
        status, data = _chat(port, 900)
        assert status == 504 and data["error"]["type"] == "timeout"
        assert _chat(port, 2)[0] in (200, 504)  # still answering
    finally:
        server.should_exit = True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_body_bytes", 0),
        ("max_messages", -1),
        ("max_tokens", 0),
        ("max_queue", 0),
        ("timeout_s", 0.0),
    ],
)
def test_bad_limits_name_the_field(field: str, value: float) -> None:
    from instructune.inference.server import Limits

    with pytest.raises(ValueError, match=rf"^{field}={value}: must be > 0$"):
        Limits(**{field: value})
    assert Limits(max_prompt_tokens=None).max_prompt_tokens is None
