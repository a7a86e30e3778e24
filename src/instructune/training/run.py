"""`run_train(cfg)`: the public API behind `instructune train`, readable top to bottom.

tokenizer → data (the same `prepare_dataset` that `prepare` shows) → model in the precision's
dtype → method (full / LoRA / QLoRA) → TrainingArguments → `Trainer.train` → save adapter or
model + tokenizer + exact template → curves → final metrics.

`output_dir` gets: `config.yaml` + `manifest.json`, `metrics.jsonl`, `training_curves.png`,
`train_results.json`, the adapter (`adapter_model.safetensors`, `adapter_config.json`) or the
full model (`model.safetensors`, `config.json`), the tokenizer files, `template.jinja`, and
`checkpoints/checkpoint-N/` when `train.save_steps` is set (`tensorboard/` when reported to).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructune.config import Config, ConfigError
from instructune.config.schema import ADAPTER_METHODS
from instructune.data.prompts import PreparedPrompts
from instructune.models.identity import BASE_MODEL_KEY, base_identity
from instructune.noise import silence_known_noise
from instructune.rundir import (
    CHECKPOINTS_DIR,
    MANIFEST_FILE,
    METRICS_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    RunDir,
    claim_output_dir,
    data_inputs,
)
from instructune.training.args import build_training_args, report_callbacks
from instructune.training.callbacks import (
    MetricsCallback,
    ProgressCallback,
    StepClock,
    load_counts,
)
from instructune.training.checkpoints import (
    check_data,
    claim_training_outputs,
    config_changes,
    read_run_info,
    run_info,
    segments,
)
from instructune.training.compile import compile_layers, wants_compile
from instructune.training.interrupt import StopOnInterrupt, TrainingInterrupted
from instructune.training.kernels import (
    KernelPlan,
    apply_kernels,
    select_kernels,
    wants_liger_layers,
)
from instructune.training.objectives import (
    Datasets,
    Prepared,
    before_training,
    datasets,
    load_for_objective,
    prepare_data,
    trainer_setup,
)
from instructune.training.plots import plot_training_curves, read_metrics
from instructune.training.threads import thread_policy
from instructune.training.trainer import InstructTrainer, TokenCounter

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: Path
    metrics: dict[str, Any]
    """Final metrics (also in `train_results.json`): steps, losses, token counts and rates."""
    model: Any = field(repr=False)
    """The trained model (a PEFT model for lora/qlora), still in memory."""
    tokenizer: Any = field(repr=False)
    prepared: Prepared | PreparedPrompts = field(repr=False)
    """The data stage's result: `PreparedData` (sft), `PreparedPairs` (dpo, reward) or
    `PreparedPrompts` (grpo)."""


def run_train(
    cfg: Config,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    tokenizer: Any = None,
    overwrite: bool = False,
) -> TrainResult:
    """Fine-tune `cfg.model` on `cfg.data` with `cfg.method`; `resume` continues from the last
    checkpoint in `output_dir/checkpoints` (refusing a changed config or data), `overwrite`
    replaces an earlier run in `output_dir`. Extra `callbacks` are TrainerCallbacks.

    Ctrl-C saves a checkpoint at the end of the step and raises `TrainingInterrupted`."""
    import torch
    from transformers import set_seed

    from instructune.models import (
        apply_method,
        load_tokenizer,
        pad_token_id,
        resolve_dtype,
    )

    if cfg.data is None:
        raise ConfigError("train needs a `data:` section")
    if cfg.train.objective == "grpo":  # online RL: TRL's trainer samples the data (online.py)
        from instructune.training.online import run_grpo

        return run_grpo(cfg, resume, overwrite, callbacks)
    out = cfg.output_path
    claim_output_dir(out, command="train", inputs=data_inputs(cfg.data))
    silence_known_noise()
    checkpoint, saved, changes = _claim(cfg, resume, overwrite)
    governor = thread_policy(cfg.train.num_threads)
    set_seed(cfg.train.seed)  # before the model: LoRA initialization draws random numbers

    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model)
    prepared = prepare_data(cfg, tokenizer)
    if checkpoint is not None:
        check_data(saved, prepared.hashes, checkpoint)
    train_set, eval_set = datasets(prepared)

    plan = _kernel_plan(cfg, train_set.packed)  # a `liger` that can't run stops before loading
    dtype = resolve_dtype(cfg.train.precision, cfg.model.dtype)
    model = load_for_objective(cfg, dtype, tokenizer)
    base = {BASE_MODEL_KEY: base_identity(model)}  # before an adapter: what loads must check
    kernels = apply_kernels(model, plan)  # before PEFT wraps it
    model = apply_method(
        model, cfg.method, cfg.lora, cfg.train.gradient_checkpointing, cfg, tokenizer
    )
    # Liger's layer kernels already fuse what `auto` would compile; an explicit `true` still does
    liger_instead = cfg.train.compile == "auto" and wants_liger_layers(kernels)
    compiled = (
        compile_layers(model)
        if wants_compile(cfg.train.compile, model, cfg.method) and not liger_instead
        else 0
    )

    counter, clock = load_counts(checkpoint), StepClock()
    start = TokenCounter(counter.tokens, counter.trained_tokens)
    stop = StopOnInterrupt()
    hooks = [*callbacks, stop, *([governor] if governor else [])]
    trainer = _build_trainer(
        cfg, model, tokenizer, (train_set, eval_set), dtype, (counter, clock), hooks
    )
    trainer.run_info = run_info(cfg, prepared.hashes)
    trainer.kernels = kernels
    before_training(cfg, trainer, (train_set, eval_set), pad_token_id(tokenizer))
    _drop_printer(trainer)
    main = trainer.is_world_process_zero()
    run_segments = segments(out / MANIFEST_FILE, checkpoint, changes)
    if main:
        extra = _manifest_extra(prepared, model, dtype, checkpoint) | {
            "segments": run_segments,
            "kernels": kernels.describe(),
        }
        # first: it marks output_dir as a run's
        RunDir(out).write_manifest(cfg, "train", extra | base)
        _start_metrics_log(out / METRICS_FILE, checkpoint)

    output = _train(trainer, stop, checkpoint, out / CHECKPOINTS_DIR)
    eval_loss = _final_eval_loss(trainer) if eval_set is not None else None

    if main:
        _save(trainer, cfg, tokenizer, prepared.template.source_text, out)
    metrics = final_metrics(
        trainer.state, output, counter, start, clock, eval_loss, out / METRICS_FILE
    ) | {
        "torch_threads": torch.get_num_threads(),
        "compiled_layers": compiled,
        "kernels": kernels.describe(),
    }
    if governor is not None:
        metrics["thread_changes"] = governor.changes
    if main:
        plot_training_curves(out / METRICS_FILE, out / PLOT_FILE)
        (out / RESULTS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        extra = _manifest_extra(prepared, model, dtype, checkpoint) | {
            "kernels": kernels.describe()
        }
        RunDir(out).write_manifest(
            cfg, "train", extra | base | {"segments": run_segments, "results": metrics}
        )
    return TrainResult(out, metrics, trainer.model, tokenizer, prepared)


def _kernel_plan(cfg: Config, packed: bool) -> KernelPlan:
    """`train.kernels` resolved for the device the Trainer will train on."""
    from instructune.models.loading import best_device

    return select_kernels(cfg.train.kernels, best_device(), packed, cfg.model.attn_implementation)


def _claim(
    cfg: Config, resume: bool, overwrite: bool
) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """(checkpoint to resume, its run info, the resumable config changes) after claiming
    output_dir; refuses another run's folder, or a resume whose config changed."""
    out = cfg.output_path
    checkpoint = claim_training_outputs(out, out / CHECKPOINTS_DIR, resume, overwrite)
    if checkpoint is None:
        return None, None, []
    saved = read_run_info(checkpoint)
    return checkpoint, saved, config_changes(saved, cfg, checkpoint)


def _train(trainer: Any, stop: StopOnInterrupt, checkpoint: Path | None, checkpoints: Path) -> Any:
    """`trainer.train()`; a Ctrl-C stop becomes `TrainingInterrupted` naming the checkpoint."""
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        stop.restore()
    if stop.requested:
        step = trainer.state.global_step
        saved_at = checkpoints / f"checkpoint-{step}"
        raise TrainingInterrupted(saved_at if saved_at.is_dir() else None, step)
    return output


def _build_trainer(
    cfg: Config,
    model: Any,
    tokenizer: Any,
    data: Datasets,
    dtype: Any,
    meters: tuple[TokenCounter, StepClock],
    callbacks: Sequence[Any],
) -> InstructTrainer:
    """The stock Trainer with our loss, collator and callbacks (metrics, progress, reports)."""
    from instructune.models import pad_token_id

    train_set, eval_set = data
    counter, clock = meters
    trainer_cls, objective_kwargs = trainer_setup(cfg, dtype)
    out = cfg.output_path
    args = build_training_args(
        cfg, out / CHECKPOINTS_DIR, dtype, packed=train_set.packed, has_eval=eval_set is not None
    )
    return trainer_cls(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=train_set.collator(pad_token_id(tokenizer)),
        processing_class=tokenizer,
        callbacks=[
            clock,
            MetricsCallback(out / METRICS_FILE, counter, clock),
            ProgressCallback(counter, clock),
            *report_callbacks(cfg.train.report_to, out),
            *callbacks,
        ],
        loss_chunk_size=cfg.train.loss_chunk_size,
        label_smoothing=cfg.train.label_smoothing,
        pad_token_id=pad_token_id(tokenizer),
        counter=counter,
        **objective_kwargs,
    )


def final_metrics(
    state: Any,
    output: Any,
    counter: TokenCounter,
    start: TokenCounter,
    clock: StepClock,
    eval_loss: float | None,
    metrics_path: Path,
) -> dict[str, Any]:
    """What a run reports at the end. Counts are totals (a resumed run includes the steps before
    its checkpoint); rates are this session's, over time spent in optimizer steps."""
    records = read_metrics(metrics_path)
    last_loss = next((r["loss"] for r in reversed(records) if r.get("loss") is not None), None)
    seconds = clock.seconds
    tokens = counter.tokens - start.tokens
    trained = counter.trained_tokens - start.trained_tokens
    return {
        "global_step": state.global_step,
        "epoch": state.epoch,
        "train_loss": output.training_loss,
        "final_loss": last_loss,
        "eval_loss": eval_loss,
        "tokens": counter.tokens,
        "trained_tokens": counter.trained_tokens,
        "train_seconds": seconds,
        "first_step_s": clock.first_step_s,
        "tokens_per_s": tokens / seconds if seconds else None,
        "trained_tokens_per_s": trained / seconds if seconds else None,
        "train_runtime_s": output.metrics.get("train_runtime"),
    }


def _final_eval_loss(trainer: Any) -> float:
    """The eval loss at the last step: logged already when eval_steps divides it, else run now."""
    last = trainer.state.log_history[-2:] if trainer.state.log_history else []
    for record in last:
        if "eval_loss" in record and record.get("step") == trainer.state.global_step:
            return float(record["eval_loss"])
    return float(trainer.evaluate()["eval_loss"])


def _start_metrics_log(path: Path, checkpoint: Path | None) -> None:
    """A fresh run starts an empty log; a resumed one keeps the records up to its checkpoint."""
    if checkpoint is None:
        path.unlink(missing_ok=True)
        return
    step = int(checkpoint.name.rsplit("-", 1)[-1])
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def _save(trainer: Any, cfg: Config, tokenizer: Any, template_text: str, out: Path) -> None:
    """The adapter alone (lora, qlora, prompt/prefix tuning, ia3) or the whole model (full),
    with tokenizer and template."""
    from instructune.models import save_adapter

    if cfg.method in ADAPTER_METHODS:
        save_adapter(trainer.model, tokenizer, template_text, out)
        return
    # The Trainer's save gathers sharded (FSDP/DeepSpeed) weights; it also saves the tokenizer.
    trainer.save_model(str(out))
    RunDir(out).write_template(template_text)


def _manifest_extra(
    prepared: Prepared, model: Any, dtype: Any, checkpoint: Path | None
) -> dict[str, Any]:
    from instructune.models import describe_model

    train = prepared.stats.get("train")
    return {
        "data_hashes": prepared.hashes,
        "inputs": {s.path: s.sha256 for s in prepared.sources},
        "template": prepared.template.name,
        "model": describe_model(model),
        "dtype": str(dtype).removeprefix("torch."),
        "train_examples": train.examples if train else None,
        "train_trained_tokens": train.trained_tokens if train else None,
        "resumed_from": str(checkpoint) if checkpoint else None,
    }


def _drop_printer(trainer: Any) -> None:
    # With tqdm disabled the Trainer prints every log dict; our progress bar replaces that.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
