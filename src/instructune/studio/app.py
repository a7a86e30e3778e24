"""The studio's web app: pages (`pages.py`), JSON endpoints for the charts, chat and launch, the
vendored static assets, behind `security.Guard`.

Every path parameter is a path relative to DIR that `Workspace.resolve` checks; the pages are
Jinja templates with autoescaping, and the scripts build the DOM with `textContent`, so data is
always shown as text.
"""

from __future__ import annotations

import asyncio
import html
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from instructune.rundir import METRICS_FILE, RunDir
from instructune.studio import chat as chat_mod
from instructune.studio import launch as launch_mod
from instructune.studio.jsonl import MetricsSeries
from instructune.studio.runs import MAX_POINTS, MetricsCache
from instructune.studio.security import Guard
from instructune.studio.workspace import OutsideError, Workspace

STATIC_DIR = Path(__file__).parent / "static"


@dataclass
class Studio:
    """Everything the routes share: the folder, caches, loaded chat models, launched jobs."""

    workspace: Workspace
    api_key: str | None = None
    metrics: MetricsCache = field(default_factory=MetricsCache)
    chat: chat_mod.ChatHub = field(default_factory=chat_mod.ChatHub)
    jobs: launch_mod.Jobs = field(init=False)
    prepared: dict[Path, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.jobs = launch_mod.Jobs(self.workspace.root)

    def close(self) -> None:
        self.chat.close()
        self.jobs.close()


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(studio: Studio) -> Any:
    """The ASGI app: the guard, then `/engine/<key>/...` to a loaded run's server, else FastAPI."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        studio.close()

    app = FastAPI(title="instructune studio", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.studio = studio
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # A missing or unreadable artifact is the user's to fix: say which, as JSON to the scripts
    # and as an escaped line on a page.
    @app.exception_handler(OutsideError)
    @app.exception_handler(FileNotFoundError)
    async def _missing(request: Request, err: Exception) -> Response:
        return _error(request, 404, str(err))

    @app.exception_handler(ValueError)
    async def _invalid(request: Request, err: Exception) -> Response:
        return _error(request, 400, str(err))

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, err: Exception) -> Response:
        return _error(request, getattr(err, "status", 400), str(err))

    from instructune.studio import pages

    pages.register(app, studio)
    _api_routes(app, studio)

    async def router(scope: dict[str, Any], receive: Any, send: Any) -> None:
        engine = scope["type"] == "http" and scope["path"].startswith(chat_mod.ENGINE_PREFIX)
        if engine and await studio.chat.dispatch(scope, receive, send):
            return
        await app(scope, receive, send)

    return Guard(router, studio.api_key)


def _api_routes(app: FastAPI, studio: Studio) -> None:
    ws = studio.workspace

    @app.get("/api/metrics")
    async def metrics(path: str, max_points: int = MAX_POINTS) -> dict[str, Any]:
        """A run's curves, downsampled; `offset`/`rows` tell the page whether the log grew."""
        file = RunDir(ws.resolve(path)).metrics_file
        if not file.is_file():
            raise OutsideError(f"{path!r} has no {METRICS_FILE}")
        series: MetricsSeries = studio.metrics.get(file)
        points = min(max(max_points, 10), 20_000)
        return await asyncio.to_thread(series.downsampled, points)

    @app.post("/api/chat/load")
    async def chat_load(request: Request) -> dict[str, Any]:
        body = await _json(request)
        run = str(body.get("run", ""))
        adapters = [str(a) for a in body.get("adapters") or []]
        run_path = ws.resolve(run)
        pairs = [(a, str(ws.resolve(a))) for a in adapters]
        try:
            loaded = await asyncio.to_thread(studio.chat.load, run, str(run_path), pairs)
        except (ValueError, FileNotFoundError, OSError) as err:
            raise BadRequest(400, f"can't load {run!r}: {err}") from None
        return {"key": loaded.key, "models": list(loaded.state.models)}

    @app.post("/api/chat/render")
    async def chat_render(request: Request) -> dict[str, Any]:
        body = await _json(request)
        try:
            prompt = studio.chat.render(str(body.get("key", "")), list(body.get("messages") or []))
        except (KeyError, ValueError) as err:
            raise BadRequest(400, str(err)) from None
        return {"prompt": prompt}

    @app.post("/api/launch")
    async def launch(request: Request) -> JSONResponse:
        body = await _json(request)
        command, config = str(body.get("command", "")), str(body.get("config", ""))
        path = ws.resolve(config)
        if not path.is_file():
            raise BadRequest(400, f"{config!r} is not a config file")
        error = await asyncio.to_thread(launch_mod.validate, command, path)
        if error is not None:
            return JSONResponse({"error": error}, status_code=400)
        job = studio.jobs.start(command, path, config, dump=bool(body.get("dump", True)))
        return JSONResponse(job.view())

    @app.get("/api/jobs")
    async def jobs() -> list[dict[str, Any]]:
        return [job.view() for job in studio.jobs.jobs.values()]

    @app.get("/api/jobs/{job_id}")
    async def job(job_id: int) -> dict[str, Any]:
        if job_id not in studio.jobs.jobs:
            raise BadRequest(404, f"no job {job_id}")
        return studio.jobs.jobs[job_id].view()

    @app.post("/api/jobs/{job_id}/stop")
    async def stop(job_id: int) -> dict[str, Any]:
        if job_id not in studio.jobs.jobs:
            raise BadRequest(404, f"no job {job_id}")
        return studio.jobs.stop(job_id).view()


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    page = f"<!DOCTYPE html><meta charset='utf-8'><title>error</title><p>{html.escape(message)}"
    return HTMLResponse(page + "</p><p><a href='/'>back to the overview</a></p>", status)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "the body must be a JSON object")
    return body


def run_studio(root: str | Path, host: str, port: int, api_key: str | None) -> int:
    """Serve the studio until Ctrl-C."""
    import logging

    import uvicorn

    from instructune.studio.security import check_bind

    check_bind(host, api_key)
    studio = Studio(Workspace(root), api_key)
    logging.getLogger(__name__).info(
        "studio over %s on http://%s:%d/", studio.workspace.root, host, port
    )
    config = uvicorn.Config(create_app(studio), host=host, port=port, timeout_graceful_shutdown=10)
    # As `serve` does (inference/server.py): uvicorn re-raises a handled SIGINT/SIGTERM at the
    # handler it found; a no-op there lets the clean shutdown exit 0.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _ignore(signum: int, frame: Any) -> None:
    """The handler uvicorn re-raises a handled SIGINT/SIGTERM at: nothing left to do."""
