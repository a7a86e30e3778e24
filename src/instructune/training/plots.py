"""The loss and learning-rate curves of a run, drawn from its `metrics.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_training_curves(metrics_path: Path, out_path: Path) -> Path:
    """Train (and eval) loss on top, learning rate below, both against the optimizer step."""
    # The object-oriented Agg API: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("loss") is not None]
    evals = [r for r in records if r.get("eval_loss") is not None]
    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if evals:
        ax_loss.plot(
            [r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss"
        )
    ax_loss.set_ylabel("loss (per trained token)")
    ax_loss.legend(loc="upper right")
    ax_loss.grid(alpha=0.3)
    lrs = [(r["step"], r["learning_rate"]) for r in train if r.get("learning_rate") is not None]
    ax_lr.plot([s for s, _ in lrs], [lr for _, lr in lrs], color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.grid(alpha=0.3)
    if not train:
        ax_loss.text(0.5, 0.5, "no logged steps", ha="center", transform=ax_loss.transAxes)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    return out_path
