"""`rediss://` end to end: the service verifies Redis's certificate against `--redis-ca`."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.redisproc import RedisProcess
from tests.support.service import REPO, Services, http
from tests.support.tlsproxy import TLSProxy

EXAMPLE = REPO / "examples" / "states.yaml"


@pytest.fixture
def tls_redis(redis_factory: object, tmp_path: Path) -> Iterator[tuple[TLSProxy, Path, Path]]:
    """A Redis behind TLS with a certificate for 127.0.0.1, its CA file, and an unrelated CA file."""
    server: RedisProcess = redis_factory()  # type: ignore[operator]
    ca, other = trustme.CA(), trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file, other_file = tmp_path / "ca.pem", tmp_path / "other.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other.cert_pem.write_to_path(str(other_file))
    with TLSProxy(context, server.port) as proxy:
        yield proxy, ca_file, other_file


def test_rediss_with_the_right_ca_serves(services: Services, tls_redis: tuple[TLSProxy, Path, Path]) -> None:
    proxy, ca_file, _ = tls_redis
    service = services.start(EXAMPLE, redis_url=f"rediss://127.0.0.1:{proxy.port}/0", args=["--redis-ca", str(ca_file)])
    assert http("GET", f"{service.url}/readyz")[0] == 200
    assert http("PUT", f"{service.url}/state?state=green_state&host=web1")[0] == 200
    assert http("GET", f"{service.url}/state?state=red_state")[0] == 200


def test_rediss_with_a_ca_that_did_not_sign_the_server_is_refused(
    services: Services, tls_redis: tuple[TLSProxy, Path, Path]
) -> None:
    proxy, _, other_file = tls_redis
    service = services.start(
        EXAMPLE, redis_url=f"rediss://127.0.0.1:{proxy.port}/0", args=["--redis-ca", str(other_file)]
    )
    status, _, body = http("GET", f"{service.url}/state?state=green_state")
    assert status == 503, body
    assert '"store_unavailable"' in body
    assert http("GET", f"{service.url}/readyz")[0] == 503
    assert "certificate verify failed" in service.stderr.lower()
