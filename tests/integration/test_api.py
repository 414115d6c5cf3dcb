"""The HTTP contract through a real aiohttp server and client, state in a real redis-server."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from stateservice.config import Config
from stateservice.core.chart import Chart
from stateservice.core.parse import parse
from stateservice.errors import StateRemoved
from stateservice.store import keys
from stateservice.store.charts import ChartStore
from stateservice.store.redis.connect import connect
from stateservice.web.app import Loaded, create_app
from stateservice.web.appkeys import REDIS
from tests.support import charts
from tests.support.app import Client, MakeClient
from tests.support.charts import load
from tests.support.paths import EXAMPLES

ROLLOUT = charts.wave_text(3, "rollout", fleet=2)

CYCLE = charts.CYCLE

TIMED = """
name: timed
current_state: wait
states:
  - name: wait
    func: time
    target:
      name: go
      when:
        key: clock
        value: 3000-01-01T00:00:00
  - name: go
"""

# the keys that belong to no chart: what the key functions without a chart argument name
GLOBAL_KEYS = {
    fn()
    for name, fn in inspect.getmembers(keys, inspect.isfunction)
    if fn.__module__ == keys.__name__ and not name.startswith("_") and not inspect.signature(fn).parameters
}


def seed() -> Chart:
    path = EXAMPLES / "states.yaml"
    return parse(path.read_text(), str(path)).unwrap()


@pytest.fixture
def make_client(serve: MakeClient) -> MakeClient:
    """`await make_client(chart, ...)`: a real server for an app serving those charts, and a client for it."""
    return serve


async def put(client: Client, url: str, status: int = 200) -> Any:
    resp = await client.put(url)
    assert resp.status == status, await resp.text()
    return resp


async def chart_json(client: Client, name: str) -> dict[str, Any]:
    resp = await client.get(f"/charts/{name}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def counter(body: dict[str, Any], state: str) -> int:
    [found] = [s for s in body["states"] if s["name"] == state]
    value: int = found["counter"]["value"]
    return value


async def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["error"] == code, body
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body


# -- the seed walkthrough ------------------------------------------------------------------


async def test_seed_walkthrough(make_client: MakeClient) -> None:
    client = await make_client(seed())

    resp = await client.get("/state?state=green_state")
    assert resp.status == 200
    assert await resp.text() == "green_state\n"
    assert resp.content_type == "text/plain"

    resp = await put(client, "/state?state=green_state")
    assert await resp.text() == "green_state\n"

    resp = await client.get("/state?state=red_state")
    assert resp.status == 200
    assert await resp.text() == "red_state\n"

    resp = await client.get("/state?state=green_state")
    body = await assert_error(resp, 406, "not_current")
    assert body["current_state"] == "red_state"

    await put(client, "/state?state=red_state")

    resp = await client.get("/state?state=blue_state")
    assert resp.status == 200
    assert await resp.text() == "blue_state\n"


async def test_head_works_like_get(make_client: MakeClient) -> None:
    client = await make_client(seed())
    resp = await client.head("/state?state=green_state")
    assert resp.status == 200
    assert await resp.read() == b""
    assert (await client.head("/state?state=red_state")).status == 406
    assert (await client.head("/state?state=purple_state")).status == 404
    assert (await client.head("/state")).status == 400
    assert (await client.head("/charts/states")).status == 200


# -- /state errors -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_unknown_state_is_404_listing_the_states(make_client: MakeClient, method: str) -> None:
    client = await make_client(seed())
    resp = await client.request(method, "/state?state=gren_state")
    body = await assert_error(resp, 404, "unknown_state")
    assert body["states"] == ["green_state", "red_state", "blue_state"]
    assert "gren_state" in body["message"]
    assert (await chart_json(client, "states"))["current_state"] == "green_state"


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("query", ["", "?state=", "?host=web-1", "?State=green_state"])
async def test_missing_or_empty_state_is_400(make_client: MakeClient, method: str, query: str) -> None:
    client = await make_client(seed())
    body = await assert_error(await client.request(method, "/state" + query), 400, "missing_parameter")
    assert body["parameter"] == "state"


@pytest.mark.parametrize(
    ("method", "url", "parameter"),
    [
        ("GET", "/state?state=green%20state", "state"),
        ("GET", "/state?state=%7Bgreen%7D", "state"),
        ("GET", "/state?state=green_state%0A", "state"),
        ("GET", "/state?state=-green", "state"),
        ("GET", "/state?state=" + "a" * 129, "state"),
        ("PUT", "/state?state=green/state", "state"),
        ("GET", "/state?state=green_state&chart=st%7Bates%7D", "chart"),
        ("GET", "/charts/st%2Aates/state?state=green_state", "chart"),
        ("PUT", "/charts/st%20ates/state?state=green_state", "chart"),
        ("GET", "/charts/st%20ates", "chart"),
        ("GET", "/charts/st%20ates/history", "chart"),
        ("PUT", "/state?state=green_state&host=web%201", "host"),
        ("PUT", "/state?state=green_state&host=%7Bweb%7D", "host"),
        ("PUT", "/state?state=green_state&host=web%0A1", "host"),
    ],
)
async def test_invalid_names_are_400(
    make_client: MakeClient, plain: Redis, method: str, url: str, parameter: str
) -> None:
    client = await make_client(seed())
    body = await assert_error(await client.request(method, url), 400, "invalid_name")
    assert body["parameter"] == parameter
    assert await plain.hget(keys.chart_state("states"), "counter:green_state") == "0"  # nothing counted
    if parameter == "host":  # every character a host name may hold is named, not a partial list
        allowed = "letters, digits, '.', '_', '-', ':', '@'; starting with a letter or digit; at most 253"
        assert allowed in body["message"]


@pytest.mark.parametrize("path", ["/charts/st%7Bates%7D/state?state=green_state", "/charts/%7Bstates%7D"])
async def test_braces_in_a_chart_path_are_invalid_name(make_client: MakeClient, path: str) -> None:
    # braces are what would break the chart's hash tag; the endpoint exists, so "no such endpoint" misleads
    client = await make_client(seed())
    body = await assert_error(await client.get(path), 400, "invalid_name")
    assert body["parameter"] == "chart"


async def test_put_on_a_state_that_is_not_current_is_406(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(seed())
    body = await assert_error(await client.put("/state?state=red_state"), 406, "not_current")
    assert body["current_state"] == "green_state"
    assert await plain.hget(keys.chart_state("states"), "current_state") == "green_state"
    assert await plain.hget(keys.chart_state("states"), "counter:red_state") == "0"


async def test_put_on_a_final_state_is_409(make_client: MakeClient) -> None:
    client = await make_client(seed())
    await put(client, "/state?state=green_state")
    await put(client, "/state?state=red_state")
    body = await assert_error(await client.put("/state?state=blue_state"), 409, "not_reportable")
    assert body["current_state"] == "blue_state"
    assert "final" in body["message"]
    assert (await client.get("/state?state=blue_state")).status == 200


async def test_time_state_loads_shows_as_current_and_refuses_put(make_client: MakeClient) -> None:
    client = await make_client(load(TIMED))
    resp = await client.get("/state?state=wait")
    assert resp.status == 200
    assert await resp.text() == "wait\n"
    await assert_error(await client.get("/state?state=go"), 406, "not_current")
    body = await assert_error(await client.put("/state?state=wait"), 409, "not_reportable")
    assert body["current_state"] == "wait"

    shown = await chart_json(client, "timed")
    assert shown["current_state"] == "wait"
    assert shown["final"] is False
    wait, go = shown["states"]
    assert wait["func"] == "time"
    assert wait["counter"] is None
    assert wait["target"] == {"name": "go", "when": {"key": "clock", "value": "3000-01-01T00:00:00"}}
    assert go["func"] is None
    assert go["target"] is None
    assert (await client.get("/charts/timed/history")).status == 200


# -- counting and hosts ----------------------------------------------------------------------


async def test_put_headers_say_counted_and_the_state_after(make_client: MakeClient) -> None:
    client = await make_client(load(ROLLOUT))
    resp = await put(client, "/state?state=canary")
    assert resp.headers["Stateservice-Counted"] == "true"
    assert resp.headers["Stateservice-State"] == "canary"
    await put(client, "/state?state=canary")
    resp = await put(client, "/state?state=canary&host=web-3")
    assert await resp.text() == "canary\n"
    assert resp.headers["Stateservice-Counted"] == "true"
    assert resp.headers["Stateservice-State"] == "fleet"


async def test_host_counts_once_per_visit(make_client: MakeClient) -> None:
    client = await make_client(load(ROLLOUT))
    first = await put(client, "/state?state=canary&host=web-1")
    assert first.headers["Stateservice-Counted"] == "true"

    again = await put(client, "/state?state=canary&host=web-1")
    assert await again.text() == "canary\n"
    assert again.headers["Stateservice-Counted"] == "false"
    assert again.headers["Stateservice-State"] == "canary"

    shown = await chart_json(client, "rollout")
    assert counter(shown, "canary") == 1
    assert shown["hosts_counted"] == ["web-1"]

    other = await put(client, "/state?state=canary&host=web-2")
    assert other.headers["Stateservice-Counted"] == "true"
    shown = await chart_json(client, "rollout")
    assert counter(shown, "canary") == 2
    assert shown["hosts_counted"] == ["web-1", "web-2"]
    assert (await client.get("/charts/rollout/history")).status == 200
    assert (await (await client.get("/charts/rollout/history")).json())["history"] == []


async def test_host_counts_again_when_the_chart_cycles_back(make_client: MakeClient) -> None:
    client = await make_client(load(CYCLE))
    await put(client, "/state?state=canary&host=web-1")
    moved = await put(client, "/state?state=canary&host=web-2")
    assert moved.headers["Stateservice-State"] == "fleet"
    back = await put(client, "/state?state=fleet&host=web-3")
    assert back.headers["Stateservice-State"] == "canary"

    hosts_on_return = (await chart_json(client, "cycle"))["hosts_counted"]
    again = await put(client, "/state?state=canary&host=web-1")
    shown = await chart_json(client, "cycle")
    # a new visit of canary: nobody has been counted in it yet, so web-1 counts again
    assert (hosts_on_return, again.headers["Stateservice-Counted"], counter(shown, "canary")) == ([], "true", 1)
    assert shown["hosts_counted"] == ["web-1"]


# -- several charts --------------------------------------------------------------------------


async def test_several_charts(make_client: MakeClient) -> None:
    client = await make_client(seed(), load(ROLLOUT), load(TIMED))

    for method in ("GET", "PUT"):
        body = await assert_error(await client.request(method, "/state?state=green_state"), 400, "chart_required")
        assert body["charts"] == ["rollout", "states", "timed"]
        for name in ("rollout", "states", "timed"):
            assert name in body["message"]
        body = await assert_error(
            await client.request(method, "/state?state=green_state&chart=nope"), 404, "unknown_chart"
        )
        assert body["charts"] == ["rollout", "states", "timed"]
        await assert_error(await client.request(method, "/charts/nope/state?state=green_state"), 404, "unknown_chart")

    assert (await client.get("/state?state=green_state&chart=states")).status == 200
    await assert_error(await client.get("/state?state=green_state&chart=rollout"), 404, "unknown_state")

    resp = await client.get("/charts/rollout/state?state=canary")
    assert resp.status == 200
    assert await resp.text() == "canary\n"
    resp = await put(client, "/charts/rollout/state?state=canary&host=web-1")
    assert resp.headers["Stateservice-Counted"] == "true"
    resp = await put(client, "/state?chart=rollout&state=canary&host=web-1")
    assert resp.headers["Stateservice-Counted"] == "false"
    assert counter(await chart_json(client, "rollout"), "canary") == 1

    await put(client, "/charts/states/state?state=green_state")
    assert (await client.get("/charts/states/state?state=red_state")).status == 200
    assert counter(await chart_json(client, "rollout"), "canary") == 1  # the charts do not share counters

    for path in ("/charts/nope", "/charts/nope/history"):
        await assert_error(await client.get(path), 404, "unknown_chart")


async def test_list_charts(make_client: MakeClient) -> None:
    client = await make_client(seed(), load(ROLLOUT), load(TIMED))
    await put(client, "/charts/states/state?state=green_state")
    resp = await client.get("/charts")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert (await resp.json())["charts"] == [
        {"name": "rollout", "current_state": "canary"},
        {"name": "states", "current_state": "red_state"},
        {"name": "timed", "current_state": "wait"},
    ]


async def test_show_chart_shape(make_client: MakeClient) -> None:
    client = await make_client(load(ROLLOUT))
    before = datetime.now(UTC)
    shown = await chart_json(client, "rollout")
    assert {"name", "current_state", "final", "entered_at", "hosts_counted", "states"} <= set(shown)
    assert shown["name"] == "rollout"
    assert shown["current_state"] == "canary"
    assert shown["final"] is False
    assert shown["hosts_counted"] == []
    fixed = ("name", "func", "counter", "target")
    assert [{k: s[k] for k in fixed} for s in shown["states"]] == [
        {
            "name": "canary",
            "func": "increment",
            "counter": {"key": "hosts", "value": 0},
            "target": {"name": "fleet", "when": {"key": "hosts", "value": 3}},
        },
        {
            "name": "fleet",
            "func": "increment",
            "counter": {"key": "hosts", "value": 0},
            "target": {"name": "done", "when": {"key": "hosts", "value": 2}},
        },
        {"name": "done", "func": None, "counter": None, "target": None},
    ]
    created = shown["entered_at"]
    assert created.endswith("Z")
    entered = datetime.fromisoformat(created.replace("Z", "+00:00"))
    assert entered.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= entered <= datetime.now(UTC)

    await put(client, "/state?state=canary&host=web-1")
    await put(client, "/state?state=canary&host=web-2")
    shown = await chart_json(client, "rollout")
    assert counter(shown, "canary") == 2
    assert shown["hosts_counted"] == ["web-1", "web-2"]
    assert shown["entered_at"] == created

    await put(client, "/state?state=canary&host=web-3")
    shown = await chart_json(client, "rollout")
    assert shown["current_state"] == "fleet"
    assert shown["hosts_counted"] == []
    assert shown["entered_at"] > created
    assert counter(shown, "fleet") == 0

    await put(client, "/state?state=fleet")
    await put(client, "/state?state=fleet")
    shown = await chart_json(client, "rollout")
    assert (shown["current_state"], shown["final"]) == ("done", True)


# -- history ---------------------------------------------------------------------------------


async def test_history_newest_first(make_client: MakeClient) -> None:
    client = await make_client(seed())
    before = datetime.now(UTC)
    await put(client, "/state?state=green_state&host=web-1")
    await put(client, "/state?state=red_state")
    resp = await client.get("/charts/states/history")
    assert resp.status == 200
    history = (await resp.json())["history"]
    assert [{k: h[k] for k in ("from", "to", "cause", "host")} for h in history] == [
        {"from": "red_state", "to": "blue_state", "cause": "put", "host": None},
        {"from": "green_state", "to": "red_state", "cause": "put", "host": "web-1"},
    ]
    for record in history:
        assert record["at"].endswith("Z")
        assert datetime.fromisoformat(record["at"].replace("Z", "+00:00")) >= before - timedelta(seconds=5)
    assert history[0]["at"] >= history[1]["at"]

    limited = await client.get("/charts/states/history?limit=1")
    assert [h["to"] for h in (await limited.json())["history"]] == ["blue_state"]
    assert (await client.get("/charts/states/history?limit=1000")).status == 200


async def test_counted_reports_that_move_nothing_are_not_history(make_client: MakeClient) -> None:
    client = await make_client(load(ROLLOUT))
    await put(client, "/state?state=canary&host=web-1")
    await put(client, "/state?state=canary&host=web-1")
    await put(client, "/state?state=canary&host=web-2")
    assert (await (await client.get("/charts/rollout/history")).json())["history"] == []
    await put(client, "/state?state=canary&host=web-3")
    history = (await (await client.get("/charts/rollout/history")).json())["history"]
    assert [(h["from"], h["to"], h["host"]) for h in history] == [("canary", "fleet", "web-3")]


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1001", "", "1.5", "1e3", "%C2%B2"])
async def test_history_limit_is_validated(make_client: MakeClient, limit: str) -> None:
    client = await make_client(seed())
    body = await assert_error(await client.get(f"/charts/states/history?limit={limit}"), 400, "bad_request")
    assert body["parameter"] == "limit"


# -- probes, routing -------------------------------------------------------------------------


async def test_healthz_and_readyz(make_client: MakeClient) -> None:
    client = await make_client(seed())
    for path in ("/healthz", "/readyz"):
        resp = await client.get(path)
        assert resp.status == 200
        assert resp.content_type == "application/json"


async def test_unknown_path_is_404_json(make_client: MakeClient) -> None:
    client = await make_client(seed())
    for path in ("/nope", "/charts/states/nope", "/state/green_state"):
        body = await assert_error(await client.get(path), 404, "not_found")
        assert path in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/state", {"GET", "HEAD", "PUT", "POST", "OPTIONS"}),
        ("PATCH", "/state", {"GET", "HEAD", "PUT", "POST", "OPTIONS"}),
        ("POST", "/charts", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/charts/states/state", {"GET", "HEAD", "PUT", "OPTIONS"}),
        ("PUT", "/healthz", {"GET", "HEAD", "OPTIONS"}),
    ],
)
async def test_wrong_method_is_405_with_allow(
    make_client: MakeClient, method: str, path: str, allowed: set[str]
) -> None:
    client = await make_client(seed())
    resp = await client.request(method, path)
    await assert_error(resp, 405, "method_not_allowed")
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allowed


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/state", {"GET", "HEAD", "PUT", "POST", "OPTIONS"}),
        ("/charts", {"GET", "HEAD", "OPTIONS"}),
        ("/charts/states/state", {"GET", "HEAD", "PUT", "OPTIONS"}),
    ],
)
async def test_options_is_204_with_allow(make_client: MakeClient, path: str, allowed: set[str]) -> None:
    client = await make_client(seed())
    resp = await client.options(path)
    assert resp.status == 204
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allowed
    assert await resp.read() == b""


# -- the one error shape ---------------------------------------------------------------------

Setup = Callable[[Client, Redis], Awaitable[None]]


async def _nothing(client: Client, redis: Redis) -> None:
    return None


async def _to_blue(client: Client, redis: Redis) -> None:
    await put(client, "/charts/states/state?state=green_state")
    await put(client, "/charts/states/state?state=red_state")


async def _corrupt(client: Client, redis: Redis) -> None:
    await client.get("/charts/states")
    await redis.hset(keys.chart_state("states"), "current_state", "purple_state")


async def _corrupt_counter(client: Client, redis: Redis) -> None:
    await client.get("/charts/states")
    await redis.hset(keys.chart_state("states"), "counter:green_state", "two")


ERROR_PATHS: list[tuple[str, Setup, str, str, int, str]] = [
    ("missing-state", _nothing, "GET", "/charts/states/state", 400, "missing_parameter"),
    ("empty-state-put", _nothing, "PUT", "/charts/states/state?state=", 400, "missing_parameter"),
    ("invalid-state", _nothing, "GET", "/charts/states/state?state=a%20b", 400, "invalid_name"),
    ("invalid-chart-path", _nothing, "GET", "/charts/a%20b/state?state=x", 400, "invalid_name"),
    ("invalid-chart-braces", _nothing, "GET", "/charts/a%7Bb%7D/state?state=x", 400, "invalid_name"),
    ("invalid-chart-query", _nothing, "GET", "/state?chart=a%7Bb%7D&state=x", 400, "invalid_name"),
    ("invalid-host", _nothing, "PUT", "/charts/states/state?state=green_state&host=a%20b", 400, "invalid_name"),
    ("unknown-state", _nothing, "GET", "/charts/states/state?state=purple_state", 404, "unknown_state"),
    ("unknown-state-put", _nothing, "PUT", "/charts/states/state?state=purple_state", 404, "unknown_state"),
    ("not-current", _nothing, "GET", "/charts/states/state?state=red_state", 406, "not_current"),
    ("not-current-put", _nothing, "PUT", "/charts/states/state?state=red_state", 406, "not_current"),
    ("final", _to_blue, "PUT", "/charts/states/state?state=blue_state", 409, "not_reportable"),
    ("time", _nothing, "PUT", "/charts/timed/state?state=wait", 409, "not_reportable"),
    ("chart-required", _nothing, "GET", "/state?state=green_state", 400, "chart_required"),
    ("chart-required-put", _nothing, "PUT", "/state?state=green_state", 400, "chart_required"),
    ("unknown-chart-query", _nothing, "GET", "/state?chart=nope&state=x", 404, "unknown_chart"),
    ("unknown-chart-path", _nothing, "GET", "/charts/nope", 404, "unknown_chart"),
    ("unknown-chart-history", _nothing, "GET", "/charts/nope/history", 404, "unknown_chart"),
    ("history-limit", _nothing, "GET", "/charts/states/history?limit=0", 400, "bad_request"),
    ("history-limit-text", _nothing, "GET", "/charts/states/history?limit=abc", 400, "bad_request"),
    ("unknown-path", _nothing, "GET", "/nope", 404, "not_found"),
    ("wrong-method-state", _nothing, "DELETE", "/state", 405, "method_not_allowed"),
    ("wrong-method-charts", _nothing, "POST", "/charts", 405, "method_not_allowed"),
    ("corrupt-get", _corrupt, "GET", "/charts/states/state?state=green_state", 500, "corrupt_state"),
    ("corrupt-counter", _corrupt_counter, "PUT", "/charts/states/state?state=green_state", 500, "corrupt_state"),
    ("corrupt-put", _corrupt, "PUT", "/charts/states/state?state=green_state", 500, "corrupt_state"),
]


@pytest.mark.parametrize(
    ("setup", "method", "url", "status", "code"),
    [case[1:] for case in ERROR_PATHS],
    ids=[case[0] for case in ERROR_PATHS],
)
async def test_every_error_has_one_shape(
    make_client: MakeClient, plain: Redis, setup: Setup, method: str, url: str, status: int, code: str
) -> None:
    client = await make_client(seed(), load(TIMED))
    await setup(client, plain)
    resp = await client.request(method, url)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert isinstance(body, dict)
    assert {"error", "message", "status"} <= set(body)
    assert body["error"] == code
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in body["message"]


# -- redis-cli is an operator interface ------------------------------------------------------


async def test_redis_cli_repair_is_honoured(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(seed())
    assert (await client.get("/state?state=green_state")).status == 200

    await plain.hset(keys.chart_state("states"), mapping={"current_state": "red_state", "counter:red_state": "0"})

    assert (await client.get("/state?state=red_state")).status == 200
    body = await assert_error(await client.get("/state?state=green_state"), 406, "not_current")
    assert body["current_state"] == "red_state"
    assert (await chart_json(client, "states"))["current_state"] == "red_state"
    resp = await put(client, "/state?state=red_state")
    assert resp.headers["Stateservice-State"] == "blue_state"
    assert (await client.get("/state?state=blue_state")).status == 200


async def test_corrupt_current_state_is_500_saying_how_to_repair(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(seed())
    await put(client, "/state?state=green_state")
    await plain.hset(keys.chart_state("states"), "current_state", "purple_state")

    for method in ("GET", "PUT"):
        body = await assert_error(await client.request(method, "/state?state=red_state"), 500, "corrupt_state")
        assert "purple_state" in body["message"]
        assert "stateservice reset" in body["message"]
        assert "current_state" in body["message"]
        assert "Traceback" not in body["message"]
    assert await plain.hget(keys.chart_state("states"), "current_state") == "purple_state"  # left for the operator

    await plain.hset(keys.chart_state("states"), "current_state", "red_state")
    assert (await client.get("/state?state=red_state")).status == 200


async def test_deleted_state_hash_is_recreated_at_the_initial_state(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(seed())
    await put(client, "/state?state=green_state")
    assert await plain.hget(keys.chart_state("states"), "current_state") == "red_state"

    assert await plain.delete(keys.chart_state("states")) == 1

    assert (await client.get("/state?state=green_state")).status == 200
    assert await plain.hget(keys.chart_state("states"), "current_state") == "green_state"
    await put(client, "/state?state=green_state")
    assert (await client.get("/state?state=red_state")).status == 200


async def test_deleted_state_hash_is_recreated_by_a_put(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(load(ROLLOUT))
    await put(client, "/state?state=canary")
    await plain.delete(keys.chart_state("rollout"))
    resp = await put(client, "/state?state=canary")
    assert resp.headers["Stateservice-Counted"] == "true"
    assert await plain.hget(keys.chart_state("rollout"), "counter:canary") == "1"
    assert await plain.hget(keys.chart_state("rollout"), "current_state") == "canary"


async def test_recreated_initial_state_is_a_new_visit(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(load(ROLLOUT))
    await put(client, "/state?state=canary&host=web-1")
    await plain.delete(keys.chart_state("rollout"))

    shown = await chart_json(client, "rollout")
    again = await put(client, "/state?state=canary&host=web-1")
    # the state starts again from scratch: its counter at the start value and nobody counted yet
    assert (shown["current_state"], counter(shown, "canary"), shown["hosts_counted"]) == ("canary", 0, [])
    assert again.headers["Stateservice-Counted"] == "true"


async def test_keys_are_prefixed_and_tagged(make_client: MakeClient, plain: Redis) -> None:
    client = await make_client(seed(), load(CYCLE), load(TIMED))
    await put(client, "/charts/states/state?state=green_state&host=web-1")
    await put(client, "/charts/cycle/state?state=canary&host=web-1")
    await put(client, "/charts/cycle/state?state=canary&host=web-2")
    await put(client, "/charts/cycle/state?state=fleet&host=web-1")
    await put(client, "/charts/cycle/state?state=canary&host=web-1")
    await client.get("/charts/timed/state?state=wait")

    found = [key async for key in plain.scan_iter("*")]
    assert "stateservice:charts" in found
    for key in found:
        assert key.startswith("stateservice:"), key
        if key not in GLOBAL_KEYS:
            assert any(key.startswith(f"stateservice:{{{c}}}") for c in ("states", "cycle", "timed")), key
    assert await plain.smembers("stateservice:charts") == {"states", "cycle", "timed"}
    assert await plain.type("stateservice:{states}:history") == "stream"
    assert await plain.type("stateservice:{states}") == "hash"
    assert await plain.hget("stateservice:{states}", "current_state") == "red_state"
    assert await plain.hget("stateservice:{timed}", "current_state") == "wait"
    assert await plain.hget("stateservice:{cycle}", "current_state") == "canary"


# -- restart and redeploy --------------------------------------------------------------------


async def test_redeploy_with_a_changed_chart_keeps_state_and_counter(make_client: MakeClient, plain: Redis) -> None:
    old = load(ROLLOUT)
    first = await make_client(old)
    await put(first, "/state?state=canary&host=web-1")
    await put(first, "/state?state=canary&host=web-2")
    await first.close()

    changed = load(ROLLOUT.replace("value: 3}}", "value: 5}}"))
    assert changed.digest != old.digest
    second = await make_client(changed)
    shown = await chart_json(second, "rollout")
    assert shown["current_state"] == "canary"
    assert counter(shown, "canary") == 2
    assert shown["hosts_counted"] == ["web-1", "web-2"]
    assert shown["states"][0]["target"]["when"]["value"] == 5  # the new rules apply
    resp = await put(second, "/state?state=canary&host=web-1")
    assert resp.headers["Stateservice-Counted"] == "false"
    resp = await put(second, "/state?state=canary&host=web-3")
    assert resp.headers["Stateservice-State"] == "canary"  # 3 of 5 now: no move
    assert await plain.hget(keys.chart_definition("rollout"), "digest") == changed.digest


async def test_redeploy_without_the_current_state_refuses(
    make_client: MakeClient, redis_url: str, plain: Redis
) -> None:
    client = await make_client(seed())
    await put(client, "/state?state=green_state")
    await client.close()

    without_red = load(
        """
        name: states
        current_state: green_state
        states:
          - name: green_state
            func: increment
            current: {key: count, value: 0}
            target: {name: blue_state, when: {key: count, value: 1}}
          - name: blue_state
        """,
        "examples/states.yaml",
    )
    redis = connect(redis_url)
    try:
        with pytest.raises(StateRemoved) as info:
            await ChartStore(redis).register(without_red)
    finally:
        await redis.aclose()
    assert "stateservice reset" in info.value.message
    assert "red_state" in info.value.message
    assert await plain.hget(keys.chart_state("states"), "current_state") == "red_state"  # nothing was changed

    served = await make_client(without_red)  # an app built anyway refuses the chart, saying what to do
    body = await assert_error(await served.get("/state?state=green_state"), 503, "state_removed")
    assert "stateservice reset" in body["message"]
    assert await plain.hget(keys.chart_state("states"), "current_state") == "red_state"


async def test_restart_in_the_final_state(make_client: MakeClient) -> None:
    first = await make_client(seed())
    await put(first, "/state?state=green_state")
    await put(first, "/state?state=red_state")
    await first.close()

    second = await make_client(seed())
    resp = await second.get("/state?state=blue_state")
    assert resp.status == 200
    assert await resp.text() == "blue_state\n"
    await assert_error(await second.put("/state?state=blue_state"), 409, "not_reportable")
    shown = await chart_json(second, "states")
    assert (shown["current_state"], shown["final"]) == ("blue_state", True)
    history = (await (await second.get("/charts/states/history")).json())["history"]
    assert [h["to"] for h in history] == ["blue_state", "red_state"]


# -- lifecycle -------------------------------------------------------------------------------


async def test_stopping_the_app_closes_its_redis_connections(aiohttp_client: Any, redis_url: str, plain: Redis) -> None:
    app = create_app(Config(redis_url=redis_url), Loaded([seed()]))
    client = await aiohttp_client(app)
    assert (await client.get("/state?state=green_state")).status == 200
    assert len(await plain.client_list()) >= 2
    await client.close()  # runs the app's cleanup contexts
    try:
        for _ in range(50):  # the server notices a closed socket within a moment
            if len(await plain.client_list()) == 1:
                break
            await asyncio.sleep(0.02)
        left_open = len(await plain.client_list()) - 1
    finally:
        await app[REDIS].connection_pool.aclose()
    assert left_open == 0, "the app's Redis connections outlive its cleanup"
