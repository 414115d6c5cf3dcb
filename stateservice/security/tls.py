"""The server's TLS context from --tls-cert/--tls-key, and --tls-client-ca for mTLS.

Built in each worker (an SSLContext does not cross a fork well) and once before binding, so
an unreadable or mismatched certificate stops start-up with a message naming the file.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from stateservice.errors import StartupError


def server_context(cert: Path | None, key: Path | None, client_ca: Path | None = None) -> ssl.SSLContext | None:
    """An HTTPS server context (TLS 1.2+), requiring client certificates when `client_ca` is given.

    None without a certificate. Raises StartupError naming the file that cannot be used.
    """
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"{cert}: cannot use the certificate with key {key}: {_why(exc)}") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"{client_ca}: cannot read the client CA: {_why(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _why(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
