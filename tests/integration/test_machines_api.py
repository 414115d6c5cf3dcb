"""Configurations, instances and events over HTTP (web/machines.py), through a real server and redis-server.

Every route and each of its answers; events exactly once under concurrency across two workers'
applications on one Redis; queries page by page against what was created; tokens and scopes.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from redis.asyncio import Redis

from stateservice.core.machines import instance_id
from stateservice.security.tokens import Tokens, hash_secret, parse_tokens
from stateservice.store import keys
from stateservice.store.stream_entry import MALFORMED, UNKNOWN_CONFIGURATION, Rejected
from tests.support import charts
from tests.support.app import Client, MakeClient

ORDERS: dict[str, Any] = {
    "name": "orders",
    "version": "v1",
    "states": ["new", "paid", "shipped", "cancelled"],
    "starting_state": "new",
    "transitions": [
        {"from": "new", "to": "paid", "event": "pay"},
        {"from": "new", "to": "cancelled", "event": "cancel"},
        {"from": "paid", "to": "shipped", "event": "ship"},
        {"from": "paid", "to": "cancelled", "event": "cancel"},
    ],
}
FLIP: dict[str, Any] = {
    "name": "flip",
    "version": "v1",
    "states": ["a", "b"],
    "starting_state": "a",
    "transitions": [{"from": "a", "to": "b", "event": "flip"}, {"from": "b", "to": "a", "event": "flip"}],
}
HOST = {"host": "web1", "rack": "r3"}
UPGRADE: dict[str, Any] = {
    "name": "upgrade",
    "version": "v1",
    "states": ["drain", "upgraded"],
    "starting_state": "drain",
    "transitions": [
        {
            "from": "drain",
            "to": "upgraded",
            "event": "upgrade",
            "requires": {"configuration": "orders:v1", "properties": HOST, "state": "paid"},
        }
    ],
}


@pytest.fixture
async def client(serve: MakeClient) -> Client:
    made = await serve(scheduler=False)
    assert (await made.post("/configurations", json=ORDERS)).status == 201
    return made


async def ok(client: Client, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
    resp = await client.request(method, path, **kwargs)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def refused(client: Client, method: str, path: str, status: int, error: str, **kwargs: Any) -> dict[str, Any]:
    resp = await client.request(method, path, **kwargs)
    body: dict[str, Any] = await resp.json()
    assert (resp.status, body["error"]) == (status, error), body
    assert body["status"] == status and body["message"]
    return body


async def create(client: Client, **body: Any) -> dict[str, Any]:
    made: dict[str, Any] = await ok(client, "POST", "/statemachines", 201, json={"configuration": "orders:v1", **body})
    return made


# -- configurations ---------------------------------------------------------------------------


async def test_a_configuration_is_created_read_listed_and_immutable(client: Client) -> None:
    resp = await client.post("/configurations", json={**ORDERS, "version": "v2"})
    assert resp.status == 201
    assert resp.headers["Location"] == "/configurations/orders:v2"
    assert (await resp.json())["version"] == "v2"
    assert await ok(client, "GET", "/configurations/orders:v1") == ORDERS
    await refused(client, "POST", "/configurations", 409, "configuration_exists", json={**FLIP, "name": "orders"})
    assert await ok(client, "GET", "/configurations/orders:v1") == ORDERS
    await ok(client, "POST", "/configurations", 201, json=FLIP)
    assert await ok(client, "GET", "/configurations?name=orders") == {"configurations": ["orders:v1", "orders:v2"]}
    every = await ok(client, "GET", "/configurations")
    assert every == {"configurations": ["flip:v1", "orders:v1", "orders:v2"]}
    await refused(client, "GET", "/configurations/orders:v9", 404, "unknown_configuration")
    await refused(client, "GET", "/configurations/or%20ders:v1", 400, "invalid_name")
    await refused(client, "GET", "/configurations?name=a%20b", 400, "invalid_name")


async def test_a_bad_configuration_names_every_problem(client: Client) -> None:
    bad = {
        "name": "x:y",
        "states": ["a", "a"],
        "transitions": [{"from": "a", "to": "nowhere", "event": "go"}],
        "starting_state": "zz",
    }
    body = await refused(client, "POST", "/configurations", 422, "invalid_configuration", json=bad)
    problems = body["problems"]
    assert any(p.startswith("name:") for p in problems)
    assert any(p.startswith("version:") for p in problems)
    assert any("listed twice" in p for p in problems)
    assert any(p.startswith("transitions.0.to:") for p in problems)
    assert any(p.startswith("starting_state:") for p in problems)
    await refused(client, "POST", "/configurations", 400, "invalid_json", data=b"{not json")
    await refused(client, "POST", "/configurations", 400, "invalid_json", json=[ORDERS])


async def test_a_guard_on_an_instance_must_name_a_configuration_and_its_state(client: Client) -> None:
    missing = {**UPGRADE, "transitions": [{**UPGRADE["transitions"][0], "requires": {**HOST_GUARD, "state": "paid"}}]}
    missing["transitions"][0]["requires"]["configuration"] = "nothing:v1"
    body = await refused(client, "POST", "/configurations", 422, "invalid_configuration", json=missing)
    assert body["problems"] == ["transitions.0.requires.configuration: no configuration nothing:v1 is defined"]
    no_state = {**UPGRADE, "transitions": [{**UPGRADE["transitions"][0], "requires": {**HOST_GUARD, "state": "x"}}]}
    body = await refused(client, "POST", "/configurations", 422, "invalid_configuration", json=no_state)
    assert body["problems"] == ["transitions.0.requires.state: configuration orders:v1 has no state 'x'"]
    await ok(client, "POST", "/configurations", 201, json=UPGRADE)


HOST_GUARD = {"configuration": "orders:v1", "properties": HOST}


async def test_counts_follow_instances_and_events(client: Client, plain: Redis) -> None:
    for i in range(3):
        await create(client, id=f"o{i}")
    await ok(client, "POST", "/statemachines/o0/events", json={"event": "pay"})
    await ok(client, "POST", "/statemachines/o1/events", json={"event": "cancel"})
    body = await ok(client, "GET", "/configurations/orders:v1/counts")
    assert body == {"configuration": "orders:v1", "counts": {"new": 1, "paid": 1, "shipped": 0, "cancelled": 1}}
    for state, n in body["counts"].items():
        assert await plain.scard(keys.instances_in("orders:v1", state)) == n
    await refused(client, "GET", "/configurations/orders:v7/counts", 404, "unknown_configuration")


# -- instances --------------------------------------------------------------------------------


async def test_an_instance_by_id(client: Client) -> None:
    resp = await client.post("/statemachines", json={"configuration": "orders:v1", "id": "order-1"})
    assert resp.status == 201
    assert resp.headers["Location"] == "/statemachines/order-1"
    made = await resp.json()
    expected = {"id": "order-1", "configuration": "orders:v1", "state": "new", "properties": {}, "context": {}}
    assert made == {**expected, "history": [], "pending_approval": None}
    assert await ok(client, "GET", "/statemachines/order-1") == made
    body = await refused(
        client, "POST", "/statemachines", 409, "instance_exists", json={"configuration": "orders:v1", "id": "order-1"}
    )
    assert body["id"] == "order-1"
    generated = await create(client)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", generated["id"])
    await refused(client, "GET", "/statemachines/nobody", 404, "unknown_instance")
    await refused(client, "GET", "/statemachines/-bad", 400, "invalid_name")
    unknown = {"configuration": "orders:v9", "id": "x"}
    await refused(client, "POST", "/statemachines", 404, "unknown_configuration", json=unknown)


async def test_an_instance_by_properties_is_one_instance_in_any_order(client: Client) -> None:
    first = await client.post("/statemachines", json={"configuration": "orders:v1", "properties": HOST})
    assert first.status == 201
    made = await first.json()
    assert made["id"] == instance_id("orders:v1", HOST)
    assert made["properties"] == HOST
    again = await client.post(
        "/statemachines", json={"configuration": "orders:v1", "properties": {"rack": "r3", "host": "web1"}}
    )
    assert again.status == 200
    assert again.headers["Location"] == f"/statemachines/{made['id']}"
    assert await again.json() == made


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"configuration": "orders:v1", "id": "a", "properties": HOST}, "id"),
        ({"configuration": "orders:v1", "id": "no spaces"}, "id"),
        ({"configuration": "orders:v1", "id": None}, "id"),
        ({"configuration": "orders:v1", "properties": {}}, "properties"),
        ({"configuration": "orders:v1", "properties": {"bad name": "x"}}, "properties"),
        ({"configuration": "orders:v1", "properties": {"host": 1}}, "properties"),
        ({"configuration": "orders"}, "configuration"),
        ({"id": "a"}, "configuration"),
        ({"configuration": "orders:v1", "colour": "red"}, "colour"),
        ({"configuration": "orders:v1", "id": "p-abc"}, "id"),  # derived ids' prefix
        ({"configuration": "orders:v1", "properties": {"host": "a", "state": "x"}}, "properties"),
        ({"configuration": "orders:v1", "properties": {"cursor": "x"}}, "properties"),
    ],
)
async def test_a_malformed_instance_request_is_a_400_saying_what(
    client: Client, body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/statemachines", json=body)
    answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["field"] == field


# -- events -----------------------------------------------------------------------------------


async def test_an_event_moves_the_instance_once(client: Client) -> None:
    await create(client, id="o1")
    body = await ok(
        client, "POST", "/statemachines/o1/events", json={"event": "pay", "event_id": "e-1", "details": {"amount": 3}}
    )
    assert {k: body[k] for k in ("event_id", "outcome", "from", "to", "instance")} == {
        "event_id": "e-1",
        "outcome": "ok",
        "from": "new",
        "to": "paid",
        "instance": "o1",
    }
    assert body["at"] and "duplicate" not in body
    again = await ok(client, "POST", "/statemachines/o1/events", json={"event": "pay", "event_id": "e-1"})
    assert again == {**body, "duplicate": True}
    instance = await ok(client, "GET", "/statemachines/o1")
    assert instance["state"] == "paid"
    [record] = instance["history"]
    assert record["event_id"] == "e-1" and record["originator"] == "-" and record["details"] == {"amount": 3}
    assert await ok(client, "GET", "/statemachines/o1/events/e-1") == body
    await refused(client, "GET", "/statemachines/o1/events/e-2", 404, "unknown_event")
    await refused(client, "GET", "/statemachines/o1/events/a%20b", 400, "invalid_name")
    generated = await ok(client, "POST", "/statemachines/o1/events", json={"event": "ship", "originator": "shop"})
    assert re.fullmatch(r"[0-9a-f-]{36}", generated["event_id"])
    assert (await ok(client, "GET", "/statemachines/o1"))["history"][0]["originator"] == "shop"


async def test_refusals_keep_their_status_when_repeated(client: Client) -> None:
    await create(client, id="o1")
    first = await refused(
        client,
        "POST",
        "/statemachines/o1/events",
        409,
        "transition_not_allowed",
        json={"event": "ship", "event_id": "x"},
    )
    assert (first["state"], first["event"], first["allowed"]) == ("new", "ship", ["cancel", "pay"])
    again = await refused(
        client,
        "POST",
        "/statemachines/o1/events",
        409,
        "transition_not_allowed",
        json={"event": "ship", "event_id": "x"},
    )
    assert again["duplicate"] is True and "duplicate" not in first
    stored = await ok(client, "GET", "/statemachines/o1/events/x")
    assert stored["outcome"] == "transition_not_allowed"
    gone = await refused(
        client, "POST", "/statemachines/nobody/events", 404, "unknown_instance", json={"event": "pay", "event_id": "y"}
    )
    assert gone["outcome"] == "unknown_instance"
    assert (
        await refused(
            client,
            "POST",
            "/statemachines/nobody/events",
            404,
            "unknown_instance",
            json={"event": "pay", "event_id": "y"},
        )
    )["duplicate"]


async def test_a_guard_on_another_instance(client: Client) -> None:
    await ok(client, "POST", "/configurations", 201, json=UPGRADE)
    target = {"configuration": "upgrade:v1", "properties": {"host": "web1"}}
    body = await refused(client, "POST", "/events", 409, "requirement_not_met", json={**target, "event": "upgrade"})
    assert body["requires"] == {"configuration": "orders:v1", "properties": HOST, "state": "paid"}
    assert body["state"] == "drain"
    await ok(client, "POST", "/events", json={"configuration": "orders:v1", "properties": HOST, "event": "pay"})
    moved = await ok(client, "POST", "/events", json={**target, "event": "upgrade"})
    assert (moved["from"], moved["to"]) == ("drain", "upgraded")


async def test_events_addressed_in_the_body(client: Client) -> None:
    order = {"configuration": "orders:v1", "properties": {"order": "42"}}
    first = await ok(client, "POST", "/events", json={**order, "event": "pay", "event_id": "p"})
    made_id = instance_id("orders:v1", {"order": "42"})
    assert (first["instance"], first["to"]) == (made_id, "paid")
    assert await ok(client, "POST", "/events", json={**order, "event": "pay", "event_id": "p"}) == {
        **first,
        "duplicate": True,
    }
    shipped = await ok(client, "POST", "/events", json={"dest": made_id, "event": "ship"})
    assert shipped["to"] == "shipped"
    await refused(
        client, "POST", "/events", 404, "unknown_configuration", json={**order, "configuration": "x:v1", "event": "pay"}
    )
    await refused(client, "POST", "/events", 404, "unknown_instance", json={"dest": "nobody", "event": "pay"})
    await refused(client, "POST", "/events", 400, "bad_request", json={**order, "dest": made_id, "event": "pay"})
    await refused(client, "POST", "/events", 400, "missing_field", json={"dest": made_id})
    await refused(client, "POST", "/events", 400, "missing_field", json={"event": "pay"})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "pay", "event_id": "no spaces"}, "event_id"),
        ({"event": "pay", "event_id": "x" * 129}, "event_id"),
        ({"event": "pay", "event_id": None}, "event_id"),
        ({"event": "pay", "details": {"blob": "x" * 4100}}, "details"),
        ({"event": "pay", "originator": ""}, "originator"),
        ({"event": "pay", "originator": "a\nb"}, "originator"),
        ({"event": "not an event"}, "event"),
        ({"event": "pay", "when": "now"}, "when"),
    ],
)
async def test_a_malformed_event_is_a_400_and_changes_nothing(client: Client, body: dict[str, Any], field: str) -> None:
    await create(client, id="o1")
    resp = await client.post("/statemachines/o1/events", json=body)
    answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["field"] == field
    assert (await ok(client, "GET", "/statemachines/o1"))["history"] == []


async def test_a_query_parameter_is_no_property_name(client: Client) -> None:
    for name in ("configuration", "state", "limit", "cursor"):
        body = {"configuration": "orders:v1", "properties": {name: "x"}, "event": "pay"}
        answer = await refused(client, "POST", "/events", 400, "invalid_field", json=body)
        assert answer["field"] == "properties" and repr(name) in answer["message"]
    assert (await ok(client, "GET", "/configurations/orders:v1/counts"))["counts"]["new"] == 0


@pytest.mark.parametrize(
    ("kept", "status", "error"),
    [
        (
            Rejected("1-0", MALFORMED, "originator must be printable", {}, "o1", "e1", "pay").outcome(),
            400,
            "bad_request",
        ),
        (
            Rejected("1-0", UNKNOWN_CONFIGURATION, "no configuration x:v1", {}, "o1", "e1").outcome(),
            404,
            "unknown_configuration",
        ),
        ({"event_id": "e1", "outcome": "from_a_newer_version", "instance": "o1"}, 409, "event_refused"),
        ({"event_id": "e1", "outcome": "transition_not_allowed", "instance": "o1"}, 409, "event_refused"),
        ({"event_id": "e1", "outcome": "unknown_instance"}, 404, "unknown_instance"),
    ],
)
async def test_a_kept_refusal_of_any_kind_answers_as_kept(
    client: Client, plain: Redis, kept: dict[str, Any], status: int, error: str
) -> None:
    # the stream consumer keeps these for the entries it dead-letters; the event_id sent again over HTTP answers them
    await create(client, id="o1")
    await plain.set(keys.event_outcome("o1", "e1"), json.dumps(kept))
    answer = await refused(
        client, "POST", "/statemachines/o1/events", status, error, json={"event": "pay", "event_id": "e1"}
    )
    assert answer["duplicate"] is True
    assert answer.get("outcome", kept["outcome"]) == kept["outcome"]
    if "message" in kept:
        assert answer["message"] == kept["message"]
    assert (await ok(client, "GET", "/statemachines/o1"))["state"] == "new"


async def test_details_of_4_kib_are_kept(client: Client) -> None:
    await create(client, id="o1")
    details = "x" * 4094  # with its quotes, 4096 bytes of JSON
    await ok(client, "POST", "/statemachines/o1/events", json={"event": "pay", "details": details})
    assert (await ok(client, "GET", "/statemachines/o1"))["history"][0]["details"] == details


async def test_events_count_in_the_metrics(client: Client) -> None:
    def count(text: str, outcome: str) -> float:
        pattern = rf'stateservice_events_total{{outcome="{outcome}",source="http"}} ([0-9.e+]+)'
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    before = await (await client.get("/metrics")).text()
    await create(client, id="o1")
    await ok(client, "POST", "/statemachines/o1/events", json={"event": "pay", "event_id": "m"})
    await ok(client, "POST", "/statemachines/o1/events", json={"event": "pay", "event_id": "m"})
    await client.post("/statemachines/o1/events", json={"event": "pay"})
    after = await (await client.get("/metrics")).text()
    assert count(after, "ok") - count(before, "ok") == 1
    assert count(after, "duplicate") - count(before, "duplicate") == 1
    assert count(after, "transition_not_allowed") - count(before, "transition_not_allowed") == 1


# -- exactly once under concurrency -----------------------------------------------------------


async def test_the_same_event_from_50_clients_at_once_is_applied_once(client: Client) -> None:
    await create(client, id="o1")
    answers = await asyncio.gather(
        *[client.post("/statemachines/o1/events", json={"event": "pay", "event_id": "same"}) for _ in range(50)]
    )
    bodies = [await r.json() for r in answers]
    assert [r.status for r in answers] == [200] * 50
    assert sum(1 for b in bodies if not b.get("duplicate")) == 1
    assert len((await ok(client, "GET", "/statemachines/o1"))["history"]) == 1


async def test_concurrent_events_through_two_workers_apply_exactly_once(serve: MakeClient, plain: Redis) -> None:
    one, two = await serve(scheduler=False, unlimited=True), await serve(scheduler=False, unlimited=True)
    await ok(one, "POST", "/configurations", 201, json=FLIP)
    instances = [f"m{i}" for i in range(20)]
    for name in instances:
        await ok(two, "POST", "/statemachines", 201, json={"configuration": "flip:v1", "id": name})
    # 5 distinct event ids an instance, each sent twice, once through each worker: 200 requests at once
    sends = [(name, f"{name}-e{k}", worker) for name in instances for k in range(5) for worker in (one, two)]
    answers = await asyncio.gather(
        *[w.post(f"/statemachines/{n}/events", json={"event": "flip", "event_id": e}) for n, e, w in sends]
    )
    bodies = [await r.json() for r in answers]
    assert {r.status for r in answers} == {200}
    assert sum(1 for b in bodies if not b.get("duplicate")) == 100
    for name in instances:
        instance = await ok(one, "GET", f"/statemachines/{name}")
        assert len(instance["history"]) == 5
        assert instance["state"] == "b"  # five flips from a
    counts = (await ok(two, "GET", "/configurations/flip:v1/counts"))["counts"]
    assert counts == {"a": 0, "b": 20}
    for state, n in counts.items():
        assert await plain.scard(keys.instances_in("flip:v1", state)) == n


# -- queries ----------------------------------------------------------------------------------


async def everything(client: Client, query: str, limit: int) -> list[dict[str, Any]]:
    """Every item of a query, page by page; each page within `limit`."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await ok(
            client, "GET", f"/statemachines?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        )
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["cursor"]
        if cursor is None:
            return items
    raise AssertionError("the cursor never ended")


@pytest.fixture
async def fleet(client: Client) -> Client:
    """300 orders, racks r0-r2, every third paid and every fifth of those shipped."""
    for i in range(300):
        properties = {"order": str(i), "rack": f"r{i % 3}"}
        await ok(client, "POST", "/statemachines", 201, json={"configuration": "orders:v1", "properties": properties})
        if i % 3 == 0:
            await ok(
                client, "POST", "/events", json={"configuration": "orders:v1", "properties": properties, "event": "pay"}
            )
        if i % 15 == 0:
            await ok(
                client,
                "POST",
                "/events",
                json={"configuration": "orders:v1", "properties": properties, "event": "ship"},
            )
    return client


def orders(items: list[dict[str, Any]]) -> list[int]:
    return sorted(int(item["properties"]["order"]) for item in items)


@pytest.mark.parametrize("limit", [1, 7, 100, 1000])
async def test_a_query_by_state_and_properties_pages_through_every_match_once(fleet: Client, limit: int) -> None:
    every = await everything(fleet, "configuration=orders:v1", limit)
    assert orders(every) == list(range(300))
    paid = await everything(fleet, "configuration=orders:v1&state=paid", limit)
    assert orders(paid) == [i for i in range(300) if i % 3 == 0 and i % 15]
    assert {item["state"] for item in paid} == {"paid"}
    rack = await everything(fleet, "configuration=orders:v1&rack=r1", limit)
    assert orders(rack) == [i for i in range(300) if i % 3 == 1]
    both = await everything(fleet, "configuration=orders:v1&state=new&rack=r0", limit)
    assert both == []
    shipped = await everything(fleet, "configuration=orders:v1&state=shipped&rack=r0", limit)
    assert orders(shipped) == list(range(0, 300, 15))
    one = await everything(fleet, "configuration=orders:v1&order=7&rack=r1", limit)
    assert one == [
        {
            "id": instance_id("orders:v1", {"order": "7", "rack": "r1"}),
            "state": "new",
            "properties": {"order": "7", "rack": "r1"},
        }
    ]
    assert await everything(fleet, "configuration=orders:v1&rack=r9", limit) == []


async def test_a_query_refuses_what_it_cannot_answer(client: Client) -> None:
    await refused(client, "GET", "/statemachines", 400, "missing_parameter")
    await refused(client, "GET", "/statemachines?configuration=orders", 400, "invalid_name")
    await refused(client, "GET", "/statemachines?configuration=orders:v9", 404, "unknown_configuration")
    await refused(client, "GET", "/statemachines?configuration=orders:v1&state=lost", 404, "unknown_state")
    for limit in ("0", "1001", "x"):
        await refused(client, "GET", f"/statemachines?configuration=orders:v1&limit={limit}", 400, "bad_request")
    for cursor in ("nonsense", "1.2.3.4", "0.0.0.0~", "0.0.999999999999999999999"):
        await refused(client, "GET", f"/statemachines?configuration=orders:v1&cursor={cursor}", 400, "bad_request")
    for past in ("9.0.0", "0.99.0", "9.0.0.0~a"):  # what no query of this service gives: the empty last page
        page = await ok(client, "GET", f"/statemachines?configuration=orders:v1&cursor={past}")
        assert page == {"items": [], "cursor": None}
    await refused(client, "GET", "/statemachines?configuration=orders:v1&rack=a&rack=b", 400, "bad_request")
    await refused(client, "GET", "/statemachines?configuration=orders:v1&bad%20name=a", 400, "bad_request")


# -- tokens and scopes ------------------------------------------------------------------------

SECRETS = {"reader": "r-secret", "chef": "c-secret", "ops": "o-secret", "shop": "s-secret"}
TOKENS = f"""
tokens:
  - {{name: reader, sha256: {hash_secret("r-secret")}, scopes: [read]}}
  - {{name: chef, sha256: {hash_secret("c-secret")}, scopes: [read, report]}}
  - {{name: ops, sha256: {hash_secret("o-secret")}, scopes: [read, report, admin]}}
  - {{name: shop, sha256: {hash_secret("s-secret")}, scopes: [read, report, admin], charts: [orders]}}
"""


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


@pytest.fixture
async def secured(serve: MakeClient) -> Client:
    tokens: Tokens = parse_tokens(TOKENS, "tokens.yaml")
    return await serve(scheduler=False, tokens=tokens)


async def test_scopes_of_the_machine_routes(secured: Client) -> None:
    await refused(secured, "GET", "/configurations", 401, "unauthorized")
    await refused(secured, "POST", "/configurations", 403, "forbidden", json=ORDERS, headers=bearer("chef"))
    await ok(secured, "POST", "/configurations", 201, json=ORDERS, headers=bearer("ops"))
    await ok(secured, "GET", "/configurations/orders:v1", headers=bearer("reader"))
    new = {"configuration": "orders:v1", "id": "o1"}
    await refused(secured, "POST", "/statemachines", 403, "forbidden", json=new, headers=bearer("reader"))
    await ok(secured, "POST", "/statemachines", 201, json=new, headers=bearer("chef"))
    pay = {"event": "pay"}
    await refused(secured, "POST", "/statemachines/o1/events", 403, "forbidden", json=pay, headers=bearer("reader"))
    await refused(secured, "POST", "/events", 403, "forbidden", json={**pay, "dest": "o1"}, headers=bearer("reader"))
    body = await ok(secured, "POST", "/statemachines/o1/events", json=pay, headers=bearer("chef"))
    for path in [
        "/statemachines/o1",
        f"/statemachines/o1/events/{body['event_id']}",
        "/statemachines?configuration=orders:v1",
        "/configurations/orders:v1/counts",
    ]:
        await ok(secured, "GET", path, headers=bearer("reader"))
    history = (await ok(secured, "GET", "/statemachines/o1", headers=bearer("reader")))["history"]
    assert history[0]["originator"] == "chef"  # the caller, when the event names none


async def test_a_token_with_a_charts_list_touches_only_those_configurations(secured: Client) -> None:
    await ok(secured, "POST", "/configurations", 201, json=FLIP, headers=bearer("ops"))
    await refused(
        secured, "POST", "/configurations", 403, "forbidden", json={**FLIP, "version": "v2"}, headers=bearer("shop")
    )
    await ok(secured, "POST", "/configurations", 201, json=ORDERS, headers=bearer("shop"))
    listed = await ok(secured, "GET", "/configurations", headers=bearer("shop"))
    assert listed == {"configurations": ["orders:v1"]}
    await ok(
        secured, "POST", "/statemachines", 201, json={"configuration": "flip:v1", "id": "f1"}, headers=bearer("ops")
    )
    await ok(
        secured, "POST", "/statemachines", 201, json={"configuration": "orders:v1", "id": "o1"}, headers=bearer("shop")
    )
    denied = await refused(
        secured, "POST", "/statemachines", 403, "forbidden", json={"configuration": "flip:v1"}, headers=bearer("shop")
    )
    assert denied["configuration"] == "flip"
    for path in [
        "/statemachines/f1",
        "/configurations/flip:v1",
        "/configurations/flip:v1/counts",
        "/statemachines?configuration=flip:v1",
    ]:
        await refused(secured, "GET", path, 403, "forbidden", headers=bearer("shop"))
    flip = {"event": "flip"}
    await refused(secured, "POST", "/statemachines/f1/events", 403, "forbidden", json=flip, headers=bearer("shop"))
    await refused(secured, "POST", "/events", 403, "forbidden", json={**flip, "dest": "f1"}, headers=bearer("shop"))
    by_properties = {**flip, "configuration": "flip:v1", "properties": {"a": "b"}}
    await refused(secured, "POST", "/events", 403, "forbidden", json=by_properties, headers=bearer("shop"))
    await ok(secured, "POST", "/statemachines/o1/events", json={"event": "pay"}, headers=bearer("shop"))
    await ok(secured, "GET", "/statemachines/o1", headers=bearer("shop"))


async def test_a_bound_token_touches_no_instance_that_does_not_exist(secured: Client, plain: Redis) -> None:
    await ok(secured, "POST", "/configurations", 201, json=FLIP, headers=bearer("ops"))
    await ok(secured, "POST", "/configurations", 201, json=ORDERS, headers=bearer("shop"))
    flip = {"event": "flip", "event_id": "deploy-42"}
    await refused(
        secured, "POST", "/statemachines/f2/events", 404, "unknown_instance", json=flip, headers=bearer("shop")
    )
    await refused(
        secured, "POST", "/events", 404, "unknown_instance", json={**flip, "dest": "f2"}, headers=bearer("shop")
    )
    assert await plain.exists(keys.event_outcome("f2", "deploy-42")) == 0  # nothing kept for f2's future events
    new = {"configuration": "flip:v1", "id": "f2"}
    await ok(secured, "POST", "/statemachines", 201, json=new, headers=bearer("ops"))
    moved = await ok(secured, "POST", "/statemachines/f2/events", json=flip, headers=bearer("ops"))
    assert (moved["to"], moved.get("duplicate")) == ("b", None)
    # an outcome kept under an id no instance has is no bound token's to read
    await plain.set(
        keys.event_outcome("gone", "e1"), json.dumps({"event_id": "e1", "outcome": "ok", "instance": "gone"})
    )
    await refused(secured, "GET", "/statemachines/gone/events/e1", 404, "unknown_instance", headers=bearer("shop"))
    await ok(secured, "GET", "/statemachines/gone/events/e1", headers=bearer("ops"))


async def test_a_bound_token_guards_only_on_what_it_may_touch(serve: MakeClient) -> None:
    rollout = charts.load(charts.chart("rollout", "a", charts.final("a")))
    secured = await serve(rollout, scheduler=False, tokens=parse_tokens(TOKENS, "tokens.yaml"))
    await ok(secured, "POST", "/configurations", 201, json=FLIP, headers=bearer("ops"))
    await ok(secured, "POST", "/configurations", 201, json=ORDERS, headers=bearer("shop"))

    def guarded(version: str, requires: dict[str, Any]) -> dict[str, Any]:
        move = {"from": "new", "to": "paid", "event": "pay", "requires": requires}
        return {**ORDERS, "version": version, "transitions": [move]}

    on_flip = {"configuration": "flip:v1", "properties": {"k": "v"}, "state": "b"}
    for requires in [on_flip, {**on_flip, "state": "zzz"}, {**on_flip, "configuration": "flip:v9"}]:
        denied = await refused(
            secured, "POST", "/configurations", 403, "forbidden", json=guarded("v2", requires), headers=bearer("shop")
        )
        assert denied["configuration"] == "flip"  # the same answer whether flip's guard would hold or not
    on_chart = {"chart": "rollout", "state": "a"}
    await refused(
        secured, "POST", "/configurations", 403, "forbidden", json=guarded("v2", on_chart), headers=bearer("shop")
    )
    await ok(secured, "POST", "/configurations", 201, json=guarded("v2", on_chart), headers=bearer("ops"))
    on_orders = {"configuration": "orders:v1", "properties": {"k": "v"}, "state": "paid"}
    await ok(secured, "POST", "/configurations", 201, json=guarded("v3", on_orders), headers=bearer("shop"))
    await refused(
        secured,
        "POST",
        "/configurations",
        422,
        "invalid_configuration",
        json=guarded("v4", {**on_orders, "state": "zzz"}),
        headers=bearer("shop"),
    )


async def test_a_guard_on_a_chart_reads_its_stored_state(serve: MakeClient) -> None:
    rollout = charts.load(
        charts.chart("rollout", "wave0", charts.increment("wave0", "wave1", 1), charts.final("wave1"))
    )
    client = await serve(rollout, scheduler=False)
    gated = {
        "name": "host",
        "version": "v1",
        "states": ["drained", "upgraded"],
        "starting_state": "drained",
        "transitions": [
            {
                "from": "drained",
                "to": "upgraded",
                "event": "upgrade",
                "requires": {"chart": "rollout", "state": "wave1"},
            }
        ],
    }
    await ok(client, "POST", "/configurations", 201, json=gated)
    web1 = {"configuration": "host:v1", "properties": {"host": "web1"}, "event": "upgrade"}
    body = await refused(client, "POST", "/events", 409, "requirement_not_met", json={**web1, "event_id": "u1"})
    assert body["requires"] == {"chart": "rollout", "state": "wave1"}
    assert (await client.put("/charts/rollout/state?state=wave0&host=h")).status == 200  # the chart moves on
    moved = await ok(client, "POST", "/events", json={**web1, "event_id": "u2"})
    assert moved["to"] == "upgraded"


async def test_deleting_an_instance_needs_admin_and_takes_it_out_of_counts_and_queries(secured: Client) -> None:
    await ok(secured, "POST", "/configurations", 201, json=ORDERS, headers=bearer("ops"))
    await ok(secured, "POST", "/configurations", 201, json=FLIP, headers=bearer("ops"))
    for made in ({"configuration": "orders:v1", "id": "o1"}, {"configuration": "flip:v1", "id": "f1"}):
        await ok(secured, "POST", "/statemachines", 201, json=made, headers=bearer("ops"))
    await ok(secured, "POST", "/statemachines/o1/events", json={"event": "pay"}, headers=bearer("chef"))

    await refused(secured, "DELETE", "/statemachines/o1", 403, "forbidden", headers=bearer("chef"))
    await refused(secured, "DELETE", "/statemachines/f1", 403, "forbidden", headers=bearer("shop"))
    removed = await ok(secured, "DELETE", "/statemachines/o1", headers=bearer("shop"))
    await refused(secured, "DELETE", "/statemachines/o1", 404, "unknown_instance", headers=bearer("ops"))

    assert removed == {"id": "o1", "configuration": "orders:v1", "state": "paid"}
    await refused(secured, "GET", "/statemachines/o1", 404, "unknown_instance", headers=bearer("ops"))
    counts = await ok(secured, "GET", "/configurations/orders:v1/counts", headers=bearer("reader"))
    assert set(counts["counts"].values()) == {0}
    page = await ok(secured, "GET", "/statemachines?configuration=orders:v1", headers=bearer("reader"))
    assert page == {"items": [], "cursor": None}
