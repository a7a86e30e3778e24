"""Benchmark: LoRA training throughput, memory and eval loss, ours vs TRL SFTTrainer, and our
step time beside a competing CPU-bound process.

LoRA r=16 on q/k/v/o, max_length 512, micro-batch 4, packed
`../shared/data/alpaca/alpaca_gpt4_1k.json` (the last 50 rows held out for eval), the embedded
SmolLM2-135M-Instruct, the same number of optimizer steps on every side. TRL runs in its best CPU
configuration: packing, completion-only loss, no gradient checkpointing, and bf16 only where the
CPU has native bf16 (the same detection as our `precision: auto`; emulated bf16 is several times
slower than fp32). Both eval losses are computed by the same function (mean cross-entropy over
trained tokens) on the same held-out examples.

The run prints the CPU's bf16 capability, measures the fp32 and bf16 matmul peaks (2048^3) in the
same run, and runs ours in `precision: auto` (with and without gradient checkpointing), in fp32
too where bf16 is native, then TRL. "of peak" counts 4 x parameters FLOPs per token (LoRA: the
forward and the input gradients) against the peak of the dtype that side trained in. Last, ours
runs `--shared-steps` steps beside a busy process (a Python loop on one core): once with the
thread policy (training/threads.py), once with threads fixed to every core, torch's default.

    .venv/bin/python bench/train.py [--steps 10] [--shared-steps 3] [--fp32]

Each side runs in its own subprocess so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common  # bench/common.py: this script's own folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_gpt4_1k.json"
WORK = Path("/tmp/instructune-bench-train")
N_EVAL = 50
LR = 2e-4


def _split_files() -> tuple[Path, Path]:
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    WORK.mkdir(parents=True, exist_ok=True)
    train, held = WORK / "train.jsonl", WORK / "eval.jsonl"
    for path, part in ((train, rows[:-N_EVAL]), (held, rows[-N_EVAL:])):
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return train, held


def _config(
    steps: int,
    out: str,
    checkpointing: bool = False,
    precision: str = "auto",
    threads: int | None = None,
) -> Any:
    from instructune.config import load_config

    train, held = _split_files()
    return load_config(
        None,
        [
            f"data.train=[{{path: {train}, format: alpaca}}]",
            f"data.eval=[{{path: {held}, format: alpaca}}]",
            "data.max_length=512",
            "data.packing=true",
            "data.dedup=false",
            "data.on_error=skip",
            "method=lora",
            "lora.r=16",
            "lora.alpha=32",
            f"train.max_steps={steps}",
            "train.micro_batch_size=4",
            f"train.learning_rate={LR}",
            "train.warmup_ratio=0.03",
            "train.logging_steps=1",
            # TRL runs without checkpointing (its fastest setting); ours runs both ways.
            f"train.gradient_checkpointing={'true' if checkpointing else 'false'}",
            f"train.precision={precision}",
            *([f"train.num_threads={threads}"] if threads else []),
            f"output_dir={out}",
        ],
    )


def eval_loss(model: Any, examples: list[Any], pad_id: int) -> float:
    """Mean CE over trained tokens of `examples`, the training loss (models/logprobs)."""
    import torch

    from instructune.data.collate import PaddedCollator
    from instructune.models.logprobs import causal_lm_parts, trained_hidden
    from instructune.models.losses import chunked_token_losses

    collate = PaddedCollator(pad_id)
    total, count = 0.0, 0
    model.eval()
    _, lm_head = causal_lm_parts(
        model.get_base_model() if hasattr(model, "get_base_model") else model
    )
    with torch.no_grad():
        for i in range(0, len(examples), 8):
            batch = collate(examples[i : i + 8])
            hidden, targets = trained_hidden(model, batch)
            losses = chunked_token_losses(lm_head, hidden.float(), targets, 1024)
            total += float(losses.sum())
            count += int(targets.numel())
    return total / count


def worker_ours(
    steps: int,
    checkpointing: bool = False,
    precision: str = "auto",
    threads: int | None = None,
    side: str = "instructune",
) -> dict[str, Any]:
    import shutil

    from instructune.training.run import run_train

    out = WORK / "ours"
    shutil.rmtree(out, ignore_errors=True)
    result = run_train(_config(steps, str(out), checkpointing, precision, threads))
    m = result.metrics
    return {
        "side": side,
        "steps": m["global_step"],
        "tokens": m["tokens"],
        "trained_tokens": m["trained_tokens"],
        "seconds": m["train_runtime_s"],
        "compiled_layers": m["compiled_layers"],
        **rates(
            m["tokens"],
            m["trained_tokens"],
            m["global_step"],
            m["train_seconds"],
            m["first_step_s"],
        ),
        "eval_loss": eval_loss(result.model, result.prepared.eval, result.tokenizer.pad_token_id),
        "peak_rss_mb": common.peak_rss_mb(),
        "dtype": str(next(result.model.parameters()).dtype),
        "threads": m["torch_threads"],
        "thread_changes": m.get("thread_changes", []),
        "params": sum(p.numel() for p in result.model.parameters()),  # tied weights once
    }


def rates(tokens: int, trained: int, steps: int, seconds: float, first: float) -> dict[str, Any]:
    """Steady rates over the steps after the first (which carries compilation and warm-up, and is
    reported as `first_step_s`); packed steps feed nearly equal tokens, so the first step's share
    is taken as 1/steps."""
    rest_steps, rest = common.steady_seconds(steps, seconds, first)
    return {
        "first_step_s": first,
        "step_s": rest / rest_steps,
        "tokens_per_s": tokens * rest_steps / steps / rest,
        "trained_tokens_per_s": trained * rest_steps / steps / rest,
        "tokens_per_s_with_first": tokens / seconds,
    }


def worker_trl(steps: int, force_fp32: bool = False) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from instructune.data.pipeline import prepare_dataset
    from instructune.models import bf16_supported, load_model, load_tokenizer

    cfg = _config(steps, str(WORK / "trl"))
    tokenizer = load_tokenizer(cfg.model)
    held = prepare_dataset(cfg.data, tokenizer).eval  # scored the same way as ours
    bf16 = bf16_supported() and not force_fp32
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = load_model(cfg.model, dtype, "full", None, for_training=True)
    rows = [json.loads(line) for line in Path(cfg.data.train[0].path).read_text().splitlines()]
    rows = [r for r in rows if r["output"].strip()]

    def convert(row: dict[str, str]) -> dict[str, Any]:
        user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        return {
            "prompt": [{"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": row["output"]}],
        }

    args = SFTConfig(
        output_dir=str(WORK / "trl"),
        max_length=512,
        packing=True,
        completion_only_loss=True,
        per_device_train_batch_size=4,
        max_steps=steps,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,  # transformers 5.x: a float in (0, 1) is the warmup ratio
        bf16=bf16,
        use_cpu=True,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
    )
    counts = {"tokens": 0, "trained": 0}
    timer = common.step_timer()

    class CountingSFT(SFTTrainer):  # counts what each micro-batch really feeds the model
        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            counts["tokens"] += int(mask.sum()) if mask is not None else int(ids.numel())
            counts["trained"] += int((inputs["labels"][:, 1:] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )  # fmt: skip
    trainer = CountingSFT(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([convert(r) for r in rows]),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[timer],
    )
    start = time.perf_counter()
    output = trainer.train()
    seconds = output.metrics.get("train_runtime", time.perf_counter() - start)
    steps_s = timer.steps
    return {
        "side": "trl fp32" if force_fp32 else "trl",
        "steps": trainer.state.global_step,
        "tokens": counts["tokens"],
        "trained_tokens": counts["trained"],
        "seconds": seconds,
        **rates(counts["tokens"], counts["trained"], len(steps_s), sum(steps_s), steps_s[0]),
        "eval_loss": eval_loss(trainer.model, held, tokenizer.pad_token_id),
        "peak_rss_mb": common.peak_rss_mb(),
        "dtype": str(dtype),
    }


def worker_matmul(_: int) -> dict[str, Any]:
    import torch

    from instructune.models import bf16_supported

    out: dict[str, Any] = {"side": "matmul", "bf16_native": bf16_supported(), "flags": cpu_flags()}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(2048, 2048, dtype=dtype)
        b = torch.randn(2048, 2048, dtype=dtype)
        for _ in range(2):
            a @ b
        n, start = 8, time.perf_counter()
        for _ in range(n):
            a @ b
        out[f"{str(dtype).split('.')[-1]}_gflops"] = (
            2 * 2048**3 * n / (time.perf_counter() - start) / 1e9
        )
    return out


def cpu_flags() -> list[str]:
    """The CPU's bf16-related feature flags (/proc/cpuinfo): avx512_bf16, amx_bf16, ..."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    return sorted(f for f in set(flags) if "bf16" in f or f in ("avx512f", "amx_tile", "avx2"))


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), "?"
    )


WORKERS: dict[str, Any] = {
    "ours": lambda steps: worker_ours(steps),
    "ours_ckpt": lambda steps: worker_ours(steps, checkpointing=True, side="ours+ckpt"),
    "ours_fp32": lambda steps: worker_ours(steps, precision="fp32", side="ours fp32"),
    "ours_shared": lambda steps: worker_ours(steps, side="shared, policy"),
    "ours_shared_fixed": lambda steps: worker_ours(
        steps, threads=os.cpu_count() or 1, side="shared, fixed"
    ),
    "trl": worker_trl,
    "trl_fp32": lambda steps: worker_trl(steps, force_fp32=True),
    "matmul": worker_matmul,
}


def run_worker(side: str, steps: int) -> dict[str, Any]:
    return common.run_worker(__file__, ["--worker", side, "--steps", str(steps)], side)


def run_beside_busy_process(side: str, steps: int) -> dict[str, Any]:
    """`side` while a CPU-bound Python loop runs on one core for the whole run."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        return run_worker(side, steps)
    finally:
        busy.kill()
        busy.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--shared-steps", type=int, default=3)
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="only ours vs TRL both in fp32: on a CPU with native bf16, the comparison a CPU "
        "without it gets (fp32 matmuls use the same AVX-512 FMA units either way)",
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.steps)))
        return
    peak = run_worker("matmul", args.steps)
    print(f"CPU: {cpu_model()}; flags: {' '.join(peak['flags'])}")
    print(f"bf16 native: {peak['bf16_native']}")
    if args.fp32:
        report(peak, [run_worker("ours_fp32", args.steps)], run_worker("trl_fp32", args.steps), [])
        return
    sides = ["ours", "ours_ckpt", *(["ours_fp32"] if peak["bf16_native"] else [])]
    runs = [run_worker(side, args.steps) for side in sides]
    trl = run_worker("trl", args.steps)
    shared = [
        run_beside_busy_process(s, args.shared_steps) for s in ("ours_shared", "ours_shared_fixed")
    ]
    report(peak, runs, trl, shared)


def report(
    peak: dict[str, Any],
    runs: list[dict[str, Any]],
    trl: dict[str, Any],
    shared: list[dict[str, Any]],
) -> None:
    params = runs[0]["params"]
    for r in [*runs, trl, *shared]:
        key = "bfloat16_gflops" if "bfloat16" in r["dtype"] else "float32_gflops"
        r["fraction_of_peak"] = r["tokens_per_s"] * 4 * params / (peak[key] * 1e9)
    ratios = {
        r["side"]: {
            "tokens_per_s": r["tokens_per_s"] / trl["tokens_per_s"],
            "trained_tokens_per_s": r["trained_tokens_per_s"] / trl["trained_tokens_per_s"],
            "peak_rss": r["peak_rss_mb"] / trl["peak_rss_mb"],
            "eval_loss_diff": r["eval_loss"] - trl["eval_loss"],
        }
        for r in runs
    }
    slowdown = {r["side"]: r["step_s"] / runs[0]["step_s"] for r in shared}
    out = {"matmul": peak, "runs": [*runs, trl], "vs_trl": ratios, "shared": shared}
    print(json.dumps(out | {"shared_slowdown": slowdown}, indent=2))
    print(
        f"\nmatmul peak: fp32 {peak['float32_gflops']:.0f}, "
        f"bf16 {peak['bfloat16_gflops']:.0f} GFLOP/s"
    )
    print(
        f"{'side':<16}{'dtype':>9}{'tok/s':>8}{'trained/s':>10}{'step s':>8}{'peak MB':>9}", end=""
    )
    print(f"{'eval loss':>10}{'of peak':>9}{'×TRL trained/s':>16}{'×TRL RSS':>10}")
    for r in [*runs, trl, *shared]:
        ratio = ratios.get(r["side"])
        tail = f"{ratio['trained_tokens_per_s']:>16.2f}{ratio['peak_rss']:>10.2f}" if ratio else ""
        print(
            f"{r['side']:<16}{r['dtype'].removeprefix('torch.'):>9}{r['tokens_per_s']:>8.1f}"
            f"{r['trained_tokens_per_s']:>10.1f}{r['step_s']:>8.2f}{r['first_step_s']:>7.1f}"
            f"{r['peak_rss_mb']:>9.0f}"
            f"{r['eval_loss']:>10.4f}{r['fraction_of_peak']:>9.1%}{tail}"
        )
    for side, ratio in slowdown.items():
        print(f"beside a busy process ({side}): {ratio:.2f}x the quiet step time")


if __name__ == "__main__":
    main()
