"""``cis-node anchor``: run an anchor, the registry through which nodes find each other."""

from __future__ import annotations

from pathlib import Path

import click

from cis.home import Home


@click.command(name="anchor")
@click.option(
    "--listen",
    "listen",
    required=True,
    metavar="HOST:PORT",
    help="Address to serve on (port 0: any free port; the log says which).",
)
@click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The anchor's SQLite file (default: anchor.db in $CIS_HOME, else ~/.cis).",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def command(
    listen: str, db: Path | None, tls_cert: Path | None, tls_key: Path | None, log_level: str
) -> int:
    """Run an anchor: signed heartbeats in, signed peer lists out, no node data ever."""
    # Imported here: ``cis.anchor`` pulls in the federation stack, which other subcommands
    # (and their start-up time and memory) should not pay for.
    from cis.anchor.errors import AnchorError
    from cis.anchor.server import Listen, serve
    from cis.log import configure_logging

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        address = Listen.parse(listen)
    except AnchorError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from exc
    if db is None:
        db = Home.resolve().root / "anchor.db"
    db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    configure_logging(log_level)
    serve(address, db, tls_cert=tls_cert, tls_key=tls_key)
    return 0
