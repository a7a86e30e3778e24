"""A build's page: the studio shows `build_report.json` of a real `build` (the demo's config)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi.testclient import TestClient

from instructune.config import load_config
from instructune.curation.build import run_build
from instructune.studio.app import Studio, create_app
from instructune.studio.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


def test_build_report_page(tmp_path: Path) -> None:
    cwd = Path.cwd()
    os.chdir(REPO)  # the config's data paths are relative to the repository
    try:
        cfg = load_config(REPO / "configs" / "build-demo.yaml", [f"output_dir={tmp_path / 'b'}"])
        run_build(cfg)
    finally:
        os.chdir(cwd)
    client = TestClient(create_app(Studio(Workspace(tmp_path))), base_url="http://127.0.0.1")
    assert "b" in Workspace(tmp_path).scan().builds
    page = client.get("/build?path=b")
    assert page.status_code == 200
    for text in ("Sources", "promises", "Mixture: requested vs realised", "realised_share"):
        assert text in page.text
    assert client.get("/data").status_code == 200 and "/build?path=b" in client.get("/data").text
