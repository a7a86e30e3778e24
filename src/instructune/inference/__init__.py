"""Inference: the engine (prompts, batched decoding, sampling, streaming), generate, chat, serve."""
