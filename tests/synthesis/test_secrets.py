"""A credential in `synthesize.backend.base_url` never reaches a file or the terminal; the real CLI
over a real loopback endpoint (one that fails, one that answers), every output file grepped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from http_fault import FaultServer

from instructune.redact import redact_secrets, redact_url

USER_SECRET = "SECRETKEY1"
QUERY_SECRET = "SECRETKEY2"


def _url(server: FaultServer) -> str:
    host = server.url.removeprefix("http://")  # 127.0.0.1:PORT/v1
    return f"http://user:{USER_SECRET}@{host}?api-key={QUERY_SECRET}"


def _synthesize(cfg: Path, url: str) -> subprocess.CompletedProcess[str]:
    backend = f"synthesize.backend={{type: openai, base_url: '{url}', model: scripted, "
    backend += "max_retries: 0}"
    return subprocess.run(
        [sys.executable, "-m", "instructune", "synthesize", str(cfg), backend, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _leaks(out: subprocess.CompletedProcess[str], folder: Path) -> list[str]:
    texts = {"stdout": out.stdout, "stderr": out.stderr}
    texts |= {str(p): p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()}
    return [where for where, text in texts.items() if USER_SECRET in text or QUERY_SECRET in text]


def test_failing_endpoint_error_report_manifest_and_config_hold_no_secret(
    make_cfg: Any, tmp_path: Path
) -> None:
    cfg = make_cfg()
    with FaultServer() as server:
        server.always = "500"
        out = _synthesize(tmp_path / "self_instruct.yaml", _url(server))
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    # the endpoint is still named, without its credentials
    assert len(errors) == 1 and "http://REDACTED@127.0.0.1:" in errors[0], out.stderr
    files = {p.name for p in cfg.output_path.iterdir()}
    assert {"config.yaml", "manifest.json", "synth_report.json", "synth_report.md"} <= files
    assert "api-key=REDACTED" in (cfg.output_path / "manifest.json").read_text()  # argv
    assert _leaks(out, cfg.output_path) == []


def test_answering_endpoint_writes_no_secret_and_prints_no_request_lines(
    make_cfg: Any, tmp_path: Path
) -> None:
    cfg = make_cfg()
    with FaultServer() as server:
        out = _synthesize(tmp_path / "self_instruct.yaml", _url(server))
    assert out.returncode == 0, out.stderr
    assert server.answered > 0
    assert "12 instructions" in out.stdout
    assert "HTTP Request:" not in out.stderr  # httpx's INFO line per request
    assert _leaks(out, cfg.output_path) == []


def test_validate_prints_the_config_without_the_secret(
    make_cfg: Any, tmp_path: Path, capsys: Any
) -> None:
    from instructune.cli.main import main

    make_cfg()
    url = f"http://user:{USER_SECRET}@127.0.0.1:9/v1?api-key={QUERY_SECRET}"
    backend = f"synthesize.backend={{type: openai, base_url: '{url}', model: m}}"
    assert main(["validate", str(tmp_path / "self_instruct.yaml"), backend]) == 0
    out = capsys.readouterr().out
    assert "base_url: http://REDACTED@127.0.0.1:9/v1?api-key=REDACTED" in out, out
    assert USER_SECRET not in out and QUERY_SECRET not in out


def test_redact_url_keeps_the_endpoint_and_drops_credentials() -> None:
    assert (
        redact_url("https://bob:pw@api.example.com:8443/v1?api_key=k&model=m&sig=s#x")
        == "https://REDACTED@api.example.com:8443/v1?api_key=REDACTED&model=m&sig=REDACTED#x"
    )
    assert redact_url("https://api.example.com/v1?X-Amz-Signature=abc&page=2") == (
        "https://api.example.com/v1?X-Amz-Signature=REDACTED&page=2"
    )
    plain = "http://127.0.0.1:8000/v1?model=m"
    assert redact_url(plain) == plain
    flow = "backend={base_url: http://u:K@h/v1?token=T, model: m} (see http://h/v1?key=Q)."
    assert redact_secrets(flow) == (
        "backend={base_url: http://REDACTED@h/v1?token=REDACTED, model: m} "
        "(see http://h/v1?key=REDACTED)."
    )
