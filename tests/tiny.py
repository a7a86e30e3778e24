"""Build a tiny tokenizer (byte-level BPE trained in-process) and a tiny random Llama.

Used by the test suite and by bench/gpu.py (its tokenizer, learned from the training rows): nothing
here touches the network. The tokenizer has a ChatML chat template like SmolLM2's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.",
    "### Instruction:\n### Input:\n### Response:\n",
    "system user assistant You are a helpful assistant.",
    "The quick brown fox jumps over the lazy dog. 0123456789 True False OPTIONS: - yes - no",
    "We will build 10,000 km of subway lines in the next ten years.",
    "What is the capital of France? Paris is the capital of France.",
    "Translate to German: good morning. Guten Morgen!",
]


def tiny_tokenizer(
    vocab_size: int = 400, pad_is_eos: bool = False, corpus: Sequence[str] | None = None
) -> Any:
    """A fast tokenizer with ChatML specials and chat template; `pad_is_eos` mimics SmolLM2.
    `corpus`: the texts to learn merges from (default: a few test sentences); bench/gpu.py learns
    a full-size vocabulary from its training data this way, with no files to download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4 if corpus is None else corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>" if pad_is_eos else "<pad>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 2, seed: int = 0) -> Any:
    """A 2-layer random Llama sized for unit tests (fp32, eager-compatible, sdpa by default)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    return LlamaForCausalLM(config)
