"""Ctrl-C during training: finish the step, save a resumable checkpoint, say how to resume.

The first SIGINT asks the Trainer to save and stop at the end of the current optimizer step
(nothing is torn mid-step), whatever the objective; `run_train` then raises `TrainingInterrupted`,
which the CLI turns into a message and exit code 130. A second SIGINT interrupts at once (the
checkpoint being written, if any, stays invisible: saves are atomic). Only a single process
handles it: under several, a signal reaches the ranks at different steps, and they would not
agree on where to stop.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C (so it is a KeyboardInterrupt); `checkpoint` is the checkpoint
    saved (None when no step had finished), resumable unless the objective can't resume yet."""

    def __init__(self, checkpoint: Path | None, step: int, resumable: bool = True) -> None:
        self.checkpoint, self.step = checkpoint, step
        if checkpoint is None:
            message = "interrupted before the first optimizer step finished; nothing was saved"
        elif not resumable:
            message = (
                f"interrupted at step {step}; saved a checkpoint in {checkpoint} (this "
                "objective can't resume from it yet: rerun with --overwrite to start again)"
            )
        else:
            message = (
                f"interrupted at step {step}; saved a resumable checkpoint in {checkpoint}. "
                "Continue with the same command plus --resume"
            )
        super().__init__(message)


class StopOnInterrupt(TrainerCallback):
    """Installs the SIGINT handler for the length of `train()`; `requested` tells what happened."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if args.world_size == 1:
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.restore()

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        self.restore()  # a second Ctrl-C is a KeyboardInterrupt, at once
        print(
            "\ninterrupt: saving a checkpoint at the end of this step (Ctrl-C again to stop now)",
            file=sys.stderr,
            flush=True,
        )
