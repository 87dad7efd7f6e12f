"""``git-remote-cis``: the remote helper that lets the stock ``git`` use ``cis://NODE/REPO``.

git runs ``git-remote-cis <remote> <url>`` and talks to it on stdin/stdout (gitremote-helpers(7)).
The helper advertises the ``connect`` capability only: on ``connect git-upload-pack`` or
``connect git-receive-pack`` it opens the local node's stream endpoint for the Git skill (found
through ``$CIS_HOME/run/node.json``, authenticated with ``$CIS_HOME/admin.token``), answers git
with an empty line, and from then on pipes bytes both ways: git's protocol v0 reaches the node
unchanged (``GIT_PROTOCOL`` is not forwarded, so git falls back to v0), the node's data goes to
stdout, its messages (progress, errors) to stderr. Its exit status is the node's.

Errors are one line on stderr, ``fatal: cis: …``, exit status 128 (git's own for fatal errors).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Final, NoReturn

from cis.home import Home
from cis.skills.git.names import InvalidName, parse_cis_url
from cis.skills.local import NoNodeRunning, find_local_node

__all__ = ["main", "run"]

EXIT_FATAL: Final = 128
STREAM_PATH: Final = "/_cis/admin/v1/skills/git/streams/git"
SERVICES: Final = ("git-upload-pack", "git-receive-pack")
READ_SIZE: Final = 60 * 1024
"""Bytes of git's input per message: the node's HTTP server takes WebSocket messages of at most
65,535 bytes (``cis.federation.UVICORN_WS_OPTIONS``, one Noise message each), so a larger one
would close the stream (1009)."""
CHANNEL_DATA: Final = 1
CHANNEL_MESSAGE: Final = 2
CHANNEL_END: Final = 3
STDIN: Final = 0


class Fatal(Exception):
    """A one-line error for git's user."""


def _fatal(message: str) -> NoReturn:
    raise Fatal(message)


def _object_format() -> str:
    """The hash of the repository git runs us for (``sha1`` when there is none yet)."""
    if "GIT_DIR" not in os.environ:
        return "sha1"
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-object-format"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "sha1"
    return done.stdout.strip() or "sha1"


def _read_line(fd: int) -> bytes:
    """One command line from git, read from the raw descriptor byte by byte: nothing past it is
    consumed, so the protocol bytes that follow ``connect`` are all read by ``_pump_input``
    (and no buffered reader is left locked by a daemon thread at exit)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return bytes(line)


def _pump_input(fd: int, ws: object) -> None:
    """git's bytes to the node; an empty message says they ended."""
    send = ws.send  # type: ignore[attr-defined]
    try:
        while data := os.read(fd, READ_SIZE):
            send(data)
        send(b"")
    except Exception:  # noqa: S110 (the node ended the stream; the main thread reports)
        pass


def _connect(home: Home, node_id: str, repo: str, service: str) -> int:
    if service not in SERVICES:
        _fatal(f"cis: unsupported service {service}")
    if _object_format() != "sha1":
        _fatal("cis: SHA-256 repositories are not supported (cis:// serves SHA-1 repositories)")
    try:
        node = find_local_node(home)
    except NoNodeRunning as exc:
        _fatal(f"cis: {exc}")
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    try:
        ws = connect(
            node.ws_url(STREAM_PATH),
            additional_headers=node.headers,
            compression=None,
            max_size=4 * 1024 * 1024,
            open_timeout=30,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            _fatal(f"cis: the node refused the admin token in {home.admin_token}")
        _fatal(f"cis: the node answered {status}")
    except (OSError, WebSocketException, TimeoutError):
        _fatal(f"cis: no node running for CIS_HOME={home.root}")
    stdout = sys.stdout.buffer
    stderr = sys.stderr.buffer
    with ws:
        ws.send(json.dumps({"service": service, "node": node_id, "repo": repo}))
        stdout.write(b"\n")  # connection established (gitremote-helpers(7), "connect")
        stdout.flush()
        threading.Thread(target=_pump_input, args=(STDIN, ws), daemon=True).start()
        try:
            for message in ws:
                if isinstance(message, str) or not message:
                    _fatal("cis: unexpected message from the node")
                channel, body = message[0], message[1:]
                if channel == CHANNEL_DATA:
                    stdout.write(body)
                    stdout.flush()
                elif channel == CHANNEL_MESSAGE:
                    stderr.write(body)
                    stderr.flush()
                elif channel == CHANNEL_END:
                    end = json.loads(body)
                    if end.get("error"):
                        stderr.write(f"fatal: cis: {end['error']}\n".encode())
                    return int(end.get("status", EXIT_FATAL))
        except WebSocketException:
            pass
        except BrokenPipeError:  # git went away
            return EXIT_FATAL
    _fatal("cis: the node closed the connection")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args:
            _fatal("cis: usage: git-remote-cis <remote> [<url>] (git runs this for cis:// URLs)")
        try:
            url = parse_cis_url(args[-1])
        except InvalidName as exc:
            _fatal(f"cis: {exc}")
        home = Home.resolve()
        stdout = sys.stdout.buffer
        while True:
            line = _read_line(STDIN)
            if not line:
                return 0
            command = line.strip().decode("ascii", "replace")
            if command == "capabilities":
                stdout.write(b"connect\n\n")
                stdout.flush()
            elif command.startswith("connect "):
                return _connect(home, url.node, url.repo, command.split(" ", 1)[1])
            elif command == "":
                return 0
            else:
                _fatal(f"cis: unsupported helper command {command.split(' ')[0]!r}")
    except Fatal as exc:
        sys.stderr.write(f"fatal: {exc}\n")
        sys.stderr.flush()
        return EXIT_FATAL
    except KeyboardInterrupt:
        return 130


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
