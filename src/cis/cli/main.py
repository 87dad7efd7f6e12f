"""The ``cis-node`` command: ``main(argv) -> int``.

Every failure is one line on stderr, ``error: …``, with no traceback and no values of local
variables. Exit status: 0 success, 1 error, 2 usage error, 130 interrupted.

Subcommands live one per module in this package, listed in ``_SUBCOMMAND_MODULES`` and
imported only when used.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from cis import __version__
from cis.errors import CisError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


# One module per subcommand, named as the subcommand; each exposes ``command`` (a click
# command or group). Keep one name per line, so parallel branches adding subcommands merge
# cleanly.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "init",
    "run",
    "status",
    "backup",
    "restore",
    "anchor",
    "user",
    "sql",
    "skills",
    "git",
    "memory",
    "trust",
    "peers",
)


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (or ``--help`` lists it).

    Some subcommands stand on heavy stacks (the replicated SQL service, the anchor and its
    federation client); importing them all would cost every ``cis-node`` process, the node
    included, start-up time and memory.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _SUBCOMMAND_MODULES:
            return None
        module = importlib.import_module(f"cis.cli.{cmd_name}")
        command: click.Command = module.command
        if command.name != cmd_name:
            raise RuntimeError(f"cis.cli.{cmd_name}.command is named {command.name!r}")
        return command


@click.group(
    name="cis-node",
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(
    __version__, "--version", prog_name="cis-node", message="%(prog)s %(version)s"
)
def cli() -> None:
    """A sovereign CIS node: Matrix rooms on SQLite, federated over Noise tunnels."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error(message: str) -> None:
    """Print ``error: message`` as one line on stderr."""
    click.echo(f"error: {_one_line(message)}", err=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cis-node`` with ``argv`` (without the program name); return the exit status."""
    os.umask(0o077)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="cis-node", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        error(exc.format_message())
        return EXIT_USAGE
    except click.Abort:
        error("aborted")
        return EXIT_ERROR
    except click.ClickException as exc:
        error(exc.format_message())
        return EXIT_ERROR
    except CisError as exc:
        error(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:
        # Files and sockets: the message names the path or address, never a value we hold.
        error(f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line, never a traceback
        error(f"internal error ({type(exc).__name__}); please report it with the log")
        return EXIT_ERROR
    return result if isinstance(result, int) else EXIT_OK


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
