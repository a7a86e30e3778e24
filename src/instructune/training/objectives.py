"""`train.objective`: what differs between objectives; `run_train` (run.py) does the rest.

The run itself (claim the folder, seed, threads, load, wrap for the method, compile, train with
Ctrl-C checkpoints, save, report) is the same for every objective; an `Objective` supplies the
data stage, the model before its method, the Trainer, and the manifest and metrics it records.
`sft`, `dpo` and `reward` are `TokenObjective` (our Trainer over tokenized examples or pairs);
`grpo` is `training.grpo.GRPOObjective` (TRL's GRPOTrainer sampling from prompts).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from instructune.config import Config, ConfigError
from instructune.config.schema import ADAPTER_METHODS
from instructune.data.grpo_prompts import PreparedPrompts
from instructune.data.pipeline import PreparedData, prepare_dataset
from instructune.data.preference import PreparedPairs, prepare_pairs
from instructune.rundir import RunDir, data_inputs
from instructune.training.args import build_training_args, report_callbacks
from instructune.training.callbacks import MetricsCallback, ProgressCallback, StepClock, load_counts
from instructune.training.checkpoints import run_info
from instructune.training.dataset import TokenDataset, build_datasets
from instructune.training.dpo import PairDataset, precompute_reference
from instructune.training.kernels import KernelPlan, apply_kernels, select_kernels
from instructune.training.plots import read_metrics
from instructune.training.preference_trainer import DPOTrainer, RewardTrainer
from instructune.training.trainer import InstructTrainer, TokenCounter

Prepared = PreparedData | PreparedPairs
Datasets = tuple[TokenDataset | PairDataset, TokenDataset | PairDataset | None]


def prepare_data(cfg: Config, tokenizer: Any) -> Prepared:
    if cfg.data is None:
        raise ConfigError("train needs a `data:` section")
    if cfg.train.objective in ("dpo", "reward"):
        return prepare_pairs(cfg.data, tokenizer)
    return prepare_dataset(cfg.data, tokenizer)


def datasets(prepared: Prepared) -> Datasets:
    if isinstance(prepared, PreparedPairs):
        return PairDataset(prepared.train), (PairDataset(prepared.eval) if prepared.eval else None)
    return build_datasets(prepared)


def trainer_setup(cfg: Config, dtype: Any) -> tuple[type[InstructTrainer], dict[str, Any]]:
    """The Trainer class and its extra arguments: DPO's config and, for `method: full`, a frozen
    reference copy of the base (adapter methods disable their adapter instead)."""
    if cfg.train.objective == "reward":
        return RewardTrainer, {}
    if cfg.train.objective != "dpo":
        return InstructTrainer, {}
    ref_model = None
    if cfg.method not in ADAPTER_METHODS:
        from instructune.models import load_model

        ref_model = load_model(cfg.model, dtype, "full", cfg.quantization, for_training=False)
        ref_model.eval().requires_grad_(False)
    return DPOTrainer, {"dpo": cfg.dpo, "ref_model": ref_model}


def before_training(cfg: Config, trainer: Any, data: Datasets, pad_token_id: int) -> None:
    """`dpo.precompute_ref`: the reference log-probs of every pair, once, before step 1."""
    if cfg.train.objective != "dpo" or not cfg.dpo.precompute_ref:
        return
    for dataset in data:
        if isinstance(dataset, PairDataset):
            precompute_reference(
                trainer.model,
                trainer.ref_model,
                dataset,
                pad_token_id,
                cfg.train.micro_batch_size,
                cfg.train.loss_chunk_size,
            )


def load_for_objective(cfg: Config, dtype: Any, tokenizer: Any) -> Any:
    """The model to train: the causal LM, or for `reward` the same body with a one-output head
    (its pad token set: transformers' classification pooling needs one for batches)."""
    from instructune.models import load_model, pad_token_id

    reward = cfg.train.objective == "reward"
    model = load_model(
        cfg.model, dtype, cfg.method, cfg.quantization, for_training=True, reward_head=reward
    )
    if reward:
        model.config.pad_token_id = pad_token_id(tokenizer)
    return model


class Objective(Protocol):
    """What one `train.objective` supplies to the lifecycle in `run_train`, in call order."""

    resumable: bool
    """Whether `--resume` can continue its checkpoints (a Ctrl-C message says so or not)."""

    def inputs(self) -> list[str]:
        """The files the run reads (`output_dir`'s claim records them)."""
        ...

    def prepare(self, tokenizer: Any) -> Prepared | PreparedPrompts:
        """The data stage, and whatever must fail before the model loads."""
        ...

    def load_model(self, dtype: Any, tokenizer: Any) -> Any:
        """The model to train, before kernels and the method."""
        ...

    def apply_kernels(self, model: Any) -> KernelPlan | None:
        """`train.kernels` applied before PEFT wraps the model (None: not this objective's)."""
        ...

    def trainer(
        self, model: Any, tokenizer: Any, dtype: Any, checkpoint: Path | None, hooks: list[Any]
    ) -> Any:
        """The Trainer over the wrapped model, with `hooks` (callbacks) after its own."""
        ...

    def manifest(self, checkpoint: Path | None) -> dict[str, Any]:
        """What `manifest.json` records besides the data's hashes and sources, the model and
        its dtype (which `run_train` records for every objective)."""
        ...

    def metrics(self, trainer: Any, output: Any) -> dict[str, Any]:
        """The final metrics (`train_results.json`) after `trainer.train()` returned `output`."""
        ...


def objective_for(cfg: Config, resume: bool) -> Objective:
    """`cfg.train.objective`'s Objective, after refusing what it can't run."""
    if cfg.data is None:
        raise ConfigError("train needs a `data:` section")
    if cfg.train.objective == "grpo":  # online RL: TRL's trainer samples the data (grpo.py)
        from instructune.training.grpo import GRPOObjective

        return GRPOObjective(cfg, resume)
    return TokenObjective(cfg)


class TokenObjective:
    """`sft`, `dpo` and `reward`: our Trainer (its loss, collator and callbacks) over the
    tokenized examples or preference pairs of `cfg.data`."""

    resumable = True

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.counter, self.start, self.clock = TokenCounter(), TokenCounter(), StepClock()
        self.kernels: KernelPlan | None = None

    def inputs(self) -> list[str]:
        assert self.cfg.data is not None  # objective_for checked
        return data_inputs(self.cfg.data)

    def prepare(self, tokenizer: Any) -> Prepared:
        from instructune.models.loading import best_device

        self.prepared = prepare_data(self.cfg, tokenizer)
        self.data = datasets(self.prepared)
        train = self.cfg.train  # a `liger` that can't run stops before loading
        attention = self.cfg.model.attn_implementation
        self.plan = select_kernels(train.kernels, best_device(), self.data[0].packed, attention)
        return self.prepared

    def load_model(self, dtype: Any, tokenizer: Any) -> Any:
        return load_for_objective(self.cfg, dtype, tokenizer)

    def apply_kernels(self, model: Any) -> KernelPlan:
        self.kernels = apply_kernels(model, self.plan)
        return self.kernels

    def trainer(
        self, model: Any, tokenizer: Any, dtype: Any, checkpoint: Path | None, hooks: list[Any]
    ) -> InstructTrainer:
        from instructune.models import pad_token_id

        self.counter = load_counts(checkpoint)
        self.start = TokenCounter(self.counter.tokens, self.counter.trained_tokens)
        trainer = self._build(model, tokenizer, dtype, hooks)
        trainer.run_info = run_info(self.cfg, self.prepared.hashes)
        trainer.kernels = self.kernels
        before_training(self.cfg, trainer, self.data, pad_token_id(tokenizer))
        _drop_printer(trainer)
        return trainer

    def _build(
        self, model: Any, tokenizer: Any, dtype: Any, hooks: Sequence[Any]
    ) -> InstructTrainer:
        """The stock Trainer with our loss, collator and callbacks (metrics, progress, reports)."""
        from instructune.models import pad_token_id

        cfg, run = self.cfg, RunDir(self.cfg.output_path)
        train_set, eval_set = self.data
        trainer_cls, objective_kwargs = trainer_setup(cfg, dtype)
        args = build_training_args(
            cfg, run.checkpoints_dir, dtype, packed=train_set.packed, has_eval=eval_set is not None
        )
        return trainer_cls(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=eval_set,
            data_collator=train_set.collator(pad_token_id(tokenizer)),
            processing_class=tokenizer,
            callbacks=[
                self.clock,
                MetricsCallback(run.metrics_file, self.counter, self.clock),
                ProgressCallback(self.counter, self.clock),
                *report_callbacks(cfg.train.report_to, run.path),
                *hooks,
            ],
            loss_chunk_size=cfg.train.loss_chunk_size,
            label_smoothing=cfg.train.label_smoothing,
            pad_token_id=pad_token_id(tokenizer),
            counter=self.counter,
            **objective_kwargs,
        )

    def manifest(self, checkpoint: Path | None) -> dict[str, Any]:
        train = self.prepared.stats.get("train")
        return {
            "train_examples": train.examples if train else None,
            "train_trained_tokens": train.trained_tokens if train else None,
            "resumed_from": str(checkpoint) if checkpoint else None,
        }

    def metrics(self, trainer: Any, output: Any) -> dict[str, Any]:
        """Counts are totals (a resumed run includes the steps before its checkpoint); rates are
        this session's, over time spent in optimizer steps."""

        eval_loss = _final_eval_loss(trainer) if self.data[1] is not None else None
        records = read_metrics(RunDir(self.cfg.output_path).metrics_file)
        last_loss = next((r["loss"] for r in reversed(records) if r.get("loss") is not None), None)
        counter, start, seconds = self.counter, self.start, self.clock.seconds
        tokens = counter.tokens - start.tokens
        trained = counter.trained_tokens - start.trained_tokens
        return {
            "global_step": trainer.state.global_step,
            "epoch": trainer.state.epoch,
            "train_loss": output.training_loss,
            "final_loss": last_loss,
            "eval_loss": eval_loss,
            "tokens": counter.tokens,
            "trained_tokens": counter.trained_tokens,
            "train_seconds": seconds,
            "first_step_s": self.clock.first_step_s,
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


def _drop_printer(trainer: Any) -> None:
    # With tqdm disabled the Trainer prints every log dict; our progress bar replaces that.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
