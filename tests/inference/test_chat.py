"""`instructune chat` in a real pseudo-terminal: streamed answers equal the engine's for the same
history, /system, /reset, multi-turn history, /exit."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pexpect

from instructune.bundle import load_bundle
from instructune.data.conversation import Message
from instructune.inference.engine import Engine, SamplingParams

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
N = 6


def _answer(child: pexpect.spawn, line: str) -> str:
    """Send `line`, read up to the next prompt; what the chat printed, minus the echo."""
    child.sendline(line)
    child.expect_exact(">>> ")
    shown = _ANSI.sub("", child.before).replace("\r", "")
    assert shown.startswith(line + "\n"), shown
    return shown[len(line) + 1 :]


def _expected(engine: Engine, messages: list[Message]) -> tuple[str, str]:
    c = engine.chat([messages], SamplingParams(max_new_tokens=N))[0]
    shown = c.text + (f" [cut at {N} tokens]" if c.finish_reason == "length" else "") + "\n"
    return shown.replace("\r", ""), c.text


def test_chat_in_a_pty(tiny_lora_run: Path) -> None:
    engine = Engine.from_bundle(load_bundle(tiny_lora_run))
    env = {**os.environ, "TERM": "dumb", "PYTHONPATH": os.pathsep.join(sys.path)}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "instructune", "chat", str(tiny_lora_run), "--max-new-tokens", str(N)],
        env=env,
        encoding="utf-8",
        codec_errors="replace",
        timeout=120,
    )
    try:
        child.expect_exact(">>> ")
        assert "chatting with" in child.before

        shown, hi = _expected(engine, [Message("user", "Hi")])
        assert _answer(child, "Hi") == shown
        history = [Message("user", "Hi"), Message("assistant", hi), Message("user", "Again?")]
        assert _answer(child, "Again?") == _expected(engine, history)[0]

        assert _answer(child, "/system Be brief.") == "(system message set; conversation cleared)\n"
        system = [Message("system", "Be brief."), Message("user", "Hi")]
        shown_sys, _ = _expected(engine, system)
        assert _answer(child, "Hi") == shown_sys
        assert _answer(child, "/reset") == "(conversation cleared)\n"
        assert _answer(child, "Hi") == shown_sys  # same history as after /system: same answer
        assert "unknown command '/nope'" in _answer(child, "/nope")

        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
