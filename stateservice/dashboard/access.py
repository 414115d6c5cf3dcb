"""Who is looking at the dashboard, and what they may see and do.

The API's auth middleware lets the dashboard's paths through (`web/auth.page`); this module
does their checks instead. Without tokens the pages are open, as the API is on loopback; every
visitor still gets a session, whose nonce makes the CSRF token of its forms. With tokens, a
page needs a session signed in with a token that has the `read` scope (or, for tools such as
`curl -N` on the event streams, the API's `Authorization: Bearer` header); a token's `charts`
list limits what it sees, and each action needs the scope its HTTP route needs.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from aiohttp import web
from redis.exceptions import RedisError

from stateservice.dashboard.session import ANONYMOUS, COOKIE, DIGEST, VISIT, Session, Sessions
from stateservice.errors import CsrfRefused, Forbidden, StateServiceError, Unauthorized
from stateservice.security.tokens import Scope, Token
from stateservice.store import overview
from stateservice.telemetry import logs
from stateservice.web import auth
from stateservice.web.appkeys import REDIS
from stateservice.web.deadline import redis_deadline


class Keeper:
    """The app's Sessions under the key in Redis now, read once per request: a worker that kept it would honour
    sessions after `DEL stateservice:dashboard:secret`, and sign with a key other workers no longer have."""

    def __init__(self) -> None:
        self.sessions: Sessions | None = None
        self._key = b""

    async def get(self, request: web.Request) -> Sessions:
        current = request.get(CURRENT)
        if current is None:
            async with redis_deadline(request):
                key = await overview.secret(request.app[REDIS])
            if self.sessions is None or not hmac.compare_digest(key, self._key):
                self.sessions, self._key = Sessions(key), key
            current = request[CURRENT] = self.sessions
        return current


CURRENT = web.RequestKey("dashboard_sessions_now", Sessions)  # the Sessions this request read the key for
SESSIONS = web.AppKey("dashboard_sessions", Keeper)
NEW_SESSION = web.RequestKey("dashboard_new_session", Session)  # a session to send as a cookie with the answer
SIGNED_OUT = web.RequestKey("dashboard_signed_out", bool)  # the answer removes the signed-in session's cookie
SIGN_IN = "/dashboard/signin"


@dataclass(frozen=True, slots=True)
class Viewer:
    """A visitor: their session (None when they came with a bearer token), token (None: no tokens), CSRF token."""

    session: Session | None
    token: Token | None
    csrf: str

    @property
    def name(self) -> str:
        return self.token.name if self.token is not None else ANONYMOUS

    def may(self, scope: Scope, chart: str | None = None) -> bool:
        """Whether this visitor may do what needs `scope` (on `chart`)."""
        return self.token is None or self.token.allows(scope, chart)

    def sees(self, chart: str) -> bool:
        return self.token is None or self.token.charts is None or chart in self.token.charts


async def still(request: web.Request, who: Viewer, now: float) -> bool:
    """Whether `who` may still look, as an open event stream asks before each send and keep-alive: its session has
    not expired nor been signed out with everybody's (`DEL stateservice:dashboard:secret`), and its token is still in
    the tokens file as it was (not removed, rotated or narrowed by SIGHUP)."""
    if who.session is not None and (who.session.expires <= now or not await _key_kept(request)):
        return False
    return who.token is None or request.app[auth.TOKENS].tokens.named(who.token.name) == who.token


async def _key_kept(request: web.Request) -> bool:
    """Whether the key in Redis is still the one the request's session was read with (one GET while it is)."""
    try:
        async with redis_deadline(request):
            key = await overview.secret(request.app[REDIS])
    except (StateServiceError, RedisError, OSError):
        return True  # cannot tell now: the stream's next read says Redis is down, and it asks again after
    return request[CURRENT].signs_with(key)


class NotSignedIn(Exception):
    """The page needs a signed-in session: the caller answers with the sign-in page."""


async def session_of(request: web.Request) -> Session:
    """The request's valid session, or a new anonymous one (sent as a cookie with the answer: see `keep`)."""
    sessions = await request.app[SESSIONS].get(request)
    now = time.time()
    session = request.get(NEW_SESSION) or _cookie_session(request, sessions, now)
    if session is None:
        session = request[NEW_SESSION] = sessions.new(ANONYMOUS, now)
    return session


def _cookie_session(request: web.Request, sessions: Sessions, now: float) -> Session | None:
    """The session the request's cookies hold: the signed-in one, else the anonymous one. A browser sends neither on
    a navigation from another site (SameSite=Strict), so the anonymous one made then never replaces the other."""
    return sessions.read(request.cookies.get(COOKIE), now) or sessions.read(request.cookies.get(VISIT), now)


async def viewer(request: web.Request) -> Viewer:
    """Who asks. Raises NotSignedIn (tokens on, no usable session), Unauthorized (a bearer token that matches none),
    Forbidden (a token without the read scope)."""
    sessions = await request.app[SESSIONS].get(request)
    if not request.app[auth.AUTH_ON]:
        anyone = await session_of(request)
        return Viewer(anyone, None, sessions.csrf(anyone))
    token: Token | None
    session: Session | None = None
    if "Authorization" in request.headers:  # a tool on an event stream: no session, so no forms either
        token = _bearer(request)
    else:
        session = await session_of(request)
        token = _token_of(request, session)
    if token is None:
        raise NotSignedIn()
    if Scope.READ not in token.scopes:
        raise Forbidden(token.name, Scope.READ.value, None)
    request[auth.IDENTITY] = token.name
    if token.charts is not None:
        request[auth.CHARTS_ALLOWED] = token.charts
    logs.bind(identity=token.name)
    return Viewer(session, token, sessions.csrf(session) if session is not None else "")


def _token_of(request: web.Request, session: Session) -> Token | None:
    """The signed-in session's token, looked up again on every request: a token removed from the file, or whose
    secret was rotated (another SHA-256 under the same name), ends its sessions at the next SIGHUP."""
    token = request.app[auth.TOKENS].tokens.named(session.name) if session.signed_in else None
    if token is None or not hmac.compare_digest(token.sha256[:DIGEST].encode(), session.digest.encode()):
        return None
    return token


def _bearer(request: web.Request) -> Token:
    """The token of an `Authorization: Bearer` header, as the API checks it. Raises Unauthorized."""
    kind, _, secret = request.headers["Authorization"].strip().partition(" ")
    token = request.app[auth.TOKENS].tokens.lookup(secret.strip()) if kind.lower() == "bearer" else None
    if token is None:
        raise Unauthorized("the token matches no entry of the tokens file")
    return token


async def sign_in(request: web.Request, secret: str) -> Token | None:
    """The token `secret` names when it may read; then a new signed-in session goes with the answer."""
    token = request.app[auth.TOKENS].tokens.lookup(secret)
    if token is None or Scope.READ not in token.scopes:
        return None
    request[NEW_SESSION] = (await request.app[SESSIONS].get(request)).new(token.name, time.time(), token.sha256)
    return token


async def sign_out(request: web.Request) -> None:
    request[NEW_SESSION] = (await request.app[SESSIONS].get(request)).new(ANONYMOUS, time.time())
    request[SIGNED_OUT] = True


def keep(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Send the request's new session, if it got one, as its cookie (the sessions exist by then)."""
    session = request.get(NEW_SESSION)
    sessions = request.app[SESSIONS].sessions
    if request.get(SIGNED_OUT):
        response.del_cookie(COOKIE, path="/")
    if session is not None and sessions is not None:
        response.set_cookie(
            COOKIE if session.signed_in else VISIT,
            sessions.cookie(session),
            max_age=sessions.lifetime,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
    return response


def redirect(request: web.Request, location: str) -> web.StreamResponse:
    """303 See Other to `location` (after a form's POST), with the request's new session if it got one."""
    return keep(request, web.Response(status=303, headers={"Location": location}))


async def check_csrf(request: web.Request, given: str | None) -> Session:
    """The session of a form's POST whose CSRF token is right. Raises CsrfRefused otherwise (no cookie, a stale or
    forged token, or a request from another site's page)."""
    sessions = await request.app[SESSIONS].get(request)
    session = _cookie_session(request, sessions, time.time())
    if session is None or not sessions.check_csrf(session, given):
        raise CsrfRefused()
    return session
