"""`run_train(cfg)`: the public API behind `instructune train`, one lifecycle for every objective.

claim output_dir → seed, threads → tokenizer → the objective's data → model in the precision's
dtype → kernels → method (full / LoRA / QLoRA / ...) → compile → the objective's Trainer →
`train()` (Ctrl-C: a checkpoint) → save adapter or model + tokenizer + exact template → curves →
final metrics. What differs between `sft`, `dpo`, `reward` and `grpo` is in objectives.py / grpo.py.

`output_dir` gets: `config.yaml` + `manifest.json`, `metrics.jsonl`, `training_curves.png`,
`train_results.json`, the adapter (`adapter_model.safetensors`, `adapter_config.json`) or the
full model (`model.safetensors`, `config.json`), the tokenizer files, `template.jinja`, and
`checkpoints/checkpoint-N/` when `train.save_steps` is set (`tensorboard/` when reported to).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructune.config import Config
from instructune.config.schema import ADAPTER_METHODS
from instructune.data.grpo_prompts import PreparedPrompts
from instructune.models.identity import BASE_MODEL_KEY, base_identity
from instructune.noise import silence_known_noise
from instructune.rundir import RunDir, claim_output_dir
from instructune.training.checkpoints import (
    check_data,
    claim_training_outputs,
    config_changes,
    read_run_info,
    segments,
)
from instructune.training.compile import compile_layers, wants_compile
from instructune.training.interrupt import StopOnInterrupt, TrainingInterrupted
from instructune.training.kernels import KernelPlan, wants_liger_layers
from instructune.training.objectives import Prepared, objective_for
from instructune.training.plots import plot_training_curves, read_metrics
from instructune.training.threads import ThreadGovernor, thread_policy


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
    """Fine-tune `cfg.model` on `cfg.data` with `cfg.method` for `cfg.train.objective`; `resume`
    continues from the last checkpoint in `output_dir/checkpoints` (refusing a changed config or
    data), `overwrite` replaces an earlier run in `output_dir`. Extra `callbacks` are
    TrainerCallbacks.

    Ctrl-C saves a checkpoint at the end of the step and raises `TrainingInterrupted`."""
    from transformers import set_seed

    from instructune.models import apply_method, load_tokenizer, resolve_dtype

    objective = objective_for(cfg, resume)  # refuses what it can't run before touching the disk
    run = RunDir(cfg.output_path)
    claim_output_dir(run.path, command="train", inputs=objective.inputs())
    silence_known_noise()
    checkpoint, saved, changes = _claim(cfg, run, resume, overwrite)
    governor = thread_policy(cfg.train.num_threads)
    set_seed(cfg.train.seed)  # before the model: LoRA initialization draws random numbers

    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model)
    prepared = objective.prepare(tokenizer)
    if checkpoint is not None:
        check_data(saved, prepared.hashes, checkpoint)
    dtype = resolve_dtype(cfg.train.precision, cfg.model.dtype)
    model = objective.load_model(dtype, tokenizer)
    base = {BASE_MODEL_KEY: base_identity(model)}  # before an adapter: what loads must check
    kernels = objective.apply_kernels(model)  # before PEFT wraps it
    train = cfg.train
    model = apply_method(model, cfg.method, cfg.lora, train.gradient_checkpointing, cfg, tokenizer)
    compiled = _compile(cfg, model, kernels)

    stop = StopOnInterrupt()
    hooks = [*callbacks, stop, *([governor] if governor else [])]
    trainer = objective.trainer(model, tokenizer, dtype, checkpoint, hooks)
    main = trainer.is_world_process_zero()
    record = _described(prepared, model, dtype) | objective.manifest(checkpoint)
    record |= _kernels(kernels) | base
    record["segments"] = segments(run.manifest_file, checkpoint, changes)
    if main:
        run.write_manifest(cfg, "train", record)  # first: it marks output_dir as a run's
        _start_metrics_log(run.metrics_file, checkpoint)

    output = _train(trainer, stop, checkpoint, run, objective.resumable)
    metrics = objective.metrics(trainer, output) | _session(compiled, kernels, governor)
    if main:
        _save(trainer, cfg, tokenizer, prepared.template.source_text, run)
        plot_training_curves(run.metrics_file, run.plot_file)
        run.write_results(metrics)
        run.write_manifest(cfg, "train", record | {"results": metrics})
    return TrainResult(run.path, metrics, trainer.model, tokenizer, prepared)


def _claim(
    cfg: Config, run: RunDir, resume: bool, overwrite: bool
) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """(checkpoint to resume, its run info, the resumable config changes) after claiming
    output_dir; refuses another run's folder, or a resume whose config changed."""
    checkpoint = claim_training_outputs(run.path, run.checkpoints_dir, resume, overwrite)
    if checkpoint is None:
        return None, None, []
    saved = read_run_info(checkpoint)
    return checkpoint, saved, config_changes(saved, cfg, checkpoint)


def _compile(cfg: Config, model: Any, kernels: KernelPlan | None) -> int:
    """`train.compile`: the number of decoder layers compiled (0: eager)."""
    # Liger's layer kernels already fuse what `auto` would compile; an explicit `true` still does
    liger_instead = cfg.train.compile == "auto" and wants_liger_layers(kernels)
    if wants_compile(cfg.train.compile, model, cfg.method) and not liger_instead:
        return compile_layers(model)
    return 0


def _train(
    trainer: Any, stop: StopOnInterrupt, checkpoint: Path | None, run: RunDir, resumable: bool
) -> Any:
    """`trainer.train()`; a Ctrl-C stop becomes `TrainingInterrupted` naming the checkpoint."""
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        stop.restore()
    if stop.requested:
        step = trainer.state.global_step
        saved_at = run.checkpoint(step)
        raise TrainingInterrupted(saved_at if saved_at.is_dir() else None, step, resumable)
    return output


def _described(prepared: Prepared | PreparedPrompts, model: Any, dtype: Any) -> dict[str, Any]:
    """The manifest's record of the data and the model, the same for every objective."""
    from instructune.models import describe_model

    return {
        "data_hashes": prepared.hashes,
        "inputs": {s.path: s.sha256 for s in prepared.sources},
        "template": prepared.template.name,
        "model": describe_model(model),
        "dtype": str(dtype).removeprefix("torch."),
    }


def _kernels(kernels: KernelPlan | None) -> dict[str, Any]:
    return {"kernels": kernels.describe()} if kernels is not None else {}


def _session(
    compiled: int, kernels: KernelPlan | None, governor: ThreadGovernor | None
) -> dict[str, Any]:
    """How this session ran: threads (and their changes under load), compile, kernels."""
    import torch

    record: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "compiled_layers": compiled}
    record |= _kernels(kernels)
    if governor is not None:
        record["thread_changes"] = governor.changes
    return record


def _start_metrics_log(path: Path, checkpoint: Path | None) -> None:
    """A fresh run starts an empty log; a resumed one keeps the records up to its checkpoint."""
    if checkpoint is None:
        path.unlink(missing_ok=True)
        return
    step = int(checkpoint.name.rsplit("-", 1)[-1])
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def _save(trainer: Any, cfg: Config, tokenizer: Any, template_text: str, run: RunDir) -> None:
    """The adapter alone (lora, qlora, prompt/prefix tuning, ia3) or the whole model (full),
    with tokenizer and template."""
    from instructune.models import save_adapter

    if cfg.method in ADAPTER_METHODS:
        save_adapter(trainer.model, tokenizer, template_text, run.path)
        return
    # The Trainer's save gathers sharded (FSDP/DeepSpeed) weights; it also saves the tokenizer.
    trainer.save_model(str(run.path))
    run.write_template(template_text)
