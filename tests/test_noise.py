"""Known upstream noise is silenced at its source; real warnings still show."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from instructune.noise import BNB_KERNEL_MESSAGE, BNB_LOGGER, silence_known_noise

GC_TEXT = "`is_gradient_checkpointing` is deprecated and will be removed in v6."


def test_bnb_kernel_notice_dropped_other_bnb_messages_kept(caplog: Any) -> None:
    silence_known_noise()
    silence_known_noise()  # idempotent: one filter
    bnb = logging.getLogger(BNB_LOGGER)
    assert len(bnb.filters) == 1
    with caplog.at_level(logging.WARNING):
        bnb.warning("%s: No module named 'kernels'. Please pip install kernels", BNB_KERNEL_MESSAGE)
        bnb.warning("a real bitsandbytes problem")
    assert "a real bitsandbytes problem" in caplog.text
    assert BNB_KERNEL_MESSAGE not in caplog.text


def test_gradient_checkpointing_deprecation_dropped_only_from_transformers() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        silence_known_noise()
        for module, text in [
            ("transformers.modeling_utils", GC_TEXT),  # the noise
            ("transformers.modeling_utils", "something else is deprecated"),  # real
            ("mycode", GC_TEXT),  # same text, not from transformers
        ]:
            warnings.warn_explicit(text, FutureWarning, "f.py", 1, module=module)
    assert [str(w.message) for w in seen] == ["something else is deprecated", GC_TEXT]


def test_first_training_run_prints_neither(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "train.jsonl"
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"It is {i}."} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{path: {tiny_model_dir}}}\ndata: {{train: [{{path: {data}}}], max_length: 64}}\n"
        "train: {max_steps: 1, micro_batch_size: 2, gradient_checkpointing: true}\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    out = subprocess.run(
        [sys.executable, "-m", "instructune", "train", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gemm_4bit_forward" not in out.stderr
    assert "is_gradient_checkpointing" not in out.stderr
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
