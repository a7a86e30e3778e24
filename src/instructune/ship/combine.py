"""`run_combine(runs, weights, how, out)`: several LoRA runs on one base as one adapter.

peft's `add_weighted_adapter` does the arithmetic: `linear` (weighted sum of the low-rank
updates; equal ranks), `cat` (the adapters' factors side by side: the exact weighted sum of the
updates, rank = the sum of ranks), `ties` and `dare_ties` (trim to `density`, elect signs, merge;
equal ranks). The output is a run folder like a training output_dir: the adapter, the first run's
tokenizer and `template.jinja`, its `config.yaml` (so `load_bundle`, `eval`, `generate`, `merge`
take it) and a manifest naming the inputs, weights and method.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from instructune.bundle import load_bundle
from instructune.rundir import ADAPTER_CONFIG_FILE, TEMPLATE_FILE, RunDir

log = logging.getLogger(__name__)

How = Literal["linear", "cat", "ties", "dare_ties"]
HOWS: tuple[str, ...] = get_args(How)
EQUAL_RANKS = ("linear", "ties", "dare_ties")
"""Combinations whose result has the adapters' rank: they need one rank."""
COMBINED = "combined"


@dataclass
class CombineResult:
    out_dir: Path
    rank: int
    adapters: list[str]


def run_combine(
    runs: Sequence[str | Path],
    weights: Sequence[float],
    how: str = "linear",
    out: str | Path = "runs/combined",
    density: float | None = None,
) -> CombineResult:
    """Combine the LoRA adapters of `runs` (same base) with `weights` into a new run at `out`."""
    sources = [RunDir(Path(r)) for r in runs]
    _check_request(sources, weights, how, density)
    configs = [_lora_config(s) for s in sources]
    _check_same_base(sources)
    ranks = [int(c["r"]) for c in configs]
    if how in EQUAL_RANKS and len(set(ranks)) > 1:
        raise ValueError(
            f"--how {how} needs adapters of one rank, got r={ranks} for "
            f"{[s.path.name for s in sources]}; use --how cat (rank = the sum) or retrain"
        )
    templates = {s.template_text() for s in sources}
    if len(templates) > 1:
        raise ValueError(
            f"the runs were trained with different templates ({TEMPLATE_FILE} differs); a "
            "combined adapter is prompted one way: combine runs that share a template"
        )
    out_dir = _fresh(Path(out), sources)
    bundle = load_bundle(sources[0].path, adapters=[s.path for s in sources[1:]])
    model = bundle.model
    kwargs: dict[str, Any] = {"density": density} if density is not None else {}
    model.add_weighted_adapter(
        bundle.adapters, list(weights), COMBINED, combination_type=how, **kwargs
    )
    _save_adapter(model, out_dir)
    bundle.tokenizer.save_pretrained(out_dir)
    RunDir(out_dir).write_template(bundle.template.source_text)
    rank = int(model.peft_config[COMBINED].r)
    _write_manifest(sources, out_dir, weights, how, density, rank)
    log.debug("combined %d adapters (%s) into %s, rank %d", len(sources), how, out_dir, rank)
    return CombineResult(out_dir, rank, bundle.adapters)


def _check_request(
    sources: Sequence[RunDir], weights: Sequence[float], how: str, density: float | None
) -> None:
    if len(sources) < 2:
        raise ValueError("combine needs at least two runs")
    if len(weights) != len(sources):
        raise ValueError(f"--weights has {len(weights)} values for {len(sources)} runs")
    if how not in HOWS:
        raise ValueError(f"--how {how!r}: choose one of {list(HOWS)}")
    if density is not None and how not in ("ties", "dare_ties"):
        raise ValueError(f"--density is for --how ties or dare_ties, not {how}")
    if density is not None and not 0.0 < density <= 1.0:
        raise ValueError(f"--density {density}: must be in (0, 1]")
    if how in ("ties", "dare_ties") and density is None:
        raise ValueError(f"--how {how} needs --density (the share of each update kept, e.g. 0.5)")


def _lora_config(source: RunDir) -> dict[str, Any]:
    if source.kind != "adapter":
        raise FileNotFoundError(
            f"{source.path} has no {ADAPTER_CONFIG_FILE}: combine takes LoRA training output_dirs"
        )
    saved: dict[str, Any] = source.adapter_config()
    if saved.get("peft_type") != "LORA":
        raise ValueError(
            f"{source.path} is a {saved.get('peft_type')} adapter: combine takes LoRA runs only"
        )
    return saved


def _check_same_base(sources: Sequence[RunDir]) -> None:
    bases = [(s.base_model().path, s.base_model().revision) for s in sources]
    if len(set(bases)) > 1:
        listed = ", ".join(f"{s.path.name}: {b[0]}" for s, b in zip(sources, bases, strict=True))
        raise ValueError(
            f"the runs were trained on different base models ({listed}); "
            "combine adapters of one base"
        )


def _fresh(out: Path, sources: Sequence[RunDir]) -> Path:
    out = out.expanduser()
    if any(out.resolve() == s.path.resolve() for s in sources):
        raise ValueError(f"--out {out} is one of the input runs; choose a new folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _save_adapter(model: Any, out_dir: Path) -> None:
    """The combined adapter as `default` in `out_dir` (peft would nest it under its name)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = get_peft_model_state_dict(model, adapter_name=COMBINED)
    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    save_file(tensors, str(RunDir(out_dir).adapter_weights_file), metadata={"format": "pt"})
    model.peft_config[COMBINED].save_pretrained(str(out_dir))


def _write_manifest(
    sources: Sequence[RunDir],
    out_dir: Path,
    weights: Sequence[float],
    how: str,
    density: float | None,
    rank: int,
) -> None:
    from instructune.models.identity import BASE_MODEL_KEY, recorded_base

    try:
        cfg = sources[0].config()
    except ValueError:
        cfg = None
    if cfg is not None:
        lora = cfg.lora.model_copy(update={"r": rank})
        cfg = cfg.model_copy(update={"output_dir": str(out_dir), "lora": lora})
    combine = {
        "runs": [str(s.path.resolve()) for s in sources],
        "weights": list(weights),
        "how": how,
        "density": density,
        "rank": rank,
    }
    extra: dict[str, Any] = {"combine": combine}
    base = recorded_base(sources[0].path)  # one base (checked): loads check the combined run too
    if base is not None:
        extra[BASE_MODEL_KEY] = base
    RunDir(out_dir).write_manifest(cfg, "combine", extra)


__all__ = ["HOWS", "CombineResult", "run_combine"]
