"""Slots, failure reports, halts and windows through a real server and a real redis-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from stateservice.core.chart import Chart
from stateservice.core.windows import DAYS
from stateservice.store import keys
from tests.support.app import Client, MakeClient
from tests.support.charts import load
from tests.support.service import Services


def rollout_chart(extra: str = "concurrency: 2", target: int = 4, name: str = "roll") -> Chart:
    """canary (target hosts, with `extra` keys) -> done."""
    lines = "".join(f"    {line}\n" for line in extra.splitlines())
    return load(
        f"name: {name}\ncurrent_state: canary\nstates:\n"
        "  - name: canary\n    func: increment\n    current: {key: hosts, value: 0}\n"
        f"    target: {{name: done, when: {{key: hosts, value: {target}}}}}\n{lines}"
        "  - name: done\n",
        path=f"{name}.yaml",
    )


async def body(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    found: dict[str, Any] = await resp.json()
    return found


async def slot(client: Client, host: str, status: int = 200, state: str = "canary") -> dict[str, Any]:
    return await body(await client.put(f"/charts/roll/slots/{host}?state={state}"), status)


async def history(client: Client) -> list[dict[str, Any]]:
    return (await body(await client.get("/charts/roll/history"), 200))["history"]  # type: ignore[no-any-return]


# -- slots ---------------------------------------------------------------------------------------


async def test_slots_are_granted_up_to_the_limit_renewed_and_released(serve: MakeClient) -> None:
    client = await serve(rollout_chart("concurrency: 2\nslot_ttl: 5m"))
    first = await slot(client, "web1")
    assert (first["host"], first["held"], first["limit"], first["renewed"]) == ("web1", 1, 2, False)
    granted = datetime.fromisoformat(first["granted_at"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(first["expires_at"].replace("Z", "+00:00")) - granted == timedelta(minutes=5)
    await slot(client, "web2")
    full = await client.put("/charts/roll/slots/web3?state=canary")
    refused = await body(full, 406)
    assert (refused["error"], refused["held"], refused["limit"]) == ("no_free_slot", 2, 2)
    assert 1 <= int(full.headers["Retry-After"]) <= 60
    again = await slot(client, "web1")  # asking again renews: never a second slot
    assert again["renewed"] and again["held"] == 2
    released = await body(await client.delete("/charts/roll/slots/web1?state=canary"), 200)
    assert released["released"] is True
    assert (await body(await client.delete("/charts/roll/slots/web1?state=canary"), 200))["released"] is False
    assert (await slot(client, "web3"))["held"] == 2
    listed = await body(await client.get("/charts/roll/slots"), 200)
    assert (listed["state"], listed["limit"], listed["held"]) == ("canary", 2, 2)
    assert [s["host"] for s in listed["slots"]] == ["web2", "web3"]


async def test_a_counted_report_frees_the_hosts_slot(serve: MakeClient, plain: Redis) -> None:
    client = await serve(rollout_chart("concurrency: 1"))
    await slot(client, "web1")
    await body(await client.put("/charts/roll/slots/web2?state=canary"), 406)
    resp = await client.put("/charts/roll/state?state=canary&host=web1")
    assert resp.status == 200 and resp.headers["Stateservice-Counted"] == "true"
    assert await plain.hkeys(keys.chart_slots("roll", "canary")) == []
    assert (await slot(client, "web2"))["held"] == 1
    fields = await plain.hgetall(keys.chart_state("roll"))
    assert int(fields[keys.slot_hold_count_field("canary")]) == 1  # web1's hold time went into the estimate


async def test_the_single_chart_form_and_its_errors(serve: MakeClient) -> None:
    client = await serve(rollout_chart())
    assert (await body(await client.put("/slots/web1?state=canary"), 200))["chart"] == "roll"
    assert (await body(await client.delete("/slots/web1?state=canary"), 200))["released"] is True
    assert (await body(await client.put("/slots/web1?state=done"), 406))["error"] == "not_current"
    assert (await body(await client.put("/slots/web1?state=nope"), 404))["error"] == "unknown_state"
    assert (await body(await client.put("/slots/web1"), 400))["error"] == "missing_parameter"
    bad = await body(await client.put("/slots/web%201?state=canary"), 400)
    assert bad["error"] == "invalid_name" and "':', '@'" in bad["message"]


async def test_a_state_without_concurrency_has_no_slots(serve: MakeClient) -> None:
    client = await serve(rollout_chart(""))
    assert (await body(await client.put("/charts/roll/slots/web1?state=canary"), 409))["error"] == "no_concurrency"
    assert (await body(await client.get("/charts/roll/slots"), 409))["error"] == "no_concurrency"


async def test_an_unrenewed_slot_expires_is_listed_and_recorded(serve: MakeClient, plain: Redis) -> None:
    client = await serve(rollout_chart("concurrency: 1\nslot_ttl: 1s"))
    await slot(client, "web1")
    await body(await client.put("/charts/roll/slots/web2?state=canary"), 406)
    await asyncio.sleep(1.2)
    assert (await slot(client, "web2"))["held"] == 1  # web1's slot expired: free again
    detail = await body(await client.get("/charts/roll"), 200)
    assert [e["host"] for e in detail["expired"]] == ["web1"]
    assert detail["slots_held"] == ["web2"]
    (expired,) = [h for h in await history(client) if h["cause"] == "slot_expired"]
    assert (expired["host"], expired["from"], expired["to"], expired["actor"]) == ("web1", "canary", "canary", "time")


async def test_many_hosts_racing_never_hold_more_than_the_limit(serve: MakeClient, plain: Redis) -> None:
    """200 hosts ask at once, over and over, while a sampler watches the slot hash; holders report when done."""
    client = await serve(rollout_chart("concurrency: 5", target=200), unlimited=True)

    async def put(n: int, path: str) -> tuple[int, str]:
        resp = await client.put(path)
        return resp.status, await resp.text()

    seen = await race(put, plain, work=0.01, pause=0.005, every=0.002)
    assert max(seen) <= 5 and max(seen) >= 2
    assert (await body(await client.get("/charts/roll"), 200))["current_state"] == "done"


Put = Callable[[int, str], Awaitable[tuple[int, str]]]  # host n's PUT of a path: status and body


async def race(put: Put, plain: Redis, *, work: float, pause: float, every: float, hosts: int = 200) -> list[int]:
    """`hosts` hosts take a slot of `canary` (asking again after `pause` while all are held), work, and report;
    meanwhile the slot hash's size is sampled `every` seconds. The samples."""
    seen: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            seen.append(await plain.hlen(keys.chart_slots("roll", "canary")))
            await asyncio.sleep(every)

    async def host(n: int) -> None:
        while True:
            status, text = await put(n, f"/charts/roll/slots/h{n}?state=canary")
            if status == 200:
                await asyncio.sleep(work)
                status, text = await put(n, f"/charts/roll/state?state=canary&host=h{n}")
                assert status == 200, text
                return
            assert status == 406, text
            await asyncio.sleep(pause)

    sampler = asyncio.create_task(sample())
    await asyncio.wait_for(asyncio.gather(*(host(n) for n in range(hosts))), 120)
    done.set()
    await sampler
    return seen


# -- failures and halts ----------------------------------------------------------------------------


async def test_a_failure_is_recorded_once_not_counted_and_frees_the_slot(serve: MakeClient, plain: Redis) -> None:
    client = await serve(rollout_chart("concurrency: 2\nmax_failures: 2"))
    await slot(client, "web1")
    resp = await client.put("/charts/roll/state?state=canary&host=web1&result=failure&reason=exit%203")
    assert resp.status == 200, await resp.text()
    assert (resp.headers["Stateservice-Counted"], resp.headers["Stateservice-Halted"]) == ("false", "false")
    again = await client.put("/charts/roll/state?state=canary&host=web1&result=failure")
    assert again.status == 200  # the same host again: recorded once
    detail = await body(await client.get("/charts/roll"), 200)
    assert [(f["host"], f["reason"]) for f in detail["failures"]] == [("web1", "exit 3")]
    assert detail["hosts_counted"] == [] and detail["slots_held"] == [] and detail["halted"] is False
    (failure,) = [h for h in await history(client) if h["cause"] == "failure"]
    assert (failure["host"], failure["reason"]) == ("web1", "exit 3")


async def test_the_budget_halts_the_chart_and_everything_answers_409_until_resumed(serve: MakeClient) -> None:
    client = await serve(rollout_chart("concurrency: 2\nmax_failures: 50%", target=4))  # 50% of 4: 2 failures
    await client.put("/charts/roll/state?state=canary&host=web1&result=failure")
    resp = await client.put("/charts/roll/state?state=canary&host=web2&result=failure&reason=disk%20full")
    assert resp.headers["Stateservice-Halted"] == "true"
    for method, url in [
        ("GET", "/charts/roll/state?state=canary"),
        ("GET", "/charts/roll/state?state=canary&wait=5"),
        ("PUT", "/charts/roll/state?state=canary&host=web3"),
        ("PUT", "/charts/roll/state?state=canary&host=web3&result=failure"),
        ("PUT", "/charts/roll/slots/web3?state=canary"),
    ]:
        halted = await body(await client.request(method, url), 409)
        assert halted["error"] == "halted" and "max_failures 50%" in halted["reason"], (method, url)
    detail = await body(await client.get("/charts/roll"), 200)
    assert detail["halted"] is True and detail["halted_at"]
    halt = (await history(client))[0]
    assert (halt["cause"], halt["from"], halt["to"], halt["host"]) == ("halt", "canary", "canary", "web2")
    resumed = await body(await client.post("/charts/roll/resume"), 200)
    assert resumed == {"chart": "roll", "halted": False, "resumed": True}
    assert (await client.get("/charts/roll/state?state=canary")).status == 200
    assert (await body(await client.post("/charts/roll/resume"), 200))["resumed"] is False
    assert (await history(client))[0]["cause"] == "resume"


async def test_a_halt_wakes_a_long_poll_with_409(serve: MakeClient) -> None:
    client = await serve(rollout_chart())
    waiting = asyncio.create_task(client.get("/charts/roll/state?state=done&wait=20"))
    await asyncio.sleep(0.3)
    await body(await client.post("/charts/roll/halt?reason=bad%20canary"), 200)
    resp = await asyncio.wait_for(waiting, 10)
    assert (await body(resp, 409))["reason"] == "bad canary"


async def test_an_operator_halt_is_recorded_with_its_reason_and_moving_on_ends_it(serve: MakeClient) -> None:
    client = await serve(rollout_chart("", target=1))
    halted = await body(await client.post("/charts/roll/halt?reason=wait%20for%20the%20CAB"), 200)
    assert halted == {"chart": "roll", "state": "canary", "halted": True, "reason": "wait for the CAB"}
    assert (await body(await client.post("/charts/roll/halt?reason=again"), 200))["reason"] == "again"
    assert [h["cause"] for h in await history(client)].count("halt") == 1  # halting a halted chart: nothing new
    await body(await client.post("/charts/roll/reset"), 200)  # a reset starts over: no halt
    assert (await client.get("/charts/roll/state?state=canary")).status == 200


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("result=maybe&host=h", "result='maybe' must be success or failure"),
        ("result=failure", "query parameter 'host' is required"),
        ("result=failure&host=h&reason=" + "x" * 201, "reason must be at most 200 characters"),
    ],
)
async def test_bad_failure_reports_say_what_is_wrong(serve: MakeClient, query: str, message: str) -> None:
    client = await serve(rollout_chart())
    answer = await body(await client.put(f"/charts/roll/state?state=canary&{query}"), 400)
    assert message in answer["message"]


# -- windows -------------------------------------------------------------------------------------


def _window_around(now: datetime, opens_in: timedelta, lasts: timedelta) -> str:
    start, end = now + opens_in, now + opens_in + lasts
    return (
        f'windows: [{{days: [{DAYS[start.weekday()]}], from: "{start:%H:%M}", to: "{end:%H:%M}"}}]'
        if start.date() == end.date()
        else ""
    )


async def test_outside_its_window_a_gate_and_a_slot_say_when_it_opens(serve: MakeClient) -> None:
    now = datetime.now(UTC)
    later = _window_around(now, timedelta(hours=2), timedelta(minutes=30))
    if not later:  # near midnight UTC: a window two hours on would cross it; use tomorrow's whole day instead
        later = f'windows: [{{days: [{DAYS[(now.weekday() + 1) % 7]}], from: "00:00", to: "00:00"}}]'
    client = await serve(rollout_chart("concurrency: 2\n" + later))
    resp = await client.get("/charts/roll/state?state=canary")
    outside = await body(resp, 406)
    assert outside["error"] == "outside_window" and outside["opens_at"]
    opens = datetime.fromisoformat(outside["opens_at"].replace("Z", "+00:00"))
    assert now < opens <= now + timedelta(hours=26)
    assert abs(int(resp.headers["Retry-After"]) - (opens - now).total_seconds()) < 60
    assert (await body(await client.put("/charts/roll/slots/web1?state=canary"), 406))["error"] == "outside_window"
    counted = await client.put("/charts/roll/state?state=canary&host=web1")  # reports are still taken
    assert counted.status == 200


async def test_inside_its_window_the_gate_is_open(serve: MakeClient) -> None:
    now = datetime.now(UTC)
    today = DAYS[now.weekday()]
    whole_day = f'windows: [{{days: [{today}], from: "00:00", to: "00:00"}}]'
    client = await serve(rollout_chart(whole_day))
    assert (await client.get("/charts/roll/state?state=canary")).status == 200
    blackout = await serve(rollout_chart(f"blackouts: [{now:%Y-%m-%d}]", name="roll2"))
    refused = await body(await blackout.get("/charts/roll2/state?state=canary"), 406)
    assert refused["opens_at"].startswith((now + timedelta(days=1)).strftime("%Y-%m-%dT00:00"))


async def test_the_chart_view_shows_each_states_rollout(serve: MakeClient) -> None:
    client = await serve(rollout_chart("concurrency: 3\nmax_failures: 10%"))
    detail = await body(await client.get("/charts/roll"), 200)
    canary = detail["states"][0]
    assert (canary["concurrency"], canary["max_failures"], canary["windows"]) == (3, "10%", [])
    assert json.dumps(detail)  # plain JSON throughout


def test_two_services_of_two_workers_never_grant_more_than_the_limit(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    """The quality bar: 200 hosts race through 2 `serve` processes x 2 workers for 5 slots; a sampler watches Redis."""
    path = tmp_path / "roll.yaml"
    path.write_text(rollout_chart("concurrency: 5", target=200).source)
    urls = [services.start(path, redis_url=redis_url, workers=2).url for _ in range(2)]
    asyncio.run(_race(urls, redis_url))


async def _race(urls: list[str], redis_url: str) -> None:
    plain = Redis.from_url(redis_url, decode_responses=True)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def put(n: int, path: str) -> tuple[int, str]:
                async with session.put(urls[n % len(urls)] + path) as resp:
                    return resp.status, await resp.text()

            seen = await race(put, plain, work=0.02, pause=0.01, every=0.001)
        assert 2 <= max(seen) <= 5, max(seen)
        assert await plain.hget(keys.chart_state("roll"), keys.CURRENT_STATE) == "done"
    finally:
        await plain.aclose()


async def test_rollout_metrics(serve: MakeClient) -> None:
    client = await serve(rollout_chart("concurrency: 1\nmax_failures: 1", name="metered"))
    await client.put("/charts/metered/slots/web1?state=canary")
    await client.put("/charts/metered/slots/web2?state=canary")  # refused: a wait
    await client.put("/charts/metered/state?state=canary&host=web1&result=failure")  # frees web1's slot, halts
    text = await (await client.get("/metrics")).text()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("chart") == "metered"
    }
    assert values["stateservice_slots_held"] == 1  # as the last slot operation saw it
    assert values["stateservice_slot_waits_total"] == 1
    assert values["stateservice_failures_total"] == 1
    assert values["stateservice_halted"] == 1
    await client.post("/charts/metered/resume")
    text = await (await client.get("/metrics")).text()
    assert 'stateservice_halted{chart="metered"} 0.0' in text


# -- safe retries --------------------------------------------------------------------------------


async def test_a_repeated_counted_report_is_200_even_after_the_chart_moved_on(serve: MakeClient) -> None:
    client = await serve(rollout_chart("", target=2))
    assert (await client.put("/charts/roll/state?state=canary&host=web1")).status == 200
    assert (await client.put("/charts/roll/state?state=canary&host=web2")).status == 200  # -> done
    retry = await client.put("/charts/roll/state?state=canary&host=web1")  # its answer was lost: it asks again
    assert retry.status == 200, await retry.text()
    assert (retry.headers["Stateservice-Counted"], retry.headers["Stateservice-State"]) == ("false", "done")
    late = await client.put("/charts/roll/state?state=canary&host=web3")  # never counted: too late
    assert (await body(late, 406))["current_state"] == "done"
    assert (await body(await client.get("/charts/roll"), 200))["states"][0]["counter"]["value"] == 2


async def test_a_repeat_on_a_halted_chart_is_still_told_it_counted(serve: MakeClient) -> None:
    client = await serve(rollout_chart("max_failures: 1", target=3))
    assert (await client.put("/charts/roll/state?state=canary&host=web1")).status == 200
    await client.put("/charts/roll/state?state=canary&host=web2&result=failure")  # halts
    retry = await client.put("/charts/roll/state?state=canary&host=web1")
    assert retry.status == 200 and retry.headers["Stateservice-Counted"] == "false"
    assert (await body(await client.put("/charts/roll/state?state=canary&host=web3"), 409))["error"] == "halted"


# -- operator actions ------------------------------------------------------------------------------


async def test_advance_moves_on_now_with_the_operator_recorded(serve: MakeClient) -> None:
    client = await serve(rollout_chart("max_failures: 1", target=10))
    await client.put("/charts/roll/state?state=canary&host=web1&result=failure")  # halted
    moved = await body(await client.post("/charts/roll/advance?reason=enough%20canaries"), 200)
    assert (moved["from"], moved["to"]) == ("canary", "done")
    record = (await history(client))[0]
    assert (record["cause"], record["reason"], record["actor"]) == ("operator", "enough canaries", "-")
    detail = await body(await client.get("/charts/roll"), 200)
    assert (detail["current_state"], detail["halted"]) == ("done", False)  # entering a state ends the halt
    final = await body(await client.post("/charts/roll/advance"), 409)
    assert final["error"] == "not_reportable" and "no next state" in final["message"]


async def test_forget_lets_a_host_report_again(serve: MakeClient) -> None:
    client = await serve(rollout_chart("", target=3))
    await client.put("/charts/roll/state?state=canary&host=web1")
    await client.put("/charts/roll/state?state=canary&host=web2&result=failure")
    forgot = await body(await client.post("/charts/roll/forget?host=web1"), 200)
    assert (forgot["report"], forgot["failure"]) == (True, False)
    assert (await body(await client.post("/charts/roll/forget?host=web2"), 200))["failure"] is True
    assert (await body(await client.post("/charts/roll/forget?host=web9"), 200))["report"] is False
    detail = await body(await client.get("/charts/roll"), 200)
    assert detail["hosts_counted"] == [] and detail["failures"] == []
    assert detail["states"][0]["counter"]["value"] == 0
    again = await client.put("/charts/roll/state?state=canary&host=web1")
    assert again.headers["Stateservice-Counted"] == "true"
    causes = [(h["cause"], h["host"], h["reason"]) for h in await history(client) if h["cause"] == "forget"]
    assert causes == [("forget", "web2", "failure"), ("forget", "web1", "report")]
    assert (await body(await client.post("/charts/roll/forget"), 400))["error"] == "missing_parameter"


async def test_a_release_by_hand_is_recorded(serve: MakeClient) -> None:
    client = await serve(rollout_chart("concurrency: 1"))
    await slot(client, "dead-host")
    await body(await client.delete("/charts/roll/slots/dead-host?state=canary"), 200)
    record = (await history(client))[0]
    assert (record["cause"], record["host"]) == ("release", "dead-host")


async def test_the_history_shows_who_held_a_slot_when(serve: MakeClient) -> None:
    client = await serve(rollout_chart("concurrency: 2", target=3))
    await slot(client, "web1")
    await slot(client, "web1")  # a renewal: not history
    await client.put("/charts/roll/state?state=canary&host=web1")
    events = [(h["cause"], h["host"], h["reason"]) for h in reversed(await history(client))]
    assert events == [("slot", "web1", None), ("release", "web1", "reported")]
