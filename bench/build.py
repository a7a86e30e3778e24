"""Benchmark: near-duplicate removal of `instructune build` vs a datasketch MinHash + LSH loop.

Input: `../shared/data/alpaca/alpaca_5000.json` (instruction + input + output of each row) plus
10 perturbed copies of 500 seeded rows of at least 40 words (adjacent word swaps, deletions, case
changes; each copy is kept only if its exact word-5-gram Jaccard with its original is ≥ 0.8, so
every planted pair is a true near-duplicate at the 0.7 threshold). Originals come first, the
5,000 copies after them in seeded order.

Both sides use word 5-grams of lowercased `\\w+` words, 256 permutations and threshold 0.7 and
keep the first row of each group. The reference is the straightforward datasketch loop: one
`MinHash` per row (`update_batch`), `MinHashLSH.query`, then `insert` when nothing matched.
Each side runs in its own subprocess (its own peak RSS). Reported per side: rows/s, recall on
the planted copies, precision (removed rows that are planted copies, and removed rows whose exact
Jaccard with the row they matched is ≥ the threshold). Then the whole `build` of the same 10,000
rows (template rendering, 5% eval split, exact + near dedup) in rows/s.

    .venv/bin/python bench/build.py [--threshold 0.7]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # bench/common.py: this script's own folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_5000.json"
COPIES, PLANTED_ROWS, SEED, NGRAM, NUM_PERM = 10, 500, 0, 5, 256


def _words(text: str) -> list[str]:
    from instructune.curation.minhash import shingle_words

    return shingle_words(text)


def _shingles(text: str) -> set[str]:
    words = _words(text)
    grams = {" ".join(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}
    return grams or ({" ".join(words)} if words else set())


def jaccard(a: str, b: str) -> float:
    x, y = _shingles(a), _shingles(b)
    return len(x & y) / len(x | y) if x | y else 1.0


def _perturb(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(max(1, len(words) // 40)):
        op = rng.choice(("swap", "delete", "case"))
        i = rng.randrange(len(words) - 1)
        if op == "swap":
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == "delete":
            del words[i]
        else:
            words[i] = words[i].upper() if rng.random() < 0.5 else words[i].capitalize()
    return " ".join(words)


def dataset() -> tuple[list[dict[str, str]], dict[int, int]]:
    """10,000 alpaca-shaped rows and planted copy index → original index."""
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    text = [_row_text(r) for r in rows]
    rng = random.Random(SEED)
    eligible = [i for i, t in enumerate(text) if len(t.split()) >= 40]
    chosen = sorted(rng.sample(eligible, PLANTED_ROWS))
    copies: list[tuple[int, dict[str, str]]] = []
    for original in chosen:
        for _ in range(COPIES):
            while True:
                row = {
                    k: _perturb(v, rng) if len(v.split()) > 1 else v
                    for k, v in rows[original].items()
                }
                if jaccard(_row_text(row), text[original]) >= 0.8:
                    break
            copies.append((original, row))
    rng.shuffle(copies)
    planted = {len(rows) + j: original for j, (original, _) in enumerate(copies)}
    return rows + [row for _, row in copies], planted


def _row_text(row: dict[str, str]) -> str:
    return "\n".join(row.get(k, "") for k in ("instruction", "input", "output"))


def worker_ours(threshold: float) -> dict[str, Any]:
    from instructune.curation.minhash import near_duplicates

    rows, _ = dataset()
    texts = [_row_text(r) for r in rows]
    start = time.perf_counter()
    removed = near_duplicates(texts, threshold).removed()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "removed": removed, "peak_rss_mb": common.peak_rss_mb()}


def worker_datasketch(threshold: float) -> dict[str, Any]:
    from datasketch import MinHash, MinHashLSH

    rows, _ = dataset()
    texts = [_row_text(r) for r in rows]
    start = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    removed: dict[int, int] = {}
    for i, text in enumerate(texts):
        shingles = _shingles(text)
        if not shingles:
            continue
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch([s.encode("utf-8") for s in shingles])
        hits = lsh.query(m)
        if hits:
            removed[i] = min(hits)
        else:
            lsh.insert(i, m)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "removed": removed, "peak_rss_mb": common.peak_rss_mb()}


def worker_build(threshold: float) -> dict[str, Any]:
    from instructune.config import Config
    from instructune.curation.build import run_build

    rows, _ = dataset()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        template = {"prompt": "{{ instruction }}\n\n{{ input }}", "target": "{{ output }}"}
        cfg = Config.model_validate(
            {
                "build": {
                    "sources": [{"name": "alpaca", "path": str(path), "templates": [template]}],
                    "eval_fraction": 0.05,
                    "dedup": {"exact": True, "near": threshold},
                    "on_error": "skip",  # alpaca rows with an empty output can't render
                },
                "output_dir": str(Path(tmp) / "out"),
            }
        )
        start = time.perf_counter()
        result = run_build(cfg)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows_out": result.train_rows + result.eval_rows,
        "peak_rss_mb": common.peak_rss_mb(),
    }


WORKERS = {"ours": worker_ours, "datasketch": worker_datasketch, "build": worker_build}


def run_worker(side: str, threshold: float) -> dict[str, Any]:
    return common.run_worker(__file__, ["--worker", side, "--threshold", str(threshold)], side)


def score(
    removed: dict[str, int], planted: dict[int, int], texts: list[str], t: float
) -> dict[str, float]:
    gone = {int(k): v for k, v in removed.items()}
    hits = sum(1 for i in gone if i in planted)
    exact = sum(
        1 for i, kept in gone.items() if i in planted or jaccard(texts[i], texts[kept]) >= t
    )
    return {
        "removed": len(gone),
        "recall": hits / len(planted),
        "precision_planted": hits / len(gone) if gone else 1.0,
        "precision_exact": exact / len(gone) if gone else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--threshold", type=float, default=0.7)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.threshold)))
        return
    rows, planted = dataset()
    texts = [_row_text(r) for r in rows]
    results = {}
    for side in ("ours", "datasketch"):
        r = run_worker(side, args.threshold)
        results[side] = {
            "rows_per_s": len(rows) / r["seconds"],
            "peak_rss_mb": r["peak_rss_mb"],
            **score(r["removed"], planted, texts, args.threshold),
        }
    build = run_worker("build", args.threshold)
    results["build"] = {
        "rows_per_s": len(rows) / build["seconds"],
        "rows_out": build["rows_out"],
        "peak_rss_mb": build["peak_rss_mb"],
    }
    speedup = results["ours"]["rows_per_s"] / results["datasketch"]["rows_per_s"]
    print(json.dumps({"rows": len(rows), "planted": len(planted), **results, "speedup": speedup}))
    header = f"{'side':<12}{'rows/s':>10}{'recall':>8}{'prec(planted)':>15}{'prec(exact)':>13}"
    print(f"\n{header}{'peak MB':>9}")
    for side in ("ours", "datasketch"):
        r = results[side]
        print(
            f"{side:<12}{r['rows_per_s']:>10.0f}{r['recall']:>8.3f}{r['precision_planted']:>15.3f}"
            f"{r['precision_exact']:>13.3f}{r['peak_rss_mb']:>9.0f}"
        )
    b = results["build"]
    out = f"({b['rows_out']} rows out, peak {b['peak_rss_mb']:.0f} MB)"
    print(f"{'build':<12}{b['rows_per_s']:>10.0f}  {out}")
    print(f"near-dup speedup vs datasketch: {speedup:.1f}x")


if __name__ == "__main__":
    main()
