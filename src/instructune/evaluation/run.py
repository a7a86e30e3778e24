"""`run_eval(cfg)`: evaluate base and tuned on the same tasks, compare, write metrics and reports.

One base model is loaded. The base pass runs first, on the model alone; the adapter is then
attached in place (peft) for the tuned pass, so no second copy of the weights is loaded and the
base numbers cannot have seen the adapter. A merged model folder as `adapter` is loaded as a
second model (there is nothing to attach).

Both passes use the tokenizer and template training saved in the adapter folder when it has them
(`template.jinja`), so eval prompts are byte-identical to the training prompts, and the base model
is prompted the same way so the comparison is fair.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructune.bundle import resolve_adapter
from instructune.config import Config, DataConfig, DataSource, EvalConfig, EvalTaskConfig
from instructune.evaluation.compare import TaskOutcome, compare_task, regression
from instructune.rundir import RunDir, claim_output_dir, write_json

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    """What `metrics.json` holds: {"base": {task: {...}}, "tuned": {...}, "comparison": {...}}."""
    regressions: dict[str, Any]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    table: str = ""

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)


@dataclass
class PreparedTask:
    """A task's inputs, built once and shared by the base and tuned passes."""

    cfg: EvalTaskConfig
    payload: list[Any]
    """Classification items, generation prompt items, or (input_ids, labels) pairs."""
    sources: list[str] = field(default_factory=list)


@dataclass
class _Assets:
    tokenizer: Any
    template: Any
    data_cfg: DataConfig
    tuned: list[tuple[str, Path, str]]
    """(name in metrics.json, folder, "peft" | "merged") per model evaluated after the base."""
    reward: bool = False
    """The runs are reward models (`train.objective: reward`): loaded with their score head."""


def run_eval(cfg: Config, fail_on_regression: bool | None = None) -> EvalResult:
    """Evaluate `cfg.model` (base) and `cfg.model + cfg.adapter` (tuned) on `cfg.eval.tasks`.

    Writes `metrics.json`, `predictions.jsonl`, `report.md`, `report.html`, reliability PNGs and
    the manifest into `cfg.output_dir`. `fail_on_regression` (else `eval.fail_on_regression`) is
    recorded in the result; the CLI turns it into the exit code.
    """
    ecfg = cfg.eval
    if ecfg is None or not (ecfg.tasks or ecfg.lm_eval_tasks):
        raise ValueError(
            "eval needs an `eval:` section with at least one task under eval.tasks or "
            "eval.lm_eval_tasks"
        )
    import torch

    from instructune.noise import silence_known_noise

    # The adapter runs are inputs too: an eval into its own training run would replace that run's
    # config.yaml and manifest.json.
    runs = [cfg.adapter] if cfg.adapter else list((cfg.adapters or {}).values())
    claim_output_dir(cfg.output_path, command="eval", inputs=[*(t.path for t in ecfg.tasks), *runs])
    silence_known_noise()
    torch.manual_seed(ecfg.seed)
    out_dir = cfg.output_path
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    assets = _load_assets(cfg)
    tasks = [prepare_task(t, assets) for t in ecfg.tasks]
    outcomes, records = _evaluate_models(cfg, assets, tasks)
    metrics, regressions = _metrics_json(outcomes, ecfg)
    fail = ecfg.fail_on_regression if fail_on_regression is None else fail_on_regression
    metrics["meta"] = {
        "model": cfg.model.path,
        "adapter": cfg.adapter,
        "adapters": cfg.adapters,
        "tuned": [name for name, _, _ in assets.tuned],
        "template": getattr(assets.template, "name", "?"),
        "seconds": round(time.time() - started, 2),
        "fail_on_regression": fail,
    }
    result = EvalResult(metrics, regressions, out_dir)
    _write_outputs(cfg, result, outcomes, records)
    return result


# ----------------------------------------------------------------------------- loading


def _load_assets(cfg: Config) -> _Assets:
    from instructune.bundle import load_run_template, load_run_tokenizer

    tuned = _tuned_models(cfg)
    run = RunDir(tuned[0][1]) if tuned else None
    tokenizer = load_run_tokenizer(run, cfg.model)
    data_cfg = _data_config(cfg, run)
    template = load_run_template(run, tokenizer, data_cfg.template)
    trained = _run_config(run)
    reward = trained is not None and trained.train.objective == "reward"
    return _Assets(tokenizer, template, data_cfg, tuned, reward)


def _run_config(run: RunDir | None) -> Config | None:
    try:
        return run.config() if run is not None else None
    except ValueError:
        return None


def _tuned_models(cfg: Config) -> list[tuple[str, Path, str]]:
    """`adapter` as "tuned", or each of `adapters` under its name (adapter runs only: they are
    attached in turn to the one base). The first run's tokenizer and template prompt them all."""
    if not cfg.adapters:
        folder, kind = resolve_adapter(cfg.adapter)
        return [] if folder is None or kind is None else [("tuned", folder, kind)]
    out = []
    for name, path in cfg.adapters.items():
        folder, kind = resolve_adapter(path)
        if kind != "peft" or folder is None:
            raise ValueError(
                f"adapters.{name}: {path} is a merged or full model folder; adapters: attaches "
                "adapter runs to one base (evaluate a model folder alone with adapter:)"
            )
        out.append((name, folder, kind))
    return out


def _data_config(cfg: Config, run: RunDir | None) -> DataConfig:
    """Encoding settings for loss tasks: `cfg.data`, else training's, else the defaults."""
    if cfg.data is not None:
        return cfg.data
    if run is not None:
        try:
            trained = run.config()
        except ValueError as err:  # an older or edited config: fall back rather than fail eval
            log.warning("ignoring %s for eval defaults: %s", run.config_file, err)
            trained = None
        if trained is not None and trained.data is not None:
            return trained.data
    tasks = cfg.eval.tasks if cfg.eval else []
    return DataConfig(train=[DataSource(path=tasks[0].path if tasks else "-")])


def _load_base(cfg: Config, assets: _Assets, folder: Path | None = None) -> Any:
    """The base model, or with `folder` the merged / fully fine-tuned model saved there."""
    from instructune.bundle import load_base
    from instructune.models import pad_token_id, resolve_dtype

    dtype = resolve_dtype(cfg.train.precision, cfg.model.dtype, for_training=False)
    if folder is None:
        model_cfg, method = cfg.model, cfg.method
    else:
        model_cfg = cfg.model.model_copy(update={"path": str(folder), "gguf_file": None})
        method = "full"
    model = load_base(model_cfg, dtype, method, cfg.quantization, reward_head=assets.reward)
    if assets.reward:
        model.config.pad_token_id = pad_token_id(assets.tokenizer)
    return model


# ----------------------------------------------------------------------------- tasks


def prepare_task(task: EvalTaskConfig, assets: _Assets) -> PreparedTask:
    """Load a task's rows (at most `max_examples`, file order) into its type's inputs."""
    from instructune.data.loading import load_conversations

    source = DataSource(path=task.path, format=task.format, columns=task.columns)
    data_cfg = assets.data_cfg
    loaded = load_conversations(
        source, data_cfg.on_error, data_cfg.system_prompt, data_cfg.reasoning
    )
    convs = loaded.conversations[: task.max_examples]
    if task.type == "classification":
        from instructune.evaluation.scoring import classification_items

        return PreparedTask(task, list(classification_items(convs, task.options)))
    if task.type == "generation":
        from instructune.evaluation.generation import prompt_item

        return PreparedTask(task, [prompt_item(c, assets.template) for c in convs])
    if task.type == "preference":
        from instructune.data.preference import encode_pairs

        encoded = encode_pairs(convs, assets.template, assets.tokenizer, assets.data_cfg)
        if not encoded.pairs:
            raise ValueError(f"eval task {task.name!r}: no pairs left ({dict(encoded.dropped)})")
        return PreparedTask(task, encoded.pairs)
    from instructune.data.tokenize import encode_conversations

    enc = encode_conversations(convs, assets.template, assets.tokenizer, assets.data_cfg)
    if not enc.examples:
        raise ValueError(
            f"eval task {task.name!r}: no examples left after tokenization ({dict(enc.dropped)})"
        )
    pairs = [(e.input_ids, e.labels) for e in enc.examples]
    return PreparedTask(task, pairs, [e.source for e in enc.examples])


def evaluate_task(
    model: Any, assets: _Assets, task: PreparedTask, ecfg: EvalConfig
) -> tuple[TaskOutcome, list[dict[str, Any]]]:
    tok, template = assets.tokenizer, assets.template
    if task.cfg.type == "classification":
        from instructune.evaluation.scoring import evaluate_classification

        return evaluate_classification(
            model, tok, template, task.payload, task.cfg, ecfg.batch_size
        )
    if task.cfg.type == "generation":
        from instructune.evaluation.generation import evaluate_generation

        return evaluate_generation(model, tok, template, task.payload, task.cfg, ecfg)
    from instructune.evaluation.loss import evaluate_loss
    from instructune.models import pad_token_id

    if task.cfg.type == "preference":
        from instructune.evaluation.preference import evaluate_preference

        return evaluate_preference(
            model, task.payload, task.cfg.name, pad_token_id(tok), ecfg.batch_size
        )

    return evaluate_loss(
        model, task.payload, task.sources, task.cfg.name, pad_token_id(tok), ecfg.batch_size
    )


# ----------------------------------------------------------------------------- evaluating


def _evaluate_models(
    cfg: Config, assets: _Assets, tasks: list[PreparedTask]
) -> tuple[dict[str, dict[str, TaskOutcome]], list[dict[str, Any]]]:
    """{"base"|"tuned": {task: outcome}} and every prediction record, base pass first."""
    assert cfg.eval is not None
    ecfg = cfg.eval
    outcomes: dict[str, dict[str, TaskOutcome]] = {}
    records: list[dict[str, Any]] = []
    with_base = not assets.tuned or ecfg.compare_base
    peft = [(name, folder) for name, folder, kind in assets.tuned if kind == "peft"]
    model = _load_base(cfg, assets) if with_base or peft else None
    from instructune.models.identity import check_adapter_base
    from instructune.models.peft_setup import check_adapter_fits

    for _, adapter_dir in peft:
        # before the base pass: a mismatch would otherwise surface only after it, as a shape error
        check_adapter_fits(adapter_dir, model, cfg.model.path)
        check_adapter_base(adapter_dir, model)
    passes: list[tuple[str, Path | None, str | None]] = [("base", None, None)] if with_base else []
    for name, folder, kind in [*passes, *assets.tuned]:
        if kind == "merged":
            del model  # a merged model replaces the base: never hold both
            model = _load_base(cfg, assets, folder)
        elif kind == "peft":
            from instructune.bundle import load_adapter

            # The base pass is finished before the adapter exists on the model: its numbers
            # can't include it, whatever peft does with enable/disable state.
            label = None if name == "tuned" else name
            model = load_adapter(model, folder, name=label)  # type: ignore[arg-type]
            model.set_adapter(label or model.active_adapter)
        log.info("evaluating %s (%d tasks)", name, len(tasks))
        outcomes[name] = {}
        for task in tasks:
            outcome, task_records = evaluate_task(model, assets, task, ecfg)
            outcomes[name][task.cfg.name] = outcome
            records.extend({"model": name, **r} for r in task_records)
        outcomes[name].update(_lm_eval(model, assets.tokenizer, ecfg))
    return outcomes, records


def _lm_eval(model: Any, tokenizer: Any, ecfg: EvalConfig) -> dict[str, TaskOutcome]:
    """lm-eval tasks on the same in-memory model, as `lm_eval/<task>` outcomes (no per-item)."""
    if not ecfg.lm_eval_tasks:
        return {}
    from instructune.evaluation.lm_eval_adapter import run_lm_eval

    results = run_lm_eval(
        model, tokenizer, ecfg.lm_eval_tasks, ecfg.batch_size, ecfg.lm_eval_limit, seed=ecfg.seed
    )
    return {
        f"lm_eval/{task}": TaskOutcome(f"lm_eval/{task}", "lm_eval", values, {}, "acc")
        for task, values in results.items()
    }


def _metrics_json(
    outcomes: dict[str, dict[str, TaskOutcome]], ecfg: EvalConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """metrics.json's content (per model, comparison, regressions) and the regressions alone."""
    metrics: dict[str, Any] = {
        name: {t: o.metrics for t, o in per.items()} for name, per in outcomes.items()
    }
    comparisons: dict[str, Any] = {}
    regressions: dict[str, Any] = {}
    checked = {t.name for t in ecfg.tasks if t.regression_check}
    tuned_names = [name for name in outcomes if name != "base"]
    for tuned_name in tuned_names if "base" in outcomes else []:
        comparison = comparisons.setdefault(tuned_name, {})
        for name, tuned in outcomes[tuned_name].items():
            base = outcomes["base"][name]
            comp = compare_task(base, tuned, seed=ecfg.seed, n_resamples=ecfg.bootstrap_resamples)
            comp["main_metric"] = tuned.main_metric
            comparison[name] = comp
            if name in checked:
                found = regression(comp, tuned.main_metric, ecfg.regression_threshold)
                if found is not None:
                    key = name if tuned_name == "tuned" else f"{tuned_name}/{name}"
                    regressions[key] = found
    comparison = comparisons.get("tuned", {})
    if tuned_names and tuned_names != ["tuned"]:
        metrics["comparisons"] = comparisons
    metrics["comparison"] = comparison
    metrics["regressions"] = regressions
    return metrics, regressions


# ----------------------------------------------------------------------------- writing


def _write_outputs(
    cfg: Config,
    result: EvalResult,
    outcomes: dict[str, dict[str, TaskOutcome]],
    records: list[dict[str, Any]],
) -> None:
    from instructune.evaluation.report import reliability_plots, summary_table, write_reports

    out = result.out_dir
    run = RunDir(out)
    files = result.files
    files["metrics"] = write_json(run.eval_metrics_file, result.metrics, default=float)
    files["predictions"] = run.predictions_file
    with files["predictions"].open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, default=float) + "\n")
    plots = reliability_plots(outcomes, out)
    files.update({f"reliability_{task}": path for task, path in plots.items()})
    assert cfg.eval is not None
    files.update(write_reports(result.metrics, records, plots, out, cfg.eval.show_examples))
    result.table = summary_table(result.metrics)
    files["manifest"] = run.write_manifest(
        cfg, "eval", {"eval": {"files": {k: str(v) for k, v in files.items()}}}
    )


__all__ = ["EvalResult", "resolve_adapter", "run_eval"]
