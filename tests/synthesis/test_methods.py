"""The three methods end to end over the scripted backend: rows, lineage, counts, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from world import ScriptedBackend, answer

from instructune.rundir import SYNTH_CACHE_FILE, SYNTH_REPORT_FILE, SYNTH_REPORT_MD, SYNTH_ROWS_FILE
from instructune.synthesis.run import run_synthesize


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / SYNTH_ROWS_FILE).read_text().splitlines()]


def test_self_instruct_rows_meta_and_report(make_cfg: Any, scripted: ScriptedBackend) -> None:
    cfg = make_cfg()
    result = run_synthesize(cfg, scripted, show_progress=False)
    out = cfg.output_path
    data = rows(out)
    assert result.kept_instructions == 12 and result.stop_reason == "reached num_instructions"
    assert len(data) == result.rows and len({r["id"] for r in data}) == len(data)
    instructions = {r["meta"]["instruction"] for r in data}
    assert len(instructions) == 12
    for row in data:
        meta = row["meta"]
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"].startswith(meta["instruction"])
        assert meta["backend"] == "scripted" and meta["method"] == "self_instruct"
        assert meta["filter_scores"]["rouge_l_max"] <= 0.7
        assert len(meta["prompt_hash"]) == 64 and meta["sampling"]["temperature"] == 0.7
        assert meta["operation"] == ("output_first" if meta["is_classification"] else "input_first")
        scores = [s["rouge_l"] for s in meta["most_similar"]]
        assert (
            scores == sorted(scores, reverse=True)
            and scores[0] == meta["filter_scores"]["rouge_l_max"]
        )
    # Classification tasks got label-first instances; input == output instances never survive.
    assert any(r["meta"]["is_classification"] for r in data)
    assert all(r["messages"][1]["content"] != r["meta"]["input"] for r in data)
    report = json.loads((out / SYNTH_REPORT_FILE).read_text())
    drops = report["totals"]["instruction"]
    assert drops["kept"] == 12
    assert {"keyword", "too_short", "too_similar"} <= set(drops)
    assert report["totals"]["instance"]["input_equals_output"] > 0
    assert report["drop_examples"]["instruction"]["too_similar"][0]["score"] > 0.7
    assert report["usage"]["requests"] == scripted.calls
    assert "too_similar" in (out / SYNTH_REPORT_MD).read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "synthesize" and len(manifest["data"]["seeds"]["sha256"]) == 64


def test_same_config_and_seed_give_identical_bytes_and_rerun_sends_nothing(make_cfg: Any) -> None:
    first, second = make_cfg(out="a"), make_cfg(out="b")
    run_synthesize(first, ScriptedBackend(answer), show_progress=False)
    run_synthesize(second, ScriptedBackend(answer), show_progress=False)
    a = (first.output_path / SYNTH_ROWS_FILE).read_bytes()
    assert a == (second.output_path / SYNTH_ROWS_FILE).read_bytes()
    # A rerun in the same folder replays from the cache: no request, no duplicate row.
    again = ScriptedBackend(answer)
    run_synthesize(first, again, show_progress=False)
    assert again.calls == 0
    assert (first.output_path / SYNTH_ROWS_FILE).read_bytes() == a
    # A different seed gives different data.
    other = make_cfg(out="c", **{"synthesize.seed": 1})
    run_synthesize(other, ScriptedBackend(answer), show_progress=False)
    assert (other.output_path / SYNTH_ROWS_FILE).read_bytes() != a


def test_evol_instruct_lineage_and_elimination(make_cfg: Any, scripted: ScriptedBackend) -> None:
    cfg = make_cfg("evol_instruct", **{"synthesize.evol_instruct.equality_check": "true"})
    result = run_synthesize(cfg, scripted, show_progress=False)
    data = rows(cfg.output_path)
    assert result.rows == len(data) > 0
    by_id = {r["id"]: r for r in data}
    for row in data:
        meta = row["meta"]
        assert meta["operation"] in cfg.synthesize.evol_instruct.operations
        if meta["round"] > 1:
            parent = by_id[meta["parent_id"]]
            assert parent["meta"]["round"] == meta["round"] - 1
            assert meta["instruction"].startswith(parent["meta"]["instruction"])
        else:
            assert meta["parent_id"].startswith("seed_")
        assert "sorry" not in row["messages"][1]["content"].lower()
    totals = json.loads((cfg.output_path / SYNTH_REPORT_FILE).read_text())["totals"]["instruction"]
    assert {"no_information_gain", "copies_prompt_scaffolding"} <= set(totals)
    assert totals["kept"] == len(data)


def test_unnatural_triples_and_paraphrases(make_cfg: Any, scripted: ScriptedBackend) -> None:
    cfg = make_cfg("unnatural")
    result = run_synthesize(cfg, scripted, show_progress=False)
    data = rows(cfg.output_path)
    core = [r for r in data if r["meta"]["operation"] == "generate"]
    paraphrases = [r for r in data if r["meta"]["operation"] == "paraphrase"]
    assert len(core) == result.kept_instructions == 12
    assert paraphrases and all(
        p["meta"]["parent_id"] in {c["id"] for c in core} for p in paraphrases
    )
    parents = {c["id"]: c for c in core}
    for p in paraphrases:
        parent = parents[p["meta"]["parent_id"]]
        assert p["messages"][1] == parent["messages"][1]  # same output
        assert p["meta"]["input"] == parent["meta"]["input"]
        assert p["meta"]["instruction"] != parent["meta"]["instruction"]
    assert all("Output at most three" in c["meta"]["instruction"] for c in core)
    report = json.loads((cfg.output_path / SYNTH_REPORT_FILE).read_text())
    assert report["totals"]["instruction"]["unparsable_response"] > 0
    assert report["totals"]["paraphrase"]["duplicate"] > 0


def test_request_budget_stops_cleanly_and_resume_continues(make_cfg: Any) -> None:
    cfg = make_cfg(**{"synthesize.backend.max_requests": 5})
    result = run_synthesize(cfg, ScriptedBackend(answer), show_progress=False)
    assert "budget" in result.stop_reason and result.kept_instructions < 12
    cached = len((cfg.output_path / SYNTH_CACHE_FILE).read_text().splitlines())
    assert cached == 5
    full = make_cfg()  # same output_dir, no budget: finishes, reusing the 5 cached answers
    backend = ScriptedBackend(answer)
    run_synthesize(full, backend, show_progress=False)
    reference = make_cfg(out="ref")
    ref_backend = ScriptedBackend(answer)
    run_synthesize(reference, ref_backend, show_progress=False)
    assert backend.calls == ref_backend.calls - 5
    assert (cfg.output_path / SYNTH_ROWS_FILE).read_bytes() == (
        reference.output_path / SYNTH_ROWS_FILE
    ).read_bytes()


def test_stale_model_stops_with_reason(make_cfg: Any) -> None:
    cfg = make_cfg(**{"synthesize.max_stale_steps": 2})
    result = run_synthesize(cfg, ScriptedBackend(lambda r: "I don't know."), show_progress=False)
    assert result.rows == 0 and "2 consecutive steps" in result.stop_reason
    report = json.loads((cfg.output_path / SYNTH_REPORT_FILE).read_text())
    assert report["totals"]["response"]["unparsable_response"] == 8


def test_changed_config_on_existing_output_is_an_error(make_cfg: Any) -> None:
    run_synthesize(make_cfg(), ScriptedBackend(answer), show_progress=False)
    with pytest.raises(ValueError, match="different config or seed"):
        run_synthesize(
            make_cfg(**{"synthesize.method": "unnatural"}),
            ScriptedBackend(answer),
            show_progress=False,
        )


def test_torn_last_lines_are_repaired_on_rerun(make_cfg: Any) -> None:
    cfg = make_cfg()
    run_synthesize(cfg, ScriptedBackend(answer), show_progress=False)
    rows_path, cache_path = cfg.output_path / SYNTH_ROWS_FILE, cfg.output_path / SYNTH_CACHE_FILE
    full_rows, full_cache = rows_path.read_bytes(), cache_path.read_bytes()
    # A crash mid-write leaves half a line: drop the last lines and leave half of one.
    lines = full_rows.splitlines(keepends=True)
    rows_path.write_bytes(b"".join(lines[:-3]) + lines[-3][:20])
    cache_lines = full_cache.splitlines(keepends=True)
    cache_path.write_bytes(b"".join(cache_lines[:-2]) + cache_lines[-2][:30])
    backend = ScriptedBackend(answer)
    run_synthesize(cfg, backend, show_progress=False)
    assert backend.calls == 2
    assert rows_path.read_bytes() == full_rows


@pytest.mark.parametrize("method", ["self_instruct", "evol_instruct", "unnatural"])
def test_every_row_carries_the_lineage_keys(make_cfg: Any, method: str) -> None:
    cfg = make_cfg(method)
    run_synthesize(cfg, ScriptedBackend(answer), show_progress=False)
    keys = {"method", "instruction", "round", "operation", "parent_id", "backend", "model"}
    keys |= {"sampling", "prompt_hash", "filter_scores"}
    for row in rows(cfg.output_path):
        assert keys <= set(row["meta"]), row["id"]
        assert row["meta"]["method"] == method
