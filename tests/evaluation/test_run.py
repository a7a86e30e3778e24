"""run_eval end to end on the tiny model: base vs tuned, files, regression exit code."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from instructune.config import load_config
from instructune.evaluation.run import run_eval

# Differs from the tokenizer's chat template, so prompts show which one eval rendered.
CUSTOM_TEMPLATE = (
    "{{ 'TRAINED\\n' }}{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny base model, a non-trivial LoRA adapter, its merged model, and three tasks."""
    from peft import LoraConfig, get_peft_model

    from instructune.models import save_adapter

    from ..tiny import tiny_llama, tiny_tokenizer

    root = tmp_path_factory.mktemp("eval")
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    peft: Any = get_peft_model(
        tiny_llama(len(tok)), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the adapter change the outputs
                param.normal_(0, 3.0)  # large: peaky wrong predictions raise the loss
    save_adapter(peft, tok, CUSTOM_TEMPLATE, root / "adapter")
    merged = peft.merge_and_unload()
    merged.save_pretrained(root / "merged")
    tok.save_pretrained(root / "merged")
    (root / "merged" / "template.jinja").write_text(CUSTOM_TEMPLATE)
    cls = [
        {
            "instruction": f"Is fox {i} quick?\n\nOPTIONS:\n- True\n- False",
            "input": "",
            "output": str(i % 2 == 1),
            "label": str(i % 2 == 1),
        }
        for i in range(10)
    ]
    gen = [
        {"instruction": f"Capital of France {i}?", "input": "", "output": "Paris."}
        for i in range(5)
    ]
    (root / "cls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cls))
    (root / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen))
    return root


def _cfg(
    root: Path, out: str, adapter: str | None = "adapter", extra: list[str] | None = None
) -> Any:
    text = (
        f"model: {{path: {root / 'base'}}}\n"
        + (f"adapter: {root / adapter}\n" if adapter else "")
        + "eval:\n  batch_size: 3\n  max_new_tokens: 6\n  bootstrap_resamples: 200\n  tasks:\n"
        f"    - {{name: cls, path: {root / 'cls.jsonl'}, type: classification}}\n"
        f"    - {{name: gen, path: {root / 'gen.jsonl'}, type: generation, "
        "metrics: [f1, exact_match]}\n"
        f"    - {{name: held, path: {root / 'gen.jsonl'}, type: loss, regression_check: true}}\n"
        f"output_dir: {root / out}\n"
    )
    path = root / f"{out}.yaml"
    path.write_text(text)
    return load_config(path, extra or [])


def test_base_vs_tuned_metrics_json(workdir: Path) -> None:
    result = run_eval(_cfg(workdir, "run"))
    saved = json.loads((workdir / "run" / "metrics.json").read_text())
    assert saved["base"] == result.metrics["base"] and set(saved) >= {"base", "tuned", "comparison"}
    base, tuned = saved["base"], saved["tuned"]
    assert set(base["cls"]) == {
        "accuracy",
        "macro_f1",
        "ece",
        "brier",
        "confusion_matrix",
        "labels",
        "n",
    }
    assert set(base["gen"]) == {"f1", "exact_match", "stop_rate", "n"}
    assert set(base["held"]) == {"loss", "perplexity", "n_tokens"} | {"n"}
    # the adapter is non-trivial: the tuned numbers differ from the base ones
    assert base["held"]["loss"] != pytest.approx(tuned["held"]["loss"], abs=1e-6)
    assert base["cls"]["brier"] != pytest.approx(tuned["cls"]["brier"], abs=1e-9)
    comp = saved["comparison"]
    assert comp["cls"]["accuracy"]["test"].startswith("mcnemar")
    assert comp["held"]["loss"]["test"] == "paired bootstrap" and comp["gen"]["main_metric"] == "f1"
    for name in (
        "predictions.jsonl",
        "report.md",
        "report.html",
        "reliability_cls.png",
        "manifest.json",
    ):
        assert (workdir / "run" / name).is_file()


def test_base_pass_runs_without_the_adapter(workdir: Path) -> None:
    with_adapter = json.loads((_ensure_run(workdir) / "metrics.json").read_text())
    # same prompts as the adapter run: the template training saved, named through data.template
    same_template = [
        f"data.train=[{{path: {workdir / 'gen.jsonl'}}}]",
        f"data.template={workdir / 'adapter' / 'template.jinja'}",
    ]
    alone = run_eval(_cfg(workdir, "alone", adapter=None, extra=same_template)).metrics
    assert set(alone) >= {"base"} and "tuned" not in alone
    assert alone["base"]["held"]["loss"] == pytest.approx(
        with_adapter["base"]["held"]["loss"], abs=1e-9
    )
    assert alone["base"]["cls"]["brier"] == pytest.approx(
        with_adapter["base"]["cls"]["brier"], abs=1e-9
    )


def test_merged_folder_equals_attached_adapter(workdir: Path) -> None:
    attached = json.loads((_ensure_run(workdir) / "metrics.json").read_text())["tuned"]
    merged = run_eval(
        _cfg(workdir, "merged_run", adapter="merged", extra=["eval.compare_base=false"])
    )
    assert "base" not in merged.metrics
    assert merged.metrics["tuned"]["held"]["loss"] == pytest.approx(
        attached["held"]["loss"], abs=1e-4
    )


def test_predictions_use_the_saved_training_template(workdir: Path) -> None:
    lines = (_ensure_run(workdir) / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {(r["model"], r["task"]) for r in records} == {
        (m, t) for m in ("base", "tuned") for t in ("cls", "gen", "held")
    }
    gen = [r for r in records if r["task"] == "gen"]
    assert len(gen) == 10 and all(
        {"prompt", "reference", "output", "stopped"} <= set(r) for r in gen
    )
    # base and tuned are both prompted with the template training saved, not the tokenizer's
    assert all(r["prompt"].startswith("TRAINED\n") for r in records if "prompt" in r)
    meta = json.loads((workdir / "run" / "metrics.json").read_text())["meta"]
    assert meta["template"].endswith("template.jinja")


def test_cli_exit_code_on_regression(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from instructune.cli import eval as eval_cli

    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    cfg = _cfg(workdir, "cli", extra=["eval.regression_threshold=0.0"])
    code = eval_cli.main(parser.parse_args(["--fail-on-regression"]), cfg)
    regressed = json.loads((workdir / "cli" / "metrics.json").read_text())["regressions"]
    assert regressed, "the random adapter raises the held-out loss of the random base model"
    assert code == eval_cli.REGRESSION_EXIT
    assert "REGRESSION held" in capsys.readouterr().out
    assert (
        eval_cli.main(
            parser.parse_args([]), _cfg(workdir, "cli2", extra=["eval.regression_threshold=0.0"])
        )
        == 0
    )


def _ensure_run(root: Path) -> Path:
    if not (root / "run" / "metrics.json").is_file():
        run_eval(_cfg(root, "run"))
    return root / "run"
