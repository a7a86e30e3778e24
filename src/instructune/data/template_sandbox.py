"""The Jinja sandbox templates render in: HF's immutable sandbox plus bounds on work.

Jinja's sandbox stops attribute access to internals, but not work: `range(100000)` nested in
`range(100000)` runs for hours and `'x' * 10**10` exhausts memory, per row. Here every `range` a
render iterates draws from one budget per render, `*` and `**` results are bounded, and going
over is a `TemplateLimitError` naming the limit, raised once for the whole run (not per row).

Text is bounded too: `{% set s = s ~ s %}` twenty times is 2**20 times the text, `join`, `center`,
`replace` or a `%` width can build gigabytes in one call, and a loop can print a long string many
times. Every join of text (the output, `~`, macro and block bodies: the generated code's `concat`
and `str_join` are rebound to the sandbox's), every `+` and `%`, and every call and filter on text
is checked against MAX_TEXT, before the text is built where its size can be known beforehand.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.ext import Extension
from jinja2.nodes import BinExpr, Node
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

LOOP_BUDGET = 200_000
"""`range` items one render may iterate in all (chat templates need a few per message)."""
MAX_SEQUENCE = 1_000_000
"""Longest string or list a template may build with `*`."""
MAX_EXPONENT = 10_000
MAX_TEXT = 32 * 1024 * 1024
"""Longest text (characters) a render may build or output: twice the default largest data record
(`max_record_bytes`), with room for the template's own text."""


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


def _too_long(size: int, what: str) -> TemplateLimitError:
    return TemplateLimitError(
        f"the template builds a text of over {MAX_TEXT} characters ({size} or more) with {what}; "
        "templates are limited to that (text doubled in a loop, or a huge width or join?)"
    )


def _text_size(value: Any, limit: int = MAX_TEXT) -> int:
    """Characters `str(value)` would take, counted without building it, and only up to a little
    past `limit` (a list of one long string a million times over is cheap to hold, not to print)."""
    size, stack = 0, [value]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, str):
            size += len(item) + 2  # quotes, when inside a container
        elif isinstance(item, list | tuple | set | frozenset):
            size += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            size += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            size += 24  # a number, None, an Undefined: short
    return size


def _check_text(value: Any, what: str) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise _too_long(len(value), what)
    return value


_FORMAT_SPEC = re.compile(r"%[^a-zA-Z%]*|\{[^{}]*\}")


def _check_widths(fmt: str, what: str) -> None:
    """Refuse a `%` or `format` field width over MAX_TEXT (`%999999999s` builds it at once)."""
    for spec in _FORMAT_SPEC.findall(fmt):
        for digits in re.findall(r"\d+", spec):
            if len(digits) > 12 or int(digits) > MAX_TEXT:
                raise _too_long(int(digits[:13]), f"a width of {digits[:13]} in {what}")


def _check_str_call(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """What a method of `text` will build, before it does: widths, replacements, joins."""
    values = [*args, *kwargs.values()]
    what = f"str.{name}()"
    if name in ("center", "ljust", "rjust", "zfill") and values and isinstance(values[0], int):
        size = values[0]
    elif name == "expandtabs":
        tab = values[0] if values and isinstance(values[0], int) else 8
        size = len(text) + text.count("\t") * tab
    elif name == "replace" and len(values) >= 2 and all(isinstance(v, str) for v in values[:2]):
        old, new = values[0], values[1]
        size = len(text) + (text.count(old) if old else len(text) + 1) * len(new)
    elif name == "join" and values:
        items = values[0] if isinstance(values[0], list | tuple) else ()
        size = _text_size(list(items)) + len(text) * len(items)
    elif name in ("format", "format_map"):
        _check_widths(text, what)
        size = len(text) + _text_size(values)
    else:
        return
    if size > MAX_TEXT:
        raise _too_long(size, what)


def _width(value: Any) -> int:
    return value if isinstance(value, int) else len(value) if isinstance(value, str) else 0


def _join_size(value: Any, d: Any = "", *_: Any, **__: Any) -> int:
    count = len(value) if isinstance(value, list | tuple | dict) else 0
    return _text_size(value) + len(str(d)) * count


def _center_size(value: Any, width: Any = 80, *_: Any, **__: Any) -> int:
    return len(str(value)) + _width(width)


def _indent_size(value: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    text = str(value)
    return len(text) + (text.count("\n") + 1) * _width(width)


def _replace_size(value: Any, old: Any = "", new: Any = "", *_: Any, **__: Any) -> int:
    text, old = str(value), str(old)
    return len(text) + (text.count(old) if old else len(text) + 1) * len(str(new))


def _format_size(value: Any, *args: Any, **kwargs: Any) -> int:
    _check_widths(str(value), "the format filter")
    return len(str(value)) + _text_size([args, kwargs])


_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "join": _join_size,
    "center": _center_size,
    "indent": _indent_size,
    "replace": _replace_size,
    "format": _format_size,
}
"""Upper bounds of what filters that multiply text would build, checked before they run."""
_NOT_TEXT = frozenset(
    ("abs", "attr", "batch", "bool", "count", "d", "default", "dictsort", "first", "float",
     "groupby", "int", "items", "last", "length", "list", "map", "max", "min", "random", "reject",
     "rejectattr", "reverse", "round", "select", "selectattr", "slice", "sort", "sum", "unique")
)  # fmt: skip
"""Filters that don't turn their value into text: a long list of one long string is fine there."""


def _check_container(value: Any, what: str) -> Any:
    """A list or dict whose text (`str(value)`) would be over MAX_TEXT: refused before it's made."""
    if isinstance(value, list | tuple | dict | set | frozenset):
        size = _text_size(value)
        if size > MAX_TEXT:
            raise _too_long(size, what)
    return value


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with its text result checked, and the filters that multiply text checked first."""
    size_of = _FILTER_SIZES.get(name)
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context/environment
    what = f"the {name} filter"

    @functools.wraps(func)  # keeps jinja's pass_context/pass_environment mark
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if size_of is not None and (size := size_of(*args[skip:], **kwargs)) > MAX_TEXT:
            raise _too_long(size, what)
        if name not in _NOT_TEXT and len(args) > skip:
            _check_container(args[skip], what)
        return _check_text(func(*args, **kwargs), what)

    return bounded


def _finalize(value: Any) -> Any:
    """Every `{{ value }}` before its `str()`: a long list is refused before it is printed."""
    return value if type(value) is str else _check_container(value, "{{ }}")


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with the compiled template's text joins rebound to the sandbox's
    bounded ones (right after the line importing the unbounded ones from jinja2.runtime)."""

    def writeline(self, x: str, node: Node | None = None, extra: int = 0) -> None:
        super().writeline(x, node, extra)
        if x.startswith("from jinja2.runtime import "):
            super().writeline("concat = environment.concat")
            super().writeline("str_join = environment.str_join")
            super().writeline("bounded_add = environment.bounded_add")

    @optimizeconst
    def visit_Add(self, node: BinExpr, frame: Frame) -> None:
        """`a + b` as `bounded_add(a, b)`: a plain function call, where the sandbox's interception
        (`environment.call_binop(context, '+', a, b)`) made chat templates render 2x slower."""
        self.write("bounded_add(")
        self.visit(node.left, frame)
        self.write(", ")
        self.visit(node.right, frame)
        self.write(")")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with a per-render loop budget, its attribute verdicts memoized.

    `is_safe_attribute` depends only on the object's type and the attribute's name (underscore
    names, internals of functions/frames/..., mutating methods of known mutable types), so
    caching the verdict changes nothing but the cost of `message.role`.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._verdicts: dict[tuple[type, str], bool] = {}
        self.budget = _Budget()
        self.globals["range"] = self._range

    def bound_filters(self) -> None:
        """Wrap every filter (after the caller has added its own) with the text checks."""
        for name, func in list(self.filters.items()):
            self.filters[name] = _bounded_filter(name, func)

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
        """The render's output (and macro/block bodies), refused before it is joined when over
        MAX_TEXT (the parts are references to texts already bounded, cheap to hold)."""
        parts = list(parts)
        size = sum(map(len, parts))
        if size > MAX_TEXT:
            raise _too_long(size, "the template's output")
        return "".join(parts)

    def str_join(self, parts: Iterable[Any]) -> str:
        """`a ~ b ~ c`, with the size known before any text is built."""
        parts = tuple(parts)
        size = sum(len(p) if isinstance(p, str) else _text_size(p) for p in parts)
        if size > MAX_TEXT:
            raise _too_long(size, "~")
        return _check_text("".join(map(str, parts)), "~")

    @staticmethod
    def bounded_add(left: Any, right: Any) -> Any:
        """`+`, its text or list checked (inputs are bounded, so the result is at most 2x)."""
        result = left + right
        # `type(...) is str` first: this runs for every `+` of every render
        if (type(result) is str or isinstance(result, list | tuple)) and len(result) > MAX_TEXT:
            raise _too_long(len(result), "+")
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        if isinstance(getattr(target, "__self__", None), str):
            _check_str_call(target.__self__, target.__name__, args, kwargs)
        return _check_text(super().call(__context, __obj, *args, **kwargs), "a call")

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
        if operator == "%" and isinstance(left, str):
            _check_widths(left, "%")
            size = len(left) + _text_size(right)
            if size > MAX_TEXT:
                raise _too_long(size, "%")
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
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationNoop, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.bound_filters()
    return env
