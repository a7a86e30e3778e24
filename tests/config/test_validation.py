"""Config validation, section by section: every error names the YAML key path, the bad value and
what is allowed; typos are unknown keys with their path and a suggestion; each cross-field rule
(the model validators of config/schema.py, build.py, grpo.py, synthesize.py) says which keys clash.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from instructune.config import ConfigError, load_config

BASE = """
model: {path: smollm2-135m-instruct}
data:
  train: [{path: data/train.jsonl, format: alpaca}]
output_dir: runs/x
"""
BUILD = """
build:
  sources:
    - {name: a, path: a.csv, templates: [{prompt: "{{ text }}", target: "{{ answer }}"}]}
"""
SYNTH = "synthesize: {method: self_instruct, seeds: s.jsonl}\n"


def _error(tmp_path: Path, overrides: list[str], extra: str = "") -> str:
    """The message of the ConfigError that loading BASE (+ extra) with `overrides` raises."""
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE + extra)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert message.startswith(f"invalid config {path}:")  # the file is named first
    return message


@pytest.mark.parametrize(
    ("overrides", "extra", "wanted"),
    [
        (["model.dtype=float8"], "", ["model.dtype:", "'float8'", "'bfloat16'", "'float32'"]),
        (["model.attn_implementation=flash"], "", ["model.attn_implementation:", "'flash'"]),
        (["method=lora2"], "", ["method:", "'lora2'", "'prefix_tuning'", "'ia3'"]),
        (["data.train=[]"], "", ["data.train:", "at least 1 item"]),
        (["data.truncation=cut"], "", ["data.truncation:", "'cut'", "'truncate_prompt'"]),
        (["data.eval_fraction=1.0"], "", ["data.eval_fraction:", "less than 1", "(got 1.0)"]),
        (["data.max_length=8"], "", ["data.max_length:", "greater than 8", "(got 8)"]),
        (["data.train.0.max_rows=0"], "", ["data.train.0.max_rows:", "(got 0)"]),
        (["train.optimizer=adam"], "", ["train.optimizer:", "'adam'", "'adamw_torch'", "'lion'"]),
        (["train.precision=bf32"], "", ["train.precision:", "'bf32'", "'bf16'", "'fp32'"]),
        (["train.compile=sometimes"], "", ["train.compile", "'sometimes'", "'auto'"]),
        (["train.report_to=[slack]"], "", ["train.report_to.0:", "'slack'", "'tensorboard'"]),
        (["train.learning_rate=0"], "", ["train.learning_rate:", "greater than 0", "(got 0)"]),
        (["eval.batch_size=0"], "", ["eval.batch_size:", "greater than 0", "(got 0)"]),
        (
            ["eval.tasks=[{name: t, path: x.jsonl, type: ranking}]"],
            "",
            ["eval.tasks.0.type:", "'ranking'", "'classification'", "'preference'"],
        ),
        (
            ["eval.tasks=[{name: t, path: x.jsonl, score: max}]"],
            "",
            ["eval.tasks.0.score:", "'max'", "'sum'", "'mean'"],
        ),
        (["lora.r=0"], "", ["lora.r:", "greater than 0", "(got 0)"]),
        (["lora.bias=some"], "", ["lora.bias:", "'some'", "'lora_only'"]),
        (["lora.target_modules=everything"], "", ["lora.target_modules", "'all-linear'"]),
        (["quantization.quant_type=int8"], "", ["quantization.quant_type:", "'int8'", "'nf4'"]),
        (["quantization.compute_dtype=float64"], "", ["quantization.compute_dtype:", "'float64'"]),
        (["dpo.loss=hinge"], "", ["dpo.loss:", "'hinge'", "'sigmoid'", "'robust'"]),
        (["grpo.num_generations=1"], "", ["grpo.num_generations:", "greater than or equal to 2"]),
        (["build.sources.0.type=csv"], BUILD, ["build.sources.0.type:", "'csv'", "'oasst'"]),
        (["build.on_error=ignore"], BUILD, ["build.on_error:", "'ignore'", "'skip'"]),
        (["synthesize.method=magic"], SYNTH, ["synthesize.method:", "'magic'", "'unnatural'"]),
    ],
)
def test_bad_value_names_key_value_and_allowed(
    tmp_path: Path, overrides: list[str], extra: str, wanted: list[str]
) -> None:
    message = _error(tmp_path, overrides, extra)
    for part in wanted:
        assert part in message, (part, message)


@pytest.mark.parametrize(
    ("override", "extra", "wanted"),
    [
        ("outptu_dir=x", "", "outptu_dir: unknown key; did you mean 'output_dir'?"),
        ("model.pth=x", "", "model.pth: unknown key; did you mean 'path'?"),
        ("data.train.0.colums={a: b}", "", "data.train.0.colums: unknown key; did you mean"),
        ("train.learnig_rate=0.1", "", "train.learnig_rate: unknown key; did you mean"),
        ("eval.tasks=[{name: t, path: x, metric: [f1]}]", "", "eval.tasks.0.metric: unknown key"),
        ("lora.alpah=8", "", "lora.alpah: unknown key; did you mean 'alpha'?"),
        ("quantization.double=true", "", "quantization.double: unknown key"),
        ("grpo.reward=runs/r", "", "grpo.reward: unknown key; did you mean 'reward_model'?"),
        ("build.sources.0.shot=[1]", BUILD, "build.sources.0.shot: unknown key; did you mean"),
        ("synthesize.self_instruct.min_word=3", SYNTH, "did you mean 'min_words'?"),
    ],
)
def test_typo_is_an_unknown_key_with_its_path(
    tmp_path: Path, override: str, extra: str, wanted: str
) -> None:
    message = _error(tmp_path, [override], extra)
    assert wanted in message, message
    assert "(allowed: " in message  # the section's keys are listed


def test_unknown_key_lists_that_sections_keys(tmp_path: Path) -> None:
    message = _error(tmp_path, ["quantization.double=true"])
    assert "(allowed: compute_dtype, double_quant, quant_type)" in message


@pytest.mark.parametrize(
    ("overrides", "extra", "wanted"),
    [
        # config/schema.py
        (["output_dir=' '"], "", "output_dir must not be empty"),
        (
            ["ia3.feedforward_modules=[up_proj]"],
            "",
            "ia3.feedforward_modules ['up_proj'] are not in ia3.target_modules",
        ),
        (
            ["dpo.loss=ipo", "dpo.label_smoothing=0.1"],
            "",
            "dpo.label_smoothing has no effect with dpo.loss: ipo",
        ),
        (
            ["adapter=runs/a", "adapters={b: runs/b}"],
            "",
            "adapter and adapters can't both be set",
        ),
        (["adapters={base: runs/a, ok: runs/b}"], "", "adapters: names ['base'] are reserved"),
        (
            ["train.objective=dpo", "method=prompt_tuning", "data.packing=false"],
            "",
            "train.objective: dpo works with method lora, qlora, ia3 or full, not prompt_tuning",
        ),
        (
            ["train.objective=reward", "method=ia3"],
            "",
            "train.objective: reward works with method lora, qlora or full",
        ),
        (
            ["train.objective=dpo", "train.group_by_length=true"],
            "",
            "train.group_by_length is for sft; set it false for dpo",
        ),
        (["method=prefix_tuning"], "", "method: prefix_tuning needs data.packing: false"),
        # config/grpo.py (the others are in tests/training/test_grpo.py)
        (
            ["train.objective=grpo", "grpo.reward_model=runs/r", "train.save_steps=5"],
            "",
            "train.save_steps: grpo runs can't resume from checkpoints",
        ),
        # config/build.py
        (
            ["build.sources.1={name: a, path: b.jsonl, type: oasst}"],
            BUILD,
            "build.sources: duplicate source names ['a']",
        ),
        (
            ["build.sources.0.count=5", "build.sources.0.max_examples=3"],
            BUILD,
            "source 'a': max_examples and count can't both be set",
        ),
        (["build.sources.0.count=0"], BUILD, "source 'a': count: 0 would drop the whole source"),
        (["build.sources.0.templates=null"], BUILD, "source 'a': a table source needs `templates`"),
        (["build.sources.0.type=oasst"], BUILD, "source 'a': `templates` is for tables, not oasst"),
        (
            ["build.sources.0.templates.0.jinja=x ||| y"],
            BUILD,
            "a template needs either `prompt` and `target`, or `jinja`",
        ),
        # config/synthesize.py (the others are in tests/synthesis/test_config.py)
        (
            ["synthesize.self_instruct.machine_instructions=8"],
            SYNTH,
            "machine_instructions must be below prompt_instructions",
        ),
    ],
)
def test_cross_field_rule_names_the_clashing_keys(
    tmp_path: Path, overrides: list[str], extra: str, wanted: str
) -> None:
    assert wanted in _error(tmp_path, overrides, extra)


def test_a_jinja_path_is_a_template(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    cfg = load_config(path, ["data.template=my/template.jinja"])
    assert cfg.data is not None and cfg.data.template == "my/template.jinja"
    assert "data.template" in _error(tmp_path, ["data.template=my/template.txt"])


def test_assignment_is_validated_too(tmp_path: Path) -> None:
    """Code that changes a loaded config (e.g. the CLI's flags) gets the same checks."""
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    cfg = load_config(path)
    with pytest.raises(ValueError, match="lr_scheduler"):
        cfg.train.lr_scheduler = "cosine_annealing"  # type: ignore[assignment]
    assert cfg.train.lr_scheduler == "cosine"
