"""The `local` backend on the inference engine: a tiny model in-process, and the embedded model
end to end through the CLI (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from world import write_seeds

from instructune.config.synthesize import SynthBackendConfig
from instructune.inference.sampling import SamplingParams
from instructune.synthesis.backends import Request
from instructune.synthesis.local_backend import LocalBackend

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("run", ["tiny_model_dir", "tiny_lora_run"])
def test_local_backend_answers_every_request_reproducibly(
    run: str, request: pytest.FixtureRequest
) -> None:
    """A model folder or a trained LoRA run (base + adapter, the run's template)."""
    path = request.getfixturevalue(run)
    backend = LocalBackend(SynthBackendConfig(model=str(path), batch_size=2))
    requests = [
        Request(f"Tell me about {word}.", SamplingParams(6, temperature=0.8, seed=i))
        for i, word in enumerate(["cats", "the ocean at night", "tea", "a very long winding road"])
    ]
    requests.append(Request("Greedy please.", SamplingParams(4)))
    first = dict(backend.complete(requests))
    assert sorted(first) == list(range(5))
    for i, response in first.items():
        assert response.finish_reason in ("stop", "length")
        assert 0 < response.completion_tokens <= requests[i].params.max_new_tokens
        assert response.prompt_tokens > 0
    again = dict(backend.complete(requests))
    assert [again[i].text for i in range(5)] == [first[i].text for i in range(5)]


@pytest.mark.slow
def test_synthesize_self_instruct_config_end_to_end_on_embedded_model(tmp_path: Path) -> None:
    """`instructune synthesize configs/self-instruct.yaml` on the embedded model, kept small; a
    rerun replays from the cache without generating anything."""
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    out = tmp_path / "synth"
    overrides = [
        f"synthesize.seeds={seeds}",
        f"output_dir={out}",
        "synthesize.num_instructions=1",
        "synthesize.request_batch_size=2",
        "synthesize.max_stale_steps=1",
        "synthesize.sampling.max_new_tokens=32",
        "synthesize.self_instruct.max_instances=1",
    ]
    cmd = [
        sys.executable,
        "-m",
        "instructune",
        "synthesize",
        str(ROOT / "configs/self-instruct.yaml"),
    ]
    first = subprocess.run([*cmd, *overrides, "--no-progress"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    report = json.loads((out / "synth_report.json").read_text())
    assert report["backend"] == "local" and report["model"] == "smollm2-135m-instruct"
    assert report["usage"]["requests"] >= 2 and report["usage"]["completion_tokens"] > 0
    counted = sum(report["totals"].get("response", {}).values())
    assert counted + report["totals"]["instruction"]["generated"] > 0
    rows = (out / "synth.jsonl").read_bytes()
    assert len(rows.splitlines()) == report["rows"]
    shutil.copy(out / "synth_report.json", tmp_path / "first_report.json")
    again = subprocess.run([*cmd, *overrides, "--no-progress"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    replay: dict[str, Any] = json.loads((out / "synth_report.json").read_text())
    assert replay["usage"]["requests"] == 0
    assert replay["usage"]["cache_hits"] == report["usage"]["requests"]
    assert (out / "synth.jsonl").read_bytes() == rows
