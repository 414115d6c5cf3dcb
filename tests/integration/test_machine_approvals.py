"""Approval states of instances over HTTP against a real redis-server: suspend, resume, used, expired, tokens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis
from structlog.testing import capture_logs

from stateservice.core.machines import configuration_from
from stateservice.core.parse_configuration import parse_configuration
from stateservice.scheduler.notify import Notifier
from stateservice.security.tokens import hash_secret, parse_tokens
from stateservice.store import codec, keys
from stateservice.store.charts import ChartStore
from stateservice.store.clock import local_clock
from stateservice.store.machine_approvals import MachineApprovals
from stateservice.store.machines import Event, Machines, define_file
from tests.support.app import Client, MakeClient
from tests.support.charts import approval, chart, final, increment, load


def review(after: str = "1h", **extra: Any) -> dict[str, Any]:
    return {
        "name": "review",
        "type": "approval",
        "choices": [{"when": {"approved": True}, "next": "shipped"}, {"when": {"approved": False}, "next": "new"}],
        "timeout": {"after": after, "next": "cancelled"},
        **extra,
    }


def orders(after: str = "1h", version: str = "v1", **extra: Any) -> dict[str, Any]:
    return {
        "name": "orders",
        "version": version,
        "states": ["new", review(after, **extra), "shipped", "cancelled"],
        "starting_state": "new",
        "transitions": [
            {"from": "new", "to": "review", "event": "submit"},
            {"from": "review", "to": "cancelled", "event": "cancel"},
        ],
    }


async def ok(client: Client, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
    resp = await client.request(method, path, **kwargs)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def refused(client: Client, method: str, path: str, status: int, error: str, **kwargs: Any) -> dict[str, Any]:
    resp = await client.request(method, path, **kwargs)
    body: dict[str, Any] = await resp.json()
    assert (resp.status, body["error"]) == (status, error), body
    return body


async def suspended(client: Client, instance: str = "o1", **headers: str) -> dict[str, Any]:
    """Create `instance` and submit it: it waits in `review`; its pending approval."""
    new = {"configuration": "orders:v1", "id": instance}
    await ok(client, "POST", "/statemachines", 201, json=new, headers=headers)
    await ok(client, "POST", f"/statemachines/{instance}/events", json={"event": "submit"}, headers=headers)
    shown = await ok(client, "GET", f"/statemachines/{instance}", headers=headers)
    assert shown["state"] == "review"
    pending: dict[str, Any] = shown["pending_approval"]
    return pending


async def waiting_instance(machines: Machines, document: dict[str, Any], instance: str = "o1") -> None:
    """Define `document`, create `instance` and submit it: it waits in `review` (no HTTP, no leader)."""
    await machines.define(configuration_from(document))
    await machines.create("orders:v1", instance)
    [out] = await machines.apply_all([Event("submit", "e-" + instance, instance=instance)])
    assert "ok" in str(out), out


@pytest.fixture
async def client(serve: MakeClient) -> Client:
    made = await serve(scheduler=False)
    await ok(made, "POST", "/configurations", 201, json=orders())
    return made


async def test_the_configuration_is_answered_as_posted(client: Client) -> None:
    assert await ok(client, "GET", "/configurations/orders:v1") == orders()


async def test_an_event_into_an_approval_state_suspends_the_instance(client: Client) -> None:
    pending = await suspended(client)
    assert len(pending["id"]) == 22 and pending["continuation_url"] == f"/continuations/{pending['id']}"
    assert pending["instance"] == "o1" and pending["configuration"] == "orders:v1" and pending["status"] == "pending"
    assert pending["choices"] == [
        {"when": {"approved": True}, "next": "shipped"},
        {"when": {"approved": False}, "next": "new"},
    ]
    assert pending["timeout"] == {"after": 3600.0, "next": "cancelled"} and pending["expires_at"]
    assert await ok(client, "GET", pending["continuation_url"]) == pending
    other = await refused(
        client, "POST", "/statemachines/o1/events", 409, "transition_not_allowed", json={"event": "x"}
    )
    assert other["continuation"] == pending["continuation_url"] and "awaits an approval" in other["message"]
    listed = (await ok(client, "GET", "/approvals"))["approvals"]
    assert [a["id"] for a in listed] == [pending["id"]]
    assert (await ok(client, "GET", "/approvals?configuration=orders:v1"))["approvals"] == listed


async def test_a_resume_merges_its_input_moves_once_and_a_second_is_told_the_first(client: Client) -> None:
    url = (await suspended(client))["continuation_url"]
    outcome = await ok(client, "POST", url, json={"approved": True, "ticket": "CHG-1"})
    assert outcome["from"] == "review" and outcome["to"] == "shipped" and outcome["instance"] == "o1"
    assert outcome["input_keys"] == ["approved", "ticket"]
    shown = await ok(client, "GET", "/statemachines/o1")
    assert shown["state"] == "shipped" and shown["context"] == {"approved": True, "ticket": "CHG-1"}
    assert shown["pending_approval"] is None
    record = shown["history"][0]
    assert record["cause"] == "approval" and record["input_keys"] == ["approved", "ticket"]
    assert (record["from"], record["to"], record["originator"]) == ("review", "shipped", "-")
    again = await refused(client, "POST", url, 409, "continuation_used", json={"approved": False})
    assert again["outcome"]["to"] == "shipped"
    shown_continuation = await ok(client, "GET", url)
    assert shown_continuation["status"] == "used" and shown_continuation["outcome"]["to"] == "shipped"
    counts = await ok(client, "GET", "/configurations/orders:v1/counts")
    assert counts["counts"] == {"new": 0, "review": 0, "shipped": 1, "cancelled": 0}
    assert (await ok(client, "GET", "/approvals"))["approvals"] == []


async def test_no_matching_choice_is_422_and_the_continuation_stays_usable(client: Client) -> None:
    url = (await suspended(client))["continuation_url"]
    body = await refused(client, "POST", url, 422, "no_choice_matched", json={"approved": "yes"})
    assert len(body["choices"]) == 2
    assert (await ok(client, "GET", "/statemachines/o1"))["context"] == {}
    await ok(client, "POST", url, json={"approved": False})
    assert (await ok(client, "GET", "/statemachines/o1"))["state"] == "new"


async def test_resuming_into_the_state_again_makes_a_new_continuation(client: Client) -> None:
    first = (await suspended(client))["continuation_url"]
    await ok(client, "POST", first, json={"approved": False})
    await ok(client, "POST", "/statemachines/o1/events", json={"event": "submit"})
    second = (await ok(client, "GET", "/statemachines/o1"))["pending_approval"]
    assert second["continuation_url"] != first and second["status"] == "pending"
    assert (await ok(client, "GET", "/statemachines/o1"))["context"] == {"approved": False}


async def test_an_event_leaving_the_state_or_a_deletion_expires_the_continuation(client: Client) -> None:
    url = (await suspended(client))["continuation_url"]
    await ok(client, "POST", "/statemachines/o1/events", json={"event": "cancel"})
    late = await refused(client, "POST", url, 410, "continuation_expired", json={"approved": True})
    assert "by event cancel" in late["message"]
    other = (await suspended(client, "o2"))["continuation_url"]
    await ok(client, "DELETE", "/statemachines/o2")
    assert "deleted" in (await refused(client, "POST", other, 410, "continuation_expired", json={}))["message"]
    assert (await ok(client, "GET", other))["status"] == "expired"


async def test_bad_requests_get_clear_4xx(client: Client) -> None:
    url = (await suspended(client))["continuation_url"]
    await refused(client, "POST", "/continuations/" + "A" * 22, 404, "unknown_continuation", json={})
    await refused(client, "POST", url, 413, "context_too_large", json={"approved": True, "blob": "x" * 70_000})
    await refused(client, "GET", "/approvals?configuration=orders", 400, "invalid_name")
    await refused(client, "GET", "/approvals?configuration=orders:v1&chart=c", 404, "unknown_chart")
    assert (await ok(client, "GET", url))["status"] == "pending"


async def test_concurrent_resumes_use_a_continuation_once(client: Client) -> None:
    url = (await suspended(client))["continuation_url"]
    answers = await asyncio.gather(*(client.post(url, json={"approved": i % 2 == 0}) for i in range(20)))
    assert sorted(a.status for a in answers) == [200] + [409] * 19
    history = (await ok(client, "GET", "/statemachines/o1"))["history"]
    assert [h.get("cause") for h in history].count("approval") == 1


async def test_a_timeout_moves_the_instance_once_and_expires_the_continuation(serve: MakeClient) -> None:
    client = await serve()  # with the leader
    await ok(client, "POST", "/configurations", 201, json=orders("1s"))
    url = (await suspended(client))["continuation_url"]
    for _ in range(50):
        await asyncio.sleep(0.1)
        if (await ok(client, "GET", "/statemachines/o1"))["state"] == "cancelled":
            break
    shown = await ok(client, "GET", "/statemachines/o1")
    assert shown["state"] == "cancelled" and shown["pending_approval"] is None
    assert [h.get("cause") for h in shown["history"]].count("timeout") == 1
    late = await refused(client, "POST", url, 410, "continuation_expired", json={"approved": True})
    assert late["outcome"]["current_state"] == "cancelled"
    assert (await ok(client, "GET", url))["status"] == "expired"


async def test_a_resume_after_the_timeout_applies_it_and_is_410(serve: MakeClient) -> None:
    client = await serve(scheduler=False)  # no leader: the resume finds the timeout due
    await ok(client, "POST", "/configurations", 201, json=orders("1s"))
    url = (await suspended(client))["continuation_url"]
    await asyncio.sleep(1.1)
    answers = await asyncio.gather(*(client.post(url, json={"approved": True}) for _ in range(5)))
    assert {a.status for a in answers} == {410}
    shown = await ok(client, "GET", "/statemachines/o1")
    assert shown["state"] == "cancelled" and [h.get("cause") for h in shown["history"]].count("timeout") == 1


async def test_starting_in_an_approval_state_waits_at_once(client: Client) -> None:
    gated = {**orders(), "version": "v2", "starting_state": "review"}
    await ok(client, "POST", "/configurations", 201, json=gated)
    await ok(client, "POST", "/statemachines", 201, json={"configuration": "orders:v2", "id": "g1"})
    pending = (await ok(client, "GET", "/statemachines/g1"))["pending_approval"]
    assert pending["state"] == "review"
    await ok(
        client,
        "POST",
        "/events",
        json={"configuration": "orders:v2", "properties": {"o": "1"}, "event": "x"},
        status=409,
    )
    listed = await ok(client, "GET", "/approvals?configuration=orders:v2")
    assert len(listed["approvals"]) == 2


async def test_the_redis_keys_are_as_documented(client: Client, plain: Redis) -> None:
    pending = await suspended(client)
    cid = pending["id"]
    assert await plain.hget("stateservice:{machines}:continuations", "o1") == cid
    record = await plain.hgetall(f"stateservice:{{machines}}:continuation:{cid}")
    assert record == {
        "instance": "o1",
        "configuration": "orders:v1",
        "state": "review",
        "created_at": pending["created_at"],
        "expires_at": pending["expires_at"],
    }
    score = await plain.zscore("stateservice:{machines}:timeouts", cid)
    assert score is not None and abs(score / 1000 - _epoch(pending["expires_at"])) < 0.002
    assert await plain.ttl(f"stateservice:{{machines}}:continuation:{cid}") == -1  # kept while it waits
    assert await plain.get(f"stateservice:continuation:{cid}") is None  # found by the id alone
    await ok(client, "POST", pending["continuation_url"], json={"approved": True})
    assert json.loads(await plain.hget(keys.instance_context(), "o1") or "") == {"approved": True}
    assert await plain.zcard("stateservice:{machines}:timeouts") == 0
    assert await plain.hlen("stateservice:{machines}:continuations") == 0
    assert 0 < await plain.ttl(f"stateservice:{{machines}}:continuation:{cid}") <= 86400


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


SECRETS = {"shop": "s-secret", "other": "x-secret", "approver": "a-secret", "chef": "c-secret"}
TOKENS = f"""
tokens:
  - {{name: shop, sha256: {hash_secret("s-secret")}, scopes: [read, report, admin, approve], charts: [orders]}}
  - {{name: other, sha256: {hash_secret("x-secret")}, scopes: [read, approve], charts: [flip]}}
  - {{name: approver, sha256: {hash_secret("a-secret")}, scopes: [read, approve]}}
  - {{name: chef, sha256: {hash_secret("c-secret")}, scopes: [read, report]}}
"""


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


async def test_tokens_resume_only_what_they_may(serve: MakeClient) -> None:
    client = await serve(scheduler=False, tokens=parse_tokens(TOKENS, "tokens.yaml"))
    await ok(client, "POST", "/configurations", 201, json=orders(), headers=bearer("shop"))
    url = (await suspended(client, **bearer("shop")))["continuation_url"]
    await refused(client, "POST", url, 403, "forbidden", json={"approved": True}, headers=bearer("chef"))
    await refused(client, "POST", url, 403, "forbidden", json={"approved": True}, headers=bearer("other"))
    await refused(client, "GET", url, 403, "forbidden", headers=bearer("other"))
    assert (await ok(client, "GET", "/approvals", headers=bearer("other")))["approvals"] == []
    assert len((await ok(client, "GET", "/approvals", headers=bearer("approver")))["approvals"]) == 1
    outcome = await ok(client, "POST", url, json={"approved": True}, headers=bearer("approver"))
    assert outcome["actor"] == "approver"
    history = (await ok(client, "GET", "/statemachines/o1", headers=bearer("shop")))["history"]
    assert history[0]["originator"] == "approver"


async def test_the_leader_notifies_with_the_instance_and_retries(serve: MakeClient, aiohttp_server: Any) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=500 if len(received) == 1 else 204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)
    client = await serve(public_url="https://state.example")
    await ok(client, "POST", "/configurations", 201, json=orders(notify=str(server.make_url("/hook"))))
    pending = await suspended(client)
    for _ in range(60):
        await asyncio.sleep(0.1)
        if (await ok(client, "GET", pending["continuation_url"]))["notified_at"]:
            break
    shown = await ok(client, "GET", pending["continuation_url"])
    assert shown["notified_at"] and shown["notify_attempts"] == 2
    assert len(received) == 2 and received[0] == received[1]
    assert received[0] == {
        "instance": "o1",
        "configuration": "orders:v1",
        "state": "review",
        "continuation_url": f"https://state.example{pending['continuation_url']}",
        "expires_at": pending["expires_at"],
    }
    causes = [h.get("cause") for h in (await ok(client, "GET", "/statemachines/o1"))["history"]]
    assert causes[:2] == ["notify", "notify"]


GATED_FILE = """\
name: gated
version: v1
states:
  - new
  - name: review
    type: approval
    choices:
      - {when: {approved: true}, next: done}
    default: new
    timeout: {after: 2h, next: new}
  - done
starting_state: new
transitions:
  - {from: new, to: review, event: submit}
"""


async def test_a_configuration_file_with_an_approval_state_is_defined_again_alike(clients: Any) -> None:
    """A restart defines the file again: the stored document reads back equal (when values keep their types)."""
    configuration = parse_configuration(GATED_FILE, "gated.yaml")
    store = Machines(clients(), local_clock())
    await define_file(store, configuration)
    again = Machines(clients(), local_clock())
    await define_file(again, parse_configuration(GATED_FILE, "gated.yaml"))  # raises if stored differently
    assert await again.configuration("gated:v1") == configuration
    await store.close()
    await again.close()


async def test_charts_are_still_notified_through_the_generalised_notifier(
    serve: MakeClient, aiohttp_server: Any
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)
    notifying = approval(
        "review",
        ("true", "fleet"),
        ("false", "rolled_back"),
        default="rolled_back",
        notify=str(server.make_url("/hook")),
    )
    gate = load(
        chart(
            "gate",
            "canary",
            increment("canary", "review", 1),
            notifying,
            increment("fleet", "done", 2),
            final("done"),
            final("rolled_back"),
        )
    )
    client = await serve(gate)
    assert (await client.put("/charts/gate/state?state=canary&host=web1")).status == 200
    for _ in range(40):
        await asyncio.sleep(0.1)
        if received:
            break
    assert [(r["chart"], r["state"]) for r in received] == [("gate", "review")]


@pytest.mark.parametrize("failing", [False, True], ids=["delivered", "failed"])
async def test_a_notification_read_before_the_last_attempt_was_written_down_is_not_sent_again(
    clients: Callable[[], Redis], aiohttp_server: Any, failing: bool
) -> None:
    posts: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        posts.append(await request.json())
        return web.Response(status=500 if failing else 204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    url = str((await aiohttp_server(receiver)).make_url("/hook"))
    machines = Machines(clients(), local_clock())
    await waiting_instance(machines, orders(notify=url))
    approvals = MachineApprovals(machines)
    [stale] = await approvals.due()  # a tick's read, still in hand when the attempt below has ended
    notifier = Notifier(ChartStore(clients()))
    record = keys.instance_continuation(stale.id)
    try:
        notifier.consider_instance(approvals, stale, url, await machines.clock())
        for _ in range(50):
            await asyncio.sleep(0.05)
            if await machines.redis.hget(record, keys.NOTIFY_ATTEMPTS):
                break
        await asyncio.sleep(0.05)  # the attempt has left the sends in flight
        notifier.consider_instance(approvals, stale, url, await machines.clock())  # the next tick, the same read
        await asyncio.sleep(0.5)
        assert (len(posts), await machines.redis.hget(record, keys.NOTIFY_ATTEMPTS)) == (1, "1")
    finally:
        await notifier.close()
        await machines.close()


async def test_a_timeout_not_applied_within_the_retention_is_applied_later(clients: Callable[[], Redis]) -> None:
    # a retention of 0.5 s and 2 s without a leader stand for, say, --event-retention 1h and a leaderless hour
    machines = Machines(clients(), local_clock(), retention=0.5)
    await waiting_instance(machines, orders("1s"))
    await asyncio.sleep(2.0)
    await MachineApprovals(machines).due()  # the next leader's first tick
    assert await machines.state("o1") == ("orders:v1", "cancelled")
    await machines.close()


async def test_reading_an_instance_whose_timeout_another_worker_applies_is_not_an_error(
    clients: Callable[[], Redis],
) -> None:
    machines, other = Machines(clients(), local_clock()), Machines(clients(), local_clock())
    await machines.define(configuration_from(orders("1s")))
    ids = [f"o{i}" for i in range(30)]
    for instance in ids:
        await machines.create("orders:v1", instance)
    await machines.apply_all([Event("submit", "e-" + i, instance=i) for i in ids])
    await asyncio.sleep(1.1)
    workers = MachineApprovals(machines), MachineApprovals(other)
    # two workers answer GET /statemachines/{id} at once, each applying the due timeout before it reads
    answers = await asyncio.gather(*(w.pending(i) for i in ids for w in workers), return_exceptions=True)
    assert answers == [None] * 60
    assert {await machines.state(i) for i in ids} == {("orders:v1", "cancelled")}
    await machines.close()
    await other.close()


async def test_a_notify_attempt_ending_after_a_deletion_leaves_no_history_behind(
    clients: Callable[[], Redis],
) -> None:
    machines = Machines(clients(), local_clock())
    await waiting_instance(machines, orders(notify="https://hooks.example/x"))
    approvals = MachineApprovals(machines)
    [waiting] = await approvals.due()  # an attempt starts (its receiver has up to 5 s) ...
    await machines.delete("o1")  # ... and the instance is deleted meanwhile; its continuation keeps the outcome
    fields = {keys.NOTIFY_ATTEMPTS: "1", keys.NOTIFIED_AT: codec.timestamp(await machines.clock())}
    await approvals.noted(waiting, fields, "notified: HTTP 204 (attempt 1)", await machines.clock())
    assert await machines.redis.exists(keys.instance_history("o1")) == 0
    assert await machines.redis.hget(keys.instance_continuation(waiting.id), keys.NOTIFY_ATTEMPTS) is None
    await machines.close()


async def test_a_notify_attempt_ending_after_a_resume_writes_nothing(clients: Callable[[], Redis]) -> None:
    machines = Machines(clients(), local_clock())
    await waiting_instance(machines, orders(notify="https://hooks.example/x"))
    approvals = MachineApprovals(machines)
    [waiting] = await approvals.due()
    await approvals.resume(waiting.id, {"approved": True})
    fields = {keys.NOTIFY_ATTEMPTS: "1", keys.NOTIFIED_AT: codec.timestamp(await machines.clock())}
    await approvals.noted(waiting, fields, "notified: HTTP 204 (attempt 1)", await machines.clock())
    history = [json.loads(h) for h in await machines.redis.lrange(keys.instance_history("o1"), 0, -1)]
    assert [h["cause"] for h in history if h.get("cause") in ("notify", "approval")] == ["approval"]
    assert (await approvals.record(waiting.id) or waiting).notified_at is None
    await machines.close()


async def test_one_unreadable_continuation_does_not_stop_the_other_timeouts(clients: Callable[[], Redis]) -> None:
    machines = Machines(clients(), local_clock())
    await waiting_instance(machines, orders("1s"))
    # a half-deleted record (or one a newer version wrote), due before the instance's
    await machines.redis.hset(keys.instance_continuation("B" * 22), mapping={"instance": "zz"})
    await machines.redis.zadd(keys.approval_timeouts(), {"B" * 22: 1})
    await machines.redis.zadd(keys.approval_notifications(), {"B" * 22: 1})
    await asyncio.sleep(1.1)
    with capture_logs() as logs:
        await MachineApprovals(machines).due()
    assert await machines.state("o1") == ("orders:v1", "cancelled")
    skipped = [e["continuation"] for e in logs if e["event"] == "instance_approval_not_checked"]
    assert skipped == ["B" * 22] * 2  # its timeout, then its notification
    await machines.close()


async def test_a_read_refused_to_a_token_applies_no_due_timeout(serve: MakeClient, plain: Redis) -> None:
    client = await serve(scheduler=False, tokens=parse_tokens(TOKENS, "tokens.yaml"))
    await ok(client, "POST", "/configurations", 201, json=orders("1s"), headers=bearer("shop"))
    url = (await suspended(client, **bearer("shop")))["continuation_url"]
    await asyncio.sleep(1.1)
    await refused(client, "GET", url, 403, "forbidden", headers=bearer("other"))
    assert await plain.hget(keys.instances(), "o1") == "orders:v1 review"  # its due timeout not applied by the 403
    assert (await ok(client, "GET", url, headers=bearer("shop")))["status"] == "expired"


async def test_the_context_limit_counts_utf8_bytes_and_deep_nesting_is_refused(client: Client) -> None:
    url = (await suspended(client))["continuation_url"]
    deep: Any = {}
    for _ in range(300):
        deep = {"a": deep}
    await refused(client, "POST", url, 400, "invalid_json", json={"approved": True, "deep": deep})
    await ok(client, "POST", url, json={"approved": True, "note": "é" * 30_000})  # 60 KB as UTF-8, 180 KB as \u00e9
    assert (await ok(client, "GET", "/statemachines/o1"))["context"]["note"] == "é" * 30_000


async def test_an_instance_whose_continuation_cannot_be_read_is_named_and_the_others_still_listed(
    client: Client, plain: Redis
) -> None:
    good, torn, odd = await suspended(client, "o1"), await suspended(client, "o2"), await suspended(client, "o3")
    await plain.hdel(keys.instance_continuation(torn["id"]), keys.CONTINUATION_CREATED_AT)  # a torn record
    await plain.hset(keys.instance_context(), "o3", "{not json")
    body = await ok(client, "GET", "/approvals")
    assert [a["id"] for a in body["approvals"]] == [good["id"]]
    named = {u["instance"]: u for u in body["unreadable"]}
    assert sorted(named) == ["o2", "o3"] and {u["error"] for u in named.values()} == {"corrupt_state"}
    assert named["o2"]["continuation"] == torn["id"] and named["o3"]["continuation"] == odd["id"]
    assert keys.instance_continuation(torn["id"]) in named["o2"]["message"]
    # a record that names no configuration is not shown to a token bound to some (nor under ?configuration=)
    assert (await ok(client, "GET", "/approvals?configuration=orders:v1"))["unreadable"] == [named["o3"]]
