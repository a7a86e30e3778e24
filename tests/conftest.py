"""Shared fixtures: tiny tokenizer/model built in-process; the embedded model's real tokenizer."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tok() -> Any:
    from instructune.testing.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_tok_pad_eos() -> Any:
    from instructune.testing.tiny import tiny_tokenizer

    return tiny_tokenizer(pad_is_eos=True)


@pytest.fixture
def tiny_model(tiny_tok: Any) -> Any:
    from instructune.testing.tiny import tiny_llama

    return tiny_llama(len(tiny_tok))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A saved tiny Llama + tokenizer folder: `model.path` for end-to-end runs of the real CLI."""
    from instructune.testing.tiny import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-model")
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path
