"""Shared fixtures: tiny tokenizer/model built in-process; the embedded model's real tokenizer."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tok() -> Any:
    from .tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_tok_pad_eos() -> Any:
    from .tiny import tiny_tokenizer

    return tiny_tokenizer(pad_is_eos=True)


@pytest.fixture
def tiny_model(tiny_tok: Any) -> Any:
    from .tiny import tiny_llama

    return tiny_llama(len(tiny_tok))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A saved tiny Llama + tokenizer folder: `model.path` for end-to-end runs of the real CLI."""
    from .tiny import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-model")
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lora_run(tiny_model_dir: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A LoRA training output_dir on the tiny model, written by the real `run_train` (3 steps)."""
    import json

    from instructune.config import Config
    from instructune.training.run import run_train

    root = tmp_path_factory.mktemp("lora-run")
    rows = [
        {"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."}
        for i in range(16)
    ]
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "data": {"train": [{"path": str(data)}], "max_length": 64},
            "method": "lora",
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "train": {"max_steps": 3, "micro_batch_size": 4, "learning_rate": 5e-2},
            "output_dir": str(root / "run"),
        }
    )
    return run_train(cfg).out_dir


# Flags Debian's Chromium needs here: headless as root, and no background connections (this
# machine's closed network refuses them, many at a time, and Chromium stalls on the lookups).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Any:
    """Headless Debian Chromium driven by Selenium, one per test module; the module's
    `BROWSER_WINDOW` ("width,height") sizes it. Missing browser: a failure under CI=true (make test
    installs it there), a skip with the install command elsewhere."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        message = "chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    window = getattr(request.module, "BROWSER_WINDOW", "1280,1000")
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    yield driver
    driver.quit()
