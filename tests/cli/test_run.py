from __future__ import annotations

import asyncio

import uvloop

from cis.cli.run import loop_factory


def test_the_node_runs_on_uvloop_unless_asked_for_asyncio() -> None:
    factory = loop_factory("uvloop")
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
    assert loop_factory("asyncio") is None
