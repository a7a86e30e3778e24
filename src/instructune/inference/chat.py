"""`run_chat`: a terminal conversation with the model, answers streamed as they are decoded.

The whole history is rendered with the run's template on every turn, so the model sees exactly
the multi-turn prompt training built. Commands: `/reset` forgets the conversation, `/system TEXT`
sets the system message (and starts over: earlier answers were given without it), `/exit` (or
Ctrl-D) quits; Ctrl-C stops an answer mid-way and keeps what was said.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from instructune.data.conversation import Message

if TYPE_CHECKING:
    from instructune.inference.engine import Engine
    from instructune.inference.sampling import SamplingParams

PROMPT = ">>> "
HELP = "commands: /reset, /system TEXT, /exit (Ctrl-D); Ctrl-C stops an answer"


class ChatSession:
    """The history and the commands; `turn` answers one user message."""

    def __init__(self, engine: Engine, params: SamplingParams, system: str | None = None) -> None:
        self.engine = engine
        self.params = params
        self.system = system
        self.history: list[Message] = []

    def messages(self) -> list[Message]:
        head = [Message("system", self.system)] if self.system else []
        return [*head, *self.history]

    def command(self, line: str) -> str | None:
        """Run a `/command`; its reply, or None for `/exit`."""
        name, _, rest = line.partition(" ")
        if name == "/exit":
            return None
        if name == "/reset":
            self.history.clear()
            return "(conversation cleared)"
        if name == "/system":
            self.system = rest.strip() or None
            self.history.clear()
            return f"(system message {'set' if self.system else 'removed'}; conversation cleared)"
        return f"unknown command {name!r}; {HELP}"

    def turn(self, text: str, out: TextIO) -> None:
        """Stream the answer to `text` into `out`, and keep both in the history."""
        self.history.append(Message("user", text))
        try:
            stream = self.engine.stream(self.engine.render(self.messages()), self.params)
            answer = []
            try:
                for delta in stream:
                    answer.append(delta)
                    out.write(delta)
                    out.flush()
            except KeyboardInterrupt:
                out.write(" [stopped]")
            if stream.completion is not None and stream.completion.finish_reason == "length":
                out.write(f" [cut at {stream.completion.completion_tokens} tokens]")
            out.write("\n")
        except ValueError as err:  # the history no longer fits the context
            self.history.pop()
            out.write(f"error: {err}; /reset to start over\n")
            return
        self.history.append(Message("assistant", "".join(answer)))


def run_chat(
    engine: Engine,
    params: SamplingParams,
    *,
    system: str | None = None,
    out: TextIO | None = None,
) -> int:
    """The read-answer loop on stdin/stdout (with line editing when it is a terminal)."""
    import contextlib
    import sys

    # Importing readline gives input() history and line editing; Windows has none (input() works).
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401
    out = out or sys.stdout
    session = ChatSession(engine, params, system)
    out.write(f"chatting with {engine.name} ({HELP})\n")
    while True:
        try:
            line = input(PROMPT).strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return 0
        if not line:
            continue
        if line.startswith("/"):
            reply = session.command(line)
            if reply is None:
                return 0
            out.write(reply + "\n")
            continue
        session.turn(line, out)
