"""The dashboard's sessions and CSRF tokens: signed cookies, no session store.

A session cookie holds who signed in (a token's *name*, never its secret; `-` without tokens),
the first 16 hex digits of that token's SHA-256 as the tokens file holds it, when the session ends
and a random nonce, signed with HMAC-SHA256 under the key every worker
reads from Redis (`store/overview.secret`), so any worker of any machine of the service honours
it and none keeps a copy. Each request looks the token up again by name and requires the same
digest, so removing a token from the tokens file or rotating its secret (and SIGHUP) ends its
sessions at once. The cookie is HttpOnly,
SameSite=Strict, Path=/ and expires (Secure too when the request came over TLS).

A form's CSRF token is the HMAC of the session's nonce: it differs for every session, needs no
storage, and a page of another site can neither read it nor make the browser send the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

COOKIE = "stateservice_session"  # a signed-in session: set only by signing in, removed only by signing out
VISIT = "stateservice_visit"  # an anonymous one: its nonce makes the sign-in form's CSRF token (all, tokens off)
LIFETIME = 8 * 3600  # seconds a session lasts: a working day, then sign in again
ANONYMOUS = "-"
DIGEST = 16  # hex digits of the token's SHA-256 a session keeps: enough to tell a rotated secret, too few to matter


@dataclass(frozen=True, slots=True)
class Session:
    """Who signed in (a token's name, or `-`), until when (Unix seconds), the nonce its CSRF token is made of, and
    the start of the token's SHA-256 (empty when anonymous)."""

    name: str
    expires: int
    nonce: str
    digest: str = ""

    @property
    def signed_in(self) -> bool:
        return self.name != ANONYMOUS


class Sessions:
    """Makes and reads session cookies signed with `secret`."""

    def __init__(self, secret: bytes, lifetime: int = LIFETIME) -> None:
        self._secret = secret
        self.lifetime = lifetime

    def signs_with(self, secret: bytes) -> bool:
        return hmac.compare_digest(secret, self._secret)

    def new(self, name: str, now: float, sha256: str = "") -> Session:
        """A fresh session of `name`, whose token's SHA-256 is `sha256` (a fresh nonce: signing in never keeps the
        anonymous session's CSRF token)."""
        return Session(name, int(now) + self.lifetime, secrets.token_urlsafe(16), sha256[:DIGEST])

    def cookie(self, session: Session) -> str:
        """The cookie's value: the session, then its signature."""
        body = _b64(orjson.dumps([session.name, session.expires, session.nonce, session.digest]))
        return f"{body}.{self._sign(body)}"

    def read(self, value: str | None, now: float) -> Session | None:
        """The session a cookie holds; None when there is none, it is forged or altered, or it has expired."""
        if not value or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):  # str: ASCII only
            return None
        try:
            name, expires, nonce, digest = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, TypeError):
            return None
        if not all(isinstance(text, str) for text in (name, nonce, digest)) or not isinstance(expires, int):
            return None
        return Session(name, expires, nonce, digest) if expires > now else None

    def csrf(self, session: Session) -> str:
        """The CSRF token of `session`'s forms."""
        return self._sign("csrf:" + session.nonce)

    def check_csrf(self, session: Session, given: str | None) -> bool:
        """Whether `given` (a form's hidden field) is `session`'s CSRF token, compared in constant time."""
        return given is not None and hmac.compare_digest(given.encode(), self.csrf(session).encode())

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._secret, text.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
