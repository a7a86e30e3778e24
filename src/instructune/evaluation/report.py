"""Side-by-side reports of an eval run: a printed table, `report.md` and a self-contained HTML.

All three are built from `metrics.json`'s content and the prediction records, so a report can be
rebuilt from a finished run's files. The HTML embeds its plots as base64 PNGs and has no external
assets (it opens offline and survives being mailed around).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructune.rundir import RunDir

if TYPE_CHECKING:
    from instructune.evaluation.compare import TaskOutcome

_HIDDEN = {"confusion_matrix", "labels", "n", "n_tokens"}
_CLIP = 400  # characters of a prompt/output shown in a report


def task_slug(task: str) -> str:
    return re.sub(r"[^\w.-]+", "_", task).strip("_") or "task"


def tuned_names(metrics: Mapping[str, Any]) -> list[str]:
    """The models compared with the base: "tuned", or the names of eval's `adapters:`."""
    names = metrics.get("meta", {}).get("tuned")
    return list(names) if names else ["tuned"]


def summary_rows(metrics: Mapping[str, Any], tuned_name: str = "tuned") -> list[list[str]]:
    """[task, metric, base, tuned, Δ, p-value] rows; `-` where a model or test is missing."""
    rows: list[list[str]] = []
    base, tuned = metrics.get("base", {}), metrics.get(tuned_name, {})
    comparison = metrics.get("comparisons", {}).get(tuned_name) or metrics.get("comparison", {})
    for task in dict.fromkeys([*base, *tuned]):
        values_b, values_t = base.get(task, {}), tuned.get(task, {})
        for name in dict.fromkeys([*values_b, *values_t]):
            if name in _HIDDEN or name.endswith("_stderr"):
                continue
            comp = comparison.get(task, {}).get(name, {})
            delta = comp.get("delta")
            rows.append(
                [
                    task,
                    name,
                    _fmt(values_b.get(name)),
                    _fmt(values_t.get(name)),
                    "-" if delta is None else f"{delta:+.4f}",
                    _fmt_p(comp),
                ]
            )
    return rows


def summary_table(metrics: Mapping[str, Any]) -> str:
    """The rows as an aligned plain-text table, plus any regressions, for the terminal."""
    lines: list[str] = []
    for name in tuned_names(metrics):
        header = ["task", "metric", "base", name, "Δ", "p-value"]
        rows = [header, *summary_rows(metrics, name)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        table = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        table.insert(1, "  ".join("-" * w for w in widths))
        lines += ([""] if lines else []) + table
    for task, reg in metrics.get("regressions", {}).items():
        lines.append(
            f"REGRESSION {task}: {reg['metric']} {reg['base']:.4f} → {reg['tuned']:.4f} "
            f"(worse by {reg['drop']:.4f} > threshold {reg['threshold']})"
        )
    return "\n".join(lines)


def reliability_plots(
    outcomes: Mapping[str, Mapping[str, TaskOutcome]], out_dir: Path
) -> dict[str, Path]:
    """One reliability diagram per classification task, base and tuned on the same axes."""
    from instructune.evaluation.calibration import plot_reliability_diagram, reliability_bins

    by_task: dict[str, dict[str, Any]] = {}
    for model, per_task in outcomes.items():
        for task, outcome in per_task.items():
            conf = outcome.per_item.get("confidence")
            if outcome.type == "classification" and conf:
                bins = reliability_bins(conf, outcome.per_item["correct"], n_bins=10)
                by_task.setdefault(task, {})[model] = bins
    run = RunDir(out_dir)
    return {
        task: plot_reliability_diagram(
            bins, run.reliability_file(task_slug(task)), title=f"Reliability: {task}"
        )
        for task, bins in by_task.items()
    }


def markdown_report(
    metrics: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    plots: Mapping[str, Path],
    show: int = 3,
) -> str:
    meta = metrics.get("meta", {})
    lines = [
        "# Evaluation report",
        "",
        f"model `{meta.get('model')}`, adapter `{meta.get('adapter')}`, template "
        f"`{meta.get('template')}`",
        "",
    ]
    for name in tuned_names(metrics):
        lines += [
            f"| task | metric | base | {name} | Δ | p-value |",
            "|---|---|---:|---:|---:|---:|",
            *("| " + " | ".join(r) + " |" for r in summary_rows(metrics, name)),
            "",
        ]
    for task, reg in metrics.get("regressions", {}).items():
        lines.append(
            f"**Regression** on `{task}`: {reg['metric']} worsened by {reg['drop']:.4f} "
            f"(threshold {reg['threshold']})."
        )
    for task, path in plots.items():
        lines += ["", f"## {task}: reliability", "", f"![reliability {task}]({path.name})"]
    for task, examples in _examples(records, show).items():
        lines += ["", f"## {task}: examples", ""]
        for ex in examples:
            lines += [f"**{ex['source']}**", "", "```text", _clip(ex["prompt"]), "```", ""]
            lines.append(f"- reference: `{_inline(ex['reference'])}`")
            for model, output in ex["outputs"].items():
                lines.append(f"- {model}: `{_inline(output)}`")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def html_report(
    metrics: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    plots: Mapping[str, Path],
    show: int = 3,
) -> str:
    """The same content as the Markdown report as one HTML file with inline PNGs."""
    esc = html.escape
    meta = metrics.get("meta", {})
    tables = []
    for name in tuned_names(metrics):
        head = "".join(
            f"<th>{esc(h)}</th>" for h in ("task", "metric", "base", name, "Δ", "p-value")
        )
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
            for row in summary_rows(metrics, name)
        )
        tables.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation report</title>",
        f"<style>{_CSS}</style></head><body><h1>Evaluation report</h1>",
        f"<p>model <code>{esc(str(meta.get('model')))}</code>, adapter "
        f"<code>{esc(str(meta.get('adapter')))}</code>, template "
        f"<code>{esc(str(meta.get('template')))}</code></p>",
        *tables,
    ]
    for task, reg in metrics.get("regressions", {}).items():
        parts.append(
            f"<p class='bad'>Regression on <b>{esc(task)}</b>: {esc(reg['metric'])} worsened by "
            f"{reg['drop']:.4f} (threshold {reg['threshold']})</p>"
        )
    for task, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h2>{esc(task)}: reliability</h2>")
        parts.append(f"<img alt='reliability {esc(task)}' src='data:image/png;base64,{data}'>")
    for task, examples in _examples(records, show).items():
        parts.append(f"<h2>{esc(task)}: examples</h2>")
        for ex in examples:
            outs = "".join(
                f"<li><b>{esc(m)}</b>: <code>{esc(o)}</code></li>" for m, o in ex["outputs"].items()
            )
            parts.append(
                f"<h3>{esc(ex['source'])}</h3><pre>{esc(_clip(ex['prompt']))}</pre><ul>"
                f"<li><b>reference</b>: <code>{esc(ex['reference'])}</code></li>{outs}</ul>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_reports(
    metrics: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    plots: Mapping[str, Path],
    out_dir: Path,
    show: int = 3,
) -> dict[str, Path]:
    run = RunDir(out_dir)
    md, page = run.report_md, run.report_file
    md.write_text(markdown_report(metrics, records, plots, show), encoding="utf-8")
    page.write_text(html_report(metrics, records, plots, show), encoding="utf-8")
    return {"report_md": md, "report_html": page}


def _examples(records: Sequence[Mapping[str, Any]], show: int) -> dict[str, list[dict[str, Any]]]:
    """Per task, up to `show` items with every model's output; items where models differ first."""
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        if r.get("type") in ("loss", "preference") or show == 0:
            continue
        item = grouped.setdefault(r["task"], {}).setdefault(
            r["source"],
            {
                "source": r["source"],
                "prompt": r["prompt"],
                "reference": r["reference"],
                "outputs": {},
            },
        )
        item["outputs"][r["model"]] = _output_text(r)
    chosen: dict[str, list[dict[str, Any]]] = {}
    for task, items in grouped.items():
        ranked = sorted(items.values(), key=lambda ex: len(set(ex["outputs"].values())) < 2)
        chosen[task] = ranked[:show]
    return chosen


def _output_text(record: Mapping[str, Any]) -> str:
    if record.get("type") == "classification":
        p = record["probs"].get(record["output"], 0.0)
        mark = "✓" if record.get("correct") else "✗"
        return f"{record['output']} (p={p:.2f}) {mark}"
    stop = "" if record.get("stopped", True) else " [no stop]"
    return f"{record['output']}{stop}"


def _fmt_p(comp: Mapping[str, Any]) -> str:
    p = comp.get("p_value")
    if p is None:
        return "-"
    if p == 0 and comp.get("n_resamples"):  # the bootstrap can't resolve below 1/n_resamples
        return f"<{1 / comp['n_resamples']:.1g}"
    return f"{p:.3g}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[: _CLIP // 2] + " … " + text[-_CLIP // 2 :]


def _inline(text: str) -> str:
    return _clip(text).replace("`", "'").replace("\n", " ⏎ ")


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
    "td:nth-child(n+3){text-align:right;font-variant-numeric:tabular-nums}"
    "pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}.bad{color:#b00}"
    "img{max-width:100%}"
)
