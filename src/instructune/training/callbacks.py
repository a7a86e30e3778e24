"""Trainer callbacks: `metrics.jsonl` (one record per log/eval event) and a tqdm progress bar.

Throughput is measured over the time spent inside optimizer steps (from the first micro-batch's
forward to the scheduler step), so evaluation and checkpointing pauses don't deflate tokens/s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from instructune.rundir import MetricsLog, RunDir
from instructune.training.trainer import TokenCounter

TRAIN_KEYS = (
    "step",
    "epoch",
    "loss",
    "learning_rate",
    "grad_norm",
    "tokens",
    "trained_tokens",
    "tokens_per_s",
    "trained_tokens_per_s",
    "elapsed_s",
)


class StepClock(TrainerCallback):
    """Seconds spent in optimizer steps; shared by the metrics log and the progress bar."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.first_step_s: float | None = None
        """The session's first step alone: it carries one-time costs (compilation, warm-up)."""
        self._started: float | None = None

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._started = time.perf_counter()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._started is not None:
            elapsed = time.perf_counter() - self._started
            self.seconds += elapsed
            if self.first_step_s is None:
                self.first_step_s = elapsed
            self._started = None


class _Window:
    """Counts and step time at the previous report, to turn totals into rates."""

    def __init__(self, counter: TokenCounter) -> None:
        self.tokens = counter.tokens
        self.trained = counter.trained_tokens
        self.seconds = 0.0

    def rates(self, counter: TokenCounter, clock: StepClock) -> tuple[float, float]:
        dt = clock.seconds - self.seconds
        tokens, trained = counter.tokens - self.tokens, counter.trained_tokens - self.trained
        self.tokens, self.trained, self.seconds = (
            counter.tokens,
            counter.trained_tokens,
            clock.seconds,
        )
        if dt <= 0:
            return 0.0, 0.0
        return tokens / dt, trained / dt


class LogReader(TrainerCallback):
    """A callback that reads the Trainer's log events: `read(state, logs)` for each non-empty
    one (train records, eval records, the end-of-training summary)."""

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if logs:
            self.read(state, logs)

    def read(self, state: TrainerState, logs: dict[str, Any]) -> None:
        raise NotImplementedError


class MetricsCallback(LogReader):
    """Appends train records (loss, lr, grad norm, token counts and rates) and eval records."""

    def __init__(self, path: Path, counter: TokenCounter, clock: StepClock) -> None:
        self.log = MetricsLog(path)
        self.counter = counter
        self.clock = clock
        self._window = _Window(counter)

    def read(self, state: TrainerState, logs: dict[str, Any]) -> None:
        if not state.is_world_process_zero:
            return
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
        if "loss" in logs:
            tokens_per_s, trained_per_s = self._window.rates(self.counter, self.clock)
            record |= {
                "loss": logs["loss"],
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "tokens": self.counter.tokens,
                "trained_tokens": self.counter.trained_tokens,
                "tokens_per_s": tokens_per_s,
                "trained_tokens_per_s": trained_per_s,
                "elapsed_s": self.clock.seconds,
            }
            # preference objectives log their rewards and accuracies per step (dpo, reward)
            record |= {k: v for k, v in logs.items() if k.startswith(PREFERENCE_METRICS)}
        elif "eval_loss" in logs:
            record["eval_loss"] = logs["eval_loss"]
        else:
            return  # the Trainer's end-of-training summary: run_train writes its own
        self.log.write(record)


PREFERENCE_METRICS = ("rewards/", "logps/")


class ProgressCallback(LogReader):
    """A tqdm bar over optimizer steps showing the last loss and tokens/s; tqdm adds the ETA."""

    def __init__(self, counter: TokenCounter, clock: StepClock) -> None:
        self.counter = counter
        self.clock = clock
        self.bar: Any = None
        self._loss: float | None = None
        self._start_tokens = 0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._start_tokens = self.counter.tokens  # a resumed run starts from its checkpoint's count
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.bar is None:
            return
        self.bar.update(state.global_step - self.bar.n)
        tokens = self.counter.tokens - self._start_tokens
        postfix = {"tok/s": f"{tokens / max(self.clock.seconds, 1e-9):.0f}"}
        if self._loss is not None:
            postfix["loss"] = f"{self._loss:.4f}"
        self.bar.set_postfix(postfix, refresh=False)

    def read(self, state: TrainerState, logs: dict[str, Any]) -> None:
        if "loss" in logs:
            self._loss = float(logs["loss"])

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def load_counts(checkpoint: Path | None) -> TokenCounter:
    """The counts saved with `checkpoint` (zeros for a fresh run or an older checkpoint)."""
    path = RunDir(checkpoint).counts_file if checkpoint is not None else None
    if path is None or not path.is_file():
        return TokenCounter()
    counts = json.loads(path.read_text(encoding="utf-8"))
    return TokenCounter(int(counts["tokens"]), int(counts["trained_tokens"]))
