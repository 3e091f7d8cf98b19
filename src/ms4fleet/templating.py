"""The core's Jinja templates, loaded one way: an undefined name fails, block tags leave no blank lines.
Pages (``html=True``) are autoescaped; text files (systemd units) are rendered verbatim with their last newline."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, Template


@cache
def template(package: str, name: str, html: bool) -> Template:
    """Template ``name`` from ``package``'s ``templates`` directory, parsed once per process."""
    environment = Environment(
        loader=PackageLoader(package, "templates"),
        undefined=StrictUndefined,
        autoescape=html,
        keep_trailing_newline=not html,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(name)
