"""Benchmark: DPO with LoRA on the embedded model, ours vs TRL's DPOTrainer on the same pairs.

The promise detector's preference pairs (`examples/promises/make_pairs.py`: the right label with
a one-line reason preferred over the wrong one), the embedded SmolLM2-135M-Instruct, LoRA r=16 on
q/k/v/o (no dropout), beta 0.1, sigmoid loss, micro-batch 4 pairs, the same learning rate,
schedule and number of optimizer steps on both sides; reference = the base with the adapter
disabled on both sides, computed per step. Both sides run fp32 unless the CPU has native bf16 (the
same detection as `precision: auto`). Reported: pairs/s over the optimizer steps, peak RSS, the
mean loss and preference accuracy (rewards/accuracies) of the last 5 steps, and the held-out
preference accuracy of both trained adapters scored by the same function.

    .venv/bin/python bench/dpo.py [--steps 20]

Each side runs in its own subprocess so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import common  # bench/common.py: this script's own folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/instructune-bench-dpo")
LR, BATCH, BETA, MAX_LENGTH = 5e-5, 4, 0.1, 384


def _pairs() -> tuple[Path, Path]:
    train, test = WORK / "pairs" / "train.jsonl", WORK / "pairs" / "test.jsonl"
    if not train.is_file():
        script = ROOT / "examples" / "promises" / "make_pairs.py"
        cmd = [sys.executable, str(script), "--out", str(train.parent)]
        subprocess.run(cmd, check=True, capture_output=True)
    return train, test


def _config(steps: int, out: str) -> Any:
    from instructune.config import load_config

    train, _ = _pairs()
    return load_config(
        None,
        [
            f"data.train=[{{path: {train}, format: preference}}]",
            f"data.max_length={MAX_LENGTH}",
            "data.packing=false",
            "method=lora",
            "lora={r: 16, alpha: 32, dropout: 0.0}",
            "lora.target_modules=[q_proj, k_proj, v_proj, o_proj]",
            "train.objective=dpo",
            f"train.max_steps={steps}",
            f"train.micro_batch_size={BATCH}",
            f"train.learning_rate={LR}",
            "train.lr_scheduler=constant",
            "train.logging_steps=1",
            f"dpo.beta={BETA}",
            f"output_dir={out}",
        ],
    )


def held_out_accuracy(model: Any, tokenizer: Any) -> float:
    """Preference accuracy on the held-out pairs, the same scoring for both sides (eval's)."""
    import torch

    from instructune.config import DataConfig, DataSource
    from instructune.data.loading import load_conversations
    from instructune.data.preference import encode_pairs
    from instructune.data.templates import load_template
    from instructune.evaluation.preference import evaluate_preference

    _, test = _pairs()
    cfg = DataConfig(train=[DataSource(path=str(test), format="preference")], max_length=MAX_LENGTH)
    convs = load_conversations(cfg.train[0], "fail", None).conversations
    pairs = encode_pairs(convs, load_template("chat", tokenizer), tokenizer, cfg).pairs
    # peft keeps TRL's LoRA weights in fp32 beside a bf16 base: score in autocast, as it trained
    bf16 = next(model.parameters()).dtype == torch.bfloat16 or any(
        p.dtype == torch.bfloat16 for p in model.parameters()
    )
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        outcome, _ = evaluate_preference(model, pairs, "held_out", tokenizer.pad_token_id, 8)
    return float(outcome.metrics["accuracy"])


def _tail(records: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in records if key in r][-5:]
    return sum(values) / len(values)


def worker_ours(steps: int) -> dict[str, Any]:
    import shutil

    from instructune.training.run import run_train

    out = WORK / "ours"
    shutil.rmtree(out, ignore_errors=True)
    result = run_train(_config(steps, str(out)))
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    m = result.metrics
    steps, seconds = common.steady_seconds(m["global_step"], m["train_seconds"], m["first_step_s"])
    return {
        "side": "instructune",
        "steps": m["global_step"],
        "seconds": m["train_seconds"],
        "first_step_s": m["first_step_s"],
        "pairs_per_s": steps * BATCH / seconds,
        "pairs_per_s_with_first": m["global_step"] * BATCH / m["train_seconds"],
        "final_loss": _tail(records, "loss"),
        "train_accuracy": _tail(records, "rewards/accuracies"),
        "held_out_accuracy": held_out_accuracy(result.model, result.tokenizer),
        "peak_rss_mb": common.peak_rss_mb(),
    }


def worker_trl(steps: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from instructune.models import bf16_supported, load_model, load_tokenizer

    cfg = _config(steps, str(WORK / "trl"))
    tokenizer = load_tokenizer(cfg.model)
    bf16 = bf16_supported()
    model = load_model(
        cfg.model, torch.bfloat16 if bf16 else torch.float32, "full", None, for_training=True
    )
    train, _ = _pairs()
    rows = [json.loads(x) for x in train.read_text().splitlines()]
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    )
    args = DPOConfig(
        output_dir=str(WORK / "trl"), beta=BETA, loss_type=["sigmoid"], max_length=MAX_LENGTH,
        per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=LR,
        lr_scheduler_type="constant", bf16=bf16, use_cpu=True, gradient_checkpointing=False,
        logging_steps=1, report_to=[], save_strategy="no",
    )  # fmt: skip
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )  # fmt: skip
    timer = common.step_timer()
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora,
        callbacks=[timer],
    )  # fmt: skip
    trainer.train()
    records = [r for r in trainer.state.log_history if "loss" in r]
    total = sum(timer.steps)
    steps, seconds = common.steady_seconds(len(timer.steps), total, timer.steps[0])
    return {
        "side": "trl",
        "steps": trainer.state.global_step,
        "seconds": total,
        "first_step_s": timer.steps[0],
        "pairs_per_s": steps * BATCH / seconds,
        "pairs_per_s_with_first": len(timer.steps) * BATCH / total,
        "final_loss": _tail(records, "loss"),
        "train_accuracy": _tail(records, "rewards/accuracies"),
        "held_out_accuracy": held_out_accuracy(trainer.model, tokenizer),
        "peak_rss_mb": common.peak_rss_mb(),
    }


def run_worker(side: str, steps: int) -> dict[str, Any]:
    return common.run_worker(__file__, ["--worker", side, "--steps", str(steps)], side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=["ours", "trl"])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    workers = {"ours": worker_ours, "trl": worker_trl}
    if args.worker:
        print(json.dumps(workers[args.worker](args.steps)))
        return
    _pairs()
    ours, trl = run_worker("ours", args.steps), run_worker("trl", args.steps)
    ratios = {
        "pairs_per_s": ours["pairs_per_s"] / trl["pairs_per_s"],
        "peak_rss": ours["peak_rss_mb"] / trl["peak_rss_mb"],
        "final_loss_diff": ours["final_loss"] - trl["final_loss"],
    }
    print(json.dumps({"ours": ours, "trl": trl, "ratios_vs_trl": ratios}, indent=2))


if __name__ == "__main__":
    main()
