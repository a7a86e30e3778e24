"""Every studio page in headless Chromium over a real tiny run: content, no console errors, a
non-blank screenshot; the Data page's highlighted tokens are the prepared labels; a run that is
still logging updates live; chat streams; a 1-step train launched from the page writes its run.

Set INSTRUCTUNE_STUDIO_SHOTS=docs/studio to keep the screenshots (the README's images).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .conftest import SCRIPT_ROW, Served

SHOTS_ENV = "INSTRUCTUNE_STUDIO_SHOTS"
README_SHOTS = ("overview", "data", "runs", "runs-compare", "eval", "chat", "launch")


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def open_page(browser: Any, served: Served, path: str) -> str:
    from selenium.webdriver.common.by import By

    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(served.url + path)
    assert browser.execute_script("return document.readyState") == "complete"
    return str(browser.find_element(By.TAG_NAME, "body").text)


def check_clean(browser: Any, tmp_path: Path, name: str, expected: str | None = None) -> None:
    """No console errors (but the `expected` one), and a screenshot that is not blank (kept
    when SHOTS_ENV is set)."""
    from PIL import Image

    errors = [
        e
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and not (expected and expected in e["message"])
    ]
    assert not errors, errors
    shot = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(shot))
    pixels = Image.open(io.BytesIO(shot.read_bytes())).convert("L")
    histogram = pixels.histogram()
    non_white = sum(histogram[:245]) / sum(histogram)
    assert non_white > 0.02, f"{name} looks blank ({non_white:.2%} non-white pixels)"
    assert len([n for n in histogram if n]) > 20
    keep = os.environ.get(SHOTS_ENV)
    if keep and name in README_SHOTS:
        Path(keep).mkdir(parents=True, exist_ok=True)
        image = Image.open(shot).convert("RGB")
        image.quantize(colors=64).save(Path(keep) / f"{name}.png", optimize=True)


def test_overview_lists_runs_data_evals_configs(browser: Any, served: Served, tmp_path: Path):
    body = open_page(browser, served, "/")
    for expected in ("runs/lora", "evals/lora", "configs/launch.yaml", "Prepared data (1)"):
        assert expected in body
    check_clean(browser, tmp_path, "overview")


def test_data_page_highlights_exactly_the_trained_tokens(
    browser: Any, served: Served, tmp_path: Path
):
    from selenium.webdriver.common.by import By

    body = open_page(browser, served, f"/data?path={served.built.run}&size=50")
    prepared = served.built.root / served.built.run / "prepared" / "train.jsonl"
    rows = [json.loads(line) for line in prepared.read_text().splitlines()]
    articles = browser.find_elements(By.CSS_SELECTOR, "article.example")
    assert len(articles) == len(rows) and f"{len(rows)} examples" in body
    seen = browser.execute_script(
        "return [...document.querySelectorAll('article.example')].map(a => ({line: "
        "Number(a.dataset.line), ids: [...a.querySelectorAll('.tok')].map(t => Number("
        "t.dataset.id)), trained: [...a.querySelectorAll('.tok')].map(t => "
        "t.classList.contains('t')), eot: [...a.querySelectorAll('.tok.e')].length, "
        "special: [...a.querySelectorAll('.tok.s')].map(t => t.textContent)}))"
    )
    for shown in seen:
        row = rows[shown["line"] - 1]
        assert shown["ids"] == row["input_ids"]
        assert shown["trained"] == [label != -100 for label in row["labels"]]
        assert shown["eot"] >= 1 and "<|im_end|>" in shown["special"]
    # a row with markup is shown as text: no script element but the page's own two
    assert browser.execute_script("return document.scripts.length") == 2
    texts = [a.find_element(By.CLASS_NAME, "tokens").text for a in articles]
    assert any(SCRIPT_ROW in t for t in texts)
    check_clean(browser, tmp_path, "data")


def test_data_page_filters_truncated_and_dropped(browser: Any, served: Served, tmp_path: Path):
    from selenium.webdriver.common.by import By

    base = f"/data?path={served.built.run}"
    body = open_page(browser, served, base + "&show=truncated")
    assert "1 examples" in body and "truncated: prompt text cut" in body
    body = open_page(browser, served, base + "&q=PLUS+3%3F")  # text, case-insensitive
    assert "1 examples" in body and "What is 3 plus 3?" in body
    body = open_page(browser, served, base + "&q=line+11")  # a source
    assert "1 examples" in body and "train.jsonl:line 11" in body
    body = open_page(browser, served, base + "&show=bins&size=50")
    boundaries = browser.find_elements(By.CSS_SELECTOR, ".bin .boundary")
    assert "packed rows" in body and len(boundaries) == 12  # every example, in its packed row
    body = open_page(browser, served, base + "&show=dropped")
    summary = json.loads(
        (served.built.root / served.built.run / "prepared" / "summary.json").read_text()
    )
    assert summary["dropped_rows"], "the fixture has a dropped row"
    for row in summary["dropped_rows"]:
        assert row["source"] in body and row["reason"] in body
    check_clean(browser, tmp_path, "data-dropped")


def test_runs_table_and_curves(browser: Any, served: Served, tmp_path: Path):
    from selenium.webdriver.common.by import By

    body = open_page(browser, served, "/runs")
    assert "runs/lora" in body and "lora" in body and "finished" in body
    check_clean(browser, tmp_path, "runs")
    open_page(browser, served, f"/runs/view?path={served.built.run}")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".uplot")) >= 2, what="charts")
    status = browser.find_element(By.CSS_SELECTOR, "[data-status-for]")
    assert wait_for(lambda: status.get_attribute("data-last-step") == "2", what="last step 2")
    check_clean(browser, tmp_path, "run")


def test_live_run_updates_and_compares(browser: Any, served: Served, tmp_path: Path):
    from selenium.webdriver.common.by import By

    root = served.built.root
    live = root / "runs" / "live"
    live.mkdir()
    config = (root / served.built.run / "config.yaml").read_text()
    (live / "config.yaml").write_text(config.replace("learning_rate: 0.05", "learning_rate: 0.01"))
    log = live / "metrics.jsonl"

    def append(steps: range) -> None:
        with log.open("a") as fh:
            for s in steps:
                record = {"step": s, "loss": 3.0 / s, "learning_rate": 0.01, "grad_norm": 1.0}
                fh.write(json.dumps(record) + "\n")

    append(range(1, 4))
    body = open_page(browser, served, f"/runs/view?path=runs/live&path={served.built.run}")
    assert "Config differences" in body and "train.learning_rate" in body
    status = browser.find_element(By.CSS_SELECTOR, '[data-status-for="runs/live"]')
    wait_for(lambda: status.get_attribute("data-last-step") == "3", what="step 3")
    append(range(4, 41))
    wait_for(lambda: status.get_attribute("data-last-step") == "40", what="step 40 live")
    assert "40 records" in status.text
    check_clean(browser, tmp_path, "runs-compare")
    shutil.rmtree(live)


def test_eval_page_shows_report_and_predictions(browser: Any, served: Served, tmp_path: Path):
    from selenium.webdriver.common.by import By

    body = open_page(browser, served, f"/eval?path={served.built.eval}")
    assert "odd" in body and "accuracy" in body and "6 items" in body
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.preds tbody tr")) == 6
    assert SCRIPT_ROW in body  # a prompt with markup, shown as text
    frame = browser.find_element(By.CSS_SELECTOR, "iframe.report")
    browser.switch_to.frame(frame)
    assert "Evaluation report" in browser.find_element(By.TAG_NAME, "body").text
    browser.switch_to.default_content()
    check_clean(browser, tmp_path, "eval")


def test_chat_streams_an_answer(browser: Any, served: Served, tmp_path: Path):
    from selenium.webdriver.common.by import By

    from instructune.bundle import load_run_template, load_run_tokenizer
    from instructune.data.conversation import Message
    from instructune.rundir import RunDir

    open_page(browser, served, "/chat")
    browser.find_element(By.ID, "chat-load").click()
    status = browser.find_element(By.ID, "chat-status")
    wait_for(lambda: "loaded" in status.text, 60, "the model to load")
    browser.find_element(By.ID, "chat-max-tokens").clear()
    browser.find_element(By.ID, "chat-max-tokens").send_keys("12")
    # sampled with a seed: greedy decoding of the random tiny model may pick a special token
    browser.find_element(By.ID, "chat-temperature").clear()
    browser.find_element(By.ID, "chat-temperature").send_keys("1")
    browser.find_element(By.ID, "chat-seed").send_keys("0")
    browser.find_element(By.ID, "chat-input").send_keys("What is 2 plus 2?")
    browser.find_element(By.ID, "chat-show-prompt").click()
    prompt = browser.find_element(By.ID, "chat-prompt")
    wait_for(lambda: prompt.get_attribute("textContent"), what="the rendered prompt")
    run = RunDir(served.built.root / served.built.run)
    template = load_run_template(run, load_run_tokenizer(run, run.base_model()))
    expected = template.render([Message("user", "What is 2 plus 2?")], add_generation_prompt=True)
    assert prompt.get_attribute("textContent") == expected
    browser.find_element(By.ID, "chat-send").click()
    answer = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#chat-log .assistant.done"), 60, "answer"
    )[0]
    assert "error" not in answer.text
    chunks = int(answer.get_attribute("data-chunks") or 0)
    assert chunks >= 2, f"streamed in pieces, got {chunks}: {answer.text!r}"
    check_clean(browser, tmp_path, "chat")


def test_launch_validates_trains_one_step_and_stops_a_run(
    browser: Any, served: Served, tmp_path: Path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    root = served.built.root
    (root / "configs" / "bad.yaml").write_text("model: {path: x}\ntrian: {max_steps: 1}\n")
    open_page(browser, served, f"/launch?config={quote('configs/bad.yaml')}")
    Select(browser.find_element(By.ID, "launch-command")).select_by_visible_text("train")
    browser.find_element(By.ID, "launch-start").click()
    error = browser.find_element(By.ID, "launch-error")
    wait_for(lambda: error.is_displayed() and "trian" in error.text, what="the config error")
    assert error.text.startswith("error:")
    configs = Select(browser.find_element(By.ID, "launch-config"))

    def job(config: str) -> Any:
        return wait_for(
            lambda: browser.find_elements(
                By.XPATH, f"//div[@class='job'][b[contains(., '{config}')]]"
            ),
            what=f"the job of {config}",
        )[0]

    # both at once: the long one runs while the short one finishes
    for config in (served.built.long_config, served.built.config):
        configs.select_by_visible_text(config)
        browser.find_element(By.ID, "launch-start").click()
        job(config)
    short, long = job(served.built.config), job(served.built.long_config)
    wait_for(lambda: short.get_attribute("data-state") == "finished", 240, "the train to finish")
    assert short.get_attribute("data-returncode") == "0", short.text
    run = root / "runs" / "launched"
    assert (run / "adapter_model.safetensors").is_file()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()][-1] == 1

    stopped = root / "runs" / "stopped"
    wait_for(
        lambda: (
            (stopped / "metrics.jsonl").is_file() and (stopped / "metrics.jsonl").stat().st_size
        ),
        120,
        "steps",
    )
    long.find_element(By.TAG_NAME, "button").click()  # Stop: Ctrl-C
    wait_for(lambda: long.get_attribute("data-state") == "finished", 120, "the run to stop")
    assert long.get_attribute("data-returncode") == "130", long.text
    assert "--resume" in long.text
    assert list((stopped / "checkpoints").glob("checkpoint-*")), "a resumable checkpoint"
    # the refused config's answer is a 400, which the console logs
    check_clean(browser, tmp_path, "launch", expected="/api/launch - Failed to load resource")
