"""Who may talk to the studio: loopback by default, a key when exposed.

Bound to loopback (the default), requests must carry a loopback `Host` header, so a web page on
another site can't reach the studio through DNS rebinding. Bound elsewhere, `--api-key` is
required (`check_bind`) and every request needs it: `Authorization: Bearer KEY` (the same scheme
`serve` checks) or the cookie `/login` sets for the browser. Static assets need neither.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE = "instructune_studio_key"
OPEN_PATHS = ("/static/", "/login")
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'; "
    "form-action 'self'"
)
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def check_bind(host: str, api_key: str | None) -> None:
    """A non-loopback address needs a key: the studio reads the folder and runs commands."""
    if host not in LOOPBACK and not api_key:
        raise ValueError(
            f"--host {host}: a non-loopback address needs --api-key (or INSTRUCTUNE_API_KEY); "
            "the studio shows your data and can start training"
        )


def key_matches(given: str, api_key: str) -> bool:
    return hmac.compare_digest(given.encode(), api_key.encode())


class Guard:
    """ASGI middleware: host check (no key) or key check (with one), and security headers."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope["path"], headers) or _cross_site(scope, headers)
        if refusal is not None:
            await _plain(send, *refusal)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                names = {k.lower() for k, _ in message.get("headers", [])}
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", CSP.encode()))
                message = dict(message, headers=[*message.get("headers", []), *extra])
            await send(message)

        await self.app(scope, receive, with_headers)

    def _refusal(self, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        if self.api_key is None:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
            if name not in LOOPBACK:
                return 403, f"host {host!r} refused: the studio answers loopback names only"
            return None
        if path.startswith(OPEN_PATHS):
            return None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key_matches(token, self.api_key):
            return None
        if key_matches(_cookie(headers.get("cookie", ""), COOKIE), self.api_key):
            return None
        return 401, "missing or wrong API key: open /login, or send Authorization: Bearer KEY"


def _cross_site(scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
    """A state-changing request from another origin (a page elsewhere posting to loopback)."""
    if scope["method"] in ("GET", "HEAD", "OPTIONS"):
        return None
    origin = headers.get("origin")
    if origin is not None and origin.partition("://")[2] != headers.get("host"):
        return 403, f"cross-origin request from {origin!r} refused"
    json_body = headers.get("content-type", "").startswith("application/json")
    if scope["path"].startswith(("/api/", "/engine/")) and not json_body:
        return 415, "send JSON (Content-Type: application/json)"
    return None


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def form_value(body: bytes, name: str) -> str:
    values = parse_qs(body.decode("utf-8", "replace")).get(name) or [""]
    return values[0]


async def _plain(send: Any, status: int, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": text.encode()})
