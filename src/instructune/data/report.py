"""Human-readable summary of a prepared dataset: what was read, kept, dropped and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from instructune.rundir import SUMMARY_FILE

if TYPE_CHECKING:
    from instructune.data.pipeline import PreparedData, SplitStats


SHOWN_DROPS = 5
"""Dropped rows printed by `prepare` (summary.json lists them all)."""
_NOTES = {
    "trailing_turns": "user/tool turns after the last assistant turn, removed",
    "non_alternating": "conversations with two user or two assistant turns in a row",
}


def length_histogram(lengths: list[int], max_length: int, bins: int = 8, width: int = 40) -> str:
    """A text histogram of token lengths over [0, max_length] (bars scaled to `width`)."""
    if not lengths:
        return "  (no examples)"
    edges = np.linspace(0, max_length, bins + 1).astype(int)
    counts, _ = np.histogram(np.clip(lengths, 0, max_length), bins=edges)
    top = max(int(counts.max()), 1)
    rows = []
    for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True):
        bar = "█" * round(width * int(n) / top)
        rows.append(f"  {lo:>6}-{hi:<6} {bar} {int(n)}")
    return "\n".join(rows)


def _split_line(name: str, s: SplitStats) -> str:
    line = (
        f"{name:<5} {s.examples:>7} examples  {s.tokens:>9} tokens  "
        f"trained {s.trained_fraction:6.1%}"
    )
    if s.packed_rows is not None and s.packing_efficiency is not None:
        line += f"  packed into {s.packed_rows} rows, efficiency {s.packing_efficiency:6.2%}"
    return line


def summary_text(prepared: PreparedData, max_length: int) -> str:
    lines = ["== Sources =="]
    for src in prepared.sources:
        how = f"detected: {src.reason}" if src.detected else "as configured"
        lines.append(f"{src.path}: format {src.format} ({how})")
        lines.append(f"  rows read {src.rows_read}, kept {src.kept}, sha256 {src.sha256[:16]}…")
        for reason, n in sorted(src.dropped.items()):
            lines.append(f"  dropped {n} ({reason})")
        for note, n in sorted(src.adjusted.items()):
            lines.append(f"  kept with a note: {n} ({_NOTES.get(note, note)})")
    lines.append("== Dropped ==")
    if prepared.dropped:
        lines.extend(f"  {reason}: {n}" for reason, n in sorted(prepared.dropped.items()))
        for row in prepared.dropped_rows[:SHOWN_DROPS]:
            detail = f": {row['detail']}" if row["detail"] else ""
            lines.append(f"    {row['source']}: {row['reason']}{detail}"[:200])
        if len(prepared.dropped_rows) > SHOWN_DROPS:
            lines.append(f"    ... all {len(prepared.dropped_rows)} listed in {SUMMARY_FILE}")
    else:
        lines.append("  none")
    if prepared.truncated:
        lines.append(f"  truncated to fit max_length (kept): {prepared.truncated}")
    if prepared.template_splits:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(prepared.template_splits.items()))
        lines.append(f"  trained in the context the template gives each turn: {counts}")
    lines.append("== Tokens ==")
    for name, stats in prepared.stats.items():
        lines.append(_split_line(name, stats))
    lines.append(f"== Token lengths (train, max_length {max_length}) ==")
    lines.append(length_histogram(prepared.stats["train"].lengths, max_length))
    lines.append(f"template: {prepared.template.name}")
    return "\n".join(lines)


def summary_dict(prepared: PreparedData) -> dict[str, Any]:
    """The same summary as data, for `prepared/summary.json` and the run manifest."""
    return {
        "template": prepared.template.name,
        "sources": [vars(s) for s in prepared.sources],
        "dropped": dict(prepared.dropped),
        "dropped_rows": prepared.dropped_rows,
        "truncated": prepared.truncated,
        "template_splits": dict(prepared.template_splits),
        "splits": {
            name: {
                "examples": s.examples,
                "tokens": s.tokens,
                "trained_tokens": s.trained_tokens,
                "trained_fraction": s.trained_fraction,
                "packed_rows": s.packed_rows,
                "packing_efficiency": s.packing_efficiency,
                "max_example_tokens": max(s.lengths, default=0),
                "mean_example_tokens": float(np.mean(s.lengths)) if s.lengths else 0.0,
            }
            for name, s in prepared.stats.items()
        },
        "hashes": prepared.hashes,
    }
