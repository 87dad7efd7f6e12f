"""``cis-node restore SRC``: restore a backup (or a bare ``node.db``) into a home.

Everything is verified before anything changes; a failed restore leaves the target untouched.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from cis.cli.options import home_option
from cis.cli.progress import FilesAndBytes
from cis.home import Home
from cis.storage.backup import restore_backup


@click.command("restore")
@home_option
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--force", is_flag=True, help="Move an existing home aside first.")
def command(home: Home, src: Path, force: bool) -> int:
    """Restore the backup SRC (a backup directory or a node.db file) into the home."""
    result = restore_backup(
        src, home, force=force, now_ms=time.time_ns() // 1_000_000,
        progress=FilesAndBytes("restoring"),
    )  # fmt: skip
    if result.moved_aside is not None:
        click.echo(f"moved the previous home aside to {result.moved_aside}")
    report = result.report
    missing = f", {report.rooms_missing} missing" if report.rooms_missing else ""
    click.echo(
        f"restored {result.did} into {result.home}: {report.rooms_checked} rooms{missing}, "
        f"{report.events_indexed:,} events indexed"
    )
    return 0
