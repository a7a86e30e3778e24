"""Benchmark: dataset preparation throughput, packing efficiency and memory, ours vs TRL.

Prepares `../shared/data/alpaca/alpaca_5000.json` (and the same rows ×10) with the embedded model's
tokenizer and chat template, and in the same run TRL's `SFTTrainer` dataset preparation (tokenize +
completion mask + packing, `completion_only_loss=True`, BFD packing) on the same rows and tokenizer.
Each measurement runs in its own subprocess so peak RSS is its own.

    .venv/bin/python bench/prepare.py [--scales 1 10] [--max-lengths 512 2048]

Dedup is off on our side here: the ×10 rows are exact repeats, which our pipeline would otherwise
(correctly) drop, and TRL does no dedup.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import common  # bench/common.py: this script's own folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_5000.json"


def _rows(scale: int) -> list[dict[str, str]]:
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    return rows * scale


def worker_ours(scale: int, max_length: int) -> dict[str, Any]:
    from instructune.config import DataConfig, DataSource, ModelConfig
    from instructune.data.pipeline import prepare_dataset
    from instructune.models import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig())
    path = Path(f"/tmp/instructune-bench-alpaca-x{scale}.jsonl")
    if not path.exists():
        with path.open("w", encoding="utf-8") as fh:
            for row in _rows(scale):
                fh.write(json.dumps(row) + "\n")
    cfg = DataConfig(
        train=[DataSource(path=str(path), format="alpaca")],
        template="chat",
        max_length=max_length,
        packing=True,
        dedup=False,
        # The Alpaca subset has rows with empty outputs: we skip and count them; TRL keeps them.
        on_error="skip",
    )
    base_rss = common.peak_rss_mb()
    start = time.perf_counter()
    prepared = prepare_dataset(cfg, tokenizer)
    elapsed = time.perf_counter() - start
    stats = prepared.stats["train"]
    return {
        "side": "instructune",
        "rows": scale * 5000,
        "kept": stats.examples,
        "dropped": dict(prepared.dropped)
        | {k: v for s in prepared.sources for k, v in s.dropped.items()},
        "seconds": elapsed,
        "rows_per_s": scale * 5000 / elapsed,
        "tokens": stats.tokens,
        "trained_tokens": stats.trained_tokens,
        "packing_efficiency": stats.packing_efficiency,
        "peak_rss_mb": common.peak_rss_mb(),
        "rss_before_mb": base_rss,
    }


def worker_trl(scale: int, max_length: int) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from instructune.config import ModelConfig
    from instructune.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(ModelConfig())
    model = load_model(
        ModelConfig(), dtype=None, method="full", quantization=None, for_training=True
    )
    args = SFTConfig(
        output_dir="/tmp/instructune-bench-trl",
        max_length=max_length,
        packing=True,
        completion_only_loss=True,
        report_to=[],
        dataset_num_proc=None,
        bf16=False,  # preparation only; TRL's default bf16=True refuses a CPU without bf16
        use_cpu=True,
    )

    def convert(row: dict[str, str]) -> dict[str, Any]:
        user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        return {
            "prompt": [{"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": row["output"]}],
        }

    tiny = Dataset.from_list([convert(r) for r in _rows(1)[:8]])
    trainer = SFTTrainer(model=model, args=args, train_dataset=tiny, processing_class=tokenizer)
    rows = _rows(scale)
    base_rss = common.peak_rss_mb()
    start = time.perf_counter()
    # Conversion to TRL's conversational prompt-completion shape is part of its preparation.
    dataset = Dataset.from_list([convert(r) for r in rows])
    prepared = trainer._prepare_dataset(dataset, tokenizer, args, True, None, "bench")
    elapsed = time.perf_counter() - start
    tokens = sum(len(x) for x in prepared["input_ids"])
    trained = sum(sum(1 for t in lab if t != -100) for lab in prepared["labels"])
    return {
        "side": "trl",
        "rows": len(rows),
        "seconds": elapsed,
        "rows_per_s": len(rows) / elapsed,
        "tokens": tokens,
        "trained_tokens": trained,
        "packing_efficiency": tokens / (len(prepared) * max_length),
        "peak_rss_mb": common.peak_rss_mb(),
        "rss_before_mb": base_rss,
    }


def run_worker(side: str, scale: int, max_length: int) -> dict[str, Any]:
    args = ["--worker", side, "--scale", str(scale), "--max-length", str(max_length)]
    env = {"TOKENIZERS_PARALLELISM": "true"}
    return common.run_worker(__file__, args, f"{side} x{scale}", env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=["ours", "trl"])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--skip-trl-scaled", action="store_true", help="TRL only at scale 1")
    args = parser.parse_args()
    if args.worker:
        fn = worker_ours if args.worker == "ours" else worker_trl
        print(json.dumps(fn(args.scale, args.max_length)))
        return
    results = []
    for scale in args.scales:
        for max_length in args.max_lengths:
            ours = run_worker("ours", scale, max_length)
            ours.update(scale=scale, max_length=max_length)
            results.append(ours)
            if scale == 1 or not args.skip_trl_scaled:
                trl = run_worker("trl", scale, max_length)
                trl.update(scale=scale, max_length=max_length)
                results.append(trl)
                ours["speedup_vs_trl"] = ours["rows_per_s"] / trl["rows_per_s"]
                ours["rss_ratio_vs_trl"] = ours["peak_rss_mb"] / trl["peak_rss_mb"]
            print(json.dumps(ours), flush=True)
    print()
    print(f"{'side':<12}{'scale':>6}{'maxlen':>7}{'rows/s':>10}", end="")
    print(f"{'pack eff':>10}{'peak MB':>9}{'×TRL':>7}")
    for r in results:
        ratio = f"{r['speedup_vs_trl']:.2f}" if "speedup_vs_trl" in r else ""
        print(
            f"{r['side']:<12}{r['scale']:>6}{r['max_length']:>7}{r['rows_per_s']:>10.0f}"
            f"{r['packing_efficiency']:>10.2%}{r['peak_rss_mb']:>9.0f}{ratio:>7}"
        )


if __name__ == "__main__":
    main()
