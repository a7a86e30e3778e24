"""report.html in a real headless browser (Chromium via Selenium): it renders, its images load,
the console stays clean, and the screenshot is not blank.

Chromium is a system package (`apt-get install chromium chromium-driver`; `make test` installs it
where it can). Without it this test is skipped locally but fails under CI=true: the CI run must
not pass without having looked at the page.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from instructune.config import load_config
from instructune.evaluation.run import run_eval

BROWSER_WINDOW = "1200,1600"  # the browser fixture (tests/conftest.py) reads it


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real eval run of the tiny base model and a LoRA adapter: report.html with images."""
    from peft import LoraConfig, get_peft_model

    from instructune.models import save_adapter

    from ..tiny import CHATML_TEMPLATE, tiny_llama, tiny_tokenizer

    root = tmp_path_factory.mktemp("report")
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    peft: Any = get_peft_model(tiny_llama(len(tok)), LoraConfig(r=4, target_modules=["q_proj"]))
    save_adapter(peft, tok, CHATML_TEMPLATE, root / "adapter")
    rows = [
        {
            "instruction": f"Is fox {i} quick? <b>&amp;</b>",
            "input": "",
            "output": str(i % 2 == 1),
            "label": str(i % 2 == 1),
        }
        for i in range(8)
    ]
    (root / "cls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = root / "eval.yaml"
    cfg.write_text(
        f"model: {{path: {root / 'base'}}}\nadapter: {root / 'adapter'}\n"
        "eval:\n  max_new_tokens: 4\n  bootstrap_resamples: 100\n  tasks:\n"
        f"    - {{name: cls, path: {root / 'cls.jsonl'}, type: classification, "
        "options: ['True', 'False']}\n"
        f"    - {{name: gen, path: {root / 'cls.jsonl'}, type: generation}}\n"
        f"output_dir: {root / 'out'}\n"
    )
    run_eval(load_config(cfg))
    return root / "out" / "report.html"


def test_report_renders_in_chromium(browser: Any, report: Path, tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By

    browser.get(report.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "cls" in body and "gen" in body
    assert "Is fox 0 quick? <b>&amp;</b>" in body  # data is shown as text, never as markup
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images, "the report has its reliability diagrams"
    for image in images:
        loaded = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", image
        )
        assert loaded, image.get_attribute("alt")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    pixels = Image.open(io.BytesIO(shot.read_bytes())).convert("L")
    histogram = pixels.histogram()
    non_white = sum(histogram[:250]) / sum(histogram)
    assert non_white > 0.01, f"the page looks blank ({non_white:.2%} non-white pixels)"
    assert len([n for n in histogram if n]) > 20  # text and plots, not one flat color
