"""LLM-generated instruction data: Self-Instruct, Evol-Instruct and Unnatural-style generation with
the papers' filters, over the local inference engine or any OpenAI-compatible endpoint
(`run_synthesize` in `synthesis.run`)."""
