"""The template sandbox bounds the text a render builds: concatenation in a loop, joins, widths,
replacements and long lists printed stop with a TemplateLimitError naming the limit, in bounded
memory, and ordinary templates render as before."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from instructune.data.template_sandbox import MAX_TEXT, sandbox_environment

BIG = "{% set s = 'x' * 1000000 %}"
BOMBS = {
    # the case: a 20-step doubling through a namespace reached 720 MB
    "~ in a loop": "{% set ns = namespace(s='x' * 1000) %}{% for i in range(20) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "+ in a loop": "{% set ns = namespace(s='x' * 1000) %}{% for i in range(20) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
    "output": BIG + "{% for i in range(100) %}{{ s }}{% endfor %}",
    "macro body": BIG + "{% macro m() %}{% for i in range(100) %}{{ s }}{% endfor %}{% endmacro %}"
    "{{ m()|length }}",
    "set block": BIG + "{% set b %}{% for i in range(100) %}{{ s }}{% endfor %}{% endset %}"
    "{{ b|length }}",
    "join filter": BIG + "{{ ([s] * 100)|join|length }}",
    "str.join": BIG + "{{ ''.join([s] * 100)|length }}",
    "str.center": "{{ 'x'.center(1000000000)|length }}",
    "center filter": "{{ 'x'|center(1000000000)|length }}",
    "% width": "{{ ('%999999999s' % 'x')|length }}",
    "format width": "{{ '{:>999999999}'.format('x')|length }}",
    "str.replace": BIG + "{{ s.replace('x', 'y' * 40)|length }}",
    "indent": "{{ ('x\\n' * 500000)|indent(100)|length }}",
    "~ of a long list": BIG + "{{ (([s] * 1000) ~ '')|length }}",
    "string filter": BIG + "{{ ([s] * 1000)|string|length }}",
    "tojson": BIG + "{{ ([s] * 1000)|tojson|length }}",
    "printed list": BIG + "{{ [s] * 1000 }}",
}


_RENDER_UNDER_A_LIMIT = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from instructune.data.template_sandbox import sandbox_environment
outcomes = {}
for name, source in json.loads(sys.argv[1]).items():
    try:
        sandbox_environment().from_string(source).render()
        outcomes[name] = ["rendered", ""]
    except Exception as e:
        outcomes[name] = [type(e).__name__, str(e)]
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
print(json.dumps({"outcomes": outcomes, "peak_mb": peak}))
"""


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """Every case rendered in one child process under a 3 GB address-space limit (where the
    unbounded sandbox ends in empty MemoryErrors rather than taking the machine's memory)."""
    done = subprocess.run(
        [sys.executable, "-c", _RENDER_UNDER_A_LIMIT, json.dumps(BOMBS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_text_growth_is_bounded_with_a_clear_error(rendered: dict[str, Any], name: str) -> None:
    kind, message = rendered["outcomes"][name]
    assert kind == "TemplateLimitError", (kind, message)
    assert message.startswith(f"the template builds a text of over {MAX_TEXT} characters")
    assert "\n" not in message


def test_the_bounds_hold_before_memory_is_spent(rendered: dict[str, Any]) -> None:
    """Text is refused before it is built wherever its size can be known beforehand, and at
    most a few times MAX_TEXT (32 M characters) is built otherwise."""
    assert rendered["peak_mb"] < 1024


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% for m in messages %}{{ m.role ~ ': ' ~ m.content }}\n{% endfor %}", "user: hi\n"),
        ("{{ messages|map(attribute='content')|join(', ') }}", "hi"),
        ("{{ '%s=%d' % ('a', 3) }} {{ '{:>4}'.format('b') }} {{ 'c'|center(3) }}", "a=3    b  c "),
        ("{{ ([messages[0].content] * 3)|tojson }}", '["hi", "hi", "hi"]'),
        (BIG + "{{ (s ~ s ~ s)|length }} {{ ([s] * 100000)|length }}", "3000000 100000"),
    ],
)
def test_ordinary_templates_render_as_before(source: str, expected: str) -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert sandbox_environment().from_string(source).render(messages=messages) == expected
