"""The `openai` backend against the project's own `serve` on loopback (official client)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from instructune.bundle import load_bundle
from instructune.inference.engine import Engine, SamplingParams
from instructune.inference.server import Limits, create_app, serve_state
from instructune.rundir import SYNTH_CACHE_FILE
from instructune.synthesis.backends import BackendError
from instructune.synthesis.run import run_synthesize

KEY = "sk-synth-serve-test"


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path) -> Iterator[tuple[str, str, Engine]]:
    import uvicorn

    bundle = load_bundle(tiny_model_dir)
    state = serve_state(
        bundle, defaults=SamplingParams(), limits=Limits(), api_key=KEY, max_batch_size=4
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(state), port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/v1", next(iter(state.models)), Engine.from_bundle(bundle)
    finally:
        server.should_exit = True


def _backend(url: str, model: str, **kw: Any) -> str:
    spec = {"type": "openai", "base_url": url, "model": model, "api_key_env": "SYNTH_SERVE_KEY"}
    return json.dumps({**spec, "backoff": 0.01, **kw})


def test_synthesize_through_serve_equals_the_engine(
    served: tuple[str, str, Engine], make_cfg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, model, engine = served
    monkeypatch.setenv("SYNTH_SERVE_KEY", KEY)
    cfg = make_cfg(
        **{
            "synthesize.backend": _backend(url, model, concurrency=4),
            "synthesize.sampling.max_new_tokens": 12,
            # extensions: sent only when set, and honoured by `serve` like by the engine
            "synthesize.sampling.top_k": 5,
            "synthesize.sampling.repetition_penalty": 1.3,
            "synthesize.max_stale_steps": 1,
            "synthesize.request_batch_size": 3,
        }
    )
    result = run_synthesize(cfg, show_progress=False)
    usage = result.report["usage"]
    assert usage["requests"] >= 3 and usage["retries"] == 0
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    # A random tiny model writes no numbered list: counted, and the run stops on its own.
    assert "consecutive steps" in result.stop_reason
    assert sum(result.report["totals"]["response"].values()) == usage["requests"]
    # What came back over HTTP is what the engine generates for the same prompt and seed.
    entry = json.loads((cfg.output_path / SYNTH_CACHE_FILE).read_text().splitlines()[0])
    params = entry["params"]
    sampling = SamplingParams(
        max_new_tokens=params["max_tokens"],
        temperature=params["temperature"],
        top_p=params["top_p"],
        seed=params["seed"],
        top_k=params["top_k"],
        repetition_penalty=params["repetition_penalty"],
    )
    (expected,) = engine.chat([[{"role": "user", "content": entry["prompt"]}]], sampling)
    assert entry["response"]["text"] == expected.text
    assert entry["response"]["completion_tokens"] == expected.completion_tokens


def test_serve_refusals_stop_the_run_naming_the_endpoint(
    served: tuple[str, str, Engine], make_cfg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, model, _ = served
    monkeypatch.setenv("SYNTH_SERVE_KEY", "wrong-key")
    cfg = make_cfg(out="badkey", **{"synthesize.backend": _backend(url, model)})
    with pytest.raises(BackendError, match=rf"{url} answered 401"):
        run_synthesize(cfg, show_progress=False)
    monkeypatch.setenv("SYNTH_SERVE_KEY", KEY)
    cfg = make_cfg(out="nomodel", **{"synthesize.backend": _backend(url, "no-such-model")})
    with pytest.raises(BackendError, match=rf"{url} answered 404"):
        run_synthesize(cfg, show_progress=False)
    assert json.loads((cfg.output_path / "synth_report.json").read_text())[
        "stop_reason"
    ].startswith("backend error")
