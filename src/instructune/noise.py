"""Known upstream messages that say nothing to a user, silenced one by one (real warnings stay).

Each entry names its upstream source and why it is noise. `silence_known_noise()` is called by
the CLI and the `run_*` entry points (never at import), and is idempotent.

- bitsandbytes 0.50 (`bitsandbytes/backends/cpu/ops.py`), on CPUs with AVX512-BF16: at import it
  tries to fetch an optional faster 4-bit CPU kernel from the Hub through the `kernels` package
  and logs a warning when it can't (package missing, or offline). bitsandbytes then uses its own
  CPU kernel, which is what runs everywhere else: nothing is wrong and nothing needs doing.
- transformers 5 deprecated `PreTrainedModel.is_gradient_checkpointing` (FutureWarning), and
  peft 0.21 reads it in `PeftModel.__init__` (`getattr(model, "is_gradient_checkpointing", True)`)
  on every LoRA model it wraps. We switch checkpointing on ourselves through the new
  `activation_checkpointing_enable`; the warning is about peft's code, not the user's.
- peft 0.21 `PeftModel.add_adapter` (`peft/peft_model.py`) warns when an adapter's name is a
  substring of its method's parameter prefix ("lora_", "ia3_", "prompt_tuning_", ...): a run
  folder named `prompt_tuning`, or an eval adapter named `a`, loads under that name. The
  "reinitialization" it warns of only happens in peft's tensor-parallel loading, which does
  `adapter_name in key` tests; the loading we use inserts the name after the last prefix
  (`_insert_adapter_name_into_state_dict`), so the weights load the same under any name
  (tests/test_noise.py compares them). The missing-keys warning with the same opening stays.
- httpx 0.29 (`httpx/_client.py`, logger `httpx`) and its fork httpx2 (logger `httpx2`, which
  openai 3 uses) log every request at INFO (`HTTP Request: POST <url> "HTTP/1.1 200 OK"`); the
  CLI logs at INFO, so `synthesize` over an OpenAI-compatible endpoint printed a line per request
  through its progress bar. Failures reach the user through our own retry
  counts and errors; only that one message is dropped, httpx's warnings stay.
"""

from __future__ import annotations

import logging
import warnings

BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
HTTPX_LOGGERS = ("httpx", "httpx2")
HTTPX_REQUEST_MESSAGE = "HTTP Request: "
GC_WARNING = r"`is_gradient_checkpointing` is deprecated"
PEFT_NAME_WARNING = r"Adapter name '[^']*' should not be contained in the prefix '[^']*'\. This may"

logger = logging.getLogger(__name__)


class _DropBnbKernelNotice(logging.Filter):
    """Turns bitsandbytes' optional-kernel notice into a debug line of ours; passes the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(BNB_KERNEL_MESSAGE):
            logger.debug("bitsandbytes: %s", record.getMessage())
            return False
        return True


class _DropHttpxRequestLine(logging.Filter):
    """Drops httpx's per-request INFO line; passes its other records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO and str(record.msg).startswith(HTTPX_REQUEST_MESSAGE)
        )


def silence_known_noise() -> None:
    noisy: list[tuple[str, type[logging.Filter]]] = [(BNB_LOGGER, _DropBnbKernelNotice)]
    noisy += [(name, _DropHttpxRequestLine) for name in HTTPX_LOGGERS]
    for name, kind in noisy:
        upstream = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in upstream.filters):
            upstream.addFilter(kind())
    # module= matches where the warning is raised, so the same text from elsewhere still shows
    warnings.filterwarnings(
        "ignore", message=GC_WARNING, category=FutureWarning, module="transformers.modeling_utils"
    )
    warnings.filterwarnings(
        "ignore", message=PEFT_NAME_WARNING, category=UserWarning, module="peft.peft_model"
    )
