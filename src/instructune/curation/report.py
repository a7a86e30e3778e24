"""`build_report.json` and `build_report.md`: what each step kept, dropped and why.

Nothing time- or machine-dependent goes in, so the same config and seed give the same report
bytes (timings and versions live in the run manifest).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructune.curation.filters import Removed
from instructune.curation.mixture import MixRow
from instructune.curation.sources import Item
from instructune.rundir import RunDir

__all__ = ["BuildReport", "SourceStats"]

_SHOW = 5  # examples per drop reason / cluster in the report
_TEXT = 160  # characters of an example's text shown


@dataclass
class SourceStats:
    rows_in: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skip_examples: dict[str, str] = field(default_factory=dict)
    notes: Counter[str] = field(default_factory=Counter)
    removed: Counter[str] = field(default_factory=Counter)
    train_items: int = 0
    eval_items: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    mixed_rows: int = 0
    labels: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "skipped": dict(sorted(self.skipped.items())),
            "skip_examples": dict(sorted(self.skip_examples.items())),
            "skipped_parts": dict(sorted(self.notes.items())),
            "removed": dict(sorted(self.removed.items())),
            "train_items": self.train_items,
            "eval_items": self.eval_items,
            "train_rows": self.train_rows,
            "eval_rows": self.eval_rows,
            "mixed_rows": self.mixed_rows,
            "label_balance": dict(sorted(self.labels.items())),
        }


@dataclass
class BuildReport:
    sources: dict[str, SourceStats]
    removed: list[Removed] = field(default_factory=list)
    clusters: list[list[Item]] = field(default_factory=list)
    mixture: list[MixRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        by_reason: dict[str, list[dict[str, Any]]] = {}
        for r in self.removed:
            by_reason.setdefault(r.reason, []).append(r.to_json())
        return {
            "sources": {name: s.to_json() for name, s in self.sources.items()},
            "removed": by_reason,
            "near_duplicate_clusters": [
                {
                    "kept": c[0].location,
                    "removed": [i.location for i in c[1:]],
                    "example": c[0].content[:_TEXT],
                }
                for c in self.clusters
            ],
            "mixture": [m.to_json() for m in self.mixture],
            "notes": self.notes,
            "outputs": self.outputs,
        }

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        run = RunDir(out_dir)
        json_path = run.build_report_file
        json_path.write_text(
            json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        md_path = run.build_report_md
        md_path.write_text(self.markdown(), encoding="utf-8")
        return json_path, md_path

    def markdown(self) -> str:
        lines = ["# Build report", ""]
        lines += [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        lines += [
            "## Sources",
            "",
            "| source | rows in | skipped | removed | train | eval | in mix |",
        ]
        lines += ["|---|---:|---:|---:|---:|---:|---:|"]
        for name, s in self.sources.items():
            lines.append(
                f"| {name} | {s.rows_in} | {sum(s.skipped.values())} | {sum(s.removed.values())} "
                f"| {s.train_rows} | {s.eval_rows} | {s.mixed_rows} |"
            )
        drops = []
        for name, s in self.sources.items():
            for reason, n in sorted((s.skipped + s.removed + s.notes).items()):
                example = s.skip_examples.get(reason, "")
                drops.append(f"- {name}: {reason}: {n}" + (f" (e.g. {example})" if example else ""))
        lines += ["", "## Drops by reason", "", *(drops or ["- none"])]
        balance = [
            f"- {name}: " + ", ".join(f"{k}: {v}" for k, v in sorted(s.labels.items()))
            for name, s in self.sources.items()
            if s.labels
        ]
        lines += ["", "## Label balance (train mix)", "", *(balance or ["- no labels"])]
        lines += self._mixture_md() + self._removed_md() + self._clusters_md()
        return "\n".join(lines) + "\n"

    def _mixture_md(self) -> list[str]:
        lines = ["", "## Mixture (train)", ""]
        lines.append("| source | available | requested | requested share | realised | share |")
        lines.append("|---|---:|---|---:|---:|---:|")
        for m in self.mixture:
            wanted = "—" if m.requested_share is None else f"{m.requested_share:.1%}"
            lines.append(
                f"| {m.source} | {m.available} | {m.requested} | {wanted} | {m.realised} "
                f"| {m.realised_share:.1%} |"
            )
        return lines

    def _removed_md(self) -> list[str]:
        lines = ["", "## Removed rows", ""] + ([] if self.removed else ["- none"])
        for r in self.removed:
            if r.reason == "contaminated":
                lines.append(
                    f"- {r.item.location} (contaminated): matches {r.matched}: “{r.detail}”"
                )
        counts = Counter(r.reason for r in self.removed if r.reason != "contaminated")
        for reason, n in sorted(counts.items()):
            shown = [r for r in self.removed if r.reason == reason][:_SHOW]
            lines.append(
                f"- {reason}: {n}, e.g. "
                + "; ".join(f"{r.item.location} = {r.matched}" for r in shown)
            )
        return lines

    def _clusters_md(self) -> list[str]:
        if not self.clusters:
            return []
        lines = ["", f"## Near-duplicate clusters ({len(self.clusters)})", ""]
        for cluster in self.clusters[:_SHOW]:
            lines.append(f"- kept {cluster[0].location}: “{cluster[0].content[:_TEXT]}”")
            for item in cluster[1:_SHOW]:
                lines.append(f"  - removed {item.location}: “{item.content[:_TEXT]}”")
        return lines
