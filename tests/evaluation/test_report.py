"""Reports: table rows, Markdown, and an HTML page with no external assets."""

from __future__ import annotations

from pathlib import Path

from instructune.evaluation.compare import TaskOutcome
from instructune.evaluation.report import (
    html_report,
    markdown_report,
    reliability_plots,
    summary_table,
    write_reports,
)

METRICS = {
    "base": {"cls": {"accuracy": 0.5, "ece": 0.2, "n": 4, "labels": ["a", "b"]}},
    "tuned": {"cls": {"accuracy": 0.75, "ece": 0.1, "n": 4, "labels": ["a", "b"]}},
    "comparison": {
        "cls": {
            "accuracy": {
                "base": 0.5,
                "tuned": 0.75,
                "delta": 0.25,
                "p_value": 0.5,
                "better": "higher",
            },
            "ece": {"base": 0.2, "tuned": 0.1, "delta": -0.1, "p_value": None, "better": "lower"},
        }
    },
    "regressions": {
        "cls": {"metric": "accuracy", "base": 0.9, "tuned": 0.5, "drop": 0.4, "threshold": 0.02}
    },
    "meta": {"model": "m", "adapter": "a", "template": "chat"},
}
RECORDS = [
    {
        "model": m,
        "task": "cls",
        "type": "classification",
        "source": "f:1",
        "prompt": "Q <b>",
        "reference": "a",
        "output": o,
        "correct": o == "a",
        "probs": {"a": 0.6, "b": 0.4},
    }
    for m, o in (("base", "b"), ("tuned", "a"))
]


def _plot(tmp_path: Path) -> dict[str, Path]:
    outcome = TaskOutcome(
        "cls", "classification", {}, {"confidence": [0.6, 0.9, 0.7], "correct": [1, 0, 1]}
    )
    return reliability_plots({"base": {"cls": outcome}, "tuned": {"cls": outcome}}, tmp_path)


def test_summary_table_rows_and_regression() -> None:
    table = summary_table(METRICS)
    lines = table.splitlines()
    assert lines[0].split() == ["task", "metric", "base", "tuned", "Δ", "p-value"]
    assert any(
        line.split() == ["cls", "accuracy", "0.5000", "0.7500", "+0.2500", "0.5"] for line in lines
    )
    assert any(line.split()[:2] == ["cls", "ece"] and line.split()[-1] == "-" for line in lines)
    assert "REGRESSION cls" in table and "labels" not in table


def test_markdown_has_table_plot_and_examples(tmp_path: Path) -> None:
    plots = _plot(tmp_path)
    md = markdown_report(METRICS, RECORDS, plots)
    assert "| cls | accuracy | 0.5000 | 0.7500 | +0.2500 | 0.5 |" in md
    assert "![reliability cls](reliability_cls.png)" in md
    assert "- base: `b (p=0.40) ✗`" in md and "- tuned: `a (p=0.60) ✓`" in md


def test_html_is_self_contained(tmp_path: Path) -> None:
    plots = _plot(tmp_path)
    page = html_report(METRICS, RECORDS, plots)
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "Q &lt;b&gt;" in page  # prompts are escaped
    files = write_reports(METRICS, RECORDS, plots, tmp_path)
    assert files["report_html"].read_text() == page
