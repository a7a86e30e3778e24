"""What `synthesize` writes: `synth.jsonl` rows (resumable), the drop tally, the report."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from instructune.redact import redact_secrets
from instructune.rundir import RunDir
from instructune.synthesis.cache import truncate_torn_tail

_EXAMPLES_PER_REASON = 3


class RowSink:
    """Appends rows to `synth.jsonl`; on a rerun, skips the rows the interrupted run already wrote.

    The pipeline replays deterministically from the request cache, so the first rows it emits are
    the ones already on disk, byte for byte: each is checked (a changed config or seed diverges)
    and not written twice.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        truncate_torn_tail(path)
        self.existing: list[str] = []
        if path.exists():
            self.existing = path.read_text(encoding="utf-8").splitlines()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self.count = 0

    def emit(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False)
        if self.count < len(self.existing):
            if self.existing[self.count] != line:
                raise ValueError(
                    f"{self.path}:{self.count + 1}: this run produces a different row "
                    f"({row['id']}): the file comes from a different config or seed; use a new "
                    "output_dir or delete it"
                )
        else:
            self._fh.write(line + "\n")
            self._fh.flush()
        self.count += 1

    def close(self) -> None:
        self._fh.close()


class Tally:
    """Counts per round and stage: `generated`, `kept`, and each drop reason, with examples."""

    def __init__(self) -> None:
        self.counts: dict[int, dict[str, dict[str, int]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(int))
        )
        self.examples: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        self.kept_instructions = 0
        self.dropped_instructions = 0

    def add(self, round_: int, stage: str, outcome: str, example: Any = None, n: int = 1) -> None:
        self.counts[round_][stage][outcome] += n
        if example is not None and len(self.examples[stage][outcome]) < _EXAMPLES_PER_REASON:
            self.examples[stage][outcome].append(example)

    def keep_instruction(self, round_: int) -> None:
        self.kept_instructions += 1
        self.add(round_, "instruction", "kept")

    def drop_instruction(self, round_: int, reason: str, example: Any) -> None:
        self.dropped_instructions += 1
        self.add(round_, "instruction", reason, example)

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for stages in self.counts.values():
            for stage, outcomes in stages.items():
                for outcome, n in outcomes.items():
                    out[stage][outcome] += n
        return {s: dict(sorted(o.items())) for s, o in sorted(out.items())}


def write_report(out_dir: Path, report: dict[str, Any], tally: Tally) -> dict[str, Any]:
    """`synth_report.json` and a readable `synth_report.md`; returns the full report."""
    report = {
        **report,
        "totals": tally.totals(),
        "by_round": {
            str(r): {s: dict(sorted(o.items())) for s, o in sorted(stages.items())}
            for r, stages in sorted(tally.counts.items())
        },
        "drop_examples": {s: dict(r) for s, r in sorted(tally.examples.items())},
    }
    run = RunDir(out_dir)
    json_path = run.synth_report_file
    # the stop reason and drop examples may quote the endpoint's URL: never its credentials
    text = redact_secrets(json.dumps(report, indent=2, ensure_ascii=False))
    json_path.write_text(text + "\n", encoding="utf-8")
    md_path = run.synth_report_md
    md_path.write_text(redact_secrets(_markdown(report)), encoding="utf-8")
    return report


def _markdown(report: dict[str, Any]) -> str:
    usage = report["usage"]
    lines = [
        f"# synthesize: {report['method']}",
        "",
        f"- kept instructions: {report['kept_instructions']} / target {report['target']}",
        f"- rows written: {report['rows']}",
        f"- stopped: {report['stop_reason']}",
        f"- backend: {report['backend']} `{report['model']}`",
        f"- requests: {usage['requests']} sent, {usage['cache_hits']} from cache, "
        f"{usage['retries']} retries; tokens: {usage['prompt_tokens']} prompt, "
        f"{usage['completion_tokens']} completion; cost estimate ${report['cost_usd']:.4f}",
        "",
        "| round | stage | outcome | count |",
        "|---|---|---|---|",
    ]
    for round_, stages in report["by_round"].items():
        for stage, outcomes in stages.items():
            lines += [f"| {round_} | {stage} | {o} | {n} |" for o, n in outcomes.items()]
    lines += ["", "## Examples of each drop reason", ""]
    for stage, reasons in report["drop_examples"].items():
        for reason, examples in reasons.items():
            lines.append(f"### {stage}: {reason}")
            lines += [f"- `{json.dumps(ex, ensure_ascii=False)[:300]}`" for ex in examples]
            lines.append("")
    return "\n".join(lines) + "\n"
