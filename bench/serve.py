"""Benchmark: `instructune serve` under 8 concurrent clients vs plain `transformers.generate`.

The embedded model (smollm2-135m-instruct), 32 chat requests of mixed length (Alpaca instructions
from `../shared/data`, short to long, with `max_tokens` 32..160, greedy). In one run:

1. baseline: the 32 requests one at a time through plain `model.generate` (same prompt text, same
   stop tokens, greedy);
2. server, 8 concurrent clients (the official `openai` client, streaming, in threads) against
   `instructune serve` in a subprocess: aggregate generated tokens/s, p50/p95 latency, time to
   first token, errors;
3. server, one request at a time (not streamed, like `generate`), for the first 8 requests:
   latency vs the baseline's for the same requests (the overhead of HTTP, scheduling and our
   decode loop).

The server and the baseline use the same number of torch threads. Goal: ≥ 2.5× aggregate tokens/s
over the baseline, 0 errors, single-request latency within 10% of plain generate. Writes
runs/bench/serve.json.

    .venv/bin/python bench/serve.py [--requests 32] [--clients 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_5000.json"
MODEL = "smollm2-135m-instruct"
MAX_TOKENS = (32, 64, 96, 128, 160)


def requests(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n chat requests spread over prompt lengths (shortest to longest), max_tokens cycling."""
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    rows = sorted(rows, key=lambda r: len(r["instruction"]) + len(r["input"]))
    picked = [rows[round(i * (len(rows) - 1) / max(n - 1, 1))] for i in range(n)]
    random.Random(seed).shuffle(picked)
    out = []
    for i, r in enumerate(picked):
        text = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
        out.append(
            {"messages": [{"role": "user", "content": text}], "max_tokens": MAX_TOKENS[i % 5]}
        )
    return out


def baseline(reqs: list[dict[str, Any]], threads: int) -> list[dict[str, Any]]:
    """Each request alone through plain transformers generate: latency and new tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from instructune.data.templates import load_template
    from instructune.inference.stops import stop_token_ids
    from instructune.models.embedded import ensure_embedded_model

    torch.set_num_threads(threads)
    folder = ensure_embedded_model()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    stops = stop_token_ids(load_template("chat", tok), tok)
    results = []
    for k, req in enumerate([reqs[0], *reqs]):  # the first run warms up
        ids = tok.apply_chat_template(
            req["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        config = GenerationConfig(
            max_new_tokens=req["max_tokens"],
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tok.pad_token_id,
        )
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
            )
        elapsed = time.perf_counter() - start
        new = out[0, ids.shape[1] :].tolist()
        if k:
            text = tok.decode([t for t in new if t not in stops], skip_special_tokens=True)
            results.append({"latency": elapsed, "tokens": len(new), "text": text})
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, threads: int, clients: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "instructune", "serve", MODEL, "--port", str(port)]
    cmd += ["--max-batch-size", str(clients), "--max-tokens-cap", "512"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError("the server did not come up in 300 s")


def one_request(client: Any, req: dict[str, Any], stream: bool = True) -> dict[str, Any]:
    """One chat request (streamed: with time to first token): latency, tokens, text or error."""
    start = time.perf_counter()
    first = None
    parts: list[str] = []
    tokens = 0
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "messages": req["messages"],
        "max_tokens": req["max_tokens"],
        "temperature": 0,
    }
    try:
        if not stream:
            out = client.chat.completions.create(**kwargs)
            parts.append(out.choices[0].message.content or "")
            tokens = out.usage.completion_tokens
        else:
            chunks = client.chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True}
            )
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter()
                    parts.append(chunk.choices[0].delta.content)
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}
    end = time.perf_counter()
    return {
        "latency": end - start,
        "ttft": (first or end) - start,
        "tokens": tokens,
        "text": "".join(parts),
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import openai

    reqs = requests(args.requests)
    port = _free_port()
    proc = start_server(port, args.threads, args.clients)
    try:
        print(f"baseline: {len(reqs)} requests one at a time through transformers generate")
        base = baseline(reqs, args.threads)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        one_request(client, reqs[0])  # warm-up
        print(f"server: {len(reqs)} requests from {args.clients} concurrent clients")
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            served = list(pool.map(lambda r: one_request(client, r), reqs))
        wall = time.perf_counter() - start
        print(f"server: the first {args.single} requests one at a time")
        # like plain generate, the whole answer in one response (no per-token SSE parsing)
        single = [one_request(client, r, stream=False) for r in reqs[: args.single]]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return summarize(base, served, wall, single, args)


def summarize(
    base: list[dict[str, Any]],
    served: list[dict[str, Any]],
    wall: float,
    single: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    ok = [r for r in served if "error" not in r]
    base_wall = sum(r["latency"] for r in base)
    base_tps = sum(r["tokens"] for r in base) / base_wall
    served_tps = sum(r["tokens"] for r in ok) / wall
    single_ok = [r for r in single if "error" not in r]
    single_ratio = sum(r["latency"] for r in single_ok) / sum(
        r["latency"] for r in base[: len(single_ok)]
    )
    return {
        "requests": len(served),
        "clients": args.clients,
        "threads": args.threads,
        "baseline": {
            "tokens_per_s": base_tps,
            "wall_s": base_wall,
            "p50_latency_s": statistics.median(r["latency"] for r in base),
            "p95_latency_s": _pct([r["latency"] for r in base], 0.95),
        },
        "server": {
            "tokens_per_s": served_tps,
            "wall_s": wall,
            "p50_latency_s": statistics.median(r["latency"] for r in ok) if ok else None,
            "p95_latency_s": _pct([r["latency"] for r in ok], 0.95) if ok else None,
            "p50_ttft_s": statistics.median(r["ttft"] for r in ok) if ok else None,
            "p95_ttft_s": _pct([r["ttft"] for r in ok], 0.95) if ok else None,
            "errors": len(served) - len(ok) + len(single) - len(single_ok),
            "error_messages": sorted({r["error"] for r in [*served, *single] if "error" in r}),
        },
        "speedup_tokens_per_s": served_tps / base_tps,
        "single_request_latency_ratio": single_ratio,
        "same_text_as_baseline": sum(
            s.get("text") == b["text"] for s, b in zip(served, base, strict=True)
        ),
        "same_tokens_as_baseline": sum(
            s.get("tokens") == b["tokens"] for s, b in zip(served, base, strict=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--single", type=int, default=8, help="requests timed one at a time")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "serve.json")
    args = parser.parse_args()
    result = measure(args)
    b, s = result["baseline"], result["server"]
    print(f"\n{result['requests']} requests, {args.clients} clients, {args.threads} threads")
    print(
        f"{'':<22} {'tok/s':>7} {'wall s':>7} {'p50 s':>6} {'p95 s':>6} {'ttft50':>7} {'ttft95':>7}"
    )
    print(
        f"{'plain generate (seq.)':<22} {b['tokens_per_s']:>7.1f} {b['wall_s']:>7.1f} "
        f"{b['p50_latency_s']:>6.2f} {b['p95_latency_s']:>6.2f}"
    )
    if s["p50_latency_s"] is not None:
        print(
            f"{'instructune serve':<22} {s['tokens_per_s']:>7.1f} {s['wall_s']:>7.1f} "
            f"{s['p50_latency_s']:>6.2f} {s['p95_latency_s']:>6.2f} {s['p50_ttft_s']:>7.2f} "
            f"{s['p95_ttft_s']:>7.2f}"
        )
    print(
        f"speedup {result['speedup_tokens_per_s']:.2f}x aggregate tokens/s (goal >= 2.5x); "
        f"errors {s['errors']}; single-request latency "
        f"{result['single_request_latency_ratio']:.3f}x plain generate (goal <= 1.10)"
    )
    print(
        f"same greedy text as the baseline: {result['same_text_as_baseline']}/{result['requests']}"
        f"; same token count: {result['same_tokens_as_baseline']}/{result['requests']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
