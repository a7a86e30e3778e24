"""lm-evaluation-harness adapter: a local multiple-choice task on the in-memory tiny model."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instructune.evaluation import lm_eval_adapter
from instructune.evaluation.lm_eval_adapter import LmEvalMissing, require_lm_eval, run_lm_eval

ROWS: list[dict[str, Any]] = [
    {
        "question": f"Is the fox number {i} quick?",
        "choices": ["yes", "no", "the lazy dog"],
        "answer": i % 3,
    }
    for i in range(9)
]


def test_missing_lm_eval_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake(name: str, *args: Any) -> Any:
        if name == "lm_eval":
            raise ImportError("No module named 'lm_eval'")
        return real(name, *args)

    monkeypatch.setattr(lm_eval_adapter.importlib, "import_module", fake)
    with pytest.raises(LmEvalMissing, match=r"pip install 'instructune\[lmeval\]'"):
        run_lm_eval(object(), object(), ["anything"])


def local_multiple_choice_task(name: str, path: Path) -> dict[str, Any]:
    """An lm-eval task config over ROWS in a local JSONL file (`dataset_path: json`: no Hub).

    Metrics: acc and acc_norm (length-normalized), lm-eval's usual pair."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }


def _own_accuracy(model: Any, tok: Any) -> float:
    """acc the way lm-eval defines it, computed with our scorer: argmax log p(' ' + choice | q)."""
    from instructune.evaluation.loss import sequence_logprobs

    hits = []
    for row in ROWS:
        context = tok(row["question"], add_special_tokens=False)["input_ids"]
        seqs = []
        for choice in row["choices"]:
            whole = tok(row["question"] + " " + choice, add_special_tokens=False)["input_ids"]
            seqs.append((whole, [-100] * len(context) + whole[len(context) :]))
        scores = [lp.sum() for lp in sequence_logprobs(model, seqs, pad_id=3)]
        hits.append(int(np.argmax(scores)) == row["answer"])
    return float(np.mean(hits))


def test_local_multiple_choice_on_tiny_model(
    tmp_path: Path, tiny_model: Any, tiny_tok: Any
) -> None:
    pytest.importorskip("lm_eval")
    require_lm_eval()
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    results = run_lm_eval(
        tiny_model, tiny_tok, [local_multiple_choice_task("tiny_mc", data)], batch_size=4
    )
    metrics = results["tiny_mc"]
    assert metrics["n"] == len(ROWS) and {"acc", "acc_norm", "acc_stderr"} <= set(metrics)
    # lm-eval and our scorer agree on the same model and the same context/continuation split
    assert metrics["acc"] == pytest.approx(_own_accuracy(tiny_model, tiny_tok))


def test_run_eval_includes_lm_eval_tasks(tmp_path: Path, tiny_model: Any, tiny_tok: Any) -> None:
    pytest.importorskip("lm_eval")
    from instructune.config import load_config
    from instructune.evaluation.run import run_eval

    tiny_model.save_pretrained(tmp_path / "base")
    tiny_tok.save_pretrained(tmp_path / "base")
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    rows = [
        {"instruction": f"Q{i}?\n\nOPTIONS:\n- yes\n- no", "input": "", "output": "yes"}
        for i in range(3)
    ]
    (tmp_path / "cls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        f"model: {{path: {tmp_path / 'base'}}}\n"
        f"eval:\n  tasks: [{{name: cls, path: {tmp_path / 'cls.jsonl'}, type: classification}}]\n"
        f"  lm_eval_tasks: [{json.dumps(local_multiple_choice_task('tiny_mc', data))}]\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    metrics = run_eval(load_config(cfg_path)).metrics
    assert metrics["base"]["lm_eval/tiny_mc"]["acc"] == pytest.approx(
        _own_accuracy(tiny_model, tiny_tok)
    )


def test_lm_eval_tasks_alone_are_an_evaluation(
    tmp_path: Path, tiny_model: Any, tiny_tok: Any, capsys: Any
) -> None:
    """No `eval.tasks`, only lm-eval tasks: the CLI runs them and writes the report."""
    pytest.importorskip("lm_eval")
    from instructune.cli.main import main

    tiny_model.save_pretrained(tmp_path / "base")
    tiny_tok.save_pretrained(tmp_path / "base")
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        f"model: {{path: {tmp_path / 'base'}}}\n"
        f"eval:\n  lm_eval_tasks: [{json.dumps(local_multiple_choice_task('tiny_mc', data))}]\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    assert main(["eval", str(cfg_path)]) == 0, capsys.readouterr().err
    assert "lm_eval/tiny_mc" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["base"]["lm_eval/tiny_mc"]["acc"] == pytest.approx(
        _own_accuracy(tiny_model, tiny_tok)
    )
    assert (tmp_path / "run" / "report.html").is_file()
