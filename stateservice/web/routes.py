"""The route table: every endpoint in one place (the README's HTTP table mirrors it)."""

from __future__ import annotations

from aiohttp import web

from stateservice.web import handlers, predict, prometheus

# any segment, braces included: a malformed chart name gets a 400 that says why, not a bare 404
CHART = "/charts/{chart:[^/]+}"


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/state", handlers.get_state)
    app.router.add_put("/state", handlers.put_state)
    app.router.add_post("/state", predict.post_state)
    app.router.add_get("/charts", handlers.list_charts)
    app.router.add_get(CHART, handlers.show_chart)
    app.router.add_get(CHART + "/state", handlers.get_state)
    app.router.add_put(CHART + "/state", handlers.put_state)
    app.router.add_get(CHART + "/history", handlers.chart_history)
    app.router.add_post(CHART + "/reset", handlers.reset_chart)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/leader", handlers.leader)
    app.router.add_get("/openapi.json", handlers.openapi_json)
    app.router.add_get("/models", predict.list_models)
    app.router.add_get("/metrics", prometheus.serve_metrics)
