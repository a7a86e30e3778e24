"""Turn `model.path` into what `from_pretrained` needs: a folder or Hub id, and maybe a GGUF file.

The order is fixed and reported on failure: the embedded name, an existing folder, an existing
`.gguf` file, then a Hub id. A local path always wins over a Hub id of the same spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from instructune.config.schema import EMBEDDED_MODEL, ModelConfig
from instructune.rundir import MODEL_CONFIG_FILE

ModelKind = Literal["embedded", "folder", "gguf", "hub"]

# `org/name`: what the Hub accepts for a repo id (letters, digits, `-`, `_`, `.`).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    kind: ModelKind
    path: str
    """A local folder (embedded, folder, gguf) or a Hub id (hub)."""
    gguf_file: str | None = None
    """The GGUF file name inside `path` (gguf, or hub when `model.gguf_file` is set)."""


def resolve_model(cfg: ModelConfig) -> ResolvedModel:
    """Resolve `cfg.path`; the embedded model is converted to its cached folder on first use."""
    if cfg.path == EMBEDDED_MODEL:
        from instructune.models.embedded import ensure_embedded_model

        return ResolvedModel("embedded", str(ensure_embedded_model()))
    local = Path(cfg.path).expanduser()
    if local.is_dir():
        return _resolve_folder(local, cfg.gguf_file)
    if local.is_file():
        if local.suffix.lower() != ".gguf":
            raise ValueError(
                f"model.path {cfg.path!r} is a file but not a .gguf; point it at a model folder "
                "(with config.json), a .gguf file, or a Hub id"
            )
        return ResolvedModel("gguf", str(local.resolve().parent), local.name)
    if _HUB_ID.match(cfg.path) and not cfg.path.lower().endswith(".gguf"):
        return ResolvedModel("hub", cfg.path, cfg.gguf_file)
    raise FileNotFoundError(
        f"can't resolve model.path {cfg.path!r}: it is not the embedded model "
        f"{EMBEDDED_MODEL!r}, there is no folder or .gguf file at {local.resolve()}, and it is not "
        "a Hub id of the form org/name"
    )


def check_hub_reachable(cfg: ModelConfig) -> None:
    """Fail in a second, not after transformers' retries, when a Hub id can't be fetched: it is not
    cached and the Hub is offline (`HF_HUB_OFFLINE`) or its endpoint does not answer.

    Called by the loaders, not by `resolve_model`: naming a Hub id is fine until it is loaded."""
    from huggingface_hub import constants, try_to_load_from_cache

    wanted = cfg.gguf_file or MODEL_CONFIG_FILE
    if isinstance(try_to_load_from_cache(cfg.path, wanted, revision=cfg.revision), str):
        return
    where = (
        f"model.path {cfg.path!r} is not a local folder (nothing at "
        f"{Path(cfg.path).expanduser().resolve()}) and not the embedded model {EMBEDDED_MODEL!r}"
    )
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(
            f"{where}, and the Hub is offline (HF_HUB_OFFLINE=1) with no cached copy of "
            f"{cfg.path}; fix the path, or download the model while online"
        )
    problem = _endpoint_problem(constants.ENDPOINT)
    if problem:
        raise FileNotFoundError(
            f"{where}, and the Hub is unreachable ({problem}); fix the path, or check the network"
        )


def _endpoint_problem(endpoint: str, timeout: float = 5.0) -> str | None:
    """Why a TCP connection to the Hub endpoint fails, or None when it connects.

    Behind an HTTP(S) proxy a direct connection proves nothing: the check is left to the client.
    """
    import os
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    url = urlsplit(endpoint)
    host = url.hostname or endpoint
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"
    return None


def has_tokenizer_files(folder: Path) -> bool:
    """Whether a model folder holds any tokenizer (fast, sentencepiece, BPE vocab, tiktoken)."""
    names = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
    return any((folder / name).is_file() for name in names) or any(folder.glob("*.tiktoken"))


def _resolve_folder(folder: Path, gguf_file: str | None) -> ResolvedModel:
    ggufs = sorted(p.name for p in folder.glob("*.gguf") if p.is_file())
    if gguf_file is not None:
        if (folder / gguf_file).is_file():
            return ResolvedModel("gguf", str(folder.resolve()), gguf_file)
        raise FileNotFoundError(
            f"model.gguf_file {gguf_file!r} is not in {folder}; the .gguf files there are "
            f"{ggufs or 'none'}"
        )
    if (folder / MODEL_CONFIG_FILE).is_file():
        return ResolvedModel("folder", str(folder.resolve()))
    if len(ggufs) == 1:
        return ResolvedModel("gguf", str(folder.resolve()), ggufs[0])
    if ggufs:
        raise ValueError(
            f"{folder} holds several .gguf files {ggufs}; choose one with model.gguf_file"
        )
    raise FileNotFoundError(
        f"{folder} has no config.json and no .gguf file; point model.path at a Hugging Face model "
        "folder (saved with save_pretrained), a .gguf file, or a Hub id"
    )
