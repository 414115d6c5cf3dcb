"""Millions of instances and thousands of events a second (issue #15): memory, creation, events over HTTP and a stream.

1. memory: 1,000,000 instances of one configuration in a private redis-server; Redis memory per
   instance (INFO used_memory after minus before, / N; no history, as the issue measures it),
   for instances by generated id (UUIDs) and, separately, by two properties (host, rack: their
   property index sets included). Creation rate through the store's pipelined script.
2. http: `serve --workers 2`, wrk POSTing events to /statemachines/{id}/events over 10,000
   instances of a two-state cycle (every event is allowed): events/s answered 200, beside the
   same wrk against a bare aiohttp handler that reads the JSON body (the ceiling of this machine's
   HTTP); afterwards the stored outcomes equal the 200s (every event applied once).
3. stream: N "step" events XADDed to the events stream before `serve --workers 2` starts (a chain
   s0 -> s1 -> ... ; 5 events per instance, each with its own event_id); one worker is SIGKILLed
   a moment into the run; events/s until the group has consumed and acknowledged everything;
   then every instance must be at s5, the dead-letter stream empty, one outcome per event sent.
4. counts: after each run the counts hash equals a full recount (SCARD of every state set, and a
   scan of the instances hash).

    .venv/bin/python bench/machines.py [--instances 1000000] [--only memory,http,stream] [--output FILE]

Writes bench/RESULTS-machines.md (or --output) as well as printing it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _harness as h
from redis.asyncio import Redis

from stateservice.core.machines import Configuration, configuration_from
from stateservice.store import keys
from stateservice.store.clock import local_clock
from stateservice.store.machines import Machines

BATCH = 2000
CONNECTIONS = 64


def chain(states: int = 6) -> Configuration:
    names = [f"s{i}" for i in range(states)]
    moves = [{"from": a, "to": b, "event": "step"} for a, b in itertools.pairwise(names)]
    return configuration_from(
        {"name": "chain", "version": "v1", "states": names, "transitions": moves, "starting_state": "s0"}
    )


def cycle() -> Configuration:
    moves = [{"from": "a", "to": "b", "event": "flip"}, {"from": "b", "to": "a", "event": "flip"}]
    return configuration_from(
        {"name": "cycle", "version": "v1", "states": ["a", "b"], "transitions": moves, "starting_state": "a"}
    )


async def used_memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def recount(redis: Redis, configuration: Configuration) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(the counts hash, SCARD of every state's set, a full HSCAN of the instances hash) for `configuration`."""
    stored = await redis.hgetall(keys.instance_counts(configuration.ref))
    counts = {s: int(stored.get(s, 0)) for s in configuration.states}
    sets = {s: int(await redis.scard(keys.instances_in(configuration.ref, s))) for s in configuration.states}
    scanned = dict.fromkeys(configuration.states, 0)
    async for _, record in redis.hscan_iter(keys.instances()):
        ref, _, state = record.partition(" ")
        if ref == configuration.ref:
            scanned[state] += 1
    return counts, sets, scanned


async def memory(url: str, instances: int, by: str) -> dict[str, Any]:
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushall()
    store = Machines(redis, local_clock())
    configuration = chain()
    await store.define(configuration)
    before = await used_memory(redis)
    started = time.perf_counter()
    for first in range(0, instances, BATCH):
        size = min(BATCH, instances - first)
        if by == "id":
            await store.create_many(configuration.ref, ids=[str(uuid.uuid4()) for _ in range(size)])
        else:
            props = [{"host": f"web{n}.example.com", "rack": f"r{n % 50}"} for n in range(first, first + size)]
            await store.create_many(configuration.ref, properties=props)
    seconds = time.perf_counter() - started
    after = await used_memory(redis)
    counts, sets, scanned = await recount(redis, configuration)
    await store.close()
    await redis.aclose()
    return {
        "by": by,
        "instances": instances,
        "bytes_per_instance": (after - before) / instances,
        "created_per_s": instances / seconds,
        "counts_exact": counts == sets == scanned and sum(counts.values()) == instances,
    }


def report_memory(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| instances named by | instances | Redis bytes / instance | target | created / s | counts = recount |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        verdict = "PASS" if r["bytes_per_instance"] <= 300 else "MISS"
        target = f"<= 300: {verdict}" if r["by"] == "id" else "(no target; reported)"
        lines.append(
            f"| {r['by']} | {r['instances']:,} | {r['bytes_per_instance']:.0f} | {target} | "
            f"{r['created_per_s']:,.0f} | {r['counts_exact']} |"
        )
    return lines


# each request: an event for a random instance of the cycle (every event is allowed there); the
# service generates the event_id, so every request is a new event
EVENTS_LUA = """
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
wrk.headers["Content-Type"] = "application/json"
function request()
  local path = "/statemachines/i" .. math.random(0, %(instances)d - 1) .. "/events"
  return wrk.format("POST", path, nil, '{"event": "flip", "originator": "bench"}')
end
"""


async def prepare_cycle(url: str, instances: int) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushall()
    store = Machines(redis, local_clock())
    await store.define(cycle())
    for first in range(0, instances, BATCH):
        await store.create_many("cycle:v1", ids=[f"i{n}" for n in range(first, min(first + BATCH, instances))])
    await store.close()
    await redis.aclose()


async def outcomes_stored(url: str) -> int:
    redis = Redis.from_url(url, decode_responses=True)
    found = 0
    async for _ in redis.scan_iter(match=keys.event_outcome("*", "*"), count=5000):
        found += 1
    await redis.aclose()
    return found


def http_events(url: str, logdir: Path, seconds: float, instances: int = 10_000) -> list[dict[str, Any]]:
    """wrk POSTing events to `serve --workers 2`, and the same wrk against bare aiohttp with 2 workers."""
    asyncio.run(prepare_cycle(url, instances))
    chart = h.REPO / "examples" / "states.yaml"
    served = h.service("events", chart, url, logdir, workers=2, log_level="warning", extra=["--no-stream"])
    result = post_events(served, seconds, instances)
    counts, sets, scanned = asyncio.run(recount_url(url, cycle()))
    exact = counts == sets == scanned and sum(counts.values()) == instances
    service = {"server": "stateservice, 2 workers", "result": result, "stored": asyncio.run(outcomes_stored(url))}
    bare = post_events(h.baseline("bare", "bare", logdir, workers=2), seconds, instances)
    return [
        {**service, "exact": exact},
        {"server": "bare aiohttp, 2 workers", "result": bare, "stored": None, "exact": None},
    ]


def post_events(server: h.Server, seconds: float, instances: int) -> h.LoadResult:
    """Start `server`, run wrk's event POSTs against it for `seconds`, stop it."""
    server.start()
    try:
        request = EVENTS_LUA % {"instances": instances}
        return h.wrk_load(server.url + "/", method="POST", connections=CONNECTIONS, duration=seconds, request=request)
    finally:
        server.stop()


async def recount_url(url: str, configuration: Configuration) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    redis = Redis.from_url(url, decode_responses=True)
    try:
        return await recount(redis, configuration)
    finally:
        await redis.aclose()


def report_http(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| server | requests/s answered 200 | p50 ms | p99 ms | other statuses | outcomes stored | counts = recount |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        res = r["result"]
        ok = res.statuses.get(200, 0)
        others = {k: v for k, v in res.statuses.items() if k != 200}
        lines.append(
            f"| {r['server']} | {ok / res.seconds:,.0f} | {res.latencies_ms['p50']:.1f} | "
            f"{res.latencies_ms['p99']:.1f} | {others or '-'} | {r['stored'] if r['stored'] is not None else '-'} "
            f"| {r['exact'] if r['exact'] is not None else '-'} |"
        )
    answered = rows[0]["result"].statuses.get(200, 0)
    service_rate = answered / rows[0]["result"].seconds
    verdict = "PASS" if service_rate >= 5000 else "MISS"
    unanswered = rows[0]["stored"] - answered  # applied, but wrk stopped before reading the answer
    lines += [
        "",
        f"Target: >= 5,000 events/s over HTTP through 2 workers: {service_rate:,.0f}/s, {verdict}. "
        f"Outcomes stored {rows[0]['stored']:,} = {answered:,} answered 200 + {unanswered} applied while wrk "
        f"stopped ({CONNECTIONS} connections were in flight): "
        + ("exactly once." if 0 <= unanswered <= CONNECTIONS else "MISMATCH."),
    ]
    return lines


async def produce(url: str, instances: int, per: int) -> str:
    """XADD `per` step events for each instance, round by round, pipelined; the last entry's id."""
    redis = Redis.from_url(url, decode_responses=True)
    last = ""
    for round_ in range(per):
        for first in range(0, instances, 5000):
            async with redis.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + 5000, instances)):
                    fields = {keys.EVENT_DEST: f"c{n}", keys.EVENT_NAME: "step", keys.EVENT_ID: f"e{n}-{round_}"}
                    pipe.xadd(keys.events_stream(), fields)  # type: ignore[arg-type]
                last = (await pipe.execute())[-1]
    await redis.aclose()
    return str(last)


async def consumed(redis: Redis, last: str) -> bool:
    groups = await redis.xinfo_groups(keys.events_stream())
    group = next((g for g in groups if g["name"] == keys.MACHINES_GROUP), None)
    return group is not None and group["pending"] == 0 and group["last-delivered-id"] == last


async def wait_consumed(url: str, last: str, timeout: float) -> float:
    redis = Redis.from_url(url, decode_responses=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if await consumed(redis, last):
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the stream was not consumed within {timeout} s")
    finally:
        await redis.aclose()


async def prepare_chain(url: str, instances: int) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushall()
    store = Machines(redis, local_clock())
    await store.define(chain())
    for first in range(0, instances, BATCH):
        await store.create_many("chain:v1", ids=[f"c{n}" for n in range(first, min(first + BATCH, instances))])
    await store.close()
    await redis.aclose()


def stream_events(url: str, logdir: Path, instances: int, per: int = 5, kill: bool = True) -> dict[str, Any]:
    """Events from the stream through `serve --workers 2`, one worker SIGKILLed a second in."""
    asyncio.run(prepare_chain(url, instances))
    chart = h.REPO / "examples" / "states.yaml"
    served = h.service(
        "stream", chart, url, logdir, workers=2, log_level="warning", extra=["--stream-claim-after", "2"]
    ).start()
    try:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            producing = pool.submit(asyncio.run, produce(url, instances, per))
            if kill:
                time.sleep(1.0)
                os.kill(served.worker_pids()[0], signal.SIGKILL)
            last = producing.result()
        produced = time.monotonic()
        done = asyncio.run(wait_consumed(url, last, timeout=600))
    finally:
        served.stop()
    counts, sets, scanned = asyncio.run(recount_url(url, chain()))
    return {
        "events": instances * per,
        "seconds": done - started,
        "produce_seconds": produced - started,
        "killed": kill,
        "all_at_end": counts.get(f"s{per}") == instances,
        "exact": counts == sets == scanned,
        "outcomes": asyncio.run(outcomes_stored(url)),
        "dead": asyncio.run(dead_letters(url)),
    }


async def dead_letters(url: str) -> int:
    redis = Redis.from_url(url, decode_responses=True)
    try:
        return int(await redis.xlen(keys.dead_letters()))
    finally:
        await redis.aclose()


def report_stream(r: dict[str, Any]) -> list[str]:
    rate = r["events"] / r["seconds"]
    verdict = "PASS" if rate >= 10_000 else "MISS"
    once = r["all_at_end"] and r["outcomes"] == r["events"] and r["dead"] == 0
    return [
        "| events | worker SIGKILLed | seconds (first XADD to all acknowledged) | producer's own seconds | events/s "
        "| every instance at its last state | outcomes stored | dead letters | counts = recount |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {r['events']:,} | {r['killed']} | {r['seconds']:.1f} | {r['produce_seconds']:.1f} | {rate:,.0f} | "
        f"{r['all_at_end']} | {r['outcomes']:,} | {r['dead']} | {r['exact']} |",
        "",
        f"Target: >= 10,000 events/s from the stream through 2 workers: {verdict}. Exactly once (every event applied, "
        f"none twice, nothing dead): {once}.",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--only", default="memory,http,stream")
    parser.add_argument("--seconds", type=float, default=10.0, help="each wrk run")
    parser.add_argument("--stream-instances", type=int, default=40_000, help="x 5 events each")
    parser.add_argument("--output", type=Path, default=h.REPO / "bench" / "RESULTS-machines.md")
    args = parser.parse_args()
    only = set(args.only.split(","))
    command = "bench/machines.py " + " ".join(sys.argv[1:])
    lines = ["# Instances and events", "", f"`{command.strip()}`", ""]
    lines += [*(f"- {k}: {v}" for k, v in h.machine_rows()), ""]
    with tempfile.TemporaryDirectory() as work:
        server = h.RedisProcess(Path(work) / "redis")
        server.start()
        try:
            if "memory" in only:
                rows = [asyncio.run(memory(server.url, args.instances, by)) for by in ("id", "properties")]
                lines += ["## Memory and creation", "", *report_memory(rows), ""]
            if "http" in only:
                rows = http_events(server.url, Path(work), args.seconds)
                lines += ["## Events over HTTP", "", *report_http(rows), ""]
            if "stream" in only:
                result = stream_events(server.url, Path(work), args.stream_instances)
                lines += ["## Events from the stream", "", *report_stream(result), ""]
        finally:
            server.stop()
    lines += [f"Load average at the end: {h.load_average()}", ""]
    text = "\n".join(lines)
    print(text)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
