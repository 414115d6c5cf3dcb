"""The live web dashboard (issue #17): server-rendered pages of the charts, their event streams, and the buttons.

`setup(app)` adds it to an application `web.app.create_app` built; the server does so for every
worker. Nothing here is JSON API: the routes are not in the OpenAPI document, and the API's
routes answer as they did. The pages are Jinja2 templates (`templates/`), with one stylesheet and
one script (`static/`), shipped inside the package.

    GET  /                                  the overview (for a client that accepts text/html)
    GET  /dashboard/charts/{chart}          a chart's page
    POST /dashboard/charts/{chart}/{action} halt, resume, advance, forget, release (see actions.py)
    GET  /dashboard/events[?q=&page=]       the overview's event stream (events.py)
    GET  /dashboard/events/charts/{chart}   a chart's event stream
    GET  /dashboard/signin, POST it         sign in with a token (tokens on)
    POST /dashboard/signout
    GET  /dashboard/static/{file}           the stylesheet and the script
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

import aiohttp_jinja2
import jinja2
from aiohttp import web

from stateservice.dashboard import access, actions, events, pages
from stateservice.web.auth import PAGES

CHART = PAGES + "charts/{chart:[^/]+}"


def when(at: datetime | str | None) -> str:
    """An instant as the pages show it (and as `<time datetime>` and the script read it): UTC to the second."""
    if isinstance(at, datetime):
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return at or ""


def setup(app: web.Application) -> None:
    """Add the dashboard's templates, routes and static files to `app`."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("stateservice.dashboard", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.globals["sign_in"] = access.SIGN_IN
    env.filters["when"] = when
    app[access.SESSIONS] = access.Keeper()
    app.router.add_get("/", pages.overview)
    app.router.add_get(CHART, pages.chart)
    app.router.add_post(CHART + "/{action:[a-z]+}", actions.act)
    app.router.add_get(PAGES + "events", events.overview_events)
    app.router.add_get(PAGES + "events/charts/{chart:[^/]+}", events.chart_events)
    app.router.add_route("*", access.SIGN_IN, pages.signin)
    app.router.add_post(PAGES + "signout", pages.signout)
    app.router.add_static(PAGES + "static/", str(resources.files("stateservice.dashboard") / "static"))
