"""`run_synthesize(cfg)`: seeds → method → `synth.jsonl`, `synth_report.{json,md}`, manifest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from instructune.config import Config
from instructune.config.synthesize import SynthBackendConfig, SynthesizeConfig
from instructune.rundir import SYNTH_CACHE_FILE, SYNTH_ROWS_FILE, RunDir, claim_output_dir
from instructune.synthesis.backends import Backend, BackendError
from instructune.synthesis.cache import RequestCache
from instructune.synthesis.client import BudgetExhausted, Client
from instructune.synthesis.context import Progress, SynthContext
from instructune.synthesis.evol import run_evol_instruct
from instructune.synthesis.output import RowSink, Tally, write_report
from instructune.synthesis.prompts import Prompts
from instructune.synthesis.seeds import SeedTask, load_seeds
from instructune.synthesis.self_instruct import run_self_instruct
from instructune.synthesis.unnatural import run_unnatural

log = logging.getLogger(__name__)

Method = Callable[[SynthContext, list[SeedTask]], str]
METHODS: dict[str, Method] = {
    "self_instruct": run_self_instruct,
    "evol_instruct": run_evol_instruct,
    "unnatural": run_unnatural,
}


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    rows: int
    kept_instructions: int
    stop_reason: str
    report: dict[str, Any]


def run_synthesize(
    cfg: Config, backend: Backend | None = None, show_progress: bool = True
) -> SynthResult:
    """Generate instruction data as `cfg.synthesize` says; `backend` replaces the configured one."""
    sc = cfg.synthesize
    if sc is None:
        raise ValueError("the config has no `synthesize:` section")
    if sc.method not in METHODS:
        raise ValueError(
            f"unknown synthesize.method {sc.method!r}; choose one of {sorted(METHODS)}"
        )
    seeds = load_seeds(sc.seeds)
    prompts = Prompts(sc.prompts_dir)
    out_dir = cfg.output_path
    _claim(cfg, sc)
    backend = backend if backend is not None else make_backend(sc.backend)
    run = RunDir(out_dir)
    cache = RequestCache(run.synth_cache_file)
    client = Client(backend, cache, sc.seed, sc.backend.max_requests)
    sink = RowSink(run.synth_rows_file)
    ctx = SynthContext(sc, client, prompts, Tally(), sink)
    bar = _progress_bar(sc.num_instructions, sc.method) if show_progress else None
    ctx.progress = Progress(bar)
    client.on_response = lambda: ctx.progress.update(ctx)
    stop_reason = "interrupted"
    try:
        stop_reason = METHODS[sc.method](ctx, seeds)
    except BudgetExhausted as err:
        stop_reason = str(err)
    except BackendError as err:
        stop_reason = f"backend error: {err}"
        raise
    except Exception as err:
        stop_reason = f"stopped by {type(err).__name__}: {err}"
        raise
    finally:
        if bar is not None:
            bar.close()
        sink.close()
        cache.close()
        backend.close()
        report = _finish(cfg, ctx, stop_reason)
    log.info("synthesize: %s; %d rows in %s", stop_reason, sink.count, run.synth_rows_file)
    return SynthResult(out_dir, sink.count, ctx.tally.kept_instructions, stop_reason, report)


def _claim(cfg: Config, sc: SynthesizeConfig) -> None:
    """A new, empty or instructune folder (an earlier synthesize there resumes), marked as ours
    before the first row: a run killed mid-way can be rerun into it."""

    inputs = [sc.seeds, *([sc.prompts_dir] if sc.prompts_dir else [])]
    if sc.backend.type == "local" and sc.backend.model:
        inputs.append(sc.backend.model)  # a training output_dir the prompts go to
    claim_output_dir(cfg.output_path, command="synthesize", inputs=inputs)
    RunDir(cfg.output_path).write_manifest(cfg, "synthesize", {"seed": {"synthesize": sc.seed}})


def _progress_bar(total: int, method: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"synthesize {method}", unit="instr", dynamic_ncols=True)


def _finish(cfg: Config, ctx: SynthContext, stop_reason: str) -> dict[str, Any]:
    """Report and manifest, written whatever the outcome (an error still leaves a report)."""
    from instructune.data.lineage import file_sha256

    sc = ctx.cfg
    stats = ctx.client.stats
    usage = {**asdict(stats), "retries": getattr(ctx.client.backend, "retries", 0)}
    cost = (
        stats.prompt_tokens * sc.backend.price_prompt_per_1m
        + stats.completion_tokens * sc.backend.price_completion_per_1m
    ) / 1e6
    report = {
        "method": sc.method,
        "target": sc.num_instructions,
        "kept_instructions": ctx.tally.kept_instructions,
        "dropped_instructions": ctx.tally.dropped_instructions,
        "rows": ctx.sink.count,
        "stop_reason": stop_reason,
        "backend": ctx.client.backend.kind,
        "model": ctx.client.backend.model,
        "usage": usage,
        "cost_usd": cost,
    }
    out_dir = cfg.output_path
    report = write_report(out_dir, report, ctx.tally)
    RunDir(out_dir).write_manifest(
        cfg,
        "synthesize",
        {
            "seed": {"synthesize": sc.seed},
            "data": {"seeds": {"path": sc.seeds, "sha256": file_sha256(sc.seeds)}},
            "outputs": {"rows": SYNTH_ROWS_FILE, "cache": SYNTH_CACHE_FILE},
            "metrics": report,
        },
    )
    return report


def make_backend(cfg: SynthBackendConfig) -> Backend:
    """The backend the config names (registry: local, openai); here, above the backends
    (which import the protocol from backends.py), so no import circle forms."""
    if cfg.type == "openai":
        from instructune.synthesis.openai_backend import OpenAIBackend

        return OpenAIBackend(cfg)
    if cfg.type == "local":
        from instructune.synthesis.local_backend import LocalBackend

        return LocalBackend(cfg)
    raise ValueError(f"unknown synthesize.backend.type {cfg.type!r}; choose one of local, openai")
