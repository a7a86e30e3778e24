"""Benchmark: classification by option scoring vs generate-and-parse, on the same items.

Uses the embedded model (smollm2-135m-instruct) and the demo test set `data/promises/test.jsonl`
(alpaca rows, label True/False, OPTIONS clause) — or a small in-script set when that file is
missing. Three methods, on the same items:

- `score`: `instructune.evaluation.scoring.classify` (all options of several items in one
  right-padded batch, option + end-of-turn scored);
- `score_kv`: the same scores computed by running each prompt once and reusing its KV cache for
  the K options (the alternative design, measured here);
- `generate`: greedy generation of a few tokens with the same prompt, parsed to the first option
  the output starts with (`invalid` otherwise).

The methods run interleaved in one process (A B C A B C ...) so that load from other processes on
the machine hits them alike; reported: median wall and CPU seconds, examples/s, accuracy, agreement
with `score`, unparseable outputs, and the peak RSS a method adds above the loaded model.

    .venv/bin/python bench/eval.py [--n 101] [--batch-size 8] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
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


class PeakRss:
    """Peak RSS (MB) above the level at entry, sampled every 5 ms in a thread."""

    def __enter__(self) -> PeakRss:
        import psutil

        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


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


def run_method(method: str, model: Any, tok: Any, template: Any, items: list[Any], bs: int) -> Any:
    if method == "score":
        from instructune.evaluation.scoring import classify, score_options

        return classify(items, score_options(model, tok, template, items, bs)).predictions
    if method == "score_kv":
        return _score_kv(model, tok, template, items)
    return _generate_and_parse(model, tok, template, items, bs)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved repeats (A B C A B C ...) so machine load hits every method alike."""
    from instructune.evaluation.scoring import classification_items

    model, tok, template = _setup(args.threads)
    items = classification_items(_conversations(args.n))
    # Warm-up: the first forward of a process allocates ~the model's size again (oneDNN/MKL
    # buffers); without it that one-time cost would be charged to whichever method runs first.
    for method in args.methods:
        run_method(method, model, tok, template, items[:2], args.batch_size)
    runs: dict[str, dict[str, Any]] = {
        m: {"wall": [], "cpu": [], "extra_mb": 0.0} for m in args.methods
    }
    for _ in range(args.repeats):
        for method in args.methods:
            wall, cpu = time.perf_counter(), time.process_time()
            with PeakRss() as rss:
                preds = run_method(method, model, tok, template, items, args.batch_size)
            r = runs[method]
            r["wall"].append(time.perf_counter() - wall)
            r["cpu"].append(time.process_time() - cpu)
            r["extra_mb"] = max(r["extra_mb"], rss.extra_mb)
            r["predictions"] = preds
    for r in runs.values():
        r["median_wall_s"] = statistics.median(r["wall"])
        r["median_cpu_s"] = statistics.median(r["cpu"])
        r["examples_per_s"] = len(items) / r["median_wall_s"]
        r["accuracy"] = sum(
            p == it.label for p, it in zip(r["predictions"], items, strict=True)
        ) / len(items)
        r["invalid"] = sum(p == "invalid" for p in r["predictions"])
    return {
        "n": len(items),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "methods": runs,
        "model_rss_mb": _rss_mb(),
    }


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


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
    from instructune.config import EvalConfig
    from instructune.evaluation.generation import generate
    from instructune.inference.engine import Engine

    settings = EvalConfig(max_new_tokens=4, batch_size=batch_size)
    prompts = [template.render(it.prompt_messages, add_generation_prompt=True) for it in items]
    outs = generate(Engine(model, tok, template, max_batch_size=batch_size), prompts, settings)
    preds = []
    for item, out in zip(items, outs, strict=True):
        text = out.text.strip().casefold()
        hit = [o for o in item.options if text.startswith(o.casefold())]
        preds.append(hit[0] if hit else "invalid")
    return preds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=101)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["score", "score_kv", "generate"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "eval.json")
    args = parser.parse_args()
    result = measure(args)
    runs = result["methods"]
    reference = runs.get("score", {}).get("predictions")
    header = ("method", "ex/s", "wall s", "cpu s", "acc", "agree", "invalid", "+MB")
    print(f"n={result['n']} threads={args.threads} batch={args.batch_size} repeats={args.repeats}")
    print("{:<10} {:>6} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6}".format(*header))
    for method, r in runs.items():
        preds = r["predictions"]
        same = sum(a == b for a, b in zip(preds, reference or preds, strict=True))
        r["agreement_with_score"] = same / len(preds) if reference else None
        print(
            f"{method:<10} {r['examples_per_s']:>6.2f} {r['median_wall_s']:>7.1f} "
            f"{r['median_cpu_s']:>7.1f} {r['accuracy']:>6.3f} {same / len(preds):>6.3f} "
            f"{r['invalid']:>7} {r['extra_mb']:>6.0f}"
        )
    print(f"model loaded: RSS {result['model_rss_mb']:.0f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
