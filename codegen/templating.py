"""The one Jinja2 environment every template is rendered through.

In: a template name under templates/ (`<output>.<ext>.jinja`) and a context of plain strings and
numbers prepared by codegen. Out: the rendered text. The environment is strict (an undefined
name is an error, not an empty string) and whitespace-stable, so that output is reproducible
byte for byte; templates only arrange strings, all mathematics happens in Python.
"""
from __future__ import annotations

import functools
from importlib import resources

import jinja2


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The strict, deterministic environment over the packaged templates folder."""
    folder = resources.files("feynmlp.templates")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(_template: str, /, **context) -> str:
    """Render one template with `context`; raises jinja2.UndefinedError on a missing name."""
    return environment().get_template(_template).render(**context)
