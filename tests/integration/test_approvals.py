"""Approval states of charts over HTTP against a real redis-server: suspend, resume with input, used, expired."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from stateservice.core.chart import Chart
from stateservice.security.tokens import hash_secret, parse_tokens
from stateservice.store import keys
from stateservice.store.approvals import Approvals, Pending
from tests.support.app import Client, MakeClient
from tests.support.charts import approval, chart, final, increment, load, review
from tests.support.service import run_cli


def gate(after: str = "1h", name: str = "gate") -> Chart:
    """canary (1 host) -> review (approved: fleet; not, or after `after`: rolled_back) -> fleet (2 hosts) -> done."""
    return load(
        chart(
            name,
            "canary",
            increment("canary", "review", 1),
            review(after),
            increment("fleet", "done", 2),
            final("done"),
            final("rolled_back"),
        )
    )


async def suspended(client: Client) -> dict[str, Any]:
    """Report the canary: the chart waits in `review`; its pending approval."""
    assert (await client.put("/charts/gate/state?state=canary&host=web1")).status == 200
    body = await (await client.get("/charts/gate")).json()
    assert body["current_state"] == "review"
    pending: dict[str, Any] = body["pending_approval"]
    return pending


async def test_a_suspended_chart_shows_its_continuation_and_gates_say_awaiting_approval(serve: MakeClient) -> None:
    client = await serve(gate(), scheduler=False)
    pending = await suspended(client)
    assert len(pending["id"]) == 22 and pending["continuation_url"] == f"/continuations/{pending['id']}"
    assert pending["status"] == "pending" and pending["state"] == "review" and pending["context"] == {}
    assert pending["choices"] == [
        {"when": {"approved": True}, "next": "fleet"},
        {"when": {"approved": False}, "next": "rolled_back"},
    ]
    answer = await client.get("/charts/gate/state?state=review")
    assert answer.status == 406 and "Retry-After" not in answer.headers
    body = await answer.json()
    assert body["error"] == "awaiting_approval" and body["continuation"] == pending["continuation_url"]
    history = (await (await client.get("/charts/gate/history")).json())["history"]
    assert [h["cause"] for h in history[:2]] == ["suspend", "put"]


async def test_a_resume_merges_its_input_moves_once_and_a_second_is_told_the_first(serve: MakeClient) -> None:
    client = await serve(gate(), scheduler=False)
    pending = await suspended(client)
    url = pending["continuation_url"]
    answer = await client.post(url, json={"approved": True, "ticket": "CHG-1"})
    assert answer.status == 200, await answer.text()
    outcome = await answer.json()
    assert outcome["from"] == "review" and outcome["to"] == "fleet" and outcome["input_keys"] == ["approved", "ticket"]
    chart = await (await client.get("/charts/gate")).json()
    assert chart["current_state"] == "fleet" and chart["context"] == {"approved": True, "ticket": "CHG-1"}
    assert chart["pending_approval"] is None
    again = await client.post(url, json={"approved": False})
    body = await again.json()
    assert again.status == 409 and body["error"] == "continuation_used" and body["outcome"]["to"] == "fleet"
    record = (await (await client.get("/charts/gate/history")).json())["history"][0]
    assert record["cause"] == "approval" and record["reason"] == "input keys: approved, ticket"
    shown = await (await client.get(url)).json()
    assert shown["status"] == "used" and shown["outcome"]["to"] == "fleet"


async def test_no_matching_choice_is_422_and_the_continuation_stays_usable(serve: MakeClient) -> None:
    client = await serve(gate(), scheduler=False)
    url = (await suspended(client))["continuation_url"]
    refused = await client.post(url, json={"approved": "yes"})
    body = await refused.json()
    assert refused.status == 422 and body["error"] == "no_choice_matched" and len(body["choices"]) == 2
    assert (await client.post(url, json={"approved": False})).status == 200
    assert (await (await client.get("/charts/gate")).json())["current_state"] == "rolled_back"


async def test_bad_requests_get_clear_4xx(serve: MakeClient) -> None:
    client = await serve(gate(), scheduler=False)
    url = (await suspended(client))["continuation_url"]
    assert (await client.post("/continuations/" + "A" * 22, json={})).status == 404
    assert (await client.get("/continuations/nope")).status == 400
    not_object = await client.post(url, data=b"[1]", headers={"Content-Type": "application/json"})
    assert not_object.status == 400
    big = await client.post(url, json={"approved": True, "blob": "x" * 70_000}, headers={})
    assert big.status in (413,), await big.text()
    assert (await client.get(url)).status == 200


async def test_a_timeout_expires_the_continuation_and_moves_the_chart(serve: MakeClient) -> None:
    client = await serve(gate("1s"), scheduler=False)
    url = (await suspended(client))["continuation_url"]
    await asyncio.sleep(1.2)
    late = await client.post(url, json={"approved": True})
    body = await late.json()
    assert late.status == 410 and body["error"] == "continuation_expired", body
    chart = await (await client.get("/charts/gate")).json()
    assert chart["current_state"] == "rolled_back"
    causes = [h["cause"] for h in (await (await client.get("/charts/gate/history")).json())["history"]]
    assert causes.count("timeout") == 1
    assert (await (await client.get(url)).json())["status"] == "expired"


async def test_concurrent_resumes_use_a_continuation_once(serve: MakeClient) -> None:
    client = await serve(gate(), scheduler=False)
    url = (await suspended(client))["continuation_url"]
    answers = await asyncio.gather(*(client.post(url, json={"approved": i % 2 == 0}) for i in range(20)))
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] + [409] * 19


async def test_the_redis_keys_are_as_documented(serve: MakeClient, plain: Redis) -> None:
    client = await serve(gate(), scheduler=False)
    pending = await suspended(client)
    assert await plain.hget(keys.chart_state("gate"), "continuation") == pending["id"]
    assert await plain.get(f"stateservice:continuation:{pending['id']}") == "chart gate"
    record = await plain.hgetall(f"stateservice:{{gate}}:continuation:{pending['id']}")
    assert record["state"] == "review" and record["expires_at"] == pending["expires_at"]
    await client.post(pending["continuation_url"], json={"approved": True})
    assert json.loads(await plain.hget(keys.chart_state("gate"), "context")) == {"approved": True}


TOKENS = f"""
tokens:
  - {{name: reader, sha256: {hash_secret("r-secret")}, scopes: [read]}}
  - {{name: chef, sha256: {hash_secret("c-secret")}, scopes: [read, report]}}
  - {{name: lead, sha256: {hash_secret("l-secret")}, scopes: [read, approve]}}
  - {{name: ops, sha256: {hash_secret("o-secret")}, scopes: [read, report, admin]}}
  - {{name: other, sha256: {hash_secret("x-secret")}, scopes: [read, approve], charts: [elsewhere]}}
"""


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}-secret"}


async def test_resuming_needs_the_approve_scope_or_admin_for_that_chart(serve: MakeClient) -> None:
    client = await serve(
        gate(),
        gate(name="elsewhere"),
        scheduler=False,
        tokens=parse_tokens(TOKENS, "tokens.yaml"),
    )
    assert (await client.put("/charts/gate/state?state=canary&host=w", headers=bearer("c"))).status == 200
    pending = (await (await client.get("/charts/gate", headers=bearer("r"))).json())["pending_approval"]
    url = pending["continuation_url"]
    assert (await client.post(url, json={"approved": True})).status == 401
    for name in ("r", "c", "x"):
        answer = await client.post(url, json={"approved": True}, headers=bearer(name))
        assert answer.status == 403 and (await answer.json())["error"] == "forbidden", name
    assert (await client.get(url, headers=bearer("x"))).status == 403  # a token bound to other charts sees nothing
    listed = await (await client.get("/approvals", headers=bearer("x"))).json()
    assert listed == {"approvals": [], "unreadable": []}
    assert (await client.get(url, headers=bearer("r"))).status == 200
    assert (await client.post(url, json={"approved": True}, headers=bearer("l"))).status == 200
    # admin may resume too
    assert (await client.put("/charts/elsewhere/state?state=canary&host=w", headers=bearer("o"))).status == 200
    other = (await (await client.get("/approvals?chart=elsewhere", headers=bearer("o"))).json())["approvals"][0]
    assert (await client.post(other["continuation_url"], json={"approved": False}, headers=bearer("o"))).status == 200


async def test_approvals_lists_the_waiting_ones(serve: MakeClient) -> None:
    client = await serve(gate(), scheduler=False)
    assert (await (await client.get("/approvals")).json()) == {"approvals": [], "unreadable": []}
    pending = await suspended(client)
    listed = (await (await client.get("/approvals")).json())["approvals"]
    assert [item["id"] for item in listed] == [pending["id"]]
    assert (await client.get("/approvals?chart=")).status == 400
    assert (await client.get("/approvals?chart=nope")).status == 404


async def test_the_cli_lists_and_approves(serve: MakeClient, tmp_path: Path) -> None:
    client = await serve(gate(), scheduler=False)
    pending = await suspended(client)
    base = str(client.make_url("/")).rstrip("/")
    listed = await asyncio.to_thread(run_cli, "approvals", "--url", base, cwd=tmp_path)
    assert listed.returncode == 0 and pending["id"] in listed.stdout and '{"approved": true} -> fleet' in listed.stdout
    bad = await asyncio.to_thread(run_cli, "approve", pending["id"], "--input", "[1]", "--url", base, cwd=tmp_path)
    assert bad.returncode == 64 and "JSON object" in bad.stderr
    nomatch = await asyncio.to_thread(
        run_cli, "approve", pending["id"], "--input", '{"approved": 1}', "--url", base, cwd=tmp_path
    )
    assert nomatch.returncode == 1 and "no choice" in nomatch.stderr and "-> rolled_back" in nomatch.stderr
    done = await asyncio.to_thread(
        run_cli,
        "approve",
        base + pending["continuation_url"],
        "--input",
        '{"approved": true}',
        "--url",
        base,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stdout.strip() == "gate: review -> fleet", done.stderr
    again = await asyncio.to_thread(run_cli, "approve", pending["id"], "--url", base, cwd=tmp_path)
    assert again.returncode == 1 and "used already" in again.stderr
    unknown = await asyncio.to_thread(run_cli, "approve", "A" * 22, "--url", base, cwd=tmp_path)
    assert unknown.returncode == 2


async def test_an_operator_cannot_advance_an_approval_but_a_reset_expires_it(serve: MakeClient) -> None:
    client = await serve(gate(), scheduler=False)
    url = (await suspended(client))["continuation_url"]
    refused = await client.post("/charts/gate/advance")
    body = await refused.json()
    assert refused.status == 409 and "stateservice approve" in body["message"]
    assert (await client.post("/charts/gate/reset")).status == 200
    late = await client.post(url, json={"approved": True})
    body = await late.json()
    assert late.status == 410 and "the chart was reset" in body["message"]
    assert (await (await client.get("/charts/gate")).json())["context"] == {}


async def test_any_service_on_the_same_redis_resumes_another_ones_chart(serve: MakeClient) -> None:
    serving = await serve(gate(), scheduler=False)
    other = await serve(load("current_state: a\nstates:\n  - name: a\n", "other.yaml"), scheduler=False)
    url = (await suspended(serving))["continuation_url"]
    shown = await other.get(url)
    assert shown.status == 200 and (await shown.json())["chart"] == "gate"
    assert (await other.post(url, json={"approved": True})).status == 200
    assert (await (await serving.get("/charts/gate")).json())["current_state"] == "fleet"


async def test_a_continuation_used_while_its_owner_string_is_written_still_expires(
    serve: MakeClient, plain: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    untimed = approval("review", ("true", "done"), default="done")  # no timeout: its owner lives until it is used
    client = await serve(
        load(chart("gate", "canary", increment("canary", "review", 1), untimed, final("done"))), scheduler=False
    )
    held, go = asyncio.Event(), asyncio.Event()
    original = Approvals._owned

    async def paused(self: Approvals, pending: Pending) -> None:  # a worker between its commit and the owner's write
        held.set()
        await go.wait()
        await original(self, pending)

    monkeypatch.setattr(Approvals, "_owned", paused)
    assert (await client.put("/charts/gate/state?state=canary&host=w")).status == 200
    view = asyncio.ensure_future(client.get("/charts/gate"))  # makes the continuation
    await held.wait()
    continuation = await plain.hget(keys.chart_state("gate"), keys.CONTINUATION)
    monkeypatch.setattr(Approvals, "_owned", original)
    assert (await client.post(f"/continuations/{continuation}", json={"approved": True})).status == 200
    go.set()
    assert (await view).status == 200
    assert await plain.ttl(keys.continuation_owner(continuation)) > 0  # not kept for ever (-1)


async def test_a_visit_whose_continuation_was_settled_while_it_stayed_gets_a_new_one(
    serve: MakeClient, plain: Redis
) -> None:
    client = await serve(gate(), scheduler=False)
    first = await suspended(client)
    # as a reload that made review another kind settles it (a resume then answers 410), before another reload
    # makes review an approval again: the chart never left review
    settled = {"used": False, "state": "review", "reason": "the chart left state 'review'", "at": first["created_at"]}
    await plain.hset(keys.chart_continuation("gate", first["id"]), keys.CONTINUATION_OUTCOME, json.dumps(settled))
    again = (await (await client.get("/charts/gate")).json())["pending_approval"]
    assert again["id"] != first["id"]
    assert (await client.post(again["continuation_url"], json={"approved": True})).status == 200
    assert (await (await client.get("/charts/gate")).json())["current_state"] == "fleet"


async def test_a_chart_whose_approval_data_cannot_be_read_is_named_and_the_others_still_listed(
    serve: MakeClient, plain: Redis, tmp_path: Path
) -> None:
    client = await serve(gate(name="good"), gate(name="bad"), gate(name="lost"), scheduler=False)
    for name in ("good", "bad", "lost"):
        assert (await client.put(f"/charts/{name}/state?state=canary&host=w")).status == 200
    made = (await (await client.get("/approvals")).json())["approvals"]  # the continuations are made
    assert sorted(a["chart"] for a in made) == ["bad", "good", "lost"]
    await plain.hset(keys.chart_state("bad"), keys.CONTEXT, "[1]")  # no JSON object
    lost = next(a["id"] for a in made if a["chart"] == "lost")
    await plain.hset(keys.chart_continuation("lost", lost), keys.CONTINUATION_CREATED_AT, "yesterday")
    answer = await client.get("/approvals")
    assert answer.status == 200, await answer.text()
    body = await answer.json()
    assert [a["chart"] for a in body["approvals"]] == ["good"]
    named = {u["chart"]: u for u in body["unreadable"]}
    assert sorted(named) == ["bad", "lost"] and {u["error"] for u in named.values()} == {"corrupt_state"}
    assert "field context is not a JSON object" in named["bad"]["message"]
    assert keys.chart_continuation("lost", lost) in named["lost"]["message"]
    base = str(client.make_url("/")).rstrip("/")
    listed = await asyncio.to_thread(run_cli, "approvals", "--url", base, cwd=tmp_path)
    assert listed.returncode == 0 and "  good  review" in listed.stdout, listed.stderr
    assert "stateservice approvals: bad cannot be read" in listed.stderr


async def test_a_service_lists_the_continuations_of_every_chart_registered_in_its_redis(serve: MakeClient) -> None:
    serving = await serve(gate(), gate(name="elsewhere"), scheduler=False)
    other = await serve(
        load("current_state: a\nstates:\n  - name: a\n", "other.yaml"),
        scheduler=False,
        tokens=parse_tokens(TOKENS, "tokens.yaml"),
    )
    pending = await suspended(serving)  # a chart `other` does not serve
    listed = await (await other.get("/approvals", headers=bearer("r"))).json()
    assert [a["id"] for a in listed["approvals"]] == [pending["id"]] and listed["unreadable"] == []
    assert listed["approvals"][0] == (await (await other.get(pending["continuation_url"], headers=bearer("r"))).json())
    one = await (await other.get("/approvals?chart=gate", headers=bearer("r"))).json()
    assert [a["id"] for a in one["approvals"]] == [pending["id"]]
    assert (await other.get("/approvals?chart=nope", headers=bearer("r"))).status == 404
    # a token bound to other charts sees none of it
    assert (await (await other.get("/approvals", headers=bearer("x"))).json())["approvals"] == []
    assert (await other.get("/approvals?chart=gate", headers=bearer("x"))).status == 403


async def test_a_registered_chart_whose_definition_cannot_be_read_is_named(serve: MakeClient, plain: Redis) -> None:
    serving = await serve(gate(), scheduler=False)
    other = await serve(load("current_state: a\nstates:\n  - name: a\n", "other.yaml"), scheduler=False)
    pending = await suspended(serving)
    broken = {keys.DEFINITION_SOURCE: "states: [", keys.DEFINITION_DIGEST: "x"}  # text this service cannot parse
    await plain.hset(keys.chart_definition("gate"), mapping=broken)
    body = await (await other.get("/approvals")).json()
    assert body["approvals"] == [] and [(u["chart"], u["error"]) for u in body["unreadable"]] == [
        ("gate", "unreadable_definition")
    ]
    assert [a["id"] for a in (await (await serving.get("/approvals")).json())["approvals"]] == [pending["id"]]


async def test_a_token_bound_to_some_charts_is_told_only_of_theirs_that_cannot_be_read(
    serve: MakeClient, plain: Redis
) -> None:
    client = await serve(gate(), gate(name="elsewhere"), scheduler=False, tokens=parse_tokens(TOKENS, "tokens.yaml"))
    for name in ("gate", "elsewhere"):
        assert (await client.put(f"/charts/{name}/state?state=canary&host=w", headers=bearer("c"))).status == 200
    await plain.hset(keys.chart_state("gate"), keys.CONTEXT, "[1]")
    bound = await (await client.get("/approvals", headers=bearer("x"))).json()
    assert [a["chart"] for a in bound["approvals"]] == ["elsewhere"] and bound["unreadable"] == []
    every = await (await client.get("/approvals", headers=bearer("r"))).json()
    assert [u["chart"] for u in every["unreadable"]] == ["gate"]
