#!/usr/bin/env python3
"""Build the "political promise detector" demo dataset.

The sentences are hand-written for instructune and live in
``examples/promises/sentences.jsonl`` (one ``{"text", "label", "kind"}`` object
per line). This script

1. validates them (unique, boolean labels, known kinds),
2. splits them ~80/20 into train/test, stratified by ``kind``, with a fixed seed,
3. turns every sentence into an Alpaca-style record whose ``instruction`` is
   drawn (seeded) from several FLAN-style phrasings of the task,
4. writes ``data/promises/{train,test}.jsonl`` and ``data/promises/README.md``.

Standard library only. Running it twice produces byte-identical files.

    python examples/promises/build_dataset.py
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

SEED = 20240611
TEST_FRACTION = 0.2

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
SENTENCES = HERE / "sentences.jsonl"
DEFAULT_OUT = REPO_ROOT / "data" / "promises"

OPTIONS = "\n\nOPTIONS:\n- True\n- False"

# Every phrasing uses the same semantics: True = a concrete promise, i.e. a
# specific, tangible action that the speaker's government can carry out itself.
INSTRUCTIONS = [
    "Does the following sentence state a specific, tangible action that the "
    "speaker's government has the power to carry out? Answer True if it does "
    "and False if it does not.",
    "Political promise detector. Answer True if the sentence commits the "
    "speaker's government to a concrete action it can take by itself. Answer "
    "False for anything else, such as vague aspirations, forecasts, statements "
    "of values, praise of past achievements, attacks on opponents, questions, "
    "or demands on other actors.",
    "Read this line from a politician. Is it a concrete promise, i.e. a "
    "specific action that their own government could actually carry out? "
    "True means it is a concrete promise; False means it is not.",
    "Classify the sentence. Choose True if it promises a tangible, specific "
    "action that lies within the government's own power, and False if it does "
    "not (for example, a prediction, a value statement, an attack, a "
    "rhetorical question or a vague goal).",
    "A fact-checker is tracking election promises. Does this sentence contain "
    "a specific, checkable action that the speaker's government itself says it "
    "will take? True = yes, it contains such a commitment; False = no.",
    "Is the following sentence a tangible commitment that the speaker's "
    "government has the agency to deliver (True), or is it rhetoric, a "
    "forecast, a claim about others, a boast about the past, or a vague "
    "pledge (False)?",
    "Task: decide whether the sentence below contains a specific policy "
    "commitment that the speaker's government can deliver on its own. Reply "
    "True if it does, False if it does not.",
    "The following sentence comes from a speech, a manifesto or a social media "
    "post. True or False: the sentence commits the government to a specific, "
    "tangible action that it has the authority to carry out.",
]
INSTRUCTIONS = [text + OPTIONS for text in INSTRUCTIONS]

# kind -> (label, one-line description used in the README)
KINDS = {
    "commitment": (True, "a concrete, specific action the government can take itself"),
    "commitment_hard": (
        True,
        "a concrete commitment mixed with boundary features "
        "(a value, an attack, a forecast, a question, a past "
        "record, a conditional on re-election, a pledge not to act)",
    ),
    "other_actor": (
        False,
        "an expectation of, or demand on, another country, body, "
        "company or group (often specific and numeric)",
    ),
    "vague_aspiration": (False, "a slogan or aspiration with no concrete action"),
    "prediction": (False, "a forecast of an outcome, often with numbers, not an action"),
    "values": (False, "a statement of values or beliefs"),
    "past_achievement": (False, "praise of something already done"),
    "attack": (False, "an attack on opponents or a previous government"),
    "rhetorical_question": (
        False,
        "a question or rhetorical device, even one naming a specific action",
    ),
    "outside_agency": (
        False,
        "something the government cannot bring about (weather, world markets, nature)",
    ),
    "vague_commitment": (
        False,
        "an action verb with a vague object, or a hedged / "
        "conditional commitment (review, consider, explore, work towards)",
    ),
}


def load_sentences(path: Path) -> list[dict]:
    rows = []
    seen = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            text, label, kind = row["text"].strip(), row["label"], row["kind"]
            if kind not in KINDS:
                raise ValueError(f"{path}:{lineno}: unknown kind {kind!r}")
            if not isinstance(label, bool) or label != KINDS[kind][0]:
                raise ValueError(f"{path}:{lineno}: label {label!r} does not match kind {kind!r}")
            if text in seen:
                raise ValueError(f"{path}:{lineno}: duplicate sentence {text!r}")
            seen.add(text)
            rows.append({"text": text, "label": label, "kind": kind})
    return rows


def split(rows: list[dict], rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Stratified split: TEST_FRACTION of every kind goes to test."""
    train, test = [], []
    for kind in sorted(KINDS):
        group = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["text"])
        rng.shuffle(group)
        n_test = round(len(group) * TEST_FRACTION)
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    return train, test


def to_records(rows: list[dict], rng: random.Random) -> list[dict]:
    records = []
    for r in rows:
        answer = "True" if r["label"] else "False"
        records.append(
            {
                "instruction": rng.choice(INSTRUCTIONS),
                "input": r["text"],
                "output": answer,
                "label": answer,
                "kind": r["kind"],
            }
        )
    rng.shuffle(records)
    return records


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def readme(train: list[dict], test: list[dict]) -> str:
    def label_counts(recs):
        c = Counter(r["output"] for r in recs)
        return c["True"], c["False"]

    tr_t, tr_f = label_counts(train)
    te_t, te_f = label_counts(test)
    kind_tr = Counter(r["kind"] for r in train)
    kind_te = Counter(r["kind"] for r in test)

    lines = [
        "# Political promise detector (demo task)",
        "",
        "A small binary classification dataset in Alpaca JSONL format, used by the",
        "instructune examples. Each record holds one sentence of the kind a politician",
        "might say in a speech, a manifesto or a social media post, and asks whether it",
        "is a *concrete promise*.",
        "",
        "## Labelling rule",
        "",
        "`True` if the sentence commits the speaker's government to a **specific,",
        "tangible action that the government has the agency to carry out itself**.",
        'The action is often measurable ("hire 5,000 new nurses", "cut VAT on energy',
        'bills from 20% to 5%") but need not be numeric ("abolish tuition fees at',
        'public universities", "ban fracking"). A sentence that mixes rhetoric with',
        "such a commitment, or promises a commitment conditional on being (re-)elected,",
        "is still `True`; so is a specific pledge *not* to do something within the",
        'government\'s power ("we will not raise income tax, VAT or national insurance").',
        "",
        "`False` for everything else. Every sentence also carries a `kind`: two kinds",
        "of positives and nine kinds of negatives.",
        "",
        "| kind | label | description | train | test |",
        "|---|---|---|---:|---:|",
    ]
    for kind, (label, desc) in KINDS.items():
        lines.append(f"| `{kind}` | {label} | {desc} | {kind_tr[kind]} | {kind_te[kind]} |")
    lines += [
        "",
        "Hard cases near the boundary are included on purpose: numbers inside a",
        'forecast ("Unemployment will fall to 3% by 2030"), specific demands on other',
        'actors ("Every NATO ally must spend at least 2% of GDP on defence"), an action',
        'verb with a vague object ("We will build more homes"), specific actions posed as',
        'questions ("Why not abolish the licence fee altogether?"), and concrete',
        "commitments wrapped in values, attacks or forecasts (kind `commitment_hard`).",
        "",
        "## Files and counts",
        "",
        "| split | records | True | False | True share |",
        "|---|---:|---:|---:|---:|",
        f"| train | {len(train)} | {tr_t} | {tr_f} | {tr_t / len(train):.1%} |",
        f"| test | {len(test)} | {te_t} | {te_f} | {te_t / len(test):.1%} |",
        f"| total | {len(train) + len(test)} | {tr_t + te_t} | {tr_f + te_f} | "
        f"{(tr_t + te_t) / (len(train) + len(test)):.1%} |",
        "",
        "Each line of `train.jsonl` / `test.jsonl` is a JSON object with the keys",
        "",
        "- `instruction`: one of "
        f"{len(INSTRUCTIONS)} FLAN-style phrasings of the task (chosen with a fixed seed),",
        "  each ending in `\\n\\nOPTIONS:\\n- True\\n- False`. In every phrasing `True`",
        '  means "concrete promise";',
        "- `input`: the sentence;",
        "- `output`: `True` or `False`;",
        "- `label`: same as `output`;",
        "- `kind`: the kind of sentence (table above), useful for per-kind error analysis.",
        "",
        "The split is stratified by `kind` (20% of each kind goes to `test`). The",
        "sentences are individually hand-written, not generated from templates, and no",
        "sentence appears in both splits; no two sentences in the dataset share more",
        "than 80% of their words.",
        "",
        "## Regenerating",
        "",
        "The raw sentences live in `examples/promises/sentences.jsonl`",
        '(`{"text": ..., "label": true/false, "kind": ...}`). To rebuild this',
        "directory (deterministic, byte-identical output):",
        "",
        "```bash",
        "python examples/promises/build_dataset.py",
        "```",
        "",
        "## Provenance and license",
        "",
        "All sentences were written for this project; they are not taken from real",
        "speeches or any external dataset. Places, parties and people are mostly",
        "invented; any resemblance to real policies is for realism only and implies no",
        "endorsement.",
        "",
        "Written for instructune; released under the project's license (Apache-2.0).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=Path, default=SENTENCES)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    rows = load_sentences(args.sentences)
    rng = random.Random(SEED)
    train_rows, test_rows = split(rows, rng)
    train = to_records(train_rows, rng)
    test = to_records(test_rows, rng)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_dir / "train.jsonl", train)
    write_jsonl(args.out_dir / "test.jsonl", test)
    (args.out_dir / "README.md").write_text(readme(train, test), encoding="utf-8", newline="\n")
    print(f"wrote {len(train)} train and {len(test)} test records to {args.out_dir}")


if __name__ == "__main__":
    main()
