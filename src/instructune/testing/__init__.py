"""Tiny in-process models and tokenizers for tests, benchmarks and examples (no downloads)."""
