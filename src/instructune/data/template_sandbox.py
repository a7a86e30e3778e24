"""The Jinja sandbox templates render in: HF's immutable sandbox plus bounds on work.

Jinja's sandbox stops attribute access to internals, but not work: `range(100000)` nested in
`range(100000)` runs for hours and `'x' * 10**10` exhausts memory, per row. Here every `range` a
render iterates draws from one budget per render, `*` and `**` results are bounded, and going
over is a `TemplateLimitError` naming the limit, raised once for the whole run (not per row).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

LOOP_BUDGET = 200_000
"""`range` items one render may iterate in all (chat templates need a few per message)."""
MAX_SEQUENCE = 1_000_000
"""Longest string or list a template may build with `*`."""
MAX_EXPONENT = 10_000


class TemplateLimitError(SecurityError):
    """A template went over a work bound of the sandbox (a loop or a product too large)."""


class _Budget:
    def __init__(self) -> None:
        self.left = LOOP_BUDGET

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise TemplateLimitError(
                f"the template iterated over {LOOP_BUDGET} range() items in one render; templates "
                "are limited to that (a loop that never ends, or one far too large?)"
            )


class _CountedRange:
    """`range` whose iteration draws from the render's budget; len/index/`in` work as usual."""

    def __init__(self, rng: range, budget: _Budget) -> None:
        self.rng, self.budget = rng, budget

    def __iter__(self) -> Iterator[int]:
        for item in self.rng:
            self.budget.take()
            yield item

    def __len__(self) -> int:
        return len(self.rng)

    def __getitem__(self, index: Any) -> Any:
        return self.rng[index]

    def __contains__(self, item: object) -> bool:
        return item in self.rng


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with a per-render loop budget, its attribute verdicts memoized.

    `is_safe_attribute` depends only on the object's type and the attribute's name (underscore
    names, internals of functions/frames/..., mutating methods of known mutable types), so
    caching the verdict changes nothing but the cost of `message.role`.
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._verdicts: dict[tuple[type, str], bool] = {}
        self.budget = _Budget()
        self.globals["range"] = self._range

    def new_render(self) -> None:
        self.budget.left = LOOP_BUDGET

    def _range(self, *args: int) -> _CountedRange:
        rng = range(*args)
        if len(rng) > LOOP_BUDGET:
            raise TemplateLimitError(
                f"range of {len(rng)} items in the template; at most {LOOP_BUDGET} per render"
            )
        return _CountedRange(rng, self.budget)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise TemplateLimitError(f"exponent {right} in the template; at most {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_SEQUENCE:
                    raise TemplateLimitError(
                        f"the template builds a sequence of {len(seq) * times} items with *; "
                        f"at most {MAX_SEQUENCE}"
                    )
        return super().call_binop(context, operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        cls = type(obj)
        if obj.__class__ is not cls:  # a proxy: isinstance sees its __class__, don't cache
            return bool(super().is_safe_attribute(obj, attr, value))
        key = (cls, attr)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = super().is_safe_attribute(obj, attr, value)
        return verdict


def sandbox_environment() -> jinja2.Environment:
    """The sandbox HF renders chat templates in, with `{% generation %}` as a no-op block."""

    class GenerationNoop(Extension):
        tags = {"generation"}  # noqa: RUF012 - jinja's Extension API declares tags this way

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, **kw: Any) -> str:
        # like HF: Jinja's own tojson escapes HTML characters, which chat templates don't want
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, **kw)

    env = _Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationNoop, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env
