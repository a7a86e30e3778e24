"""config keeps the registries' names itself (it imports nothing else of the package): in sync."""

from __future__ import annotations

import json
import subprocess
import sys

from instructune.config.schema import FORMAT_NAMES, TEMPLATE_NAMES
from instructune.data.formats import FORMATS
from instructune.data.templates import TEMPLATES


def test_format_names_are_the_registry() -> None:
    assert tuple(sorted(FORMATS)) == FORMAT_NAMES


def test_template_names_are_the_registry() -> None:
    assert tuple(sorted(TEMPLATES)) == TEMPLATE_NAMES


def test_config_imports_nothing_else_of_the_package() -> None:
    code = (
        "import json, sys; from instructune.config import Config; "
        "Config.model_validate({'data': {'train': [{'path': 'x.jsonl', 'format': 'alpaca'}], "
        "'template': 'alpaca'}}); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('instructune.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert loaded and all(m.startswith("instructune.config") for m in loaded), loaded
