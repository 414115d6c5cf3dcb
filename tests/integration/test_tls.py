"""HTTPS and mutual TLS with certificates made in the test (trustme), in process and through `serve`."""

from __future__ import annotations

import ssl
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from stateservice.config import Config
from stateservice.errors import StartupError
from stateservice.security.tls import server_context
from stateservice.security.tokens import hash_secret, parse_tokens
from stateservice.web.app import Loaded, create_app
from tests.support import charts
from tests.support.service import Services, http

ROLLOUT = charts.canary_text(2)
TOKENS = f"""
tokens:
  - {{name: web1.example.com, sha256: {hash_secret("unused-1")}, scopes: [read, report]}}
  - {{name: reader.example.com, sha256: {hash_secret("unused-2")}, scopes: [read]}}
"""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(cert chain, key, CA) for a server called localhost / 127.0.0.1."""
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    chain, key, authority = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(chain))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(chain), append=True)
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(authority))
    return chain, key, authority


def client_context(ca: trustme.CA, name: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if name is not None:
        ca.issue_cert(name, common_name=name).configure_cert(context)
    return context


async def serve(app: web.Application, context: ssl.SSLContext | None) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def chart() -> list[object]:
    return [charts.load(ROLLOUT, "rollout.yaml")]


@pytest.fixture
async def https(server_files: tuple[Path, Path, Path], redis_url: str) -> AsyncIterator[str]:
    chain, key, _ = server_files
    app = create_app(Config(redis_url=redis_url), Loaded(chart()), scheduler=False)
    async for url in serve(app, server_context(chain, key)):
        yield url


@pytest.fixture
async def mtls(server_files: tuple[Path, Path, Path], redis_url: str, ca: trustme.CA) -> AsyncIterator[str]:
    chain, key, authority = server_files
    tokens = parse_tokens(TOKENS, "tokens.yaml")
    app = create_app(Config(redis_url=redis_url), Loaded(chart(), tokens), scheduler=False)
    async for url in serve(app, server_context(chain, key, authority)):
        yield url


async def test_https_serves_with_the_certificate(https: str, ca: trustme.CA) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{https}/state?state=canary", ssl=client_context(ca)) as resp:
            assert resp.status == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{https}/healthz")  # the system CAs do not know the test CA


async def test_mtls_client_certificate_cn_is_the_token_name(mtls: str, ca: trustme.CA) -> None:
    put = f"{mtls}/state?state=canary&host=web1"
    async with aiohttp.ClientSession() as session:
        async with session.put(put, ssl=client_context(ca, "web1.example.com")) as resp:
            assert resp.status == 200, await resp.text()
        async with session.put(put, ssl=client_context(ca, "reader.example.com")) as resp:
            assert resp.status == 403
        async with session.get(f"{mtls}/state?state=canary", ssl=client_context(ca, "reader.example.com")) as resp:
            assert resp.status == 200
        async with session.get(f"{mtls}/charts/rollout", ssl=client_context(ca, "stranger.example.com")) as resp:
            assert resp.status == 401  # a valid certificate whose CN names no token
        async with session.get(f"{mtls}/charts/rollout/history", ssl=client_context(ca, "reader.example.com")) as resp:
            assert (await resp.json())["history"] == []  # one counted report of two: no transition yet
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):  # no client certificate: the handshake fails
            async with session.get(f"{mtls}/healthz", ssl=client_context(ca)) as resp:
                await resp.read()


async def test_mtls_transitions_are_recorded_under_the_certificate_cn(mtls: str, ca: trustme.CA) -> None:
    async with aiohttp.ClientSession() as session:
        context = client_context(ca, "web1.example.com")
        for host in ("a", "b"):
            async with session.put(f"{mtls}/state?state=canary&host={host}", ssl=context) as resp:
                assert resp.status == 200
        async with session.get(f"{mtls}/charts/rollout/history", ssl=context) as resp:
            (record,) = (await resp.json())["history"]
    assert (record["actor"], record["host"], record["remote"]) == ("web1.example.com", "b", "127.0.0.1")


def test_unusable_certificates_stop_start_up(server_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    chain, key, authority = server_files
    with pytest.raises(StartupError, match="cannot use the certificate"):
        server_context(chain, tmp_path / "missing.key")
    with pytest.raises(StartupError, match="cannot use the certificate"):
        server_context(authority, key)  # a certificate that does not match the key
    with pytest.raises(StartupError, match="cannot read the client CA"):
        server_context(chain, key, tmp_path / "missing-ca.pem")


def test_serve_with_tls(
    services: Services,
    server_files: tuple[Path, Path, Path],
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain, key, authority = server_files
    chart_file = tmp_path / "rollout.yaml"
    chart_file.write_text(textwrap.dedent(ROLLOUT).lstrip("\n"))
    monkeypatch.setenv("SSL_CERT_FILE", str(authority))  # the harness's urllib probes then trust the test CA
    service = services.start(chart_file, redis_url=redis_url, args=["--tls-cert", str(chain), "--tls-key", str(key)])
    assert service.url.startswith("https://127.0.0.1:")
    assert http("GET", f"{service.url}/state?state=canary")[:3:2] == (200, "canary\n")
    assert service.stop() == 0
