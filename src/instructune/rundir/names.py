"""The one home of the names of the files and folders a command writes into its output folder.

A training `output_dir` holds `config.yaml` + `manifest.json`, `metrics.jsonl`,
`training_curves.png`, `train_results.json`, the adapter (`adapter_config.json` +
`adapter_model.safetensors`) or the full model (`config.json` + weights), the tokenizer files,
`template.jinja`, `prepared/` (prepare's summary and dumps) and `checkpoints/checkpoint-N/`
(staged in `checkpoints/.incomplete/`, each with `run_info.json` and `token_counts.json`).
`eval`, `build` and `merge` folders hold the same manifest and config beside their own files.
"""

from __future__ import annotations

# every run
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"

# training
METRICS_FILE = "metrics.jsonl"
TEMPLATE_FILE = "template.jinja"
RESULTS_FILE = "train_results.json"
PLOT_FILE = "training_curves.png"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
STAGING_DIR = ".incomplete"
RUN_INFO_FILE = "run_info.json"
COUNTS_FILE = "token_counts.json"

# what a trained (or merged) model folder holds
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
MODEL_CONFIG_FILE = "config.json"
MODEL_WEIGHTS_FILE = "model.safetensors"
MODEL_WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
PARITY_FILE = "parity.json"

# prepare
PREPARED_DIR = "prepared"
SUMMARY_FILE = "summary.json"
SPLIT_FILE = "{split}.jsonl"
"""`prepare --dump`'s tokenized examples of one split (and `build`'s rows: `TRAIN_FILE`)."""
BINS_FILE = "{split}_bins.jsonl"
"""With packing, one row per packed row: `examples`, the dumped examples' indices it holds."""

# build
TRAIN_FILE = SPLIT_FILE.format(split="train")
EVAL_FILE = SPLIT_FILE.format(split="eval")
BUILD_REPORT_FILE = "build_report.json"
BUILD_REPORT_MD = "build_report.md"

# eval
EVAL_METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
EVAL_REPORT_FILE = "report.html"
EVAL_REPORT_MD = "report.md"
RELIABILITY_FILE = "reliability_{task}.png"
"""One classification task's reliability diagram (`task`: the task name made file-safe)."""

# synthesize
SYNTH_ROWS_FILE = "synth.jsonl"
SYNTH_CACHE_FILE = "synth_cache.jsonl"
SYNTH_REPORT_FILE = "synth_report.json"
SYNTH_REPORT_MD = "synth_report.md"
