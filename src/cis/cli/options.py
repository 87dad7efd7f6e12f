"""Options shared by subcommands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from cis.home import Home

F = TypeVar("F", bound=Callable[..., object])


def home_option(fn: F) -> F:
    """``--home DIR`` (else ``$CIS_HOME``, else ``~/.cis``), passed as ``home: Home``."""

    def to_home(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Home:
        return Home.resolve(value)

    decorated = click.option(
        "--home",
        "home",
        type=click.Path(file_okay=False, dir_okay=True, path_type=str),
        default=None,
        callback=to_home,
        help="The node's home (default: $CIS_HOME, else ~/.cis).",
    )(fn)
    return decorated
