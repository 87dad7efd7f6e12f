"""``cis-node run``: run the node until SIGTERM or SIGINT, then stop cleanly and exit 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import click

from cis.cli.options import home_option
from cis.config import Config, load_config, render_config
from cis.home import Home
from cis.log import configure_logging, get_logger
from cis.node import Node

log = get_logger(__name__)


async def serve(home: Home, config: Config) -> int:
    """Start the node, wait for SIGTERM/SIGINT, stop it (always), return the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(signum: int) -> None:
        if not stop.is_set():
            log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    node = Node(home, config)
    try:
        await node.start()
        await stop.wait()
    finally:
        await node.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0


@click.command("run")
@home_option
@click.option("--listen", metavar="HOST:PORT", help="Address to serve on (default 127.0.0.1:8484).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--open-registration",
    is_flag=True,
    default=None,
    help="Let anyone register an account through the Matrix Client-Server API.",
)
@click.option(
    "--anchor",
    "anchors",
    metavar="URL",
    multiple=True,
    help="An anchor to heartbeat to and learn peers from (repeatable).",
)
@click.option(
    "--peer",
    "peers",
    metavar="ws://HOST:PORT[/path]",
    multiple=True,
    help="A static peer to keep a tunnel to (repeatable).",
)
@click.option(
    "--advertise",
    metavar="HOST:PORT",
    help="Where other nodes reach this node (port 0: the bound port).",
)
@click.option(
    "--anchor-ca",
    metavar="FILE",
    type=click.Path(dir_okay=False, exists=True),
    help="CA bundle for the anchor's TLS certificate (default: the system store).",
)
@click.option("--print-config", is_flag=True, help="Print the effective configuration and exit.")
def command(
    *,
    home: Home,
    listen: str | None,
    log_level: str | None,
    open_registration: bool | None,
    anchors: tuple[str, ...],
    peers: tuple[str, ...],
    advertise: str | None,
    anchor_ca: str | None,
    print_config: bool,
) -> int:
    """Run the node (logs on stderr, one line per record)."""
    config = load_config(
        home,
        flags={
            "--listen": listen,
            "--log-level": log_level,
            "--open-registration": open_registration,
            "--anchor": anchors,
            "--peer": peers,
            "--advertise": advertise,
            "--anchor-ca": anchor_ca,
        },
    )
    if print_config:
        click.echo(render_config(config), nl=False)
        return 0
    configure_logging(config.log_level)
    with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
        return runner.run(serve(home, config))


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when asked for and installed, else asyncio's (docs/node.md)."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("event_loop_fallback", wanted="uvloop", using="asyncio", reason="not installed")
        return None
    return uvloop.new_event_loop
