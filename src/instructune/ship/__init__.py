"""Ship a run: merge its adapter into the base (`run_merge`), export it as GGUF (`run_export`),
each proved by a logit-parity check against the trained model."""
