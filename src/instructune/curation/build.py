"""`run_build`: sources → items → filters → split → render → lengths → mixture → files.

Everything that can fail on bad input (templates, columns, labels, rendering) runs before the
first file is written. The output rows are `{"messages": [...], "meta": {...}}`, which the
`messages` format of `prepare`/`train` reads unchanged (it takes the label from `meta.label`).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from instructune.config import Config, ConfigError
from instructune.config.build import BuildConfig, BuildSource, FlanTemplates
from instructune.curation.filters import decontaminate, exact_dedup, length_problem, near_dedup
from instructune.curation.mixture import mix
from instructune.curation.natinst import natinst_items
from instructune.curation.oasst import oasst_items
from instructune.curation.render import Example, TableRenderer, item_example
from instructune.curation.report import BuildReport, SourceStats
from instructune.curation.sources import Item, SkipCounter, table_items
from instructune.curation.task_templates import BuildTemplate, load_templates, template_hash
from instructune.data.conversation import DataError, RowError
from instructune.data.lineage import file_sha256
from instructune.rundir import (
    BUILD_REPORT_FILE,
    BUILD_REPORT_MD,
    EVAL_FILE,
    TRAIN_FILE,
    RunDir,
    claim_output_dir,
    existing_outputs,
)

__all__ = ["BuildResult", "run_build", "split_items"]

REPORT_FILES = (BUILD_REPORT_FILE, BUILD_REPORT_MD)


@dataclass
class BuildResult:
    out_dir: Path
    train_rows: int
    eval_rows: int
    report: BuildReport
    text: str


@dataclass
class _Loaded:
    source: BuildSource
    templates: list[BuildTemplate]
    items: list[Item]
    skips: SkipCounter


def run_build(cfg: Config, overwrite: bool = False) -> BuildResult:
    """Build `cfg.build` into `cfg.output_dir`; bad input raises before any file is written.

    `output_dir` must be new, empty or an instructune folder without an earlier build; with
    `overwrite` an earlier build there is replaced."""
    if cfg.build is None:
        raise ValueError("instructune build needs a `build:` section in the config")
    build = cfg.build
    _claim(cfg.output_path, build, overwrite)
    count_tokens, budget_note = _token_counter(cfg, build)
    report = BuildReport(sources={s.name: SourceStats() for s in build.sources})
    if budget_note:
        report.notes.append(budget_note)
    loaded = [_load(s, build, report.sources[s.name]) for s in build.sources]
    kept = _filter([i for part in loaded for i in part.items], build, report)
    train: dict[str, list[Example]] = {}
    evaluation: list[Example] = []
    for part in loaded:
        stats = report.sources[part.source.name]
        items = [i for i in kept if i.source == part.source.name]
        if not items:
            raise DataError(f"source {part.source.name!r}: every row was removed by the filters")
        train_items, eval_items = split_items(
            items, build.eval_fraction, f"{build.seed}/split/{part.source.name}"
        )
        stats.train_items, stats.eval_items = len(train_items), len(eval_items)
        render = _renderer(part, train_items, build, count_tokens)
        train[part.source.name] = _render_all(train_items, render, part.skips, build, stats)
        held_out = _render_all(eval_items, render, part.skips, build, stats)
        evaluation += held_out
        stats.train_rows, stats.eval_rows = len(train[part.source.name]), len(held_out)
        stats.skipped, stats.skip_examples = part.skips.counts, part.skips.examples
    mixed, report.mixture = mix(train, build.sources, build.seed)
    for example in mixed:
        stats = report.sources[example.meta["source"]]
        stats.mixed_rows += 1
        if example.meta["label"] is not None:
            stats.labels[str(example.meta["label"])] += 1
    return _write(
        cfg, build, loaded, mixed, evaluation if build.eval_fraction > 0 else None, report
    )


def _claim(out_dir: Path, build: BuildConfig, overwrite: bool) -> None:
    """Refuse a folder that is not ours or holds the inputs, and an earlier build unless
    `overwrite`: a build replaces train.jsonl, eval.jsonl and its reports there."""
    claim_output_dir(out_dir, command="build", inputs=build_inputs(build))
    earlier = existing_outputs(out_dir, [TRAIN_FILE, EVAL_FILE, *REPORT_FILES])
    if earlier and not overwrite:
        raise ConfigError(
            f"output_dir {str(out_dir)!r} holds an earlier build ({', '.join(earlier)}); pass "
            "--overwrite to replace it, or choose another output_dir"
        )


def build_inputs(build: BuildConfig) -> list[str]:
    """The local files a build reads: sources, template files, decontamination sets."""
    templates = [path for path in map(_template_file, build.sources) if path is not None]
    against = build.decontaminate.against if build.decontaminate else []
    return [*(s.path for s in build.sources), *templates, *against]


def _template_file(source: BuildSource) -> str | None:
    """The file a source's `templates:` names (a built-in set's name is no file), or None."""
    spec = source.templates
    return spec.flan if isinstance(spec, FlanTemplates) else spec if isinstance(spec, str) else None


def _load(source: BuildSource, build: BuildConfig, stats: SourceStats) -> _Loaded:
    skips = SkipCounter(build.on_error)
    templates: list[BuildTemplate] = []
    if source.type == "table":
        templates = load_templates(source)
        items = table_items(source, templates, skips)
    elif source.type == "natural_instructions":
        items = natinst_items(source, skips)
    else:
        items = oasst_items(source, skips, stats.notes)
    stats.rows_in = len(items) + sum(skips.counts.values())
    return _Loaded(source, templates, items, skips)


def _filter(items: list[Item], build: BuildConfig, report: BuildReport) -> list[Item]:
    if build.dedup.exact:
        items, removed = exact_dedup(items)
        report.removed += removed
    if build.dedup.near is not None:
        items, removed, report.clusters = near_dedup(items, build.dedup.near)
        report.removed += removed
    if build.decontaminate is not None:
        items, removed = decontaminate(items, build.decontaminate)
        report.removed += removed
    for r in report.removed:
        report.sources[r.item.source].removed[r.reason] += 1
    return items


def split_items(items: list[Item], fraction: float, seed: str) -> tuple[list[Item], list[Item]]:
    """Hold out `fraction` of the groups (rows, instances, trees), stratified by label."""
    if fraction == 0:
        return items, []
    groups: dict[str, str] = {}  # group → stratum (its first item's label)
    for item in items:
        groups.setdefault(item.group, item.label or "")
    if len(groups) < 2:
        raise DataError(
            f"source {items[0].source!r}: can't hold out an eval fraction of {len(groups)} "
            "group(s); add data or set build.eval_fraction: 0"
        )
    strata: dict[str, list[str]] = {}
    for group, stratum in groups.items():
        strata.setdefault(stratum, []).append(group)
    rng = random.Random(seed)
    held: set[str] = set()
    for stratum in sorted(strata):
        members = strata[stratum]
        if len(members) >= 2:
            held.update(
                rng.sample(members, min(max(1, round(len(members) * fraction)), len(members) - 1))
            )
    if not held:  # every stratum is a single group: sample across them
        held.add(rng.choice(sorted(groups)))
    return [i for i in items if i.group not in held], [i for i in items if i.group in held]


def _renderer(
    part: _Loaded, pool: list[Item], build: BuildConfig, count_tokens: Callable[[str], int]
) -> Callable[[Item], Example]:
    source = part.source
    if source.type == "table":
        return TableRenderer(source, part.templates, pool, build, count_tokens).render
    if source.type == "natural_instructions":
        opts = source.natural_instructions
        shots = 0 if opts.encoding == "definition" else opts.num_positive
        return lambda item: item_example(item, f"natural_instructions/{opts.encoding}", shots)
    oasst = source.oasst
    kind = f"pairs-{oasst.pair_with}/" if oasst.output == "pairs" else ""
    return lambda item: item_example(item, f"oasst/{kind}{oasst.paths}", 0)


def _render_all(
    items: list[Item],
    render: Callable[[Item], Example],
    skips: SkipCounter,
    build: BuildConfig,
    stats: SourceStats,
) -> list[Example]:
    out: list[Example] = []
    # tqdm's disable=None: a bar on a terminal, silence in logs and tests
    for item in tqdm(items, desc=f"render {_source_name(items)}", unit="row", disable=None):
        try:
            example = render(item)
        except RowError as e:
            skips.handle(e)
            continue
        problem = length_problem(example, build.lengths)
        if problem is not None:
            stats.removed[problem] += 1
            continue
        out.append(example)
    return out


def _source_name(items: list[Item]) -> str:
    return items[0].source if items else ""


def _token_counter(cfg: Config, build: BuildConfig) -> tuple[Callable[[str], int], str | None]:
    if build.fewshot.max_length is None:
        return _words, None
    if "model" not in cfg.model_fields_set:
        return _words, (
            "few-shot budget counted in whitespace-separated words: the config sets no `model:` "
            "whose tokenizer could count tokens"
        )
    from instructune.models.loading import load_tokenizer  # lazy: transformers is heavy

    tokenizer = load_tokenizer(cfg.model)
    note = f"few-shot budget counted in tokens of {cfg.model.path}"
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]), note


def _words(text: str) -> int:
    return len(text.split())


def _write(
    cfg: Config,
    build: BuildConfig,
    loaded: list[_Loaded],
    train: list[Example],
    evaluation: list[Example] | None,
    report: BuildReport,
) -> BuildResult:
    run = RunDir(cfg.output_path)
    out_dir = run.path
    # marked as ours before the first file: a build killed mid-way can be rerun into out_dir
    run.write_manifest(cfg, "build", {"seed": {"build": build.seed}})
    written = {TRAIN_FILE: _write_jsonl(run.train_file, train)}
    if evaluation is not None:
        written[EVAL_FILE] = _write_jsonl(run.eval_file, evaluation)
    else:
        run.eval_file.unlink(missing_ok=True)  # a stale split of an earlier build
    report.outputs = {name: n for name, n in written.items()}
    report.write(out_dir)
    lineage = _lineage(build, loaded, out_dir, list(written))
    run.write_manifest(cfg, "build", {"seed": {"build": build.seed}, "lineage": lineage})
    text = _summary(report, out_dir, written)
    return BuildResult(out_dir, len(train), len(evaluation or []), report, text)


def _write_jsonl(path: Path, rows: list[Example]) -> int:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(rows)


def _lineage(
    build: BuildConfig, loaded: list[_Loaded], out_dir: Path, files: list[str]
) -> dict[str, Any]:
    inputs = {s.path: file_sha256(s.path) for s in build.sources if Path(s.path).exists()}
    for s in build.sources:
        path = _template_file(s)
        if path is not None and Path(path).is_file():
            inputs[path] = file_sha256(path)
    for path in build.decontaminate.against if build.decontaminate else []:
        inputs[path] = file_sha256(path)
    return {
        "inputs": inputs,
        "templates": {p.source.name: template_hash(p.templates) for p in loaded if p.templates},
        "outputs": {name: file_sha256(out_dir / name) for name in [*files, *REPORT_FILES]},
    }


def _summary(report: BuildReport, out_dir: Path, written: dict[str, int]) -> str:
    lines = ["source                rows in  skipped  removed    train     eval   in mix"]
    for name, s in report.sources.items():
        lines.append(
            f"{name[:20]:<20} {s.rows_in:>8} {sum(s.skipped.values()):>8} "
            f"{sum(s.removed.values()):>8} {s.train_rows:>8} {s.eval_rows:>8} {s.mixed_rows:>8}"
        )
    drops = Counter[str]()
    for s in report.sources.values():
        drops.update(s.skipped + s.removed)
    if drops:
        lines.append("dropped: " + ", ".join(f"{k}: {v}" for k, v in sorted(drops.items())))
    lines += report.notes
    lines.append(", ".join(f"{name}: {n} rows" for name, n in written.items()))
    lines.append(f"report: {RunDir(out_dir).build_report_md}")
    return "\n".join(lines)
