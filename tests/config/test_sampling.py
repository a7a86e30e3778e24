"""The sampling vocabulary in YAML: `eval:` keys, `synthesize.sampling:`, and the keys of earlier
vocabularies refused with what to write instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructune.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "cfg.yaml"
    path.write_text(text + "output_dir: runs/x\n")
    return load_config(path)


@pytest.mark.parametrize(
    ("section", "key", "instead"),
    [
        ("eval: {do_sample: true, temperature: 0.7}", "do_sample", "`temperature: T`"),
        ("eval: {do_sample: false}", "do_sample", "`temperature: 0`"),
        (
            "synthesize: {seeds: s.jsonl, sampling: {max_tokens: 256}}",
            "max_tokens",
            "`max_new_tokens`",
        ),
    ],
)
def test_an_earlier_key_is_a_one_line_error_saying_what_to_write(
    tmp_path: Path, section: str, key: str, instead: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, section + "\n")
    header, *problems = str(err.value).splitlines()
    assert header.startswith("invalid config ")
    assert len(problems) == 1
    assert f"`{key}` is no longer a key" in problems[0] and instead in problems[0]


def test_eval_sampling_keys_and_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "eval: {}\n")
    ecfg = cfg.eval  # type: ignore[attr-defined]
    assert (ecfg.max_new_tokens, ecfg.temperature, ecfg.top_p, ecfg.seed) == (128, 0.0, 1.0, 0)
    cfg = _load(tmp_path, "eval: {temperature: 1.5, top_k: 20, stop: ['###']}\n")
    ecfg = cfg.eval  # type: ignore[attr-defined]
    assert (ecfg.temperature, ecfg.top_k, ecfg.stop) == (1.5, 20, ["###"])


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("eval: {temperature: -1}", "eval.temperature"),
        ("eval: {top_p: 0}", "eval.top_p"),
        ("eval: {stop: ['']}", "eval.stop"),
        ("synthesize: {seeds: s.jsonl, sampling: {top_k: -2}}", "synthesize.sampling.top_k"),
        ("synthesize: {seeds: s.jsonl, sampling: {seed: 3}}", "synthesize.sampling.seed"),
    ],
)
def test_bad_sampling_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"\n  {key}: "):
        _load(tmp_path, text + "\n")


def test_synthesize_sampling_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "synthesize: {seeds: s.jsonl}\n")
    s = cfg.synthesize.sampling  # type: ignore[attr-defined]
    assert (s.max_new_tokens, s.temperature, s.top_p, s.top_k, s.seed) == (512, 0.7, 1.0, 0, None)
    # a partial section keeps the section's own defaults, not the CLI's
    cfg = _load(tmp_path, "synthesize: {seeds: s.jsonl, sampling: {top_p: 0.9}}\n")
    assert cfg.synthesize.sampling.max_new_tokens == 512  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("self-instruct.yaml", (256, 0.7, 0.95)),
        ("evol-instruct.yaml", (384, 0.7, 0.95)),
        ("unnatural.yaml", (256, 0.7, 0.95)),
    ],
)
def test_shipped_synthesize_configs_sample_as_before(
    name: str, expected: tuple[int, float, float]
) -> None:
    s = load_config(ROOT / "configs" / name).synthesize.sampling  # type: ignore[union-attr]
    assert (s.max_new_tokens, s.temperature, s.top_p) == expected


def test_shipped_eval_config_is_greedy() -> None:
    ecfg = load_config(ROOT / "configs" / "demo-eval.yaml").eval
    assert ecfg is not None and ecfg.max_new_tokens == 8 and ecfg.temperature == 0.0
