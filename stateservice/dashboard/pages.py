"""The dashboard's pages: the overview at `GET /`, a chart's page, signing in and out.

HTML only for a client that asks for it: `GET /` answers a client that does not accept
text/html (curl, JSON clients) what it always did, a 404 JSON error. Errors of ours on a page
become an HTML page with the same status and message (the API's JSON shape stays the API's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_jinja2
import structlog
from aiohttp import web

from stateservice.dashboard import access, read, view
from stateservice.dashboard.access import NotSignedIn, Viewer
from stateservice.errors import Forbidden, StateServiceError, Unauthorized
from stateservice.security.tokens import Scope
from stateservice.web import auth

log = structlog.get_logger(__name__)

Page = Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]
ACTIONS = {  # what each button does, and the scope its HTTP route needs (web/auth.scope_of)
    "halt": Scope.ADMIN,
    "resume": Scope.ADMIN,
    "advance": Scope.ADMIN,
    "forget": Scope.ADMIN,
    "release": Scope.REPORT,
    "approve": Scope.APPROVE,  # or admin (Token.allows), as POST /continuations/{id}
}


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.StreamResponse:
    """The template filled with `context`, and whatever every page needs (the CSRF token, who is signed in)."""
    response = aiohttp_jinja2.render_template(template, request, {"who": None, **context}, status=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    )
    return access.keep(request, response)


def page(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page handler: gets its viewer first (or the sign-in page), and shows our errors as an HTML page."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request, await access.viewer(request))
        except NotSignedIn:
            if not wants_html(request):
                raise Unauthorized("sign in on the dashboard, or send 'Authorization: Bearer TOKEN'") from None
            return await signin_form(request, status=401)
        except StateServiceError as exc:
            if not wants_html(request):
                raise  # a tool (curl -N on an event stream) gets the API's JSON error
            return error_page(request, exc)

    return wrapped


def error_page(request: web.Request, exc: StateServiceError) -> web.StreamResponse:
    headers = {key: value for key, value in exc.headers.items() if key != "WWW-Authenticate"}
    response = render(request, "error.html", {"error": exc, "title": f"{exc.status} {exc.code}"}, exc.status)
    response.headers.update(headers)
    return response


def wants_html(request: web.Request) -> bool:
    """Whether the client asked for HTML (a browser does; curl's `*/*` and JSON clients do not)."""
    return "text/html" in request.headers.get("Accept", "")


def number(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "1")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else 1


async def overview(request: web.Request) -> web.StreamResponse:
    """GET /: the overview, for a browser; anything else gets the 404 it always got."""
    if not wants_html(request):
        raise web.HTTPNotFound()
    return await _overview(request)


@page
async def _overview(request: web.Request, who: Viewer) -> web.StreamResponse:
    query = request.query.get("q", "")[:64]
    shown = await read.overview_page(request, who, query, number(request, "page"))
    version = view.version(view.overview_json(shown))  # the page's script compares it with the stream's first id
    return render(request, "overview.html", {"overview": shown, "who": who, "title": "Charts", "version": version})


@page
async def chart(request: web.Request, who: Viewer) -> web.StreamResponse:
    """GET /dashboard/charts/{chart}: the chart's diagram, hosts, history, leader and Redis key."""
    name = request.match_info["chart"]
    if not who.sees(name):
        raise Forbidden(who.name, Scope.READ.value, name)
    shown, diagram = await read.chart_page(request)
    actions = {action: who.may(scope, name) for action, scope in ACTIONS.items()}
    version = view.version(read.page_json(shown))
    context = {"page": shown, "diagram": diagram, "who": who, "actions": actions, "title": name, "version": version}
    return render(request, "chart.html", context)


async def signin_form(request: web.Request, status: int = 200, problem: str | None = None) -> web.StreamResponse:
    """The sign-in page (tokens on), or the overview's address when there is nothing to sign in to."""
    if not request.app[auth.AUTH_ON]:
        return access.redirect(request, "/")
    session = await access.session_of(request)
    csrf = (await request.app[access.SESSIONS].get(request)).csrf(session)
    context = {"csrf": csrf, "problem": problem, "title": "Sign in", "who": None}
    return render(request, "signin.html", context, status)


def as_page(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page that needs no viewer (signing in and out): our errors (Redis down) as an HTML page too."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StateServiceError as exc:
            return error_page(request, exc)

    return wrapped


@as_page
async def signin(request: web.Request) -> web.StreamResponse:
    """GET /dashboard/signin: the form; POST: check the token (from the form's body, never a URL) and sign in."""
    if request.method != "POST":
        return await signin_form(request)
    form = await request.post()
    try:
        await access.check_csrf(request, field(form, "csrf"))
    except StateServiceError as exc:
        return error_page(request, exc)
    token = await access.sign_in(request, field(form, "token") or "") if request.app[auth.AUTH_ON] else None
    if token is None:
        log.info("dashboard_sign_in_refused", remote=request.remote)
        return await signin_form(request, 401, "That token matches no entry of the tokens file that may read.")
    log.info("dashboard_signed_in", identity=token.name)
    return access.redirect(request, "/")


@as_page
async def signout(request: web.Request) -> web.StreamResponse:
    """POST /dashboard/signout: end the session (its cookie is replaced by an anonymous one)."""
    form = await request.post()
    try:
        await access.check_csrf(request, field(form, "csrf"))
    except StateServiceError as exc:
        return error_page(request, exc)
    await access.sign_out(request)
    return access.redirect(request, access.SIGN_IN if request.app[auth.AUTH_ON] else "/")


def field(form: Any, name: str) -> str | None:
    """A form's text field (None when absent, or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else None
