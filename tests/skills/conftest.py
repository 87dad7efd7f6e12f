"""Fixtures for the skill contract: a really installed sample package, a node's storage and a
skill host on it."""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cis.clock import SystemClock
from cis.config import load_config
from cis.home import Home
from cis.identity import NodeIdentity
from cis.node import NodeStorage
from cis.skills.gateway import CreatorGateway
from cis.skills.host import SkillHost, SkillSettings
from cis.storage.homes import initialise_home, write_admin_token
from tests.skills.gateway import creator_gateway

SAMPLE = Path(__file__).parent / "sample" / "cis_sample_skills.py"
SAMPLE_ENTRY_POINTS = {
    "recorder": "Recorder",
    "raiser": "Raiser",
    "sleeper": "Sleeper",
    "awaiter": "Awaiter",
    "flooder": "Flooder",
    "broken": "Broken",
}


def install_sample(site: Path) -> Path:
    """Install the sample skills into ``site`` as a distribution: the module plus a
    ``.dist-info`` with ``entry_points.txt`` (what pip writes), found by ``importlib.metadata``
    on ``sys.path`` or ``PYTHONPATH``."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE, site / SAMPLE.name)
    info = site / "cis_sample_skills-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: cis-sample-skills\nVersion: 1.0\n", encoding="utf-8"
    )
    lines = [f"{name} = cis_sample_skills:{cls}" for name, cls in SAMPLE_ENTRY_POINTS.items()]
    (info / "entry_points.txt").write_text(
        "[cis.skills]\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    (info / "RECORD").write_text("", encoding="utf-8")
    return site


@pytest.fixture(scope="session")
def sample_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_sample(tmp_path_factory.mktemp("site"))


@pytest.fixture
def sample_installed(sample_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(sample_site))
    importlib.invalidate_caches()
    yield sample_site
    sys.modules.pop("cis_sample_skills", None)


@pytest.fixture
def node_home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.root.mkdir(mode=0o700)
    initialise_home(home, NodeIdentity.generate("alpha"), 0)
    write_admin_token(home)
    return home


@pytest.fixture
async def storage(node_home: Home) -> AsyncIterator[NodeStorage]:
    storage = NodeStorage(node_home, load_config(node_home, environ={}))
    await storage.open()
    yield storage
    await storage.close()


@pytest.fixture
def gateway(storage: NodeStorage) -> CreatorGateway:
    return creator_gateway(storage.rooms, storage.identity, SystemClock())


MakeHost = Callable[..., Any]


@pytest.fixture
async def make_host(
    storage: NodeStorage, gateway: CreatorGateway, sample_installed: Path
) -> AsyncIterator[MakeHost]:
    hosts: list[SkillHost] = []

    async def make(enabled: tuple[str, ...], **settings: Any) -> SkillHost:
        host = SkillHost(
            home=storage.home,
            identity=storage.identity,
            rooms=storage.rooms,
            settings=SkillSettings(enabled=enabled, **settings),
            clock=SystemClock(),
            gateway=gateway,
        )
        hosts.append(host)
        await host.start()
        return host

    yield make
    for host in hosts:
        await host.stop()
