"""The HTML pages: Overview, Data, Runs (table, one or several runs' curves), Eval, Chat,
Launch, Login. Server-rendered Jinja templates (autoescaped); the charts, live updates, chat and
launch progress are the static scripts'."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from instructune.rundir import EVAL_REPORT_FILE, PREPARED_DIR, SUMMARY_FILE, RunDir
from instructune.studio import dataview, evals
from instructune.studio.launch import LAUNCHABLE
from instructune.studio.runs import CURVES, config_diff, read_config, read_json, run_row
from instructune.studio.security import COOKIE, form_value, key_matches
from instructune.studio.workspace import OutsideError

PAGE_SIZE = 20
_MAX_PAGE = 200
_REPORT_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["num"] = _num
    return env


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


Page = Callable[..., HTMLResponse]


def register(app: FastAPI, studio: Any) -> None:
    env = _environment()

    def page(name: str, **context: Any) -> HTMLResponse:
        context.setdefault("root", str(studio.workspace.root))
        html = env.get_template(name).render(**context)
        return HTMLResponse(html)

    _data_pages(app, studio, page)
    _run_pages(app, studio, page)
    _eval_pages(app, studio, page)
    _other_pages(app, studio, page)


def _scanned_page(
    app: FastAPI, studio: Any, page: Page, route: str, name: str, active: str, **context: Any
) -> None:
    """GET `route`: page `name` over a fresh scan of the workspace (the nav lists what it found)."""

    async def view() -> HTMLResponse:
        found = await asyncio.to_thread(studio.workspace.scan)
        return page(name, found=found, active=active, **context)

    app.get(route, response_class=HTMLResponse)(view)


def _data_pages(app: FastAPI, studio: Any, page: Page) -> None:
    ws = studio.workspace
    _scanned_page(app, studio, page, "/", "index.html", "overview")

    @app.get("/data", response_class=HTMLResponse)
    async def data(
        path: str | None = None,
        split: str = "train",
        show: str = "all",
        q: str = "",
        page_no: int = Query(0, alias="page", ge=0),
        size: int = Query(PAGE_SIZE, ge=1, le=_MAX_PAGE),
    ) -> HTMLResponse:
        found = await asyncio.to_thread(ws.scan)
        if path is None:
            return page("data.html", found=found, active="data", folder=None)
        folder = ws.resolve(path)
        if not RunDir(folder).prepared.summary_file.is_file():
            raise OutsideError(f"{path!r} has no {PREPARED_DIR}/{SUMMARY_FILE}: run prepare")
        if folder not in studio.prepared:
            studio.prepared[folder] = dataview.PreparedFolder(folder)
        prepared = studio.prepared[folder]
        summary = await asyncio.to_thread(prepared.summary)
        context = _data_context(prepared, summary, split, show, q, page_no, size)
        return await asyncio.to_thread(
            lambda: page("data.html", found=found, active="data", folder=path, **context())
        )

    @app.get("/build", response_class=HTMLResponse)
    async def build(path: str) -> HTMLResponse:
        report = read_json(RunDir(ws.resolve(path)).build_report_file)
        return page("build.html", active="data", folder=path, report=report)


def _run_pages(app: FastAPI, studio: Any, page: Page) -> None:
    ws = studio.workspace

    @app.get("/runs", response_class=HTMLResponse)
    async def runs() -> HTMLResponse:
        found = await asyncio.to_thread(ws.scan)
        rows = [
            await asyncio.to_thread(run_row, ws.resolve(rel), rel, studio.metrics)
            for rel in found.runs
        ]
        return page("runs.html", rows=rows, active="runs")

    @app.get("/runs/view", response_class=HTMLResponse)
    async def run_view(path: list[str] = Query(...)) -> HTMLResponse:  # noqa: B008
        folders = [ws.resolve(p) for p in path]
        configs = [read_config(f) for f in folders]
        manifests = [read_json(RunDir(f).manifest_file) for f in folders]
        return page(
            "run.html",
            active="runs",
            paths=path,
            diff=config_diff(configs) if len(path) > 1 else [],
            manifests=list(zip(path, manifests, strict=True)),
            curves=CURVES,
        )


def _eval_pages(app: FastAPI, studio: Any, page: Page) -> None:
    ws = studio.workspace

    @app.get("/eval", response_class=HTMLResponse)
    async def eval_page(
        path: str | None = None,
        flipped: bool = False,
        page_no: int = Query(0, alias="page", ge=0),
    ) -> HTMLResponse:
        found = await asyncio.to_thread(ws.scan)
        if path is None:
            return page("eval.html", found=found, active="eval", folder=None)
        folder = ws.resolve(path)
        everything = await asyncio.to_thread(evals.items, folder)
        shown = [i for i in everything if i["flipped"]] if flipped else everything
        return page(
            "eval.html",
            found=found,
            active="eval",
            folder=path,
            summary=evals.summary(folder),
            items=shown[page_no * PAGE_SIZE : (page_no + 1) * PAGE_SIZE],
            total=len(shown),
            n_flipped=sum(1 for i in everything if i["flipped"]),
            flipped=flipped,
            page_no=page_no,
            pages=max(1, -(-len(shown) // PAGE_SIZE)),
            has_report=RunDir(folder).report_file.is_file(),
        )

    @app.get("/eval/report")
    async def eval_report(path: str) -> Response:
        """The eval run's own report.html, sandboxed (no scripts, no requests) for the iframe."""
        file = RunDir(ws.resolve(path)).report_file
        if not file.is_file():
            raise OutsideError(f"{path!r} has no {EVAL_REPORT_FILE}")
        return HTMLResponse(
            file.read_text(encoding="utf-8"), headers={"content-security-policy": _REPORT_CSP}
        )


def _other_pages(app: FastAPI, studio: Any, page: Page) -> None:
    _scanned_page(app, studio, page, "/chat", "chat.html", "chat")
    _scanned_page(app, studio, page, "/launch", "launch.html", "launch", commands=LAUNCHABLE)

    @app.get("/login", response_class=HTMLResponse)
    async def login_form() -> HTMLResponse:
        return page("login.html", active="", failed=False, root="")  # no path before the key

    @app.post("/login")
    async def login(request: Request) -> Response:
        key = form_value(await request.body(), "key")
        if studio.api_key is None or not key_matches(key, studio.api_key):
            failed = page("login.html", active="", failed=True, root="")
            failed.status_code = 401
            return failed
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
        return response


def _example(prepared: dataview.PreparedFolder, line: int, row: dict[str, Any]) -> dict[str, Any]:
    from instructune.data.truncation import CUT_MARKER

    tokens = prepared.tokens(row)
    if row.get("cut"):
        truncated = f"first {row['cut']} tokens cut"
    elif CUT_MARKER in "".join(t.text for t in tokens):
        truncated = f"prompt text cut, marked {CUT_MARKER.strip()}"
    else:
        truncated = ""
    return {"line": line, "row": row, "tokens": tokens, "truncated": truncated}


def _bin(prepared: dataview.PreparedFolder, number: int, rows: list[Any]) -> dict[str, Any]:
    examples = [_example(prepared, line, row) for line, row in rows]
    return {"bin": number, "examples": examples, "tokens": sum(len(e["tokens"]) for e in examples)}


def _data_context(
    prepared: dataview.PreparedFolder,
    summary: dict[str, Any],
    split: str,
    show: str,
    q: str,
    page_no: int,
    size: int,
) -> Any:
    """A closure building the Data page's context (run in a thread: it reads and decodes)."""
    if show not in dataview.FILTERS:
        show = "all"

    def build() -> dict[str, Any]:
        splits = prepared.splits()
        context: dict[str, Any] = {
            "summary": summary,
            "notes": dataview.notes(summary),
            "splits": splits,
            "split": split,
            "show": show,
            "q": q,
            "page_no": page_no,
            "size": size,
            "examples": [],
            "dropped": [],
            "bins": [],
            "complete": True,
            "scan_limit": dataview.SCAN_LIMIT,
        }
        if show == "dropped":
            total, context["dropped"] = dataview.dropped_rows(summary, page_no * size, size)
        elif show == "bins":
            total, bins = prepared.bins(split, page_no * size, size)
            context["bins"] = [_bin(prepared, b["bin"], b["examples"]) for b in bins]
        elif split in splits:
            total, rows, context["complete"] = prepared.page(split, page_no * size, size, show, q)
            context["examples"] = [_example(prepared, line, row) for line, row in rows]
        else:
            total = 0
        context["total"] = total
        context["pages"] = max(1, -(-total // size))
        return context

    return build
