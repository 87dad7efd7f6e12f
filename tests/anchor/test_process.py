"""A real ``cis-node anchor`` process on 127.0.0.1: nodes register and find each other
through it, over plain HTTP and over TLS verified against a CA file; it refuses forged and
oversized heartbeats on the wire; SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from canonicaljson import encode_canonical_json
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette

from cis.anchor.client import AnchorClient, dial_peers
from cis.anchor.records import anchor_name, build_heartbeat
from cis.federation.config import TunnelConfig
from cis.federation.manager import TunnelManager
from cis.federation.trust import StaticTrust
from cis.identity.keys import NodeIdentity

from ..federation.helpers import Server, eventually

pytestmark = pytest.mark.timeout(90)

ENDPOINT = "ws://127.0.0.1:{}/_cis/federation/v1"


@dataclass
class AnchorProcess:
    proc: subprocess.Popen[str]
    url: str
    lines: queue.Queue[str]
    reader: threading.Thread


def start_anchor(*args: str) -> AnchorProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cis", "anchor", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        match = re.search(r"action=anchor_listening url=(\S+)", line)
        if match:
            return AnchorProcess(proc, match.group(1), lines, reader)
    proc.kill()
    proc.wait(10)
    reader.join(10)
    if proc.stderr is not None:
        proc.stderr.close()
    pytest.fail("cis-node anchor did not report its address")


def stop(anchor: AnchorProcess) -> int:
    """SIGTERM, wait (kill after 15 s), close the pipe; return the exit status."""
    if anchor.proc.poll() is None:
        anchor.proc.send_signal(signal.SIGTERM)
    try:
        return anchor.proc.wait(15)
    except subprocess.TimeoutExpired:
        anchor.proc.kill()
        anchor.proc.wait(10)
        raise
    finally:
        anchor.reader.join(10)
        if anchor.proc.stderr is not None:
            anchor.proc.stderr.close()


@pytest.fixture
def plain_anchor(tmp_path: Path) -> Iterator[AnchorProcess]:
    anchor = start_anchor("--db", str(tmp_path / "anchor.db"))
    yield anchor
    stop(anchor)


async def test_nodes_find_each_other_through_a_real_anchor(
    plain_anchor: AnchorProcess, tmp_path: Path
) -> None:
    alpha, beta = NodeIdentity.generate("alpha"), NodeIdentity.generate("beta")
    a = AnchorClient(plain_anchor.url, alpha, endpoints=[ENDPOINT.format(1111)])
    b = AnchorClient(plain_anchor.url, beta, endpoints=[ENDPOINT.format(2222)])
    try:
        await a.heartbeat()
        await b.heartbeat()
        seen_by_a, seen_by_b = await a.peers(), await b.peers()
    finally:
        await a.aclose()
        await b.aclose()
    assert [(p.did, p.endpoints) for p in seen_by_a.peers] == [(beta.did, (ENDPOINT.format(2222),))]
    assert [p.did for p in seen_by_b.peers] == [alpha.did]
    assert seen_by_a.observed_ip == "127.0.0.1"

    # On the wire: forged and oversized heartbeats are refused, replays too.
    now = int(time.time() * 1000)
    record = build_heartbeat(alpha, anchor_name(plain_anchor.url), [], now)
    record["ts"] += 1  # altered after signing
    async with httpx.AsyncClient(base_url=plain_anchor.url, trust_env=False) as http:
        forged = await http.post("/v1/heartbeat", content=encode_canonical_json(record))
        big = await http.post("/v1/heartbeat", content=b" " * 5000)
        stale = await http.post(
            "/v1/heartbeat",
            content=encode_canonical_json(
                build_heartbeat(alpha, anchor_name(plain_anchor.url), [], now - 400_000)
            ),
        )
    assert (forged.status_code, forged.json()["errcode"]) == (401, "M_UNAUTHORIZED")
    assert big.status_code == 413
    assert (stale.status_code, stale.json()["errcode"]) == (400, "IO.CIS.CLOCK_SKEW")

    assert stop(plain_anchor) == 0
    with sqlite3.connect(tmp_path / "anchor.db") as db:
        assert {row[0] for row in db.execute("SELECT node_id FROM nodes")} == {"alpha", "beta"}


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CIS test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file = directory / "ca.pem", directory / "cert.pem"
    key_file = directory / "key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


async def test_tls_anchor_is_verified_against_the_ca_file(tmp_path: Path) -> None:
    ca_file, cert_file, key_file = make_ca_and_server_cert(tmp_path)
    anchor = start_anchor(
        "--db", str(tmp_path / "tls.db"), "--tls-cert", str(cert_file), "--tls-key", str(key_file)
    )
    try:
        assert anchor.url.startswith("https://127.0.0.1:")
        alpha = NodeIdentity.generate("alpha")
        trusting = AnchorClient(anchor.url, alpha, ca_file=str(ca_file))
        system_store = AnchorClient(anchor.url, NodeIdentity.generate("beta"))
        try:
            await trusting.heartbeat()
            assert (await trusting.peers()).observed_ip == "127.0.0.1"
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await system_store.heartbeat()
        finally:
            await trusting.aclose()
            await system_store.aclose()
    finally:
        assert stop(anchor) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "nonsense"], "HOST:PORT"),
        (["--listen", "127.0.0.1:1", "--tls-cert", __file__], "go together"),
        ([], "--listen"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cis", "anchor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr


def test_a_port_in_use_is_a_one_line_error(plain_anchor: AnchorProcess) -> None:
    port = plain_anchor.url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "cis", "anchor", "--listen", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr


async def test_tunnels_open_between_nodes_that_met_through_the_anchor(
    plain_anchor: AnchorProcess,
) -> None:
    """The pieces plugged together: anchor process, anchor clients, tunnel managers."""
    config = TunnelConfig(ping_interval=0.1, silence_timeout=2.0, backoff_base=0.05)
    nodes = []
    try:
        for name in ("alpha", "beta"):
            identity = NodeIdentity.generate(name)
            manager = TunnelManager(identity, StaticTrust(), config=config)
            server = Server(Starlette(routes=[manager.route()]))
            await server.start()
            manager.set_advertised_endpoints([server.url])
            client = AnchorClient(
                plain_anchor.url,
                identity,
                endpoints=[server.url],
                interval=0.2,
                on_peers=dial_peers(manager),
            )
            nodes.append((identity, manager, server, client, asyncio.create_task(client.run())))
        (alpha, ma, *_), (beta, mb, *_) = nodes
        async with asyncio.timeout(20):
            await ma.wait_online(beta.did)
            await mb.wait_online(alpha.did)
        await eventually(lambda: ma.open_tunnels == 1 and mb.open_tunnels == 1)
    finally:
        for *_, client, task in nodes:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()
        for _identity, manager, *_ in nodes:
            await manager.stop()
        for _identity, _manager, server, *_ in nodes:
            await server.stop()
