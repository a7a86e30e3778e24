"""The studio reads nothing outside DIR, escapes what it shows, binds loopback unless given a
key, checks the key when it has one, and refuses cross-site and non-loopback-host requests."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from instructune.cli.main import parse_args
from instructune.studio.app import Studio, create_app, run_studio
from instructune.studio.security import COOKIE, check_bind
from instructune.studio.workspace import OutsideError, Workspace

from .conftest import SCRIPT_ROW, Built

SECRET = "s3cret-key"


@pytest.fixture(scope="module")
def folder(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR with a symlink to a run outside it (a metrics log and a secret config beside it)."""
    outside = tmp_path_factory.mktemp("outside")
    (outside / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 9.0}) + "\n")
    (outside / "secret.yaml").write_text("secret: 1\n")
    link = built.root / "escape"
    if not link.exists():
        link.symlink_to(outside, target_is_directory=True)
    return built.root


@pytest.fixture(scope="module")
def client(folder: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Studio(Workspace(folder))), base_url="http://127.0.0.1") as c:
        yield c


ESCAPES = ["../", "..", "../../etc", "/etc", "runs/../../", "escape", "escape/secret.yaml"]


@pytest.mark.parametrize("bad", ESCAPES)
def test_no_path_outside_dir_is_read(client: TestClient, bad: str) -> None:
    gets = [
        f"/data?path={bad}",
        f"/runs/view?path={bad}",
        f"/api/metrics?path={bad}",
        f"/eval?path={bad}",
        f"/eval/report?path={bad}",
        f"/build?path={bad}",
    ]
    for url in gets:
        response = client.get(url)
        assert response.status_code == 404, (url, response.status_code)
        assert "9.0" not in response.text and "secret" not in response.text.replace(bad, "")
    posts = [
        ("/api/chat/load", {"run": bad}),
        ("/api/chat/load", {"run": "runs/lora", "adapters": [bad]}),
        ("/api/launch", {"command": "train", "config": bad}),
    ]
    for url, body in posts:
        response = client.post(url, json=body)
        assert response.status_code == 404, (url, body, response.status_code)


def test_workspace_resolve_refuses_escapes(folder: Path) -> None:
    ws = Workspace(folder)
    assert ws.resolve("runs/lora") == (folder / "runs" / "lora").resolve()
    for bad in [*ESCAPES, "runs/\x00x"]:
        with pytest.raises(OutsideError):
            ws.resolve(bad)
    assert "escape" not in ws.scan().runs  # discovery doesn't follow symlinks out either


def test_static_files_stay_in_their_folder(client: TestClient) -> None:
    assert client.get("/static/uPlot.iife.min.js").status_code == 200
    for bad in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py"):
        response = client.get(bad)
        assert response.status_code == 404 and "create_app" not in response.text, bad


def test_data_is_escaped(client: TestClient) -> None:
    page = client.get("/data?path=runs/lora&size=50")
    assert page.status_code == 200
    # the row is there (split into token spans) as entities; the page's own scripts are all
    assert SCRIPT_ROW in html.unescape(re.sub(r"<[^>]+>", "", page.text))
    assert "<script>alert" not in page.text and page.text.count("<script") == 2
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    evals = client.get("/eval?path=evals/lora")
    assert SCRIPT_ROW in html.unescape(re.sub(r"<[^>]+>", "", evals.text))
    assert "<script>alert" not in evals.text and evals.text.count("<script") == 2
    report = client.get("/eval/report?path=evals/lora")  # the eval's own report.html, sandboxed
    assert "<script>alert" not in report.text
    assert report.headers["content-security-policy"].startswith("sandbox")
    assert SCRIPT_ROW not in page.text  # only ever its escaped form


def test_loopback_is_the_default_and_exposure_needs_a_key() -> None:
    args = parse_args(["studio"])
    assert args.host == "127.0.0.1" and args.dir == "."
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", SECRET)
    with pytest.raises(ValueError, match="--api-key"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ValueError, match="--api-key"):
        run_studio(".", "0.0.0.0", 0, None)  # refused before anything is served


def test_loopback_studio_refuses_other_host_names(client: TestClient) -> None:
    # a page on another site resolving its name to 127.0.0.1 (DNS rebinding) is refused
    assert client.get("/", headers={"host": "evil.example:7860"}).status_code == 403
    assert client.get("/", headers={"host": "localhost:7860"}).status_code == 200


def test_cross_site_posts_are_refused(client: TestClient) -> None:
    body = {"command": "train", "config": "configs/launch.yaml"}
    response = client.post("/api/launch", json=body, headers={"origin": "http://evil.example"})
    assert response.status_code == 403
    # a form-style post (no CORS preflight) can't reach the JSON endpoints
    response = client.post(
        "/api/launch", content=json.dumps(body), headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415


def test_api_key_when_exposed(folder: Path) -> None:
    app: Any = create_app(Studio(Workspace(folder), api_key=SECRET))
    with TestClient(app, base_url="http://studio.lan:7860") as c:
        assert c.get("/").status_code == 401
        assert c.get("/api/metrics?path=runs/lora").status_code == 401
        assert c.get("/", headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = c.get("/", headers={"authorization": f"Bearer {SECRET}"})
        assert ok.status_code == 200 and "runs/lora" in ok.text
        login = c.get("/login")
        assert login.status_code == 200 and str(folder) not in login.text
        assert c.post("/login", data={"key": "wrong"}).status_code == 401
        assert COOKIE not in c.cookies
        logged_in = c.post("/login", data={"key": SECRET}, follow_redirects=False)
        assert logged_in.status_code == 303 and c.cookies.get(COOKIE) == SECRET
        assert c.get("/runs").status_code == 200  # the browser's cookie now opens the pages


def test_missing_artifacts_are_404_pages_naming_them(client: TestClient) -> None:
    page = client.get("/data?path=evals/lora")
    assert page.status_code == 404 and "prepared/summary.json" in page.text
    assert page.headers["content-type"].startswith("text/html")
    page = client.get("/eval?path=runs/lora")
    assert page.status_code == 404 and "predictions.jsonl" in page.text
    api = client.get("/api/metrics?path=evals/lora")
    assert api.status_code == 404 and "metrics.jsonl" in api.json()["error"]
