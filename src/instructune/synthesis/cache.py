"""Append-only request cache: every request and its response, one JSON line each, flushed.

The pipelines are deterministic functions of the config, the seed and the responses, so a rerun
replays them from this file: cached requests are answered without being sent again, and the run
continues where it stopped. A line torn by a crash (kill -9 mid-write) is cut off at reopen.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from instructune.synthesis.backends import Request, Response, params_record


def truncate_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline (a write interrupted by a crash); returns bytes cut."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as fh:
            fh.truncate(end)
    return len(data) - end


class RequestCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.torn_bytes = truncate_torn_tail(path)
        self._entries: dict[str, Response] = {}
        if path.exists():
            with path.open(encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, 1):
                    try:
                        rec = json.loads(line)
                        self._entries[rec["key"]] = Response(**rec["response"])
                    except (json.JSONDecodeError, KeyError, TypeError) as err:
                        raise ValueError(f"{path}:{line_no}: corrupt cache line ({err})") from err
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Response | None:
        return self._entries.get(key)

    def put(self, key: str, request: Request, response: Response) -> None:
        line = json.dumps(
            {
                "key": key,
                "prompt": request.prompt,
                "params": params_record(request.params),
                "response": response.as_dict(),
            },
            ensure_ascii=False,
        )
        with self._lock:
            self._entries[key] = response
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()
