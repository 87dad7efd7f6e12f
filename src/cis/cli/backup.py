"""``cis-node backup DEST``: copy the home into a new directory, with a manifest.

Works while the node runs: each database is copied in one consistent step (``VACUUM INTO``).
"""

from __future__ import annotations

from pathlib import Path

import click

from cis.cli.options import home_option
from cis.cli.progress import FilesAndBytes
from cis.home import Home
from cis.storage.backup import write_backup


@click.command("backup")
@home_option
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def command(home: Home, dest: Path) -> int:
    """Back the node up into DEST (a new directory)."""
    result = write_backup(home, dest, progress=FilesAndBytes("backing up"))
    click.echo(
        f"backed up {result.did} to {result.destination}: {len(result.files)} files, "
        f"{result.total_bytes:,} bytes"
    )
    return 0
