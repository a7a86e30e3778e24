"""`train.objective`: which data stage, datasets, model head and Trainer a run uses.

The run itself (`run_train`: claim the folder, load, wrap for the method, train, save, report)
is the same for every objective; only these three choices differ.
"""

from __future__ import annotations

from typing import Any

from instructune.config import Config, ConfigError
from instructune.config.schema import ADAPTER_METHODS
from instructune.data.pipeline import PreparedData, prepare_dataset
from instructune.data.preference import PreparedPairs, prepare_pairs
from instructune.training.dataset import TokenDataset, build_datasets
from instructune.training.dpo import PairDataset, precompute_reference
from instructune.training.preference_trainer import DPOTrainer, RewardTrainer
from instructune.training.trainer import InstructTrainer

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
