"""bench/gpu.py's worker processes: build a random model, train ours, train TRL.

Each runs in a fresh interpreter (`common.run_worker`), so one side's imports, kernel patches
(Liger patches module functions such as RoPE) and peak memory stay out of the other's.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import Any

import common
import gpu


def run(spec: dict[str, Any]) -> dict[str, Any]:
    side = spec["side"]
    if side == "build":
        return {"folder": str(gpu.build_model(spec["shape"], Path(spec["tokenizer"])))}
    if side == "ours":
        return ours(spec)
    if side == "trl":
        return trl(spec)
    raise SystemExit(f"unknown side {side!r}")


def _config(spec: dict[str, Any], out: Path) -> Any:
    from instructune.config import load_config

    return load_config(
        None,
        [
            f"model.path={spec['folder']}",
            f"data.train=[{{path: {spec['train']}, format: alpaca}}]",
            f"data.eval=[{{path: {spec['eval']}, format: alpaca}}]",
            f"data.max_length={spec['seq_len']}",
            "data.packing=true",
            "data.dedup=false",
            "data.on_error=skip",
            f"method={spec['method']}",
            f"lora.r={gpu.LORA_R}",
            f"lora.alpha={gpu.LORA_ALPHA}",
            "lora.target_modules=all-linear",
            f"train.max_steps={spec['steps']}",
            f"train.micro_batch_size={spec['micro_batch']}",
            f"train.learning_rate={gpu.LR}",
            "train.lr_scheduler=constant",
            "train.logging_steps=1",
            f"train.gradient_checkpointing={str(spec['checkpointing']).lower()}",
            f"train.precision={'fp32' if spec['tiny'] else 'bf16'}",
            f"output_dir={out}",
        ],
    )


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _reset_peak() -> None:
    import torch

    if _cuda():
        torch.cuda.reset_peak_memory_stats()


def _peak_gb() -> float:
    import torch

    if _cuda():
        return float(torch.cuda.max_memory_allocated()) / 1e9
    return common.peak_rss_mb() / 1e3  # CPU (--tiny): the process's peak RSS


def _rates(tokens: int, trained: int, steps: int, seconds: float, first: float) -> dict[str, Any]:
    rest_steps, rest = common.steady_seconds(steps, seconds, first)
    share = rest_steps / steps  # packed steps feed nearly equal tokens
    return {
        "first_step_s": first,
        "step_s": rest / rest_steps,
        "tokens_per_s": tokens * share / rest,
        "trained_tokens_per_s": trained * share / rest,
    }


def heldout_loss(model: Any, examples: list[Any], pad_id: int) -> float:
    """Mean cross-entropy over the trained tokens of `examples`: the same function for both."""
    import torch

    from instructune.data.collate import PaddedCollator
    from instructune.models.logprobs import causal_lm_parts, trained_hidden
    from instructune.models.losses import chunked_token_losses

    device = next(model.parameters()).device
    collate = PaddedCollator(pad_id)
    _, head = causal_lm_parts(model)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), 8):
            batch = {k: v.to(device) for k, v in collate(examples[i : i + 8]).items()}
            hidden, targets = trained_hidden(model, batch)
            total += float(chunked_token_losses(head, hidden, targets, 1024).sum())
            count += int(targets.numel())
    return total / max(count, 1)


def ours(spec: dict[str, Any]) -> dict[str, Any]:
    from instructune.training.run import run_train

    out = gpu.WORK / "runs" / f"{spec['shape']}-{spec['method']}-ours"
    shutil.rmtree(out, ignore_errors=True)
    _reset_peak()
    result = run_train(_config(spec, out))
    peak = _peak_gb()
    m = result.metrics
    steps = m["global_step"]
    return {
        "side": "ours",
        "steps": steps,
        "tokens": m["tokens"],
        **_rates(m["tokens"], m["trained_tokens"], steps, m["train_seconds"], m["first_step_s"]),
        "peak_gb": peak,
        "last_loss": m["final_loss"],
        "heldout_loss": heldout_loss(result.model, result.prepared.eval, _pad(result.tokenizer)),
        "checkpointing": spec["checkpointing"],
        "kernels": m["kernels"],
        "compiled_layers": m["compiled_layers"],
    }


def _pad(tokenizer: Any) -> int:
    from instructune.models import pad_token_id

    return int(pad_token_id(tokenizer))


def _trl_model(spec: dict[str, Any]) -> tuple[Any, str]:
    """The saved random model, loaded as a TRL user would, with the best attention available."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": torch.float32 if spec["tiny"] else torch.bfloat16}
    flash = _cuda() and importlib.util.find_spec("flash_attn") is not None
    kwargs["attn_implementation"] = "flash_attention_2" if flash else "sdpa"
    if spec["method"] == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0 if _cuda() else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(spec["folder"], **kwargs)
    attention = kwargs["attn_implementation"]
    if _cuda() and not flash:
        # TRL's padding-free rows are one flattened sequence: with sdpa that is an [N, N] mask.
        # The torch flash varlen kernel ours uses keeps attention equal between the sides.
        from instructune.training.varlen import register_varlen

        attention = register_varlen()
        model.set_attn_implementation(attention)
    return model, attention


def trl(spec: dict[str, Any]) -> dict[str, Any]:
    import json

    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from instructune.data.pipeline import prepare_dataset
    from instructune.models import load_tokenizer

    out = gpu.WORK / "runs" / f"{spec['shape']}-{spec['method']}-trl"
    shutil.rmtree(out, ignore_errors=True)
    cfg = _config(spec, out)
    tokenizer = load_tokenizer(cfg.model)
    held = prepare_dataset(cfg.data, tokenizer).eval  # scored as ours is
    _reset_peak()
    model, attention = _trl_model(spec)
    liger = _cuda() and importlib.util.find_spec("liger_kernel") is not None
    rows = [json.loads(line) for line in Path(spec["train"]).read_text().splitlines()]
    rows = [r for r in rows if r["output"].strip()]
    args = SFTConfig(
        output_dir=str(out),
        max_length=spec["seq_len"],
        packing=True,
        packing_strategy="bfd",
        padding_free=True,
        completion_only_loss=True,
        per_device_train_batch_size=spec["micro_batch"],
        max_steps=spec["steps"],
        learning_rate=gpu.LR,
        lr_scheduler_type="constant",
        bf16=not spec["tiny"],
        use_cpu=not _cuda(),
        gradient_checkpointing=spec["checkpointing"],
        use_liger_kernel=liger,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        seed=42,
    )
    counts = {"tokens": 0, "trained": 0}
    timer = common.step_timer()

    class CountingSFT(SFTTrainer):  # counts what each micro-batch really feeds the model
        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            mask = inputs.get("attention_mask")
            ids = inputs["input_ids"]
            counts["tokens"] += int(mask.sum()) if mask is not None else int(ids.numel())
            counts["trained"] += int((inputs["labels"][:, 1:] != -100).sum())
            return super().training_step(model, inputs, num_items_in_batch)

    peft = None
    if spec["method"] != "full":
        peft = LoraConfig(
            r=gpu.LORA_R, lora_alpha=gpu.LORA_ALPHA, lora_dropout=0.0,
            target_modules="all-linear", task_type="CAUSAL_LM",
        )  # fmt: skip
    trainer = CountingSFT(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([_prompt_completion(r) for r in rows]),
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=[timer],
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    peak = _peak_gb()
    steps = timer.steps
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {
        "side": "trl",
        "steps": trainer.state.global_step,
        "tokens": counts["tokens"],
        **_rates(counts["tokens"], counts["trained"], len(steps), sum(steps), steps[0]),
        "seconds": seconds,
        "peak_gb": peak,
        "last_loss": losses[-1] if losses else None,
        "heldout_loss": heldout_loss(trainer.model, held, _pad(tokenizer)),
        "checkpointing": spec["checkpointing"],
        "kernels": {"liger_layers": liger, "attention": attention, "loss": "trl fused lm head"},
    }


def _prompt_completion(row: dict[str, str]) -> dict[str, Any]:
    user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
    return {
        "prompt": [{"role": "user", "content": user}],
        "completion": [{"role": "assistant", "content": row["output"]}],
    }
