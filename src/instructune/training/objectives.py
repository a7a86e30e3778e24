"""`train.objective`: which data stage, datasets and Trainer a run uses (sft or dpo).

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
from instructune.training.preference_trainer import DPOTrainer
from instructune.training.trainer import InstructTrainer

Prepared = PreparedData | PreparedPairs
Datasets = tuple[TokenDataset | PairDataset, TokenDataset | PairDataset | None]


def prepare_data(cfg: Config, tokenizer: Any) -> Prepared:
    if cfg.data is None:
        raise ConfigError("train needs a `data:` section")
    if cfg.train.objective == "dpo":
        return prepare_pairs(cfg.data, tokenizer)
    return prepare_dataset(cfg.data, tokenizer)


def datasets(prepared: Prepared) -> Datasets:
    if isinstance(prepared, PreparedPairs):
        return PairDataset(prepared.train), (PairDataset(prepared.eval) if prepared.eval else None)
    return build_datasets(prepared)


def trainer_setup(cfg: Config, dtype: Any) -> tuple[type[InstructTrainer], dict[str, Any]]:
    """The Trainer class and its extra arguments: DPO's config and, for `method: full`, a frozen
    reference copy of the base (adapter methods disable their adapter instead)."""
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
