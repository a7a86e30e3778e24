"""Built-in template sets written for instructune (`templates: binary` etc.).

Placeholders each set expects (map other column names with `fields:`):

- `binary`, `multiclass`: `text`; `label` + `options` give `answer` and the OPTIONS clause.
- `nli`: `premise`, `hypothesis`; options e.g. {entailment: yes, neutral: maybe, contradiction: no}.
- `extractive_qa`: `context`, `question`, `answer` (a column, or the label when one is set).
- `summarization`: `document`, `summary`.

Templates marked `inverted` write an input from the answer; they are used only for the share of
rows set by the source's `inversions`.
"""

from __future__ import annotations

from typing import Any


def _set(
    name: str, target: str, prompts: list[str], inversions: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Templates `name/i` answering with `target`, then inversions `name/inv<i>`."""
    regular = [{"id": f"{name}/{i}", "prompt": p, "target": target} for i, p in enumerate(prompts)]
    inverted = [
        {"id": f"{name}/inv{i}", "prompt": p, "target": t, "inverted": True}
        for i, (p, t) in enumerate(inversions)
    ]
    return regular + inverted


_CLASSIFY = [
    "{{ text }}\n\nWhich label fits this text?\n\n{{ options_ }}",
    "Classify the following text.\n\n{{ text }}\n\n{{ options_ }}",
    "Text: {{ text }}\n\nWhat is the right category?\n{{ options_ }}",
    "Read the text and pick the answer that describes it.\n\n{{ text }}\n{{ options_ }}",
    "{{ options_ }}\n\nWhich of the above applies to this text?\n{{ text }}",
]

BUILTIN_SETS: dict[str, list[dict[str, Any]]] = {
    "binary": _set(
        "binary",
        "{{ answer }}",
        [*_CLASSIFY, "{{ text }}\n\nAnswer with one of the two options.\n{{ options_ }}"],
        [('Write a text whose answer is "{{ answer }}".', "{{ text }}")],
    ),
    "multiclass": _set(
        "multiclass",
        "{{ answer }}",
        _CLASSIFY,
        [('Write an example of a text labelled "{{ answer }}".', "{{ text }}")],
    ),
    "nli": _set(
        "nli",
        "{{ answer }}",
        [
            "{{ premise }}\n\nBased on the paragraph above, can we conclude that "
            '"{{ hypothesis }}"?\n\n{{ options_ }}',
            "Premise: {{ premise }}\nHypothesis: {{ hypothesis }}\n\n"
            "Does the premise entail the hypothesis?\n{{ options_ }}",
            "Read the text and decide whether the sentence follows from it.\n\n"
            "Text: {{ premise }}\nSentence: {{ hypothesis }}\n\n{{ options_ }}",
            "{{ premise }}\nGiven the text above, is this true: {{ hypothesis }}\n{{ options_ }}",
        ],
        [
            (
                'Write a sentence for which the answer to "does it follow from this text?" is '
                '"{{ answer }}".\n\n{{ premise }}',
                "{{ hypothesis }}",
            )
        ],
    ),
    "extractive_qa": _set(
        "qa",
        "{{ answer }}",
        [
            "{{ context }}\n\nAnswer this question using the text above: {{ question }}",
            "Read the passage and answer the question.\n\nPassage: {{ context }}\n\n"
            "Question: {{ question }}",
            "Question: {{ question }}\n\nFind the answer in this text:\n{{ context }}",
            "{{ context }}\n\nQ: {{ question }}\nA:",
        ],
        [
            (
                "{{ context }}\n\nWrite a question about the text above whose answer is "
                '"{{ answer }}".',
                "{{ question }}",
            )
        ],
    ),
    "summarization": _set(
        "sum",
        "{{ summary }}",
        [
            "Summarize this text:\n\n{{ document }}",
            "{{ document }}\n\nWhat is a short summary of the text above?",
            "Write a brief summary of the following.\n\n{{ document }}",
            "{{ document }}\n\nTL;DR:",
        ],
        [("Write a text that could be summarized as: {{ summary }}", "{{ document }}")],
    ),
}
"""Built-in template sets by the name `templates:` uses."""
