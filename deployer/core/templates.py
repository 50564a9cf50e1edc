"""The files deployer writes for people to read, as Jinja2 templates in ``templates/``.

The crontab block and the env file are formats an operator meets on a target; their
templates show them whole, in one place. The values (ids, commands, env values) are checked
by the model before they get here; the templates only lay them out, byte for byte.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jinja2

from deployer.core.crontab import escape_percent


@cache
def _environment() -> jinja2.Environment:
    source = resources.files("deployer.templates")
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: source.joinpath(name).read_text(encoding="utf-8")),
        # No autoescape (S701): the templates are crontab lines and shell, not HTML; escaping would change the bytes.
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)  # noqa: S701
    env.filters["cron"] = escape_percent
    env.filters["json"] = json.dumps  # not Jinja's tojson: that one escapes <, > and & for HTML
    return env


def render_template(name: str, **values: Any) -> str:
    return _environment().get_template(name).render(**values)
