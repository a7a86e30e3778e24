"""Benchmark: classification by option scoring vs generate-and-parse, on the same items.

Uses the embedded model (smollm2-135m-instruct) and the demo test set `data/promises/test.jsonl`
(alpaca rows, label True/False, OPTIONS clause) — or a small in-script set when that file is
missing. Three methods, each in its own subprocess so its peak RSS is its own:

- `score`: `instructune.evaluation.scoring.classify` (all options of several items in one
  right-padded batch, option + end-of-turn scored);
- `score_kv`: the same scores computed by running each prompt once and reusing its KV cache for
  the K options (the alternative design, measured here);
- `generate`: greedy generation of a few tokens with the same prompt, parsed to the first option
  the output starts with (`invalid` otherwise).

Reports examples/s, accuracy, agreement with `score`, invalid outputs and peak RSS.

    .venv/bin/python bench/eval.py [--n 101] [--batch-size 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "promises" / "test.jsonl"
OPTIONS = "\n\nOPTIONS:\n- True\n- False"
FALLBACK = [
    ("We will hire 5,000 new nurses by 2027.", "True"),
    ("Our nation deserves a brighter future.", "False"),
    ("We will abolish tuition fees at public universities.", "True"),
    ("Unemployment will fall to 3% by 2030.", "False"),
    ("We will cut VAT on energy bills from 20% to 5%.", "True"),
    ("Why should families pay more for less?", "False"),
    ("We will ban fracking across the country.", "True"),
    ("The weather this winter will be kind to farmers.", "False"),
]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _conversations(n: int) -> list[Any]:
    from instructune.config import DataSource
    from instructune.data.conversation import Conversation, Message
    from instructune.data.loading import load_conversations

    if DATA.is_file():
        convs = load_conversations(DataSource(path=str(DATA), format="alpaca")).conversations
        return convs[:n]
    instruction = "Is this sentence a concrete promise the government can carry out?" + OPTIONS
    return [
        Conversation(
            [Message("user", f"{instruction}\n\n{s}"), Message("assistant", y)], f"x:{i}", y
        )
        for i, (s, y) in enumerate(FALLBACK)
    ][:n]


def _setup(threads: int) -> tuple[Any, Any, Any]:
    import torch

    from instructune.config import ModelConfig
    from instructune.data.templates import load_template
    from instructune.models import load_model, load_tokenizer

    torch.set_num_threads(threads)
    tok = load_tokenizer(ModelConfig())
    model = load_model(ModelConfig(), torch.float32, "full", None, for_training=False)
    return model, tok, load_template("chat", tok)


def worker(method: str, n: int, batch_size: int, threads: int) -> dict[str, Any]:
    from instructune.evaluation.scoring import classification_items

    model, tok, template = _setup(threads)
    items = classification_items(_conversations(n))
    rss_before = _peak_rss_mb()
    start = time.perf_counter()
    if method == "score":
        from instructune.evaluation.scoring import classify

        preds = classify(model, tok, template, items, batch_size).predictions
    elif method == "score_kv":
        preds = _score_kv(model, tok, template, items)
    else:
        preds = _generate_and_parse(model, tok, template, items, batch_size)
    elapsed = time.perf_counter() - start
    return {
        "method": method,
        "n": len(items),
        "seconds": elapsed,
        "examples_per_s": len(items) / elapsed,
        "accuracy": sum(p == it.label for p, it in zip(preds, items, strict=True)) / len(items),
        "invalid": sum(p == "invalid" for p in preds),
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_mb": rss_before,
        "predictions": preds,
    }


def _score_kv(model: Any, tok: Any, template: Any, items: list[Any]) -> list[str]:
    """One prompt forward per item, its KV cache repeated for the K option continuations."""
    import torch

    from instructune.evaluation.scoring import option_requests

    preds = []
    with torch.inference_mode():
        for item, requests in zip(items, option_requests(items, template, tok), strict=True):
            n_prompt = next(i for i, lab in enumerate(requests[0][1]) if lab != -100)
            prompt = torch.tensor([requests[0][0][:n_prompt]])
            out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            conts = [ids[n_prompt:] for ids, _ in requests]
            width = max(len(c) for c in conts)
            k = len(conts)
            ids = torch.full((k, width), tok.pad_token_id or 0)
            for j, c in enumerate(conts):
                ids[j, : len(c)] = torch.tensor(c)
            cache = out.past_key_values
            cache.batch_repeat_interleave(k)
            mask = torch.ones((k, n_prompt + width), dtype=torch.long)
            logits = model(input_ids=ids, past_key_values=cache, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits, -1)
            scores = []
            for j, c in enumerate(conts):
                s = first[c[0]] + sum(logp[j, t - 1, c[t]] for t in range(1, len(c)))
                scores.append(float(s))
            preds.append(item.options[max(range(k), key=scores.__getitem__)])
    return preds


def _generate_and_parse(
    model: Any, tok: Any, template: Any, items: list[Any], batch_size: int
) -> list[str]:
    from instructune.evaluation.generation import GenerationSettings, generate, stop_token_ids

    settings = GenerationSettings(max_new_tokens=4, batch_size=batch_size)
    prompts = [template.render(it.prompt_messages, add_generation_prompt=True) for it in items]
    outs = generate(model, tok, prompts, settings, stop_token_ids(template, tok))
    preds = []
    for item, out in zip(items, outs, strict=True):
        text = out.text.strip().casefold()
        hit = [o for o in item.options if text.startswith(o.casefold())]
        preds.append(hit[0] if hit else "invalid")
    return preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=101)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["score", "score_kv", "generate"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "eval.json")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.batch_size, args.threads)))
        return
    results = {}
    for method in args.methods:
        cmd = [sys.executable, __file__, "--worker", method, "--n", str(args.n)]
        cmd += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[method] = json.loads(done.stdout.strip().splitlines()[-1])
    reference = results.get("score", {}).get("predictions")
    print(
        f"{'method':<10} {'n':>4} {'ex/s':>7} {'acc':>6} {'agree':>6} {'invalid':>7} {'peak MB':>8}"
    )
    for method, r in results.items():
        preds = r["predictions"]
        agree = (
            sum(a == b for a, b in zip(preds, reference, strict=True)) / len(preds)
            if reference
            else float("nan")
        )
        r["agreement_with_score"] = agree
        print(
            f"{method:<10} {r['n']:>4} {r['examples_per_s']:>7.2f} {r['accuracy']:>6.3f} "
            f"{agree:>6.3f} {r['invalid']:>7} {r['peak_rss_mb']:>8.0f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
