"""The `openai` backend through the official client over loopback HTTP: retries, errors, runs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from http_fault import FaultServer
from world import ScriptedBackend, answer

from instructune.config.synthesize import SynthBackendConfig
from instructune.inference.sampling import SamplingParams
from instructune.rundir import SYNTH_CACHE_FILE, SYNTH_ROWS_FILE
from instructune.synthesis.backends import BackendError, Request
from instructune.synthesis.openai_backend import OpenAIBackend
from instructune.synthesis.run import run_synthesize

SECRET = "sk-test-never-written-0123456789"


def backend(url: str, **kw: Any) -> OpenAIBackend:
    cfg = SynthBackendConfig(type="openai", base_url=url, model="m", backoff=0.01, **kw)
    return OpenAIBackend(cfg)


def ask(b: OpenAIBackend, prompt: str = "Say something nice.") -> Any:
    ((_, response),) = list(b.complete([Request(prompt, SamplingParams(32))]))
    return response


def test_retries_429_500_and_timeouts_then_succeeds() -> None:
    with FaultServer() as server:
        server.faults.extend(["429", "500", "hang"])
        b = backend(server.url, timeout=0.5)
        response = ask(b)
        assert response.error is None and response.text.startswith("Here is a careful answer")
        assert response.prompt_tokens == 3 and response.completion_tokens > 0
        assert b.retries == 3


def test_gives_up_with_one_line_error_naming_the_endpoint() -> None:
    with FaultServer() as server:
        server.always = "500"
        with pytest.raises(BackendError) as err:
            ask(backend(server.url, max_retries=2))
    msg = str(err.value)
    assert server.url in msg and "HTTP 500" in msg and "3 attempts" in msg and "\n" not in msg


def test_refused_connection_names_the_endpoint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(BackendError, match=rf"{url}: connection failed"):
        ask(backend(url, max_retries=1))


def test_rejected_malformed_and_cut_answers_are_responses_not_crashes() -> None:
    with FaultServer() as server:
        b = backend(server.url)
        server.faults.append("400")
        rejected = ask(b)
        assert rejected.finish_reason == "error" and rejected.error == "http_400: injected 400"
        server.faults.append("malformed")
        assert ask(b).error == "malformed: no choices"
        server.faults.append("length")
        assert ask(b).finish_reason == "length"
        server.faults.append("401")
        with pytest.raises(BackendError, match="answered 401"):
            ask(b)


def test_api_key_from_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTH_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="SYNTH_TEST_KEY is not set"):
        backend("http://127.0.0.1:1/v1", api_key_env="SYNTH_TEST_KEY")
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    with FaultServer() as server:
        ask(backend(server.url, api_key_env="SYNTH_TEST_KEY"))
        assert server.auth == [f"Bearer {SECRET}"]


def test_whole_run_over_http_concurrent_and_key_never_written(
    make_cfg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTH_TEST_KEY", SECRET)
    with FaultServer(delay=0.05) as server:
        server.faults.extend(["500", "429"])
        cfg = make_cfg(
            **{
                "synthesize.backend": json.dumps(
                    {
                        "type": "openai",
                        "base_url": server.url,
                        "model": "m",
                        "api_key_env": "SYNTH_TEST_KEY",
                        "concurrency": 3,
                        "backoff": 0.01,
                    }
                )
            }
        )
        result = run_synthesize(cfg, show_progress=False)
    assert result.kept_instructions == 12
    assert 1 < server.peak <= 3
    assert result.report["usage"]["retries"] == 2
    assert result.report["usage"]["prompt_tokens"] > 0
    rows = (cfg.output_path / SYNTH_ROWS_FILE).read_text().splitlines()
    assert json.loads(rows[0])["meta"]["backend"] == "openai"
    for path in cfg.output_path.iterdir():
        assert SECRET not in path.read_text(), path


def test_cli_reports_a_dead_endpoint_in_one_line(make_cfg: Any, tmp_path: Path) -> None:
    cfg = make_cfg()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "instructune",
            "synthesize",
            str(tmp_path / "self_instruct.yaml"),
            f"synthesize.backend={{type: openai, base_url: '{url}', model: m, max_retries: 0}}",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: {url}: connection failed (refused or unreachable) (gave up after 1 attempt) "
        "(rerun to resume)"
    ]
    assert (cfg.output_path / "synth_report.json").exists()


def test_endpoint_going_down_keeps_everything_and_rerun_resumes(make_cfg: Any) -> None:
    reference = make_cfg(out="ref")
    run_synthesize(reference, ScriptedBackend(answer), show_progress=False)
    with FaultServer() as server:
        spec = {"type": "openai", "base_url": server.url, "model": "scripted"}
        spec |= {"max_retries": 1, "backoff": 0.01, "concurrency": 2}
        cfg = make_cfg(**{"synthesize.backend": json.dumps(spec)})
        server.fail_after = 30
        with pytest.raises(BackendError, match=rf"{server.url}: HTTP 500"):
            run_synthesize(cfg, show_progress=False)
        written = (cfg.output_path / SYNTH_ROWS_FILE).read_text().splitlines()
        cached = (cfg.output_path / SYNTH_CACHE_FILE).read_text().splitlines()
        assert written and len(cached) == 30
        server.fail_after = None
        run_synthesize(cfg, show_progress=False)
        assert server.answered == reference_requests(reference)
    ours = [
        json.loads(line) for line in (cfg.output_path / SYNTH_ROWS_FILE).read_text().splitlines()
    ]
    ref = [
        json.loads(line)
        for line in (reference.output_path / SYNTH_ROWS_FILE).read_text().splitlines()
    ]
    assert [r["messages"] for r in ours] == [r["messages"] for r in ref]
    assert [r["id"] for r in ours][: len(written)] == [json.loads(w)["id"] for w in written]


def reference_requests(cfg: Any) -> int:
    return len((cfg.output_path / SYNTH_CACHE_FILE).read_text().splitlines())
