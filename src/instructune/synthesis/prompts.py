"""Prompt templates: editable Jinja files under `synthesis/prompts/`, overridable per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

PROMPTS_DIR = Path(__file__).parent / "prompts"


class Prompts:
    """Renders `<name>.jinja` from `override_dir` when it has the file, else the shipped one."""

    def __init__(self, override_dir: str | Path | None = None) -> None:
        dirs = [str(PROMPTS_DIR)]
        if override_dir is not None:
            if not Path(override_dir).is_dir():
                raise FileNotFoundError(f"synthesize.prompts_dir: no such folder {override_dir}")
            dirs.insert(0, str(override_dir))
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(dirs),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,
        )

    def render(self, name: str, **context: Any) -> str:
        try:
            template = self.env.get_template(f"{name}.jinja")
        except jinja2.TemplateNotFound:
            raise FileNotFoundError(f"no prompt template {name}.jinja in {PROMPTS_DIR}") from None
        return template.render(**context).strip()
