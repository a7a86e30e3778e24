"""Benchmark: synthesize's ROUGE-L novelty filter, and the local backend's batched generation.

1. **Novelty filter.** The Self-Instruct rule (drop an instruction whose ROUGE-L F against any pool
   instruction is > 0.7, else add it to the pool) over a stream of Alpaca instructions from
   `../shared/data/alpaca/alpaca_5000.json` plus perturbed copies (words dropped, swapped or
   replaced; light perturbations are near-duplicates the filter must drop), until the pool holds
   `--pool` instructions. Ours (`NoveltyIndex`) runs the whole stream; the straightforward
   reference (`rouge_score.RougeScorer(["rougeL"]).score` against every pool entry, as
   Self-Instruct's code does) runs the same stream in the same process until `--ref-seconds` run
   out, and its time for the whole stream is extrapolated from its time per pair scored (its cost
   per pair does not depend on the pool size). It is also timed on a few candidates against the
   final, full pool. Every decision and max score the reference made must equal ours.
2. **Local backend.** The embedded model generating answers to `--prompts` instructions, all handed
   to the backend at once (engine batch of `--batch-size`) versus one request at a time, greedy,
   `--max-tokens` each: generated tokens/s.

    .venv/bin/python bench/synthesize.py [--part novelty|local|all] [--pool 10000]
        [--ref-seconds 60] [--prompts 16] [--batch-size 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_5000.json"
THRESHOLD = 0.7


def _perturb(text: str, rng: random.Random, vocab: list[str]) -> str:
    words = text.split()
    strength = rng.choice([0.1, 0.2, 0.4, 0.6, 0.8])
    for _ in range(max(1, int(len(words) * strength))):
        op = rng.randrange(3)
        i = rng.randrange(len(words))
        if op == 0 and len(words) > 3:
            del words[i]
        elif op == 1:
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        else:
            words[i] = rng.choice(vocab)
    return " ".join(words)


def candidate_stream(seed: int = 0) -> list[str]:
    originals = [r["instruction"] for r in json.loads(DATA.read_text(encoding="utf-8"))]
    rng = random.Random(seed)
    vocab = sorted({w for t in originals for w in t.split()})
    stream = list(originals)
    for _ in range(3):
        stream += [_perturb(t, rng, vocab) for t in originals]
    rng.shuffle(stream)
    return stream


def run_ours(stream: list[str], pool_target: int) -> dict[str, Any]:
    from instructune.synthesis.novelty import NoveltyIndex

    index = NoveltyIndex(top_k=1)
    decisions: list[tuple[bool, float]] = []
    pairs = 0
    start = time.perf_counter()
    for text in stream:
        if len(index) >= pool_target:
            break
        pairs += len(index)
        novel, check = index.admit(text, THRESHOLD)
        decisions.append((novel, check.max_score))
    seconds = time.perf_counter() - start
    return {"decisions": decisions, "seconds": seconds, "pairs": pairs, "index": index}


def run_reference(stream: list[str], budget_s: float) -> dict[str, Any]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool: list[str] = []
    decisions: list[tuple[bool, float]] = []
    pairs = 0
    start = time.perf_counter()
    for text in stream:
        if time.perf_counter() - start > budget_s:
            break
        scores = [scorer.score(p, text)["rougeL"].fmeasure for p in pool]
        pairs += len(pool)
        best = max(scores, default=0.0)
        decisions.append((best <= THRESHOLD, best))
        if best <= THRESHOLD:
            pool.append(text)
    return {"decisions": decisions, "seconds": time.perf_counter() - start, "pairs": pairs}


def at_full_pool(index: Any, probes: list[str]) -> dict[str, Any]:
    """Both methods on a few new candidates against the final pool (no admission)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    start = time.perf_counter()
    ref = [max(scorer.score(p, t)["rougeL"].fmeasure for p in index.texts) for t in probes]
    ref_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = [index.check(t, top_k=1).max_score for t in probes]
    ours_s = time.perf_counter() - start
    return {
        "identical": ref == ours,
        "ref_per_s": len(probes) / ref_s,
        "ours_per_s": len(probes) / ours_s,
    }


def bench_novelty(pool_target: int, ref_seconds: float) -> dict[str, Any]:
    stream = candidate_stream()
    ours = run_ours(stream, pool_target)
    ref = run_reference(stream, ref_seconds)
    n_ref = len(ref["decisions"])
    identical = ref["decisions"] == ours["decisions"][:n_ref]
    ref_full_s = ref["seconds"] / max(ref["pairs"], 1) * ours["pairs"]
    probes = [_perturb(t, random.Random(i), t.split()) for i, t in enumerate(stream[-30:])]
    full = at_full_pool(ours["index"], probes)
    n = len(ours["decisions"])
    return {
        "candidates": n,
        "final_pool": len(ours["index"]),
        "kept": sum(d for d, _ in ours["decisions"]),
        "pairs": ours["pairs"],
        "ours_s": round(ours["seconds"], 2),
        "ours_instr_per_s": round(n / ours["seconds"], 1),
        "reference_candidates_run": n_ref,
        "reference_s": round(ref["seconds"], 2),
        "reference_full_s_extrapolated": round(ref_full_s, 1),
        "reference_instr_per_s_extrapolated": round(n / ref_full_s, 2),
        "speedup": round(ref_full_s / ours["seconds"], 1),
        "decisions_identical_on_reference_prefix": identical,
        "at_full_pool": {k: round(v, 2) if isinstance(v, float) else v for k, v in full.items()},
    }


def bench_local(prompts: int, batch_size: int, max_tokens: int) -> dict[str, Any]:
    from instructune.bundle import load_bundle
    from instructune.config.synthesize import SynthBackendConfig
    from instructune.inference.engine import Engine
    from instructune.inference.sampling import SamplingParams
    from instructune.synthesis.backends import Request
    from instructune.synthesis.local_backend import LocalBackend

    rows = json.loads(DATA.read_text(encoding="utf-8"))[:prompts]
    requests = [Request(r["instruction"], SamplingParams(max_tokens)) for r in rows]
    bundle = load_bundle("smollm2-135m-instruct")
    cfg = SynthBackendConfig(batch_size=batch_size)
    batched = LocalBackend(cfg, Engine.from_bundle(bundle, max_batch_size=batch_size))
    single = LocalBackend(cfg, Engine.from_bundle(bundle, max_batch_size=1))
    next(iter(single.complete([requests[0]])))  # warm-up
    totals = {"one_at_a_time": [0, 0.0], "batched": [0, 0.0]}
    # Interleaved group by group (alternating which goes first) so that load from other processes
    # on a shared machine falls on both modes alike.
    for g, start in enumerate(range(0, len(requests), batch_size)):
        group = requests[start : start + batch_size]
        runs = [("one_at_a_time", single, [[r] for r in group]), ("batched", batched, [group])]
        for name, backend, calls in runs if g % 2 == 0 else runs[::-1]:
            began = time.perf_counter()
            tokens = sum(resp.completion_tokens for c in calls for _, resp in backend.complete(c))
            totals[name][0] += tokens
            totals[name][1] += time.perf_counter() - began
    out: dict[str, Any] = {
        name: {"tokens": t, "seconds": round(s, 2), "tok_per_s": round(t / s, 1)}
        for name, (t, s) in totals.items()
    }
    out["speedup"] = round(out["batched"]["tok_per_s"] / out["one_at_a_time"]["tok_per_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["novelty", "local", "all"], default="all")
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--ref-seconds", type=float, default=60.0)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.part in ("novelty", "all"):
        results["novelty"] = bench_novelty(args.pool, args.ref_seconds)
        print(json.dumps({"novelty": results["novelty"]}, indent=2), flush=True)
    if args.part in ("local", "all"):
        results["local"] = bench_local(args.prompts, args.batch_size, args.max_tokens)
        print(json.dumps({"local": results["local"]}, indent=2), flush=True)


if __name__ == "__main__":
    main()
