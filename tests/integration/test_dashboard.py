"""The dashboard over HTTP (no browser): what JSON clients still get, sessions, CSRF, scopes, the event streams.

The browser's side (rendering, live updates without a reload, confirmations) is test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from stateservice.dashboard import access, events, read
from stateservice.errors import StoreUnavailable
from stateservice.security.tokens import Scope, Token, Tokens, hash_secret
from stateservice.store import keys
from stateservice.web import auth
from stateservice.web.appkeys import WATCHER
from tests.support.app import Client, MakeClient
from tests.support.charts import chart, final, increment, load, review, wave

HTML = {"Accept": "text/html"}
ROLLOUT = load(
    chart(
        "rollout",
        "canary",
        "  - name: canary\n    func: increment\n    current: {key: hosts, value: 0}\n"
        "    target: {name: done, when: {key: hosts, value: 4}}\n    concurrency: 2\n    max_failures: 2\n",
        final("done"),
    ),
    "rollout.yaml",
)
ADMIN, READER, OTHER = "sst_admin-secret", "sst_reader-secret", "sst_other-secret"
TOKENS = Tokens(
    (
        Token("ops", hash_secret(ADMIN), frozenset({Scope.READ, Scope.REPORT, Scope.ADMIN})),
        Token("viewer", hash_secret(READER), frozenset({Scope.READ})),
        Token("team-b", hash_secret(OTHER), frozenset({Scope.READ, Scope.ADMIN}), frozenset({"wave"})),
    )
)


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


async def sign_in(client: Client, secret: str) -> None:
    form = await client.get("/dashboard/signin", headers=HTML)
    answer = await client.post(
        "/dashboard/signin", data={"csrf": csrf(await form.text()), "token": secret}, allow_redirects=False
    )
    assert answer.status == 303, await answer.text()


async def test_a_json_client_gets_what_it_got_before(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False)
    answer = await client.get("/")
    assert answer.status == 404
    assert (await answer.json())["error"] == "not_found"
    chart_json = await client.get("/charts/rollout", headers={"Accept": "application/json"})
    assert (await chart_json.json())["current_state"] == "canary"


async def test_a_json_client_with_tokens_on_is_still_asked_for_a_token(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    assert (await client.get("/")).status == 401
    assert (await client.get("/", headers={"Authorization": f"Bearer {READER}"})).status == 404


async def test_the_overview_shows_each_charts_progress_slots_and_failures(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, wave(3), dashboard=True, scheduler=False)
    await client.put("/charts/rollout/state?state=canary&host=a")
    await client.put("/charts/rollout/slots/b?state=canary")
    await client.put("/charts/rollout/state?state=canary&host=c&result=failure&reason=disk")
    page = await client.get("/", headers=HTML)
    assert page.status == 200
    html = await page.text()
    row = html[html.index('data-chart="rollout"') :]
    row = row[: row.index("</tr>")]
    assert "1 / 4" in row  # counted / target
    assert "1 / 2" in row  # slots held / limit
    assert "1 / 2" in row[row.index('data-label="Failures"') :]  # failures / budget
    assert 'data-chart="wave"' in html
    assert "httponly" in page.headers["Set-Cookie"].lower()
    assert "samesite=strict" in page.headers["Set-Cookie"].lower()


async def test_a_slot_past_its_expiry_is_shown_expired_not_held(serve: MakeClient, plain: Any) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False)
    await client.put("/charts/rollout/slots/b?state=canary")
    await client.put("/charts/rollout/slots/c?state=canary")
    gone = '{"granted_at": "2026-01-01T00:00:00.000000Z", "expires_at": "2026-01-01T00:05:00.000000Z"}'
    await plain.hset(keys.chart_slots("rollout", "canary"), "b", gone)  # b's host died: no renewal came
    html = await (await client.get("/", headers=HTML)).text()
    row = html[html.index('data-chart="rollout"') :]
    assert "1 / 2" in row[row.index('data-label="Slots"') :]  # c's only, as GET /charts/rollout/slots says
    page = await (await client.get("/dashboard/charts/rollout", headers=HTML)).text()
    holding, failed, expired = page.index("Holding slots (1)"), page.index("Failed ("), page.index("Slots expired (1)")
    assert '"host">c<' in page[holding:failed] and '"host">b<' not in page[holding:failed]
    assert '"host">b</span> at <time datetime="2026-01-01T00:05:00.000000Z"' in page[expired:]
    assert (await (await client.get("/charts/rollout/slots")).json())["held"] == 1


async def test_the_overview_filters_by_name_and_pages(serve: MakeClient) -> None:
    charts = [wave(3, f"w{i:03}") for i in range(130)]
    client = await serve(*charts, dashboard=True, scheduler=False)
    first = await (await client.get("/", headers=HTML)).text()
    assert "Page 1 of 2" in first and 'data-chart="w099"' in first and 'data-chart="w100"' not in first
    second = await (await client.get("/?page=2", headers=HTML)).text()
    assert 'data-chart="w100"' in second and 'data-chart="w129"' in second
    filtered = await (await client.get("/?q=w12", headers=HTML)).text()
    assert filtered.count('class="chart row-') == 10


async def test_the_chart_page_shows_the_diagram_hosts_history_and_key(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False)
    await client.put("/charts/rollout/state?state=canary&host=web-1")
    await client.put("/charts/rollout/slots/web-2?state=canary")
    html = await (await client.get("/dashboard/charts/rollout", headers=HTML)).text()
    assert '<svg class="diagram"' in html and 'class="node current kind-increment" data-state="canary"' in html
    assert "web-1" in html and "web-2" in html
    assert "redis-cli HGETALL &#39;stateservice:{rollout}&#39;" in html
    assert 'class="cause">slot<' in html  # the history's slot grant
    assert (await client.get("/dashboard/charts/nope", headers=HTML)).status == 404


async def test_an_action_needs_the_csrf_token_and_a_confirmation(serve: MakeClient, plain: Any) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False)
    html = await (await client.get("/dashboard/charts/rollout", headers=HTML)).text()
    token = csrf(html)
    forged = await client.post("/dashboard/charts/rollout/halt", data={"csrf": "x", "confirmed": "yes"}, headers=HTML)
    assert forged.status == 403
    asked = await client.post("/dashboard/charts/rollout/halt", data={"csrf": token, "reason": "bad canary"})
    assert asked.status == 200 and "Yes, halt" in await asked.text()
    assert await plain.hget("stateservice:{rollout}", "halted") is None
    done = await client.post(
        "/dashboard/charts/rollout/halt",
        data={"csrf": token, "reason": "bad canary", "confirmed": "yes"},
        allow_redirects=False,
    )
    assert done.status == 303
    assert await plain.hget("stateservice:{rollout}", "halted") == "bad canary"
    history = await (await client.get("/charts/rollout/history")).json()
    assert history["history"][0]["cause"] == "halt"
    halted = await (await client.get("/dashboard/charts/rollout", headers=HTML)).text()
    assert 'id="resume"' in halted and 'id="halt"' not in halted  # the button that fits the chart's condition


async def test_with_tokens_the_pages_ask_to_sign_in_and_a_reader_gets_no_buttons(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, wave(3), dashboard=True, scheduler=False, tokens=TOKENS)
    asked = await client.get("/", headers=HTML)
    assert asked.status == 401 and 'name="token"' in await asked.text()
    await sign_in(client, READER)
    html = await (await client.get("/dashboard/charts/rollout", headers=HTML)).text()
    assert "Signed in as <strong>viewer</strong>" in html
    assert 'id="halt"' not in html and "/halt" not in html
    refused = await client.post(
        "/dashboard/charts/rollout/halt", data={"csrf": csrf(html), "confirmed": "yes"}, headers=HTML
    )
    assert refused.status == 403


async def test_a_token_bound_to_charts_sees_only_those(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, wave(3), dashboard=True, scheduler=False, tokens=TOKENS)
    await sign_in(client, OTHER)
    html = await (await client.get("/", headers=HTML)).text()
    assert 'data-chart="wave"' in html and 'data-chart="rollout"' not in html
    assert (await client.get("/dashboard/charts/rollout", headers=HTML)).status == 403
    wave_page = await (await client.get("/dashboard/charts/wave", headers=HTML)).text()
    assert 'id="halt"' in wave_page


async def test_a_wrong_token_does_not_sign_in_and_is_never_logged(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    form = await client.get("/dashboard/signin", headers=HTML)
    answer = await client.post("/dashboard/signin", data={"csrf": csrf(await form.text()), "token": "sst_wrong"})
    assert answer.status == 401
    assert (await client.get("/", headers=HTML)).status == 401


async def read_event(lines: Any) -> dict[str, Any]:
    """The next event of an SSE stream (comments and `retry:` skipped): its fields, `data` parsed."""
    event: dict[str, Any] = {}
    async for raw in lines:
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in event:
                return event
            continue
        field, _, value = line.partition(": ")
        if field == "data":
            event["data"] = orjson.loads(value)
        elif field in ("event", "id"):
            event[field] = value
    raise AssertionError("the stream ended")


async def test_the_chart_stream_sends_the_state_now_then_each_change(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False)
    async with client.get("/dashboard/events/charts/rollout") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        first = await asyncio.wait_for(read_event(stream.content), 5)
        assert first["event"] == "chart" and first["data"]["summary"]["progress"][0]["counted"] == 0
        await client.put("/charts/rollout/state?state=canary&host=a")  # counted, moves nothing
        second = await asyncio.wait_for(read_event(stream.content), 1)
        assert second["data"]["summary"]["progress"][0]["counted"] == 1
        assert second["id"] != first["id"]
    # reconnecting with the last id seen: nothing is sent until something changes
    async with client.get("/dashboard/events/charts/rollout", headers={"Last-Event-ID": second["id"]}) as again:
        await client.put("/charts/rollout/slots/b?state=canary")
        third = await asyncio.wait_for(read_event(again.content), 2)
        assert third["data"]["summary"]["slots"] == {"used": 1, "limit": 2}


async def test_the_overview_stream_follows_the_page(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, wave(1), dashboard=True, scheduler=False)
    async with client.get("/dashboard/events") as stream:
        first = await asyncio.wait_for(read_event(stream.content), 5)
        assert [c["name"] for c in first["data"]["charts"]] == ["rollout", "wave"]
        await client.put("/charts/wave/state?state=canary&host=a")  # moves wave on
        second = await asyncio.wait_for(read_event(stream.content), 1)
        assert second["data"]["charts"][1]["state"] == "fleet"


async def test_a_stream_needs_a_token_when_tokens_are_on(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    assert (await client.get("/dashboard/events/charts/rollout")).status == 401
    headers = {"Authorization": f"Bearer {READER}"}
    async with client.get("/dashboard/events/charts/rollout", headers=headers) as stream:
        assert (await asyncio.wait_for(read_event(stream.content), 5))["event"] == "chart"


async def test_a_stream_ends_as_soon_as_its_client_hangs_up(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False)
    watcher = client.server.app[WATCHER]
    async with client.get("/dashboard/events/charts/rollout") as stream:
        await asyncio.wait_for(read_event(stream.content), 5)
        assert watcher.listening
        stream.close()
    for _ in range(50):  # well before the first keep-alive (15 s): the server cancels the stream's handler
        if not watcher.listening:
            break
        await asyncio.sleep(0.02)
    assert not watcher.listening


async def test_without_tokens_there_is_nothing_to_sign_in_to(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False)
    answer = await client.get("/dashboard/signin", headers=HTML, allow_redirects=False)
    assert answer.status == 303 and answer.headers["Location"] == "/"


GATE = load(
    chart(
        "gate",
        "canary",
        increment("canary", "review", 1),
        review("1h"),
        final("fleet"),
        final("rolled_back"),
    )
)


async def test_a_pending_approval_shows_and_is_resumed_from_the_page(serve: MakeClient) -> None:
    client = await serve(GATE, dashboard=True, scheduler=False)
    await client.put("/charts/gate/state?state=canary&host=web1")
    overview = await (await client.get("/", headers=HTML)).text()
    assert "Waiting for approval" in overview and "1 waiting for approval" in overview
    html = await (await client.get("/dashboard/charts/gate", headers=HTML)).text()
    assert "Waiting for approval in review" in html and "Choose: go to fleet" in html
    assert 'id="advance"' not in html  # a person's input picks an approval state's next state
    pending = (await (await client.get("/charts/gate")).json())["pending_approval"]
    form = {"csrf": csrf(html), "continuation": pending["id"], "state": "review", "input": '{"approved": true}'}
    asked = await client.post("/dashboard/charts/gate/approve", data=form)
    assert asked.status == 200 and "Yes, approve" in await asked.text()
    assert (await (await client.get("/charts/gate")).json())["current_state"] == "review"
    done = await client.post("/dashboard/charts/gate/approve", data={**form, "confirmed": "yes"}, allow_redirects=False)
    assert done.status == 303
    chart_json = await (await client.get("/charts/gate")).json()
    assert chart_json["current_state"] == "fleet" and chart_json["pending_approval"] is None
    again = await client.post("/dashboard/charts/gate/approve", data={**form, "confirmed": "yes"}, headers=HTML)
    assert again.status == 409  # used: the page says so, as the API would


async def test_a_chart_whose_approval_data_cannot_be_read_is_shown_broken_and_the_others_still_are(
    serve: MakeClient, plain: Redis
) -> None:
    client = await serve(replace(GATE, name="good"), replace(GATE, name="bad"), dashboard=True, scheduler=False)
    for name in ("good", "bad"):
        await client.put(f"/charts/{name}/state?state=canary&host=web1")
    assert "2 waiting for approval" in await (await client.get("/", headers=HTML)).text()  # continuations made
    await plain.hset(keys.chart_state("bad"), keys.CONTEXT, "[1]")  # no JSON object
    page = await client.get("/", headers=HTML)
    html = await page.text()
    assert page.status == 200 and "1 waiting for approval" in html, html[:300]
    assert "<strong>Unreadable:</strong> stateservice:{bad} field context is not a JSON object" in html
    async with client.get("/dashboard/events") as stream:
        first = await asyncio.wait_for(read_event(stream.content), 5)
    assert [c["name"] for c in first["data"]["charts"]] == ["good"]
    assert [name for name, _ in first["data"]["broken"]] == ["bad"]


async def _overview_cost(serve: MakeClient, plain: Redis, n: int) -> list[str]:
    """The commands one overview page sends that name the keys of its `n` charts, all waiting for approvals with
    their continuations made (as MONITOR shows them: a script is one command, the commands it runs not counted)."""
    await plain.flushall()
    charts = [replace(GATE, name=f"g{i:03d}") for i in range(n)]
    client = await serve(*charts, dashboard=True, scheduler=False)
    for c in charts:
        assert (await client.put(f"/charts/{c.name}/state?state=canary&host=w")).status == 200
    first = await (await client.get("/", headers=HTML)).text()
    assert f"{n} waiting for approval" in first  # the first page made every continuation
    sent = []
    async with plain.monitor() as monitor:
        again = await (await client.get("/", headers=HTML)).text()
        await plain.echo("overview-sent")
        while (command := await monitor.next_command())["command"] != "ECHO overview-sent":
            if command["client_type"] != "lua" and "stateservice:{g" in command["command"]:
                sent.append(command["command"].split(" ", 1)[0])
    assert f"{n} waiting for approval" in again
    return sent


async def test_the_overview_reads_pending_approvals_in_bulk(serve: MakeClient, plain: Redis) -> None:
    """docs/dashboard.md: a page's round trips do not grow with its charts (a transaction a chart would)."""
    few, many = await _overview_cost(serve, plain, 5), await _overview_cost(serve, plain, 50)
    assert many == few and "WATCH" not in few and len(few) <= 5, (few, many)


async def test_approving_needs_the_approve_scope_and_a_json_object(serve: MakeClient) -> None:
    tokens = Tokens(
        (
            Token("viewer", hash_secret(READER), frozenset({Scope.READ})),
            Token("approver", hash_secret(ADMIN), frozenset({Scope.READ, Scope.REPORT, Scope.APPROVE})),
        )
    )
    client = await serve(GATE, dashboard=True, scheduler=False, tokens=tokens)
    await client.put("/charts/gate/state?state=canary&host=web1", headers={"Authorization": f"Bearer {ADMIN}"})
    await sign_in(client, READER)
    html = await (await client.get("/dashboard/charts/gate", headers=HTML)).text()
    assert "Waiting for approval in review" in html and "/approve" not in html
    await sign_in(client, ADMIN)
    html = await (await client.get("/dashboard/charts/gate", headers=HTML)).text()
    assert 'id="approve"' in html and 'id="halt"' not in html
    pending = await (await client.get("/charts/gate", headers={"Authorization": f"Bearer {ADMIN}"})).json()
    form = {"csrf": csrf(html), "continuation": pending["pending_approval"]["id"], "state": "review"}
    bad = await client.post("/dashboard/charts/gate/approve", data={**form, "input": "[1]"}, headers=HTML)
    assert bad.status == 400
    deep = '{"approved": true, "x": ' + "[" * 300 + "]" * 300 + "}"  # as POST /continuations/{id}: a 400
    bad = await client.post("/dashboard/charts/gate/approve", data={**form, "input": deep}, headers=HTML)
    assert bad.status == 400 and "nests too deeply" in await bad.text()
    assert bad.headers["Content-Type"].startswith("text/html")


async def test_removing_a_token_ends_its_open_streams(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    headers = {"Authorization": f"Bearer {READER}"}
    async with client.get("/dashboard/events/charts/rollout", headers=headers) as stream:
        await asyncio.wait_for(read_event(stream.content), 5)
        # the operator removes "viewer" from the tokens file and sends SIGHUP
        client.server.app[auth.TOKENS].tokens = Tokens(tuple(t for t in TOKENS.entries if t.name != "viewer"))
        await client.put("/charts/rollout/state?state=canary&host=a", headers={"Authorization": f"Bearer {ADMIN}"})
        ended = await asyncio.wait_for(read_event(stream.content), 2)
        assert ended["event"] == "problem" and ended["data"]["status"] == 401  # not the chart's new counters
        assert await asyncio.wait_for(stream.content.read(), 2) == b""


async def test_an_expired_session_ends_its_open_stream_at_a_keep_alive(
    serve: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE", 0.3)
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    await client.get("/dashboard/signin", headers=HTML)  # the worker has its sessions now
    sessions = client.server.app[access.SESSIONS].sessions
    assert sessions is not None
    sessions.lifetime = 3
    await sign_in(client, READER)
    async with client.get("/dashboard/events/charts/rollout") as stream:
        assert (await asyncio.wait_for(read_event(stream.content), 5))["event"] == "chart"
        ended = await asyncio.wait_for(read_event(stream.content), 5)  # nothing changed: a keep-alive noticed
        assert ended["event"] == "problem" and ended["data"]["status"] == 401


async def test_rotating_a_tokens_secret_ends_its_dashboard_sessions(serve: MakeClient) -> None:
    client = await serve(ROLLOUT, wave(3), dashboard=True, scheduler=False, tokens=TOKENS)
    await sign_in(client, ADMIN)  # e.g. someone holding the leaked secret of "ops"
    html = await (await client.get("/dashboard/charts/rollout", headers=HTML)).text()
    # the operator gives "ops" a new secret (same name, same scopes), then SIGHUP swaps the tokens in
    rotated = Tokens((replace(TOKENS.entries[0], sha256=hash_secret("sst_brand-new-secret")), *TOKENS.entries[1:]))
    client.server.app[auth.TOKENS].tokens = rotated
    assert (await client.get("/dashboard/charts/rollout", headers=HTML)).status == 401
    halted = await client.post(
        "/dashboard/charts/rollout/halt", data={"csrf": csrf(html), "confirmed": "yes"}, allow_redirects=False
    )
    assert halted.status != 303


async def test_a_page_view_without_cookies_never_replaces_a_signed_in_session(serve: MakeClient) -> None:
    """A browser sends no SameSite=Strict cookie on a navigation from another site (a link in a chat), yet keeps
    the answer's Set-Cookie: an anonymous session sent then must not land on the signed-in one."""
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    client.session.cookie_jar.clear()
    answer = await client.get("/dashboard/charts/rollout", headers=HTML)
    assert answer.status == 401 and "stateservice_visit" in answer.cookies
    assert "stateservice_session" not in answer.cookies, answer.headers.getall("Set-Cookie")
    await sign_in(client, READER)  # the form's CSRF token is the anonymous session's
    assert (await client.get("/dashboard/charts/rollout", headers=HTML)).status == 200
    signed_in = client.session.cookie_jar.filter_cookies(client.make_url("/"))["stateservice_session"]
    html = await (await client.get("/dashboard/charts/rollout", headers=HTML)).text()
    out = await client.post("/dashboard/signout", data={"csrf": csrf(html)}, allow_redirects=False)
    assert out.status == 303 and out.cookies["stateservice_session"].value == ""
    assert signed_in.value  # it was there until signing out removed it
    assert (await client.get("/dashboard/charts/rollout", headers=HTML)).status == 401


async def test_a_stream_reads_again_at_the_next_keep_alive_after_a_failed_read(
    serve: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE", 0.3)
    real, failing = read.chart_page, {"on": False}

    async def flaky(request: Any) -> Any:
        if failing["on"]:
            raise StoreUnavailable()
        return await real(request)

    monkeypatch.setattr(read, "chart_page", flaky)
    client = await serve(ROLLOUT, dashboard=True, scheduler=False)
    async with client.get("/dashboard/events/charts/rollout") as stream:
        assert (await asyncio.wait_for(read_event(stream.content), 5))["data"]["summary"]["progress"][0]["counted"] == 0
        failing["on"] = True  # Redis has a hiccup just as a report lands
        await client.put("/charts/rollout/state?state=canary&host=a")
        problem = await asyncio.wait_for(read_event(stream.content), 2)
        assert problem["event"] == "problem" and problem["data"]["status"] == 503  # not EventSource's `error`
        failing["on"] = False  # Redis answers again; nothing else changes on this chart
        fresh = await asyncio.wait_for(read_event(stream.content), 3)
        assert fresh["data"]["summary"]["progress"][0]["counted"] == 1


async def test_an_event_source_gets_a_stream_even_when_refused(serve: MakeClient, plain: Any) -> None:
    """EventSource gives up for good on an answer that is not a stream: its errors come as a `problem` event."""
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    accept = {"Accept": "text/event-stream"}
    answer = await client.get("/dashboard/events/charts/rollout", headers=accept)
    assert answer.status == 200 and answer.headers["Content-Type"] == "text/event-stream"
    assert (await read_event(answer.content))["data"]["status"] == 401
    await plain.execute_command("CLIENT", "PAUSE", "3000", "ALL")  # Redis does not answer
    try:
        headers = {**accept, "Authorization": f"Bearer {READER}"}
        answer = await client.get("/dashboard/events/charts/rollout", headers=headers)
        assert answer.status == 200 and answer.headers["Content-Type"] == "text/event-stream"
        assert (await read_event(answer.content))["event"] == "problem"
    finally:
        await plain.execute_command("CLIENT", "UNPAUSE")
    assert (await client.get("/dashboard/events/charts/rollout")).status == 401  # curl -N: the API's JSON error


async def test_reconnecting_with_the_last_id_while_a_leader_renews_sends_nothing(serve: MakeClient, plain: Any) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False)
    await plain.set(keys.leader(), '{"id": "host-a", "pid": 42}', px=30000)
    async with client.get("/dashboard/events/charts/rollout") as stream:
        first = await asyncio.wait_for(read_event(stream.content), 5)
    await asyncio.sleep(1.1)  # the lease's expiry, read again, is another second
    async with client.get("/dashboard/events/charts/rollout", headers={"Last-Event-ID": first["id"]}) as again:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(read_event(again.content), 3)
        again.close()


async def test_deleting_the_secret_signs_everybody_out(serve: MakeClient, plain: Any) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    await sign_in(client, ADMIN)
    assert (await client.get("/dashboard/charts/rollout", headers=HTML)).status == 200
    await plain.delete("stateservice:dashboard:secret")
    assert (await client.get("/dashboard/charts/rollout", headers=HTML)).status == 401
    await sign_in(client, ADMIN)  # under the new key, which the worker made and every other reads
    assert await plain.get("stateservice:dashboard:secret")
    assert (await client.get("/dashboard/charts/rollout", headers=HTML)).status == 200


async def test_deleting_the_secret_ends_the_open_streams_of_sessions(serve: MakeClient, plain: Any) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    await sign_in(client, ADMIN)
    async with client.get("/dashboard/events/charts/rollout") as stream:  # the session's cookie, no bearer
        assert (await asyncio.wait_for(read_event(stream.content), 5))["event"] == "chart"
        await plain.delete(keys.dashboard_secret())
        await client.put("/charts/rollout/state?state=canary&host=a", headers={"Authorization": f"Bearer {ADMIN}"})
        after = await asyncio.wait_for(read_event(stream.content), 2)
        assert after["event"] == "problem" and after["data"]["status"] == 401, after


async def test_the_sign_in_page_says_redis_is_down_as_a_page(serve: MakeClient, plain: Any) -> None:
    client = await serve(ROLLOUT, dashboard=True, scheduler=False, tokens=TOKENS)
    await plain.execute_command("CLIENT", "PAUSE", "4000", "ALL")
    try:
        answer = await client.get("/dashboard/signin", headers=HTML)
        assert answer.status == 503 and "text/html" in answer.headers["Content-Type"]
    finally:
        await plain.execute_command("CLIENT", "UNPAUSE")
