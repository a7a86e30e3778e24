"""peft's other methods: prompt tuning, prefix tuning and IA3 (LoRA lives in peft_setup.py).

Prompt and prefix tuning put `num_virtual_tokens` trained positions before every input: prompt
tuning as input embeddings, prefix tuning as keys/values in every layer. Our training loss path
(`models.logprobs.trained_hidden`) drops the virtual positions prompt tuning adds to the hidden
states, and the inference engine feeds the virtual tokens once into the KV cache at prefill
(`virtual_prefix`), so generation continues the same positions training saw: real tokens at
positions `num_virtual_tokens ...`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from instructune.config.methods import IA3Config, PrefixTuningConfig, PromptTuningConfig

if TYPE_CHECKING:
    import torch

ADAPTER_KEY_MARKERS = ("lora_", "ia3_", "prompt_embeddings")
"""Substrings of the keys a saved peft adapter holds (anything else is a base-model weight)."""


def prompt_tuning_model(model: Any, section: PromptTuningConfig, tokenizer: Any) -> Any:
    """`model` with trained virtual input tokens; `init_text` initialises them from its tokens."""
    from peft import PromptTuningConfig as PeftPromptTuningConfig
    from peft import get_peft_model

    config = PeftPromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=section.num_virtual_tokens
    )
    peft_model = get_peft_model(model, config)
    if section.init_text is not None:
        init_from_text(peft_model, section.init_text, tokenizer)
    return peft_model


def init_from_text(peft_model: Any, text: str, tokenizer: Any) -> None:
    """Copy `text`'s token embeddings into the virtual tokens, repeated or cut to fit, as peft's
    TEXT initialisation does (done here with the run's tokenizer: peft would load one by path)."""
    import torch

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("prompt_tuning.init_text has no tokens; give some text or omit it")
    n = peft_model.active_peft_config.num_virtual_tokens
    ids = (ids * (n // len(ids) + 1))[:n]
    embeddings = peft_model.get_input_embeddings()
    weight = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
    with torch.no_grad():
        index = torch.tensor(ids, device=embeddings.weight.device)
        weight.copy_(embeddings(index).detach().to(weight.dtype))


def prefix_tuning_model(model: Any, section: PrefixTuningConfig) -> Any:
    from peft import PrefixTuningConfig as PeftPrefixTuningConfig
    from peft import get_peft_model

    config = PeftPrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=section.num_virtual_tokens,
        prefix_projection=section.projection,
    )
    return get_peft_model(model, config)


def ia3_model(model: Any, section: IA3Config) -> Any:
    from peft import IA3Config as PeftIA3Config
    from peft import get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    missing = [m for m in section.target_modules if m not in names]
    if missing:
        raise ValueError(
            f"ia3.target_modules {missing} don't exist in {type(model).__name__}; its modules "
            f"include {sorted(n for n in names if n.endswith('proj'))}"
        )
    config = PeftIA3Config(
        task_type="CAUSAL_LM",
        target_modules=section.target_modules,
        feedforward_modules=section.feedforward_modules,
    )
    return get_peft_model(model, config)


def prompt_learning_type(model: Any) -> str | None:
    """ "PROMPT_TUNING" / "PREFIX_TUNING" for a peft model whose active adapter puts virtual
    tokens first (unwrapping DDP), else None (plain models, LoRA, IA3, a disabled adapter)."""
    inner = getattr(model, "module", model)
    config = getattr(inner, "active_peft_config", None)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return None
    return str(getattr(config.peft_type, "value", config.peft_type))


def virtual_token_count(model: Any) -> int:
    """How many virtual tokens the model puts before every input (0 without prompt learning)."""
    if prompt_learning_type(model) is None:
        return 0
    return int(getattr(model, "module", model).active_peft_config.num_virtual_tokens)


def virtual_input_positions(model: Any) -> int:
    """Leading positions of the hidden states that are virtual tokens: prompt tuning's (prefix
    tuning's live in the KV cache, not in the sequence)."""
    if prompt_learning_type(model) != "PROMPT_TUNING":
        return 0
    return virtual_token_count(model)


def virtual_prefix(model: Any, batch_size: int) -> Any:
    """A KV cache holding the virtual tokens of `batch_size` rows, to prefill after: prefix
    tuning's trained keys/values, or prompt tuning's embeddings run through the base model."""
    from transformers import DynamicCache

    kind = prompt_learning_type(model)
    if kind == "PREFIX_TUNING":
        n = model.active_peft_config.num_virtual_tokens
        return model.get_prompt(batch_size, max_cache_len=n + 1)
    if kind != "PROMPT_TUNING":
        raise ValueError(f"{type(model).__name__} has no virtual tokens")
    base = model.get_base_model()
    embeds = model.get_prompt(batch_size=batch_size).to(base.dtype)
    cache = DynamicCache(config=base.config)
    base(inputs_embeds=embeds, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache


def prefix_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
    """`mask` [B, L] with `n` attended virtual-token columns in front."""
    import torch

    return torch.cat([mask.new_ones((mask.shape[0], n)), mask], dim=1)
