"""A deterministic scripted "model" that answers every synthesize prompt in the expected format.

Its answers are functions of the prompt and the request seed, and include the failure cases the
filters must catch (keywords, too short, near-duplicates, conflicting outputs, scaffolding echoes),
so the pipelines' counting can be checked exactly. `ScriptedBackend` serves it (or any function of
the request) through the `Backend` protocol. Used by the tests and the crash subprocess.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from instructune.synthesis.backends import Request, Response

TOPICS = [
    "volcano",
    "tectonic",
    "ocean",
    "glacier",
    "orchard",
    "violin",
    "telescope",
    "bakery",
    "marathon",
    "lighthouse",
    "algebra",
    "poetry",
    "chess",
    "harbor",
    "meadow",
    "museum",
    "tram",
    "satellite",
    "canyon",
    "festival",
    "library",
    "carpentry",
    "beehive",
    "compass",
    "lantern",
    "prairie",
    "quartz",
    "reef",
    "saddle",
    "tundra",
    "umbrella",
    "vineyard",
    "walrus",
    "yacht",
    "zeppelin",
]
VERBS = [
    "Explain",
    "Describe",
    "Summarize",
    "Compare",
    "Classify",
    "Rewrite",
    "Suggest",
    "Outline",
    "Evaluate",
]

SEEDS = [
    {
        "id": f"seed_{i}",
        "instruction": instr,
        "instances": [{"input": inp, "output": out}],
        "is_classification": cls,
    }
    for i, (instr, inp, out, cls) in enumerate(
        [
            (
                "Give three tips for staying healthy during winter.",
                "",
                "Sleep, eat well, move.",
                False,
            ),
            (
                "Is the sentiment of this review positive or negative?",
                "I loved it.",
                "Positive",
                True,
            ),
            ("Translate the sentence into French for a tourist.", "Good morning", "Bonjour", False),
            ("Decide whether the number given is even or odd.", "7", "Odd", True),
            ("Write a short haiku about the autumn rain.", "", "Rain taps on old leaves", False),
            ("Name the capital city of the given country.", "Peru", "Lima", False),
            ("Suggest a title for a blog post about saving money.", "", "Pennies Add Up", False),
            (
                "Tell whether the statement is a fact or an opinion.",
                "Paris is in France.",
                "Fact",
                True,
            ),
        ]
    )
]


def write_seeds(path: Path) -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in SEEDS), encoding="utf-8")
    return path


def _new_instruction(rng: random.Random) -> str:
    words = rng.sample(TOPICS, 6)
    return f"{rng.choice(VERBS)} {' '.join(words[:5])} for everyday {words[5]}."


def _instructions(prompt: str, rng: random.Random) -> str:
    shown = re.findall(r"^\d+\. (.*)$", prompt, re.M)
    n = len(shown)
    items = [_new_instruction(rng), _new_instruction(rng)]
    items.append(rng.choice(["Draw a picture of a cat wearing a hat.", "Hi there.", shown[0]]))
    if rng.random() < 0.5:
        a, b = rng.sample(TOPICS, 2)
        items.append(f"Is this sentence about {a} or {b}? Classify it.")
    return "\n".join(f"{n + 1 + i}. {text}" for i, text in enumerate(items))


def _instances(prompt: str, rng: random.Random) -> str:
    task = prompt.rsplit("Task: ", 1)[1]
    if "Class label:" in prompt:
        return "Class label: A\nInput: first sample\nClass label: B\nInput: second sample"
    if "everyday" in task and rng.random() < 0.1:  # one input, two outputs: the task goes
        return "Example 1\nInput: x\nOutput: one\nExample 2\nInput: x\nOutput: two"
    word = task.split()[3]
    return (
        f"Example 1\nInput: none\nOutput: A {word} matters because it shapes daily routines.\n"
        "Example 2\nInput: same\nOutput: same\n"  # input == output: this instance goes
        f"Example 3\nInput: a child asks\nOutput: Tell them a {word} story."
    )


def _evolve(prompt: str, rng: random.Random) -> str:
    original = prompt.rsplit("Instruction:\n", 1)[1].strip()
    roll = rng.random()
    if roll < 0.15:
        return original  # no information gain
    if roll < 0.25:
        return f"Rewritten instruction: {original}"  # echoes the scaffolding
    return f"{original} Also justify each step using a {rng.choice(TOPICS)} analogy."


def _unnatural(prompt: str, rng: random.Random) -> str:
    if rng.random() < 0.1:
        return "I cannot think of one."
    a, b = rng.sample(TOPICS, 2)
    return (
        f"Instruction: List facts that connect {a} with {b}.\nInput: {a} and {b}\n"
        "Constraints: Output at most three bullet points."
    )


def answer(request: Request) -> str | Response:
    """The scripted model: dispatch on which template produced the prompt."""
    prompt = request.prompt
    rng = random.Random(f"{request.params.seed}:{prompt}")
    if prompt.startswith("Below is a numbered list of tasks"):
        return _instructions(prompt, rng)
    if prompt.startswith("A classification task is one"):
        return "Yes" if "Classify it" in prompt.rsplit("Task: ", 1)[1] else "No"
    if prompt.startswith(("For each task, write examples", "Given a classification task")):
        return _instances(prompt, rng)
    if prompt.startswith(("Your job is to rewrite", "Your job is to invent")):
        return _evolve(prompt, rng)
    if prompt.startswith("Compare the two instructions"):
        return "Different"
    if prompt.startswith("Here are examples of tasks"):
        return _unnatural(prompt, rng)
    if prompt.startswith("Write 2 different ways"):
        head = prompt.rsplit("Instruction:\n", 1)[1].strip()
        return f"1. Please {head.lower()}\n2. {head}\n3. Kindly do this: {head.lower()}"
    if rng.random() < 0.1:
        return "Sorry, I can't."
    return f"Here is a careful answer about {' '.join(prompt.split()[:6])}: it depends on context."


Script = Callable[[Request], "str | Response"]


class ScriptedBackend:
    """A deterministic backend whose answers come from a Python function of the request.

    A real implementation of the protocol, for checking the pipelines' parsing, filters, caching
    and resume without a model; `delay` (seconds per request) makes crash tests reproducible.
    """

    kind = "scripted"

    def __init__(self, script: Script, model: str = "scripted", delay: float = 0.0) -> None:
        self.script = script
        self.model = model
        self.endpoint = "scripted"
        self.delay = delay
        self.calls = 0

    def complete(self, requests: Sequence[Request]) -> Iterator[tuple[int, Response]]:
        for i, request in enumerate(requests):
            if self.delay:
                time.sleep(self.delay)
            self.calls += 1
            out = self.script(request)
            if isinstance(out, str):
                words = len(out.split())
                cut = words > request.params.max_new_tokens
                text = " ".join(out.split()[: request.params.max_new_tokens]) if cut else out
                finish = "length" if cut else "stop"
                out = Response(text, finish, len(request.prompt.split()), words)
            yield i, out

    def close(self) -> None:
        pass
