"""Credentials in URLs never reach a file or a terminal: one helper for everything we record.

A `base_url` such as `http://user:KEY@host/v1?api-key=KEY` carries its secret in the userinfo or
in a query value. `redact_url` replaces both with `REDACTED` (the host, path and other parameters
stay, so a report still says which endpoint it was); `redact_secrets` does it to every URL inside
a text (a config dump, a manifest, an error message, a log line). Only the standard library:
the config package and the CLI's error printer both use it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "REDACTED"
# query parameter names that carry a credential, compared lower-case with `-` read as `_`
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "authorization",
        "client_secret",
        "code",
        "credential",
        "credentials",
        "key",
        "pass",
        "password",
        "passwd",
        "private_key",
        "pwd",
        "refresh_token",
        "secret",
        "sig",
        "signature",
        "session",
        "token",
        "x_amz_credential",
        "x_amz_security_token",
        "x_amz_signature",
    }
)
# scheme://… up to whitespace or a quote (a URL inside YAML, JSON or a sentence); punctuation
# that ends the match (`url,` in a flow mapping, `(url)`, `url.`) is kept outside the URL
_URL = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'"<>`]+""")
_TRAILING = ",.;:!?)]}"


def _secret_name(name: str) -> bool:
    norm = name.strip().lower().replace("-", "_")
    return norm in SECRET_PARAMS or norm.endswith(("_key", "_token", "_secret", "_password"))


def redact_url(url: str) -> str:
    """`url` with its userinfo and credential-like query values replaced by `REDACTED`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unparsable URL (a bad IPv6 literal): hide all but the scheme
        return url.split("://", 1)[0] + "://" + MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _secret_name(k) else v) for k, v in pairs], safe="/:")
    fragment = parts.fragment
    if fragment and "=" in fragment:  # implicit-flow tokens travel in the fragment
        pairs = parse_qsl(fragment, keep_blank_values=True)
        if any(_secret_name(k) for k, _ in pairs):
            fragment = urlencode([(k, MASK if _secret_name(k) else v) for k, v in pairs])
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_secrets(text: str) -> str:
    """`text` with every URL in it redacted (`redact_url`); text without URLs is unchanged."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    url = match.group(0).rstrip(_TRAILING)
    return redact_url(url) + match.group(0)[len(url) :]


class RedactingFilter(logging.Filter):
    """Redacts URLs in a log record's final message (installed on the CLI's log handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed log call: the handler reports it itself
            return True
        clean = redact_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


__all__ = ["MASK", "RedactingFilter", "redact_secrets", "redact_url"]
