"""Real-world data is kept where it can be, and every row left out is counted and listed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from instructune.cli.main import main
from instructune.config.schema import DataConfig, DataSource
from instructune.data.audit import audit
from instructune.data.conversation import Conversation, Message
from instructune.data.loading import load_conversations
from instructune.data.templates import load_template
from instructune.data.tokenize import encode_conversations


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(tmp_path: Path, model: Path, data: Path, extra: str = "") -> str:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{path: {model}}}\ndata:\n  train: [{{path: {data}}}]\n  max_length: 256\n"
        f"{extra}output_dir: {tmp_path / 'run'}\n"
    )
    return str(cfg)


def _trained_runs(ex: Any, tok: Any) -> list[str]:
    mask = ex.labels != -100
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return [
        tok.decode(ex.labels[a:b].tolist()) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


ROWS = [{"instruction": f"Say {i}.", "input": "", "output": f"It is {i}."} for i in range(6)]


def test_empty_response_names_the_remedy_and_is_listed(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any
) -> None:
    rows = [*ROWS[:2], {"instruction": "Say nothing.", "input": "", "output": ""}, *ROWS[2:]]
    cfg = _cfg(tmp_path, tiny_model_dir, _write(tmp_path / "a.jsonl", rows))
    assert main(["prepare", cfg]) == 1
    err = capsys.readouterr().err
    assert "a.jsonl:line 3: empty response" in err and "data.on_error: skip" in err
    assert main(["prepare", cfg, "data.on_error=skip"]) == 0
    out = capsys.readouterr().out
    assert "a.jsonl:line 3: empty response" in out  # the first few dropped rows on screen
    summary = json.loads((tmp_path / "run" / "prepared" / "summary.json").read_text())
    assert summary["dropped_rows"] == [
        {
            "stage": "read",
            "source": f"{tmp_path / 'a.jsonl'}:line 3",
            "reason": "empty response",
            "detail": "message 1 (assistant) is empty",
        }
    ]


def _multi_turn(n: int, source: str = "chat.jsonl:line 1") -> Conversation:
    turns = []
    for i in range(n):
        turns += [
            Message("user", f"Question {i}: the quick brown fox?"),
            Message("assistant", f"Answer {i}."),
        ]
    return Conversation(turns, source)


def _encode(tok: Any, convs: list[Conversation], template: str = "chat", **kw: Any) -> Any:
    cfg = DataConfig(train=[DataSource(path="x")], **kw)
    return encode_conversations(convs, load_template(template, tok), tok, cfg)


def test_long_conversation_keeps_leading_whole_turns(tiny_tok: Any) -> None:
    full = _encode(tiny_tok, [_multi_turn(2)], max_length=1024).examples[0]
    long = _encode(tiny_tok, [_multi_turn(6)], max_length=len(full.input_ids) + 3)
    assert long.truncated == 1 and not long.dropped
    (ex,) = long.examples
    # exactly the render of the first two turns: whole turns, both trained
    assert np.array_equal(ex.input_ids, full.input_ids)
    assert _trained_runs(ex, tiny_tok) == ["Answer 0.<|im_end|>", "Answer 1.<|im_end|>"]
    audit(long.examples, tiny_tok, load_template("chat", tiny_tok))
    dropped = _encode(tiny_tok, [_multi_turn(6)], max_length=len(full.input_ids), truncation="drop")
    assert dropped.dropped == {"too_long": 1} and not dropped.examples
    assert dropped.dropped_rows[0].source == "chat.jsonl:line 1"
    first_too_long = _encode(tiny_tok, [_multi_turn(6)], max_length=12)
    assert first_too_long.dropped == {"too_long": 1} and first_too_long.truncated == 0


def test_truncate_prompt_cuts_inside_the_user_content_of_alpaca_rows(tiny_tok: Any) -> None:
    long_input = "We will build 10,000 km of subway lines in the next ten years. " * 40
    conv = Conversation(
        [Message("user", "Summarize.\n\n" + long_input), Message("assistant", "Subways.")],
        "a.jsonl:line 1",
        meta={"instruction": "Summarize.", "input": long_input},
    )
    result = _encode(tiny_tok, [conv], "alpaca", max_length=200, truncation="truncate_prompt")
    (ex,) = result.examples
    text = tiny_tok.decode(ex.input_ids.tolist())
    assert result.truncated == 1 and 120 < len(ex.input_ids) <= 200
    assert text.startswith("Below is an instruction that describes a task, paired with an input")
    assert "### Instruction:\nSummarize.\n\n### Input:\nWe will build" in text and " [...] " in text
    assert text.endswith("ten years. \n\n### Response:Subways.<|im_end|>")
    assert _trained_runs(ex, tiny_tok) == ["Subways.<|im_end|>"]
    audit(result.examples, tiny_tok, load_template("alpaca", tiny_tok))


def test_alpaca_merging_responses_are_tokenized_as_served(smol_tok: Any) -> None:
    """Outputs whose first characters merge with "### Response:" into one token are trained
    after the prompt's own tokens (what `generate` sends), counted in `boundary_turns`;
    `alpaca_nl` (a newline after the marker) has no merge."""
    outputs = ["/usr/bin is a folder", ":) thanks", "// a comment", "Plain answer.", "Another."]
    convs = [
        Conversation(
            [Message("user", "Say it"), Message("assistant", out)],
            f"f.jsonl:line {i + 1}",
            meta={"instruction": "Say it", "input": ""},
        )
        for i, out in enumerate(outputs)
    ]
    result = _encode(smol_tok, convs, "alpaca")
    assert len(result.examples) == 5 and not result.dropped
    assert result.template_splits == {"boundary_turns": 3}
    template = load_template("alpaca", smol_tok)
    prompt = smol_tok(template.render(convs[0].messages[:1], True, convs[0].meta))["input_ids"]
    for ex, out in zip(result.examples, outputs, strict=True):
        assert ex.input_ids[: len(prompt)].tolist() == prompt
        assert _trained_runs(ex, smol_tok) == [out + smol_tok.eos_token]
    audit(result.examples, smol_tok, template)
    kept = _encode(smol_tok, convs, "alpaca_nl")
    assert len(kept.examples) == 5 and not kept.dropped and not kept.template_splits
    text = smol_tok.decode(kept.examples[0].input_ids.tolist())
    assert "### Response:\n/usr/bin is a folder" in text


def test_roles_not_alternating_warned_and_trailing_user_turns_dropped(
    tmp_path: Path, caplog: Any
) -> None:
    def msgs(*roles: str) -> dict[str, Any]:
        return {"messages": [{"role": r, "content": f"{r} {i}"} for i, r in enumerate(roles)]}

    rows = [
        msgs("user", "assistant"),
        msgs("user", "user", "assistant"),
        msgs("user", "assistant", "assistant"),
        msgs("user", "assistant", "user"),
        msgs("user", "assistant", "user", "user"),
    ]
    source = DataSource(path=str(_write(tmp_path / "m.jsonl", rows)))
    with caplog.at_level(logging.WARNING):
        result = load_conversations(source)
    assert result.adjusted == {"non_alternating": 2, "trailing_turns": 3}
    assert [len(c.messages) for c in result.conversations] == [2, 3, 3, 2, 2]
    assert "2 conversations have two user or two assistant turns in a row" in caplog.text
    assert "removed 3 user/tool turns" in caplog.text


def test_tool_turns_render_and_only_assistant_turns_train(tmp_path: Path, tiny_tok: Any) -> None:
    rows = [
        {
            "conversations": [
                {"from": "human", "value": "Weather in Paris?"},
                {"from": "function_call", "value": '{"name": "weather", "arguments": "Paris"}'},
                {"from": "observation", "value": '{"temp": 21}'},
                {"from": "gpt", "value": "It is 21 degrees."},
            ]
        }
    ]
    source = DataSource(path=str(_write(tmp_path / "tools.jsonl", rows)))
    (conv,) = load_conversations(source).conversations
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    result = _encode(tiny_tok, [conv])
    (ex,) = result.examples
    assert '<|im_start|>tool\n{"temp": 21}<|im_end|>' in tiny_tok.decode(ex.input_ids.tolist())
    assert _trained_runs(ex, tiny_tok) == [
        '{"name": "weather", "arguments": "Paris"}<|im_end|>',
        "It is 21 degrees.<|im_end|>",
    ]
    # a template with no place for tool turns says so, and the row is listed
    alpaca = _encode(tiny_tok, [conv], "alpaca", on_error="skip")
    assert alpaca.dropped == {"template_error": 1}
    assert "no place for role tool" in alpaca.dropped_rows[0].detail
