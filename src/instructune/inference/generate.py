"""`run_generate`: prompts (one, or a JSONL file of them) → completions on the engine, batched.

Input rows are JSON objects with `prompt` (one user message) or `messages` (OpenAI chat messages,
read by `data.messages` exactly as training reads them), and optionally `id` (kept in the output;
the line number otherwise), `system` (a system message put first) and `tools` (function
definitions, given to the template as training gives them). Each is rendered with the run's
template. Output rows carry `id`, `text`, `finish_reason`, `prompt_tokens` and `completion_tokens`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructune.data.conversation import TOOLS, Conversation, Message
from instructune.data.messages import parse_messages, parse_tools
from instructune.data.readers import iter_json_lines, unreadable_reason
from instructune.inference.sampling import SamplingParams

if TYPE_CHECKING:
    from instructune.inference.engine import Engine

log = logging.getLogger(__name__)


def read_prompts(path: Path) -> tuple[list[Any], list[Conversation]]:
    """(ids, conversations) from a JSONL file; a bad row raises naming file, line and field."""
    if reason := unreadable_reason(path):
        raise ValueError(f"input file {str(path)!r} {reason}")
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist")
    ids: list[Any] = []
    convs: list[Conversation] = []
    for n, where, row in iter_json_lines(path):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        ids.append(row.get("id", n))
        convs.append(prompt_conversation(row, where))
    if not convs:
        raise ValueError(f"{path}: no prompts (the file is empty)")
    return ids, convs


def prompt_conversation(row: dict[str, Any], where: str) -> Conversation:
    """A `prompt` string or `messages` list (read by `data.messages`, as training reads them),
    with the optional `system` and `tools`."""
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"{where}: field 'system' must be a string")
    head = [Message("system", system)] if system else []
    tools = parse_tools(row.get("tools"), "tools", where)
    meta = {TOOLS: tools} if tools else {}
    if isinstance(row.get("prompt"), str):
        return Conversation([*head, Message("user", row["prompt"])], where, meta=meta)
    raw = row.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: needs 'prompt' (a string) or 'messages' (a non-empty list)")
    return Conversation(
        [*head, *parse_messages(raw, "messages", where, "openai")], where, meta=meta
    )


def generate_rows(
    engine: Engine,
    ids: Sequence[Any],
    convs: Sequence[Conversation],
    params: SamplingParams,
    on_done: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """One output row per conversation, in input order. With a seed, row i samples with
    `seed + i`, so a row's output does not depend on the others in the file."""
    prompts = [engine.render(c.messages, tools=c.meta.get(TOOLS)) for c in convs]
    per_row = [
        replace(params, seed=None if params.seed is None else params.seed + i)
        for i in range(len(prompts))
    ]
    done = engine.generate(prompts, per_row, on_done=on_done)
    return [
        {
            "id": row_id,
            "text": c.text,
            "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
        }
        for row_id, c in zip(ids, done, strict=True)
    ]


def run_generate(
    run: str,
    input_path: Path,
    output_path: Path,
    params: SamplingParams,
    *,
    template: str | None = None,
    dtype: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate for every row of `input_path` into `output_path` with RUN's model; a summary.

    The input is read (and checked) before the model is loaded, so a bad row fails fast. The
    output is never the input nor a file of RUN, and an existing one is replaced only with
    `overwrite`."""
    from tqdm import tqdm

    from instructune.inference.loading import load_engine
    from instructune.rundir import check_output_file

    check_output_file(output_path, flag="--output", inputs=[input_path, run], overwrite=overwrite)
    ids, convs = read_prompts(input_path)
    engine = load_engine(run, template, dtype, max_batch_size=batch_size)
    with tqdm(total=len(convs), desc="generate", unit="prompt") as bar:
        rows = generate_rows(engine, ids, convs, params, on_done=bar.update)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    reasons: dict[str, int] = {}
    for row in rows:
        reasons[row["finish_reason"]] = reasons.get(row["finish_reason"], 0) + 1
    return {
        "rows": len(rows),
        "finish_reasons": reasons,
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "output": str(output_path),
    }
