"""Baseline servers for the benchmarks, run as subprocesses: `python bench/_servers.py bare|lua ...`.

- `bare`: a bare aiohttp handler returning a fixed body: what the framework alone costs.
- `lua`: `PUT /state?state=X[&host=H]` done as one server-side Lua script (one round trip to Redis): the
  ceiling for a report. It counts, moves the chart at its target and records history like the service,
  on the same key layout, but it is the benchmark's, not the service's.

Both serve N workers on one socket the way `stateservice serve` does (bind once, fork, every worker
accepts), log JSON lines (`serving` with the url, `worker_started`) on stderr, and stop on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable

from serve_variant import apply

BACKLOG = 4096

# KEYS[1] = stateservice:{CHART}                  the chart's state hash
# KEYS[2] = stateservice:{CHART}:hosts:STATE      hosts counted in this visit of STATE (the reported state)
# KEYS[3] = stateservice:{CHART}:hosts:TARGET     hosts counted in the target state (cleared on a move)
# KEYS[4] = stateservice:{CHART}:history          the history stream
# ARGV[1] = STATE reported; ARGV[2] = host, or '' for none; ARGV[3] = target state; ARGV[4] = target count
# ARGV[5] = channel on which a move is published
# Returns {current, counted, state after}: current 0 when STATE is not the current state.
REPORT_LUA = """
local current = redis.call('HGET', KEYS[1], 'current_state')
if current ~= ARGV[1] then return {0, 0, current or ''} end
if ARGV[2] ~= '' and redis.call('SADD', KEYS[2], ARGV[2]) == 0 then return {1, 0, current} end
local n = redis.call('HINCRBY', KEYS[1], 'counter:' .. ARGV[1], 1)
if n < tonumber(ARGV[4]) then return {1, 1, current} end
local t = redis.call('TIME')
local at = t[1] .. '.' .. t[2]
redis.call('HSET', KEYS[1], 'current_state', ARGV[3], 'entered_at', at, 'counter:' .. ARGV[3], 0)
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'at', at, 'from', ARGV[1], 'to', ARGV[3],
           'cause', 'put', 'host', ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[3])
return {1, 1, ARGV[3]}
"""


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), file=sys.stderr, flush=True)


def bare_app() -> object:
    from aiohttp import web

    body = b"ready\n"

    async def fixed(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fixed)
    return app


def lua_app(redis_url: str, chart: str, state: str, target: str, count: int) -> object:
    from aiohttp import web

    from stateservice.store.redis.connect import connect

    key = f"stateservice:{{{chart}}}"
    report_keys = [f"{key}:hosts:{state}", f"{key}:hosts:{target}", f"{key}:history"]
    app = web.Application()
    redis_key: web.AppKey = web.AppKey("redis")
    script_key: web.AppKey = web.AppKey("script")

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = connect(redis_url)
        await redis.hsetnx(key, "current_state", state)
        app[redis_key] = redis
        app[script_key] = redis.register_script(REPORT_LUA)
        yield
        await redis.aclose()

    async def put_state(request: web.Request) -> web.Response:
        asked = request.query.get("state", "")
        host = request.query.get("host", "")
        if asked != state:
            return web.json_response({"error": "unknown_state", "status": 404}, status=404)
        current, counted, after = await request.app[script_key](
            keys=[key, *report_keys], args=[asked, host, target, count, f"{key}:moves"]
        )
        if not current:
            return web.json_response({"error": "not_current", "current_state": after, "status": 406}, status=406)
        headers = {"Stateservice-Counted": "true" if counted else "false", "Stateservice-State": after}
        return web.Response(text=asked + "\n", content_type="text/plain", headers=headers)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_put("/state", put_state)
    app.router.add_get("/healthz", healthz)
    return app


async def _worker(make_app: Callable[[], object], sock: socket.socket) -> None:
    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = make_app()
    assert isinstance(app, web.Application)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=BACKLOG).start()
    emit("worker_started", pid=os.getpid())
    await stop.wait()
    await runner.cleanup()


def serve(make_app: Callable[[], object], port: int, workers: int) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    emit("serving", url=f"http://127.0.0.1:{sock.getsockname()[1]}", workers=workers)
    if workers == 1:
        asyncio.run(_worker(make_app, sock))
        return 0
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: forked before any event loop exists, as the service's are
            try:
                asyncio.run(_worker(make_app, sock))
            finally:
                os._exit(0)
        children.append(pid)
        emit("worker_spawned", worker_pid=pid)

    def forward(signum: int, _: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        os.waitpid(child, 0)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["bare", "lua"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis", default="")
    parser.add_argument("--chart", default="lua")
    parser.add_argument("--state", default="hot")
    parser.add_argument("--target", default="done")
    parser.add_argument("--count", type=int, default=10**12)
    args = parser.parse_args()
    emit("variant", variant=apply())
    if args.kind == "bare":
        return serve(bare_app, args.port, args.workers)
    return serve(lambda: lua_app(args.redis, args.chart, args.state, args.target, args.count), args.port, args.workers)


if __name__ == "__main__":
    sys.exit(main())
