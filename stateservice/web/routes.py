"""The route table: every endpoint in one place (the README's HTTP table mirrors it)."""

from __future__ import annotations

from aiohttp import web

from stateservice.web import handlers


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/state", handlers.get_state)
    app.router.add_put("/state", handlers.put_state)
    app.router.add_get("/charts", handlers.list_charts)
    app.router.add_get("/charts/{chart}", handlers.show_chart)
    app.router.add_get("/charts/{chart}/state", handlers.get_state)
    app.router.add_put("/charts/{chart}/state", handlers.put_state)
    app.router.add_get("/charts/{chart}/history", handlers.chart_history)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
