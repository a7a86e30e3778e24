"""The `build:` section: how `instructune build` turns labelled data into instruction rows.

Kept apart from `schema.py` (which imports it) so each module stays small; like the rest of the
config it imports nothing from the package at import time. Paths are relative to the working
directory, as everywhere else in the config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from instructune.config.base import StrictModel


class TemplateSpec(StrictModel):
    """One template: `prompt` + `target` (Jinja), or a promptsource `jinja: "prompt ||| target"`.

    Placeholders are the source's fields (`{{ sentence }}`), `{{ answer }}` (the label's option
    text), `{{ options_ }}` (the OPTIONS clause) and `{{ answer_choices }}` (the option texts).
    """

    id: str | None = None
    """Name used in errors and `meta.template`; default `<source>/<index>`."""
    prompt: str | None = None
    """Jinja for the user turn."""
    target: str | None = None
    """Jinja for the assistant turn."""
    jinja: str | None = None
    """promptsource style: one Jinja text whose render is split at `|||` into prompt and target."""
    answer_choices: str | None = None
    """promptsource style: Jinja rendering the option texts separated by `|||`."""
    inverted: bool | None = None
    """An inversion template (its target is an input field). Default: detected — with a label,
    a target that uses neither `answer` nor `answer_choices` is an inversion."""

    @model_validator(mode="after")
    def _one_style(self) -> TemplateSpec:
        pair = self.prompt is not None and self.target is not None
        if pair == (self.jinja is not None):
            raise ValueError(
                "a template needs either `prompt` and `target`, or `jinja` "
                "(promptsource 'prompt ||| target'); not both, not neither"
            )
        return self


class FlanTemplates(StrictModel):
    flan: str
    """Path to a FLAN templates JSON: `{task: [[input_template, target_template], ...]}`."""
    task: str
    """The task whose templates are used (e.g. `sst2`); unknown names list the file's tasks."""


class NaturalInstructionsOptions(StrictModel):
    """Tk-Instruct encodings of a Super-NaturalInstructions task file."""

    encoding: Literal["definition", "pos", "pos_neg", "pos_neg_expl"] = "pos"
    """`definition` only; `pos` = + positive examples; `pos_neg` = + negative examples;
    `pos_neg_expl` = + their explanations."""
    num_positive: int = Field(default=2, ge=0)
    num_negative: int = Field(default=2, ge=0)
    max_instances: int | None = Field(default=None, gt=0)
    """Use at most this many instances of the task (file order)."""


class OasstOptions(StrictModel):
    paths: Literal["best", "all"] = "best"
    """`best`: one conversation per tree following the best-ranked reply at each turn;
    `all`: every root-to-leaf path."""
    languages: list[str] | None = None
    """Keep only messages whose `lang` is listed (e.g. [en]); default all."""
    output: Literal["conversations", "pairs"] = "conversations"
    """`conversations`: chat rows (`messages`) for SFT. `pairs`: preference rows for
    `train.objective: dpo` or `reward`, from sibling ranks: at each assistant turn (on the paths
    `paths` selects) with two or more ranked, kept replies, `{messages: the conversation before
    that turn, chosen: the best-ranked reply, rejected: a lower-ranked one}` (see `pair_with`).
    Turns with fewer ranked replies, unranked replies and ties are counted in the report."""
    pair_with: Literal["each", "worst"] = "each"
    """`output: pairs`: the best-ranked reply against each lower-ranked sibling (n-1 pairs per
    turn, sharing their prompt and chosen reply) or against the worst-ranked one only."""

    @model_validator(mode="after")
    def _pair_with_needs_pairs(self) -> OasstOptions:
        if "pair_with" in self.model_fields_set and self.output != "pairs":
            raise ValueError("oasst.pair_with applies to oasst.output: pairs only; remove it")
        return self


class BuildSource(StrictModel):
    name: str = Field(min_length=1)
    """Names the source in `meta.source`, errors and the report."""
    path: str
    """A table (CSV/TSV/JSON/JSONL/Parquet/`datasets` folder), a Super-NaturalInstructions task
    file (`type: natural_instructions`) or an oasst trees JSONL export (`type: oasst`)."""
    type: Literal["table", "natural_instructions", "oasst"] = "table"
    split: str | None = None
    """Split name for `datasets` folders."""
    templates: list[TemplateSpec] | FlanTemplates | str | None = None
    """Tables only: a list of templates, a YAML/JSON file holding such a list, a built-in set
    (binary, multiclass, nli, extractive_qa, summarization), or `{flan: file, task: name}`."""
    fields: dict[str, str] = {}
    """Template placeholder → column, e.g. {sentence: text}; unmapped placeholders name columns."""
    label: str | None = None
    """The label column; its value picks `answer` from `options`."""
    options: dict[str, str] | None = None
    """Label value → answer text; renders the OPTIONS clause. Every label must be listed."""
    rationale: str | None = None
    """A rationale column: targets become "{rationale}\\nSo the final answer is {answer}."."""
    shots: list[int] = Field(default=[0], min_length=1)
    """Few-shot variants: each row gets k exemplars, k drawn (seeded) from this list."""
    inversions: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of rows rendered with inversion templates (0: inversion templates are unused)."""
    max_examples: int | None = Field(default=None, ge=0)
    """Examples-proportional mixing cap: at most this many train rows from this source."""
    weight: float | None = Field(default=None, gt=0.0, le=1.0)
    """Share of the final train mix (sources without a weight keep their proportional size)."""
    count: int | None = Field(default=None, ge=0)
    """Exact train rows from this source: whole passes, then a seeded remainder (upsampling)."""
    max_rows: int | None = Field(default=None, gt=0)
    """Read at most this many rows of the file."""
    natural_instructions: NaturalInstructionsOptions = NaturalInstructionsOptions()
    oasst: OasstOptions = OasstOptions()

    @model_validator(mode="after")
    def _check(self) -> BuildSource:
        chosen = [k for k in ("max_examples", "weight", "count") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"source {self.name!r}: {' and '.join(chosen)} can't both be set")
        for key in ("max_examples", "count"):
            if getattr(self, key) == 0:
                raise ValueError(
                    f"source {self.name!r}: {key}: 0 would drop the whole source; remove the "
                    "source instead"
                )
        if self.type == "table" and self.templates is None:
            raise ValueError(f"source {self.name!r}: a table source needs `templates`")
        if self.type != "table" and self.templates is not None:
            raise ValueError(f"source {self.name!r}: `templates` is for tables, not {self.type}")
        if any(k < 0 for k in self.shots):
            raise ValueError(f"source {self.name!r}: shots must be ≥ 0, got {self.shots}")
        return self


class OptionsStyle(StrictModel):
    style: Literal["fixed", "varied"] = "fixed"
    """`fixed`: FLAN's "OPTIONS:\\n- a\\n- b"; `varied`: a seeded header and item marker per row
    (Flan 2022); with lettered markers the target is the letter."""
    without: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of rows rendered with an empty OPTIONS clause."""


class FewShotOptions(StrictModel):
    max_length: int | None = Field(default=None, gt=0)
    """Token budget of prompt + target: exemplars are dropped from the end to fit. Counted with
    the tokenizer of `model` when the config sets `model:`, else in whitespace-separated words."""
    example_delimiter: str = "\n\n"
    """Between exemplars, and between the last exemplar and the row's prompt."""
    answer_delimiter: str = "\n"
    """Between an exemplar's prompt and its target."""


class DedupOptions(StrictModel):
    exact: bool = True
    """Drop rows whose normalized text (lowercased, whitespace folded) was seen before."""
    near: float | None = Field(default=None, gt=0.0, lt=1.0)
    """MinHash LSH Jaccard threshold over word 5-grams (256 permutations); null: off."""


class DecontaminateOptions(StrictModel):
    against: list[str] = Field(min_length=1)
    """Eval files (any reader format) whose text must not appear in the built rows."""
    ngram: int = Field(default=13, gt=0)
    """n-gram size over lowercased words; an eval text shorter than n words is matched whole."""
    fields: list[str] | None = None
    """The eval rows' fields whose texts count, each on its own. Default: every string field
    except `output`, `response`, `label` and `target`-like answers (see `ANSWER_FIELDS`)."""
    min_words: int = Field(default=4, gt=0)
    """Eval texts shorter than this are ignored (a one-word answer would match everything)."""


class LengthFilter(StrictModel):
    min_prompt_words: int | None = Field(default=None, ge=0)
    max_prompt_words: int | None = Field(default=None, gt=0)
    min_target_words: int | None = Field(default=None, ge=0)
    max_target_words: int | None = Field(default=None, gt=0)


class BuildConfig(StrictModel):
    seed: int = 0
    sources: list[BuildSource] = Field(min_length=1)
    eval_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Held out per source BEFORE rendering (by tree for oasst): eval rows never reach train,
    not even as exemplars."""
    options: OptionsStyle = OptionsStyle()
    fewshot: FewShotOptions = FewShotOptions()
    dedup: DedupOptions = DedupOptions()
    decontaminate: DecontaminateOptions | None = None
    lengths: LengthFilter = LengthFilter()
    on_error: Literal["fail", "skip"] = "fail"
    """A row that can't render stops the build naming file, row and field, or is skipped and
    counted by reason in the report."""

    @model_validator(mode="after")
    def _unique_names(self) -> BuildConfig:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"build.sources: duplicate source names {dup}")
        weights = sum(s.weight or 0.0 for s in self.sources)
        if weights > 1.0 + 1e-9:
            raise ValueError(f"build.sources: the weights add up to {weights:g} > 1")
        return self
