"""Checkpoints that are either complete or invisible, and resumes that refuse a changed run.

Atomic saves: the Trainer writes `checkpoint-N` into `checkpoints/.incomplete/` (model, optimizer,
scheduler, RNG, trainer state, then our token counts and run info); every file and the folder are
fsynced and the folder is renamed to `checkpoints/checkpoint-N`. A kill at any point leaves
either no new checkpoint or a complete one; what is left in `.incomplete/` is removed (with a
warning) by the next run. Under several processes, all write into the same staging folder and
the main one renames it after a barrier.

Resume checks: each checkpoint holds `run_info.json` (the resolved config and the prepared data's
hashes). `--resume` compares them with the current run and refuses with the list of differences,
except changes a resumed run can honour (`RESUMABLE`: more steps or epochs, logging and saving
cadence, reporting), which are recorded in the manifest's `segments`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from instructune.config import Config, ConfigError
from instructune.rundir import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    GENERATION_CONFIG_FILE,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    MODEL_WEIGHTS_FILE,
    MODEL_WEIGHTS_INDEX_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    RUN_INFO_FILE,
    STAGING_DIR,
    TEMPLATE_FILE,
    RunDir,
)

logger = logging.getLogger(__name__)
# keys a resumed run can change: they alter neither the data, the model nor the steps taken so far
RESUMABLE = (
    "train.logging_steps",
    "train.save_steps",
    "train.save_total_limit",
    "train.eval_steps",
    "train.report_to",
    "train.num_threads",
    "train.compile",  # how the same forward runs, not what it computes
    "data.show_examples",
    "data.audit",
    "eval",
    "adapter",
    "output_dir",
)
# keys that may only grow: resuming continues the same schedule for longer
GROWABLE = ("train.max_steps", "train.epochs")


class AtomicCheckpoints:
    """Trainer mixin: `_save_checkpoint` writes to a staging folder and renames it when complete.

    The subclass provides `checkpoint_json()`: extra JSON files (name → data) for each checkpoint.
    """

    def checkpoint_json(self) -> dict[str, Any]:
        return {}

    def _get_output_dir(self, trial: Any) -> str:
        run_dir = super()._get_output_dir(trial)  # type: ignore[misc]
        return os.path.join(run_dir, STAGING_DIR) if getattr(self, "_staging", False) else run_dir

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        trainer: Any = self
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
        staged = run_dir / STAGING_DIR / name
        main = trainer.args.should_save
        if main:
            shutil.rmtree(staged, ignore_errors=True)
        trainer._staging = True
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            trainer._staging = False
        trainer.accelerator.wait_for_everyone()  # every rank's RNG state is in
        if main:
            for file_name, data in self.checkpoint_json().items():
                (staged / file_name).write_text(json.dumps(data, indent=1) + "\n", "utf-8")
            publish(staged, run_dir / name)
            rotate(run_dir, trainer.args.save_total_limit, trainer.state.best_model_checkpoint)
            with contextlib.suppress(OSError):  # empty now: only complete checkpoints are left
                staged.parent.rmdir()
        trainer.accelerator.wait_for_everyone()


def rotate(run_dir: Path, limit: int | None, best: str | None) -> None:
    """transformers' `rotate_checkpoints` (keep the newest `limit`, the latest and the best), but
    retiring each old checkpoint atomically: its `rmtree` killed half-way would leave a visible,
    incomplete checkpoint that `--resume` would then pick."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

    if not limit:
        return
    checkpoints = sort_checkpoints(str(run_dir), PREFIX_CHECKPOINT_DIR)  # by step
    protected = {checkpoints[-1]} if checkpoints else set()
    if best is not None:
        protected.add(str(Path(best)))
    remaining = len(checkpoints)
    for checkpoint in checkpoints:
        if remaining <= max(limit, len(protected)):
            break
        if checkpoint not in protected:
            retire(Path(checkpoint), run_dir / STAGING_DIR)
            remaining -= 1


def retire(folder: Path, staging: Path) -> None:
    """Delete a checkpoint folder without it ever being visible half-deleted: rename it into the
    staging folder (atomic), then remove it there; a kill in between leaves it to
    `clear_incomplete`."""
    staging.mkdir(exist_ok=True)
    trash = staging / f"retired-{folder.name}"
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(folder, trash)
    shutil.rmtree(trash)


def publish(staged: Path, final: Path) -> None:
    """fsync every file of `staged` and the folder, then rename it to `final` (atomic)."""
    for path in staged.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(staged)
    if final.exists():  # a checkpoint of the same step from before a resume: replaced whole
        retire(final, staged.parent)
    os.replace(staged, final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clear_incomplete(checkpoints: Path) -> None:
    """Remove what an interrupted save left in the staging folder, saying so."""
    staging = checkpoints / STAGING_DIR
    if not staging.is_dir() or not _launch_main():
        return
    left = sorted(p.name for p in staging.iterdir())
    if left:
        logger.warning(
            "removing %s in %s: written by a save that was interrupted (the checkpoints "
            "before it are complete)",
            ", ".join(left),
            staging,
        )
    shutil.rmtree(staging, ignore_errors=True)


# what a training run writes into output_dir besides prepare's files (config.yaml, manifest.json,
# prepared/): an output_dir holding any of them belongs to a run that --overwrite replaces
_TRAINING_OUTPUTS = (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    MODEL_CONFIG_FILE,
    MODEL_WEIGHTS_FILE,
    MODEL_WEIGHTS_INDEX_FILE,
    GENERATION_CONFIG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    PLOT_FILE,
    TEMPLATE_FILE,
)


def claim_training_outputs(
    out: Path, checkpoints: Path, resume: bool, overwrite: bool
) -> Path | None:
    """The checkpoint to resume from (None for a fresh run), after checking `out` may be used
    (`rundir.claim_output_dir` has already checked whose folder it is).

    A fresh run refuses an output_dir holding another run's results or checkpoints unless
    `overwrite`, which removes them first (prepare's files stay); `resume` needs a checkpoint.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if resume and overwrite:
        raise ConfigError("--resume and --overwrite can't be combined: choose one")
    clear_incomplete(checkpoints)
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume:
        if last is None:
            raise ConfigError(
                f"--resume: no complete checkpoint-N folder in {checkpoints}; run without --resume"
            )
        return Path(last)
    found = [name for name in _TRAINING_OUTPUTS if (out / name).exists()]
    if last is not None:
        found.append(f"{checkpoints.name}/{Path(last).name}")
    if found and not overwrite:
        hint = "pass --resume to continue it, " if last is not None else ""
        raise ConfigError(
            f"output_dir {str(out)!r} holds another training run ({', '.join(found[:4])}); "
            f"{hint}pass --overwrite to replace it, or choose another output_dir"
        )
    if _launch_main():  # under torchrun every rank gets here; one removes
        for name in found:
            path = out / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(True)
        if overwrite:
            shutil.rmtree(checkpoints, ignore_errors=True)
    return None


def _launch_main() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or a single process), before torch.distributed
    is set up: the launchers set RANK."""
    return os.environ.get("RANK", "0") == "0"


def segments(manifest: Path, checkpoint: Path | None, changes: list[str]) -> list[dict[str, Any]]:
    """The manifest's `segments`: the sessions that led to this one's starting checkpoint, and
    this one (resumed ones with their config changes)."""
    import time

    earlier: list[dict[str, Any]] = []
    step = int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint is not None else 0
    if checkpoint is not None and manifest.is_file():
        earlier = json.loads(manifest.read_text(encoding="utf-8")).get("segments", [])
        # sessions that started at or after this checkpoint left nothing in it (killed early)
        earlier = [s for s in earlier if s.get("start_step", 0) < step]
    this = {
        "start_step": step,
        "resumed_from": checkpoint.name if checkpoint is not None else None,
        "changes": changes,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return [*earlier, this]


def run_info(cfg: Config, data_hashes: dict[str, str]) -> dict[str, Any]:
    """What a checkpoint records to check a resume against: resolved config and data hashes."""
    return {"config": cfg.model_dump(mode="json"), "data_hashes": dict(data_hashes)}


def read_run_info(checkpoint: Path) -> dict[str, Any] | None:
    path = RunDir(checkpoint).run_info_file
    if not path.is_file():
        logger.warning("%s has no %s: the resumed run can't be checked", checkpoint, RUN_INFO_FILE)
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def config_changes(saved: dict[str, Any] | None, cfg: Config, checkpoint: Path) -> list[str]:
    """The resumable config changes since `checkpoint` ("key: old → new"); ConfigError listing
    every other difference."""
    if saved is None:
        return []
    before, now = _flat(saved["config"]), _flat(cfg.model_dump(mode="json"))
    changes, refused = [], []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        line = f"{key}: {old!r} → {new!r}"
        if _resumable(key, old, new):
            changes.append(line)
        else:
            refused.append(line)
    if refused:
        raise ConfigError(
            f"--resume: the config differs from the one {checkpoint.name} was trained with: "
            + "; ".join(refused)
            + ". Resuming can only add steps or epochs or change logging/saving; restore these "
            "values, or start a new run in another output_dir (or with --overwrite)"
        )
    return changes


def check_data(saved: dict[str, Any] | None, hashes: dict[str, str], checkpoint: Path) -> None:
    """ConfigError when the prepared data differ from what `checkpoint` was trained on."""
    if saved is None:
        return
    old = saved.get("data_hashes", {})
    differ = [
        f"{split}: {old.get(split)} → {hashes.get(split)}"
        for split in sorted(hashes)
        if old.get(split) != hashes.get(split)
    ]
    if differ:
        raise ConfigError(
            f"--resume: the prepared data differ from what {checkpoint.name} was trained on "
            f"(hashes {'; '.join(differ)}): a data file, the tokenizer, the template or a data "
            "setting changed. Restore them, or start a new run in another output_dir"
        )


def _resumable(key: str, old: Any, new: Any) -> bool:
    if any(key == k or key.startswith(k + ".") for k in RESUMABLE):
        return True
    if key in GROWABLE:
        return old is not None and new is not None and new > old
    return False


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": leaf} for nested dicts; lists are leaves (compared whole)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
