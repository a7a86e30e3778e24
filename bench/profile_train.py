"""Profile: where one LoRA training step's time goes, per block, against the matmul peak.

The step is `bench/train.py`'s (embedded SmolLM2-135M, LoRA r=16 on q/k/v/o, packed Alpaca-GPT4
rows, max_length 512, micro-batch 4) run through the training path (`trained_hidden`, the fused
LM-head loss, AdamW). `torch.profiler` records a few steps after warm-up with shapes and FLOPs;
each op's own time goes to a block:

- the LM head and loss: everything under the fused `LinearCrossEntropy` (forward and backward);
- the optimizer: everything under `Optimizer.step`;
- attention core: scaled-dot-product attention kernels, forward and backward;
- LoRA matmuls: matmuls with the LoRA rank as a dimension;
- MLP matmuls and attention projections: the frozen weights' matmuls, by their shapes;
- elementwise and the rest: norms, rotary, SiLU, residual adds, casts, autograd bookkeeping.

Matmul blocks report achieved GFLOP/s (the profiler's FLOP counts over their time) beside the
2048^3 matmul peak of the same dtype, measured in the same run.

    .venv/bin/python bench/profile_train.py [--precision auto|fp32|bf16] [--steps 2] [--compile]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import train as bench_train  # bench/train.py: the same config and data

BLOCKS = (
    "attention core (sdpa)",
    "attention projections",
    "MLP matmuls",
    "LoRA matmuls",
    "LM head + loss",
    "elementwise + other",
    "optimizer",
)
_MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def matmul_peak(dtype: Any) -> float:
    import torch

    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    for _ in range(2):
        a @ b
    start, n = time.perf_counter(), 8
    for _ in range(n):
        a @ b
    return 2 * 2048**3 * n / (time.perf_counter() - start) / 1e9


def block_of(event: Any, dims: dict[str, int]) -> str:
    """The block an op's own time belongs to (see the module docstring)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("LinearCrossEntropy"):
            return "LM head + loss"
        if parent.name.startswith("Optimizer.step"):
            return "optimizer"
        parent = parent.cpu_parent
    name = event.name
    if event.name.startswith("LinearCrossEntropy"):
        return "LM head + loss"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention core (sdpa)"
    if name in _MATMULS:
        shape_dims = {d for shape in event.input_shapes for d in shape}
        if dims["r"] in shape_dims:
            return "LoRA matmuls"
        if dims["intermediate"] in shape_dims:
            return "MLP matmuls"
        return "attention projections"
    return "elementwise + other"


def profile(precision: str, steps: int, compiled: bool) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from instructune.models import apply_method, load_tokenizer, resolve_dtype
    from instructune.models.logprobs import causal_lm_parts, trained_hidden
    from instructune.models.losses import chunked_token_losses
    from instructune.training.objectives import datasets, load_for_objective, prepare_data

    cfg = bench_train._config(steps, str(bench_train.WORK / "profile"), precision=precision)
    tokenizer = load_tokenizer(cfg.model)
    train_set, _ = datasets(prepare_data(cfg, tokenizer))
    dtype = resolve_dtype(cfg.train.precision, cfg.model.dtype)
    model = load_for_objective(cfg, dtype, tokenizer)
    model = apply_method(model, cfg.method, cfg.lora, False, cfg, tokenizer)
    if compiled:
        from instructune.training.compile import compile_layers

        compile_layers(model)
    collate = train_set.collator(tokenizer.pad_token_id)
    size = cfg.train.micro_batch_size
    batches = [collate([train_set[i * size + j] for j in range(size)]) for i in range(steps + 1)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    _, head = causal_lm_parts(model)
    model.train()

    def step(batch: dict[str, Any]) -> None:
        hidden, targets = trained_hidden(model, batch)
        losses = chunked_token_losses(head, hidden, targets, cfg.train.loss_chunk_size)
        (losses.sum() / max(targets.numel(), 1)).backward()
        optimizer.step()
        optimizer.zero_grad()

    step(batches[0])  # warm-up: first-call allocations, kernel choices, compilation
    with torch_profile(
        activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True
    ) as prof:
        start = time.perf_counter()
        for batch in batches[1:]:
            step(batch)
        wall = (time.perf_counter() - start) / steps
    config = model.get_base_model().config
    dims = {"r": cfg.lora.r, "intermediate": config.intermediate_size}
    seconds: dict[str, float] = defaultdict(float)
    flops: dict[str, float] = defaultdict(float)
    for event in prof.events():
        block = block_of(event, dims)
        seconds[block] += event.self_cpu_time_total / 1e6 / steps
        if event.name in _MATMULS:
            flops[block] += (event.flops or 0) / steps
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "step_s": wall,
        "seconds": dict(seconds),
        "flops": dict(flops),
        "peak_gflops": matmul_peak(dtype),
        "threads": torch.get_num_threads(),
        "compiled": compiled,
    }


def table(result: dict[str, Any]) -> str:
    total = sum(result["seconds"].values())
    peak = result["peak_gflops"]
    kind = result["dtype"] + (" compiled" if result["compiled"] else "")
    lines = [
        f"{kind}: {result['step_s']:.2f} s/step "
        f"(profiled: {total:.2f} s of op time), "
        f"matmul peak {peak:.0f} GFLOP/s, {result['threads']} threads",
        "",
        "| block | s/step | share | GFLOP/s | of peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for block in BLOCKS:
        s = result["seconds"].get(block, 0.0)
        f = result["flops"].get(block, 0.0)
        rate = f"{f / s / 1e9:.0f}" if f and s else ""
        share = f"{f / s / 1e9 / peak:.0%}" if f and s else ""
        lines.append(f"| {block} | {s:.3f} | {s / total:.0%} | {rate} | {share} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="compile the decoder layers first")
    args = parser.parse_args()
    print(table(profile(args.precision, args.steps, args.compile)))


if __name__ == "__main__":
    main()
