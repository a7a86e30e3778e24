"""Preference pairs for the promise detector: the right label with a one-line reason is preferred
over the wrong label with the wrong reason.

    python examples/promises/make_pairs.py [--out runs/promise-pairs]

Training pairs come from data/promises/sentences.csv through the task's phrasings
(data/promises/templates.yaml); held-out pairs from data/promises/test.jsonl (whose sentences are
left out of training). Writes `train.jsonl` and `test.jsonl` in the `preference` format
({prompt, chosen, rejected}) for configs/dpo.yaml and configs/dpo-eval.yaml.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "promises"
OPTIONS = "OPTIONS:\n- True\n- False"
PROMISE = "it commits the government to a specific action it can carry out itself"
REASONS = {
    "commitment": PROMISE,
    "commitment_hard": PROMISE,
    "vague_commitment": "it is a vague pledge without a specific, checkable action",
    "vague_aspiration": "it states a goal, not an action",
    "prediction": "it is a forecast, not an action the government takes",
    "values": "it states values, not an action",
    "past_achievement": "it praises past achievements instead of promising an action",
    "attack": "it attacks opponents instead of promising an action",
    "rhetorical_question": "it is a rhetorical question, not a commitment",
    "other_actor": "it asks others to act, not the speaker's government",
    "outside_agency": "it promises something outside the government's own power",
}
NOT_PROMISE = "it is not a concrete action the government can take"


def answer(label: str, kind: str) -> str:
    return f"{label}. Reason: {REASONS[kind]}."


def wrong_answer(label: str) -> str:
    flipped = "False" if label == "True" else "True"
    return f"{flipped}. Reason: {PROMISE if flipped == 'True' else NOT_PROMISE}."


def pair(prompt: str, label: str, kind: str) -> dict[str, str]:
    if kind not in REASONS:
        raise ValueError(f"unknown kind {kind!r}; add a reason for it to REASONS")
    return {"prompt": prompt, "chosen": answer(label, kind), "rejected": wrong_answer(label)}


def train_pairs(held_out: set[str], seed: int) -> list[dict[str, str]]:
    templates = yaml.safe_load((DATA / "templates.yaml").read_text(encoding="utf-8"))
    rng = random.Random(seed)
    rows = []
    with open(DATA / "sentences.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["text"] in held_out:
                continue
            template = rng.choice(templates)["prompt"]
            prompt = template.replace("{{ options_ }}", OPTIONS).replace(
                "{{ sentence }}", row["text"]
            )
            rows.append(pair(prompt, row["label"], row["kind"]))
    return rows


def test_pairs() -> tuple[list[dict[str, str]], set[str]]:
    rows, sentences = [], set()
    for line in (DATA / "test.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        sentences.add(item["input"])
        rows.append(pair(f"{item['instruction']}\n\n{item['input']}", item["label"], item["kind"]))
    return rows, sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/promise-pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test, held_out = test_pairs()
    train = train_pairs(held_out, args.seed)
    for name, rows in (("train", train), ("test", test)):
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {len(rows)} pairs to {path}")


if __name__ == "__main__":
    main()
