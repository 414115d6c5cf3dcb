"""Who is asking, and may they: the bearer-token / client-certificate middleware.

It runs inside `middleware.handle` (listed after it, so errors it raises still become JSON
bodies), and only when tokens are configured (without them, `handle` records `anonymous()`:
the client certificate's CN or `-`). It finds the identity (a token's name, or `-` on the
open paths), binds it into the log context and the request, and refuses with
401 (no or unknown token, with `WWW-Authenticate`) or 403 (wrong scope or chart). The
probes and the contract (`/healthz`, `/readyz`, `/leader`, `/openapi.json`) are open; the
dashboard's pages (`page`) sign in with a session of their own and check it themselves.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from stateservice.errors import Forbidden, Unauthorized
from stateservice.security.tokens import Scope, Token, Tokens, TokensRef
from stateservice.telemetry import logs
from stateservice.web.appkeys import CHARTS

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/leader", "/openapi.json"})  # probes and the contract need no token
PAGES = "/dashboard/"  # the dashboard's paths: they check a session of their own (stateservice/dashboard/access.py)
IDENTITY = web.RequestKey("identity", str)
CHARTS_ALLOWED = web.RequestKey("charts_allowed", frozenset)  # absent: every chart
AUTH_ON = web.AppKey("auth_on", bool)  # tokens are required (the OpenAPI document then says so)
ANONYMOUS = "-"
# a token's `charts` list names the configurations it may touch too; their handlers check it (`web/machines.py`),
# since an instance's configuration is known only once it is read
MACHINE_PATHS = frozenset({"/configurations", "/statemachines", "/events"})


def visible(request: web.Request, chart: str) -> bool:
    """Whether the caller's token may see `chart` (a token with a `charts` list sees only those)."""
    allowed = request.get(CHARTS_ALLOWED)
    return allowed is None or chart in allowed


def sees_all(request: web.Request) -> bool:
    """Whether the caller's token is bound to no `charts` list (or there are no tokens)."""
    return request.get(CHARTS_ALLOWED) is None


def identity(request: web.Request) -> str:
    """The caller's name for audit records: token name, certificate CN, or `-`."""
    return str(request.get(IDENTITY, ANONYMOUS))


def machine_path(path: str) -> bool:
    """Whether `path` is one of the routes whose chart or configuration the handler checks (`web/machines.py`,
    and `web/approvals.py`'s continuations, whose chart is known once looked up)."""
    return path in MACHINE_PATHS or path.startswith(("/configurations/", "/statemachines/", "/continuations/"))


def scope_of(request: web.Request) -> Scope:
    """The scope a request needs: admin for resets, reloads, operator actions, new configurations and deleting
    instances; report for
    PUT/POST /state, taking or releasing a slot, creating instances and sending events; else read."""
    path = request.path
    if path.startswith("/continuations/"):
        return Scope.APPROVE if request.method == "POST" else Scope.READ
    if machine_path(path):
        if request.method == "DELETE":
            return Scope.ADMIN
        if request.method != "POST":
            return Scope.READ
        return Scope.ADMIN if path == "/configurations" else Scope.REPORT
    if request.method == "POST" and path.endswith(("/reset", "/reload", "/halt", "/resume", "/advance", "/forget")):
        return Scope.ADMIN
    if request.method in ("PUT", "POST") and (path == "/state" or path.endswith("/state")):
        return Scope.REPORT
    if request.method in ("PUT", "DELETE") and "/slots/" in path:
        return Scope.REPORT
    return Scope.READ


def chart_of(request: web.Request) -> str | None:
    """The chart a request names (path, then `?chart=`), or the only one served; None on the machines' routes."""
    if machine_path(request.path):
        return None
    named = request.match_info.get("chart") or request.query.get("chart")
    if named:
        return named
    charts = request.app[CHARTS]
    one = (request.path == "/state" and request.method != "POST") or request.path.startswith("/slots/")
    if one and len(charts) == 1:
        return next(iter(charts))
    return None


def page(request: web.Request) -> bool:
    """Whether the request is the dashboard's: its paths, and `GET /` from a browser (a JSON client's `GET /`
    is refused or answered 404 as before). The dashboard checks these itself."""
    if request.path.startswith(PAGES):
        return True
    return (
        request.path == "/" and request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")
    )


def client_cn(request: web.Request) -> str | None:
    """The subject CN of a verified client certificate (mTLS), if the connection has one."""
    transport = request.transport
    if transport is None:
        return None
    cert: Any = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    kind, _, secret = header.strip().partition(" ")
    if kind.lower() != "bearer" or not secret.strip():
        raise Unauthorized("the Authorization header must be 'Bearer TOKEN'")
    return secret.strip()


def _authenticate(request: web.Request, tokens: Tokens) -> Token:
    secret = _bearer(request)
    if secret is not None:
        token = tokens.lookup(secret)
        if token is None:
            raise Unauthorized("the token matches no entry of the tokens file")
        return token
    cn = client_cn(request)
    if cn is not None:
        token = tokens.named(cn)
        if token is None:
            raise Unauthorized("the client certificate's CN names no entry of the tokens file")
        return token
    raise Unauthorized("this endpoint needs a token: send 'Authorization: Bearer TOKEN'")


def anonymous(request: web.Request) -> str:
    """Record and return who asks when no tokens are configured: the client certificate's CN, or `-`."""
    request[IDENTITY] = name = client_cn(request) or ANONYMOUS
    return name


TOKENS = web.AppKey("tokens", TokensRef)  # the tokens checked, when they are required


def middleware(ref: TokensRef | None) -> Middleware:
    """The auth middleware; with `ref` None every request is let through (identity `-` or the cert CN).

    The application installs it only with tokens (see `anonymous`); without, it only names the caller.
    """

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if ref is None:
            anonymous(request)
        elif request.path in OPEN_PATHS or page(request):
            request[IDENTITY] = ANONYMOUS
        else:
            token = _authenticate(request, ref.tokens)
            request[IDENTITY] = token.name
            if token.charts is not None:
                request[CHARTS_ALLOWED] = token.charts
            logs.bind(identity=token.name)
            scope, chart = scope_of(request), chart_of(request)
            if not token.allows(scope, chart if token.charts is not None else None):
                raise Forbidden(token.name, scope.value, chart if token.charts is not None else None)
            bound = token.charts is not None and not machine_path(request.path)
            if bound and chart is None and (request.method == "PUT" or scope is Scope.ADMIN):
                raise Forbidden(token.name, scope.value, chart)  # a chart-bound token must name its chart
        logs.bind(identity=request[IDENTITY])
        return await handler(request)

    return check
