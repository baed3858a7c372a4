"""Redis over TLS: the worker needs nothing but a `rediss://` URL with the CA in its query.

Certificates are made per test with `cryptography` (a private CA, a server certificate for
127.0.0.1, a client certificate). redis-py's URL parser passes `ssl_*` query parameters to
its SSL connection, and FastStream's RedisBroker builds its pool from the same parser, so
both of the worker's clients verify the server with the URL's CA.

LocalRedis waits for a plaintext PING, so the server keeps a loopback plaintext port for the
test's own admin client; the worker uses only the TLS port, which the test checks.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from faststream.redis import RedisBroker
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from service.dev.redis_server import LocalRedis, free_port
from service.dev.sample import SAMPLE_EXPECTED, sample_entries
from service.settings import Settings
from service.worker.app import build_worker
from tests.helpers import drained, outcome_counts, wait_until

KeyPair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True)
class Pki:
    """PEM files of one test's certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _certificate(
    subject: str,
    issuer: KeyPair | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signing_key = (name, key) if issuer is None else (issuer[0].subject, issuer[1])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        assert issuer is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256()), key


def _write(directory: Path, name: str, pair: KeyPair) -> tuple[Path, Path]:
    cert, key = pair
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A private CA with a server (127.0.0.1) and a client certificate, and an unrelated CA."""
    ca = _certificate("runsteps test CA", None, ca=True)
    server = _certificate("127.0.0.1", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _certificate("runsteps", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    other = _certificate("some other CA", None, ca=True)
    ca_path, _ = _write(tmp_path, "ca", ca)
    other_path, _ = _write(tmp_path, "other-ca", other)
    return Pki(
        ca_path,
        *_write(tmp_path, "server", server),
        *_write(tmp_path, "client", client),
        other_path,
    )


def _tls_server(pki: Pki, *, client_certs: bool) -> tuple[LocalRedis, int]:
    tls_port = free_port()
    args = (
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(pki.server_cert),
        "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca),
        "--tls-auth-clients", "yes" if client_certs else "no",
    )  # fmt: skip
    return LocalRedis(args=args), tls_port


@pytest.fixture
def tls_redis(pki: Pki) -> Iterator[tuple[LocalRedis, int]]:
    """A redis-server with a TLS port (server certificate only) beside its loopback port."""
    server, tls_port = _tls_server(pki, client_certs=False)
    with server:
        yield server, tls_port


@pytest.fixture
def mtls_redis(pki: Pki) -> Iterator[tuple[LocalRedis, int]]:
    """A redis-server whose TLS port also requires a client certificate from the CA."""
    server, tls_port = _tls_server(pki, client_certs=True)
    with server:
        yield server, tls_port


@pytest.fixture
async def plain(tls_redis: tuple[LocalRedis, int]) -> AsyncIterator[Redis]:
    """The test's own client on the plaintext loopback port (producer and checks)."""
    client = Redis.from_url(tls_redis[0].url)
    yield client
    await client.aclose()


def _url(port: int, ca: Path, **extra: str) -> str:
    query = "&".join(
        f"{k}={v}"
        for k, v in {"ssl_ca_certs": str(ca), "ssl_cert_reqs": "required", **extra}.items()
    )
    return f"rediss://127.0.0.1:{port}/0?{query}"


async def test_worker_processes_the_sample_over_tls(
    tls_redis: tuple[LocalRedis, int], plain: Redis, pki: Pki
) -> None:
    """With only a rediss:// URL naming the CA, the worker consumes and publishes over TLS."""
    _, tls_port = tls_redis
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        redis_url=_url(tls_port, pki.ca),
        source_stream=f"t.{tag}.events",
        derived_stream=f"t.{tag}.derived",
        dlq_stream=f"t.{tag}.dlq",
        key_prefix=f"t.{tag}",
        consumer=f"c-{tag}",
        block_ms=50,
        http_port=0,
    )
    worker = build_worker(settings)
    await worker.start()
    try:
        for _, data in sample_entries():
            await plain.xadd(settings.source_stream, {"data": data})
        await wait_until(
            lambda: drained(plain, settings.source_stream, settings.group), what="stream drained"
        )
        clients = cast("list[dict[str, Any]]", await plain.client_list())
        own_id = await plain.client_id()
        worker_addrs = {c["laddr"] for c in clients if int(c["id"]) != own_id}
    finally:
        await worker.stop()

    counts = await outcome_counts(plain, settings.derived_stream, settings.dlq_stream)
    assert counts == Counter(SAMPLE_EXPECTED)
    # Both the store's client and FastStream's subscriber connected to the TLS port only.
    assert worker_addrs
    assert worker_addrs == {f"127.0.0.1:{tls_port}"}


async def test_both_clients_verify_the_server_certificate(
    tls_redis: tuple[LocalRedis, int], pki: Pki
) -> None:
    """redis-py and FastStream's broker accept the URL's CA and refuse an unrelated one."""
    _, tls_port = tls_redis
    good, bad = _url(tls_port, pki.ca), _url(tls_port, pki.other_ca)

    client = Redis.from_url(good)
    assert await client.ping()
    await client.aclose()
    client = Redis.from_url(bad, socket_connect_timeout=5)
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await client.ping()
    await client.aclose()

    for url, reachable in ((good, True), (bad, False)):
        broker = RedisBroker(url, socket_connect_timeout=5)
        await broker.connect()
        try:
            assert await broker.ping(timeout=3.0) is reachable
        finally:
            await broker.stop()


async def test_client_certificate_from_the_url_passes_mutual_tls(
    mtls_redis: tuple[LocalRedis, int], pki: Pki
) -> None:
    """A server demanding client certificates accepts ssl_certfile/ssl_keyfile from the URL."""
    _, tls_port = mtls_redis
    with_cert = _url(
        tls_port, pki.ca, ssl_certfile=str(pki.client_cert), ssl_keyfile=str(pki.client_key)
    )
    without_cert = _url(tls_port, pki.ca)

    client = Redis.from_url(with_cert)
    assert await client.ping()
    await client.aclose()
    client = Redis.from_url(without_cert, socket_connect_timeout=5)
    with pytest.raises(RedisConnectionError):
        await client.ping()
    await client.aclose()

    broker = RedisBroker(with_cert, socket_connect_timeout=5)
    await broker.connect()
    try:
        assert await broker.ping(timeout=3.0) is True
    finally:
        await broker.stop()
