"""Benchmark: SFT of 0.5B-8B shapes on one GPU, ours vs TRL SFTTrainer (+ Liger), same run.

Random-weight models built from the published configs of Qwen2.5-0.5B, Llama-3.2-1B/3B and
Llama-3.1-8B (`SHAPES`; nothing is downloaded), trained with LoRA (r 16 on every linear layer),
QLoRA (4-bit NF4) and full fine-tuning where the GPU's memory allows, on packed `--seq-len`
rows (2,048) of `alpaca_gpt4_1k.json` (the last 50 rows held out). Per run: steady tokens/s
(after the first step, which carries compilation), MFU against the GPU's bf16 dense peak
(`PEAK_TFLOPS`), peak GPU memory, the training loss at the last step and a held-out loss computed
by the same function for both sides. Each side runs in its own process.

Tokens: a byte-level BPE learned in-process from the training rows (`tests/tiny.py`,
vocabulary `TOKENIZER_VOCAB`, ChatML template). It is the same on every machine and needs no
files; throughput depends on the model's shapes, not on which ids the tokens have, and every id
is below every model's vocabulary, so the embedding and the LM head keep their real sizes (the
LM head of a 128k vocabulary is a real share of the step). Both sides get the same tokenizer.

TRL runs its best settings: bf16, packing (best-fit decreasing) with padding-free batches,
completion-only loss, `use_liger_kernel=True` when liger_kernel is installed, its own chunked
LM head, and varlen attention: flash_attention_2 when flash_attn is installed, else the same
torch flash varlen kernel ours uses (`training/varlen.py`), so attention is not what differs.
Both sides get the same gradient-checkpointing decision (`plan_run`: only where the activations
would not fit), optimizer (AdamW), constant learning rate and steps.

    python bench/gpu.py [--shapes all|qwen2.5-0.5b,llama-3.2-1b,...] [--methods lora,qlora,full]
                        [--steps 10] [--seq-len 2048] [--micro-batch 4] [--out DIR]
    python bench/gpu.py --tiny      # a tiny shape on CPU in seconds: exercises everything
    python bench/gpu.py --carry-plan  # the pip pins a bare GPU machine needs

On a lent GPU machine (the `run` tool; it has torch + CUDA but maybe nothing else, and no
network): here, `python bench/gpu.py --carry-plan` prints the packages and a `pip download`
command filling `.gpu-wheels/` (pure-Python wheels; liger-kernel 0.8.5 is 0.9 MB, the whole
set must stay under the 64 MiB carry limit: leave out what `pip list` there already has). Then:
`run(command="pip install --no-deps .gpu-wheels/*.whl && pip install --no-deps -e . &&
python bench/gpu.py --out $OUT", carry=[".gpu-wheels"])`. QLoRA needs bitsandbytes' CUDA
wheel (too large to carry; skipped with the reason when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import common  # bench/common.py: this script's own folder is on sys.path
import gpu_report

ROOT = Path(__file__).resolve().parents[1]
DATA_NAME = Path("data") / "alpaca" / "alpaca_gpt4_1k.json"
# the checkout's shared/ (as the device machine gets it), ../shared, or beside a worktrees folder
DATA_CANDIDATES = [p / "shared" / DATA_NAME for p in (ROOT, ROOT.parent, ROOT.parents[1])]
WORK = Path(os.environ.get("INSTRUCTUNE_BENCH_DIR", "/tmp/instructune-bench-gpu"))
LR = 2e-4
LORA_R, LORA_ALPHA = 16, 32
TOKENIZER_VOCAB = 32768

_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
SHAPES: dict[str, dict[str, Any]] = {
    # the published config.json values (model_type, widths, heads, vocabulary, rope, tying)
    "qwen2.5-0.5b": {
        "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "vocab_size": 151936, "rope_theta": 1_000_000.0, "tie_word_embeddings": True,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
    },
    "llama-3.2-1b": {
        "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "vocab_size": 128256, "rope_theta": 500_000.0,
        "tie_word_embeddings": True, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
        "rope_scaling": _LLAMA3_ROPE | {"factor": 32.0},
    },
    "llama-3.2-3b": {
        "model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256, "rope_theta": 500_000.0,
        "tie_word_embeddings": True, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
        "rope_scaling": _LLAMA3_ROPE | {"factor": 32.0},
    },
    "llama-3.1-8b": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256, "rope_theta": 500_000.0,
        "tie_word_embeddings": False, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
        "rope_scaling": _LLAMA3_ROPE | {"factor": 8.0},
    },
    # --tiny: seconds on a CPU, the same code path end to end
    "tiny": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 1024, "rope_theta": 10_000.0, "tie_word_embeddings": False,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
    },
}  # fmt: skip
METHODS = ("lora", "qlora", "full")
# `--shapes all`: the goal shapes (1B, 8B) first, so the time budget cuts the others
DEFAULT_ORDER = ("llama-3.2-1b", "llama-3.1-8b", "qwen2.5-0.5b", "llama-3.2-3b")


def data_file(explicit: str | None) -> Path:
    for path in [Path(explicit)] if explicit else DATA_CANDIDATES:
        if path.is_file():
            return path
    raise SystemExit(f"alpaca_gpt4_1k.json not found (looked in {DATA_CANDIDATES}); use --data")


def split_files(data: Path, n_train: int | None, n_eval: int) -> tuple[Path, Path]:
    rows = json.loads(data.read_text(encoding="utf-8"))
    train, held = rows[:-n_eval], rows[-n_eval:]
    train = train[:n_train] if n_train else train
    WORK.mkdir(parents=True, exist_ok=True)
    paths = WORK / "train.jsonl", WORK / "eval.jsonl"
    for path, part in zip(paths, (train, held), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return paths


def build_tokenizer(train: Path, vocab: int) -> Path:
    """The byte-level BPE learned from the training rows, saved where workers load it."""
    sys.path.insert(0, str(ROOT))  # the tests' in-process tokenizer builder: tests/tiny.py
    from tests.tiny import tiny_tokenizer

    rows = [json.loads(line) for line in train.read_text(encoding="utf-8").splitlines()]
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in rows]
    folder = WORK / f"tokenizer-{vocab}"
    tiny_tokenizer(vocab, corpus=texts).save_pretrained(folder)
    return folder


def model_config(shape: str) -> Any:
    from transformers import AutoConfig

    values = dict(SHAPES[shape])
    return AutoConfig.for_model(values.pop("model_type"), **values)


def build_model(shape: str, tokenizer: Path) -> Path:
    """A random-weight bf16 model of `shape` saved with the tokenizer (reused when present)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = WORK / "models" / shape
    if (folder / "model.safetensors.index.json").is_file() or (
        folder / "model.safetensors"
    ).is_file():
        return folder
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config(shape), dtype=torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(folder)
    return folder


def matmul_params(shape: str) -> int:
    """Parameters in the linear layers and the LM head: what the step's matmuls multiply by."""
    s = SHAPES[shape]
    h, inter = s["hidden_size"], s["intermediate_size"]
    head_dim = s.get("head_dim", h // s["num_attention_heads"])
    q = s["num_attention_heads"] * head_dim
    kv = s["num_key_value_heads"] * head_dim
    layer = h * q + 2 * h * kv + q * h + 3 * h * inter
    return int(s["num_hidden_layers"] * layer + h * s["vocab_size"])


def flops_per_token(shape: str, method: str) -> float:
    """2 FLOPs per multiply-add: forward + input gradients (4P) for adapters, + weight gradients
    (6P) for full fine-tuning. Attention scores are not counted, so MFU is a lower bound."""
    return (6 if method == "full" else 4) * matmul_params(shape)


def plan_run(shape: str, method: str, tokens: int, gpu_bytes: int | None) -> dict[str, Any]:
    """Whether `method` fits, and with or without gradient checkpointing (estimated bytes).

    Weights: bf16, or NF4 (~0.56 byte) for QLoRA's linear layers. Full fine-tuning adds bf16
    gradients and AdamW's two fp32 moments (10 bytes a parameter). Activations: ~34 bytes per
    token, layer and hidden unit without checkpointing (Korthikanti et al., flash attention), and
    the layer inputs plus one layer's worth with it.
    """
    s = SHAPES[shape]
    h, layers, vocab = s["hidden_size"], s["num_hidden_layers"], s["vocab_size"]
    embed = h * vocab * (1 if s["tie_word_embeddings"] else 2)
    linear = matmul_params(shape) - h * vocab
    weights = (0.5625 * linear + 2 * embed) if method == "qlora" else 2 * (linear + embed)
    state = 10 * (linear + embed) if method == "full" else 0
    static = weights + state
    act_full = 34 * tokens * layers * h
    act_ckpt = 2 * tokens * layers * h + 34 * tokens * h
    out: dict[str, Any] = {"estimated_gb": round((static + act_full) / 1e9, 1)}
    if gpu_bytes is None:  # CPU (--tiny): no checkpointing, nothing to skip
        return out | {"checkpointing": False, "skip": None}
    if static + act_full <= 0.85 * gpu_bytes:
        return out | {"checkpointing": False, "skip": None}
    out["estimated_gb"] = round((static + act_ckpt) / 1e9, 1)
    if static + act_ckpt <= 0.9 * gpu_bytes:
        return out | {"checkpointing": True, "skip": None}
    need = (static + act_ckpt) / 1e9
    return out | {"checkpointing": True, "skip": f"needs ~{need:.0f} GB"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--shapes", default="all", help=f"all or some of {list(SHAPES)[:-1]}")
    parser.add_argument("--methods", default="lora,qlora,full")
    parser.add_argument("--sides", default="ours,trl")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no run after this")
    parser.add_argument("--data", help="alpaca_gpt4_1k.json (default: ../shared/data/alpaca/)")
    parser.add_argument("--out", default=str(WORK), help="where results.json/.md go")
    parser.add_argument("--tiny", action="store_true", help="the tiny shape on CPU, 3 steps")
    parser.add_argument("--carry-plan", action="store_true", help="print what a GPU box needs")
    args = parser.parse_args()
    if args.worker:
        import gpu_workers

        print(json.dumps(gpu_workers.run(json.loads(args.worker))))
        return
    if args.carry_plan:
        gpu_report.print_carry_plan()
        return
    if args.tiny:
        args.shapes, args.seq_len, args.micro_batch = "tiny", 256, 2
        args.steps = min(args.steps, 3)
    shapes = list(DEFAULT_ORDER) if args.shapes == "all" else args.shapes.split(",")
    for name in shapes:
        if name not in SHAPES:
            raise SystemExit(f"--shapes: unknown {name!r}; known: {', '.join(SHAPES)}")
    bad = set(args.methods.split(",")) - set(METHODS)
    if bad:
        raise SystemExit(f"--methods: unknown {sorted(bad)}; known: {', '.join(METHODS)}")
    run_all(args, shapes)


def run_all(args: argparse.Namespace, shapes: list[str]) -> None:
    start = time.perf_counter()
    env = gpu_report.environment()
    print(gpu_report.describe_environment(env))
    n_train, n_eval = (80, 8) if args.tiny else (None, 50)
    train, held = split_files(data_file(args.data), n_train, n_eval)
    vocab = SHAPES["tiny"]["vocab_size"] if args.tiny else TOKENIZER_VOCAB
    tokenizer = build_tokenizer(train, vocab)
    tokens = args.seq_len * args.micro_batch
    settings = {
        "steps": args.steps, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
        "tokens_per_step": tokens, "learning_rate": LR, "lora_r": LORA_R, "lora_alpha": LORA_ALPHA,
        "lora_targets": "all-linear", "precision": "fp32" if args.tiny else "bf16",
        "tokenizer": f"byte-level BPE learned from the training rows, vocab {vocab}",
    }  # fmt: skip
    print("settings:", json.dumps(settings))
    runs: list[dict[str, Any]] = []
    folders: dict[str, Path] = {}
    # method-major, in the order given: with the time budget, the first rows are the ones that run
    for method in args.methods.split(","):
        for shape in shapes:
            plan = plan_run(shape, method, tokens, env.get("gpu_memory_bytes"))
            skip = _skip_reason(plan, method, env, time.perf_counter() - start, args.budget_s)
            base = {"shape": shape, "method": method, "estimated_gb": plan["estimated_gb"]}
            if skip is not None:
                runs += [base | {"side": side, "skipped": skip} for side in args.sides.split(",")]
                continue
            if shape not in folders:
                folders[shape] = _build(shape, tokenizer)
            spec = {
                "shape": shape, "method": method, "folder": str(folders[shape]),
                "train": str(train), "eval": str(held), "tiny": args.tiny,
                "checkpointing": plan["checkpointing"],
                **{k: settings[k] for k in ("steps", "seq_len", "micro_batch")},
            }  # fmt: skip
            for side in args.sides.split(","):
                result = _run_side(side, spec)
                flops = flops_per_token(shape, method)
                runs.append(base | result | gpu_report.utilization(result, flops, env))
                print(gpu_report.one_line(runs[-1]), flush=True)
    out = {"environment": env, "settings": settings, "runs": runs}
    gpu_report.write(Path(args.out), out)
    print(gpu_report.markdown(out))


def _skip_reason(
    plan: dict[str, Any], method: str, env: dict[str, Any], elapsed: float, budget: float
) -> str | None:
    if plan["skip"] is not None:
        return str(plan["skip"])
    if method == "qlora" and not env["bitsandbytes"]:
        return "bitsandbytes is not installed"
    if elapsed > budget:
        return f"time budget ({budget:.0f} s) spent"
    return None


def _build(shape: str, tokenizer: Path) -> Path:
    """The random model's folder; built in a process of its own so the GPU memory it held is
    free before the runs (on CPU, here)."""
    import torch

    if not torch.cuda.is_available():
        return build_model(shape, tokenizer)
    result = common.run_worker(
        __file__,
        ["--worker", json.dumps({"side": "build", "shape": shape, "tokenizer": str(tokenizer)})],
        "build",
    )
    return Path(result["folder"])


def _run_side(side: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One side in its own process; a failure (out of memory, a missing kernel) is a table row."""
    start = time.perf_counter()
    try:
        result = common.run_worker(__file__, ["--worker", json.dumps(spec | {"side": side})], side)
    except RuntimeError as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        result = {"side": side, "error": lines[-1][:300] if lines else "failed"}
    return result | {"wall_s": time.perf_counter() - start}  # process, load, compile, steps


if __name__ == "__main__":
    sys.exit(main())
