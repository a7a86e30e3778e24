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
"""

from __future__ import annotations

import logging
import warnings

BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
GC_WARNING = r"`is_gradient_checkpointing` is deprecated"

logger = logging.getLogger(__name__)


class _DropBnbKernelNotice(logging.Filter):
    """Turns bitsandbytes' optional-kernel notice into a debug line of ours; passes the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(BNB_KERNEL_MESSAGE):
            logger.debug("bitsandbytes: %s", record.getMessage())
            return False
        return True


def silence_known_noise() -> None:
    bnb = logging.getLogger(BNB_LOGGER)
    if not any(isinstance(f, _DropBnbKernelNotice) for f in bnb.filters):
        bnb.addFilter(_DropBnbKernelNotice())
    # module= matches where the warning is raised, so the same text from elsewhere still shows
    warnings.filterwarnings(
        "ignore", message=GC_WARNING, category=FutureWarning, module="transformers.modeling_utils"
    )
