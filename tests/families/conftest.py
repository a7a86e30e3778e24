"""One prepared model folder per family (`fixtures.py`), built once a session.

The sources (llama.cpp's vocab files and templates) come from the pinned llama-cpp-python sdist,
fetched by `make fixtures` (or here, on first use) with pip into the cache: a missing source is an
error, never a skip.
"""

from __future__ import annotations

import json

import pytest

from .fixtures import BY_NAME, FAMILIES
from .helpers import CONVERSATIONS, TOOL_CALL, TOOLS, Case


@pytest.fixture(scope="session", params=[f.name for f in FAMILIES])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    """The family's model folder prepared by the real `run_prepare` (template: chat)."""
    from instructune.config import Config
    from instructune.data.prepare import run_prepare
    from instructune.models import load_tokenizer

    from .fixtures import model_dir

    family = BY_NAME[request.param]
    root = tmp_path_factory.mktemp(family.name)
    folder = model_dir(family, root)
    data = root / "rows.jsonl"
    rows = [{"messages": m} for m in CONVERSATIONS.values()]
    if family.tools:
        rows.append({"messages": TOOL_CALL, "tools": TOOLS})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = Config.model_validate(
        {
            "model": {"path": str(folder)},
            "data": {"train": [{"path": str(data)}], "max_length": 2048, "packing": False},
            "output_dir": str(root / "run"),
        }
    )
    tokenizer = load_tokenizer(cfg.model)
    result = run_prepare(cfg, tokenizer=tokenizer)
    sources = {name: f":line {i + 1}" for i, name in enumerate([*CONVERSATIONS, "tool_call"])}
    return Case(family, folder, tokenizer, result.prepared, result.summary, sources)
