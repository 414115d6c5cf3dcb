"""What `stateservice status` and `stateservice reset` do, given a Redis URL.

`status` reads Redis alone: the charts registered there, each one's definition (the chart
file's text as last served), its state and counters. It needs neither the chart files nor a
running service.
"""

from __future__ import annotations

import json
from datetime import tzinfo
from typing import Any

from stateservice.core.chart import Chart
from stateservice.errors import NotRegistered
from stateservice.store import codec, keys
from stateservice.store.charts import ChartStore
from stateservice.store.clock import local_clock
from stateservice.store.machines import Machines
from stateservice.store.redis.connect import connect
from stateservice.store.redis.replicated import replicated
from stateservice.web.views import describe


async def registered_chart(store: ChartStore, name: str, zone: tzinfo) -> Chart:
    """The chart `name` as its definition stored in Redis says. Raises NotRegistered."""
    definition = await store.definition(name)
    if not definition.get(keys.DEFINITION_SOURCE):
        known = await store.registered()
        raise NotRegistered(
            f"no chart named {name!r} is registered in this Redis"
            + (f"; registered: {', '.join(known)}" if known else " (no chart is; start `stateservice serve` once)")
        )
    return codec.parse_definition(name, definition, zone).unwrap()


async def status(url: str, name: str | None, zone: tzinfo, *, cluster: bool = False) -> list[dict[str, Any]]:
    """The `GET /charts/{chart}` view of one chart, or of every registered chart, plus its path; and after the
    charts, each configuration's counts per state (`GET /configurations/{ref}/counts`). A NAME with a colon
    names a configuration (NAME:VERSION); without one, the chart of that name and every version of a configuration
    of that name (either may be missing, not both).
    """
    redis = connect(url, cluster=cluster)
    try:
        store, machines = ChartStore(redis), Machines(redis, local_clock())
        refs = configurations_named(name, await machines.refs(None if name is None else name.partition(":")[0]))
        if name is not None and ":" in name and not refs:
            raise NotRegistered(f"no configuration {name} is defined in this Redis")
        views = []
        names = await _charts_named(store, name, bool(refs))
        for chart_name in names:
            chart = await registered_chart(store, chart_name, zone)
            views.append({**describe(await store.view(chart)), "path": chart.path})
        for ref in refs:
            views.append(counted(ref, await machines.counts(await machines.require(ref))))
        return views
    finally:
        await redis.aclose()


async def _charts_named(store: ChartStore, name: str | None, configurations: bool) -> list[str]:
    """The charts `status NAME` shows: all without NAME, none for NAME:VERSION; else NAME, unless configurations of
    that name are shown and no chart has it (a chart and a configuration may share a name: both are shown)."""
    if name is None:
        return await store.registered()
    if ":" in name or (configurations and name not in await store.registered()):
        return []
    return [name]


def configurations_named(name: str | None, refs: list[str]) -> list[str]:
    """Of the configurations of NAME's family (or all), those `status NAME` shows: every version for NAME, the one
    for NAME:VERSION, all without NAME."""
    return [r for r in refs if name is None or ":" not in name or r == name]


def counted(ref: str, counts: dict[str, int]) -> dict[str, Any]:
    """A configuration's entry in `status`: `GET /configurations/{ref}/counts` plus the total."""
    return {"configuration": ref, "instances": sum(counts.values()), "counts": counts}


def render(views: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps(views if len(views) != 1 else views[0], indent=2)
    if not views:
        return "no chart or configuration is registered in this Redis (start `stateservice serve` once)"
    lines = []
    for view in views:
        if "configuration" in view:
            lines.append(f"configuration {view['configuration']}  ({view['instances']} instances)")
            lines.extend(f"    {state:<24} {n}" for state, n in view["counts"].items())
            continue
        where = f"{view['path']}, " if view.get("path") else ""  # a service's answer does not say its files' paths
        lines.append(f"chart {view['name']}  ({where}digest {view['digest'][:12]})")
        lines.append(f"  current_state  {view['current_state']}{'  (final)' if view['final'] else ''}")
        lines.append(f"  entered_at     {view['entered_at']}")
        lines.append(f"  hosts counted  {len(view['hosts_counted'])}")
        if view.get("due_at"):
            lines.append(f"  due_at         {view['due_at']}")
        for state in view["states"]:
            mark = "*" if state["name"] == view["current_state"] else " "
            if state["counter"]:
                counter = state["counter"]
                goal = state["target"]["when"]["value"]
                detail = f"{counter['key']}={counter['value']}/{goal} -> {state['target']['name']}"
            elif state["target"]:
                when = state["target"]["when"]
                word = "after" if when["key"] == "elapsed" else "at"
                detail = f"{word} {when['value']} -> {state['target']['name']}"
            else:
                detail = "final"
            lines.append(f"  {mark} {state['name']:<24} {state['func'] or '':<10} {detail}")
    return "\n".join(lines)


async def registered(url: str, name: str, zone: tzinfo, *, cluster: bool = False) -> Chart:
    """The chart `name` as registered in the Redis at `url`. Raises NotRegistered."""
    redis = connect(url, cluster=cluster)
    try:
        return await registered_chart(ChartStore(redis), name, zone)
    finally:
        await redis.aclose()


async def current(url: str, chart: Chart, *, cluster: bool = False) -> str | None:
    """The chart's stored current state, or None when Redis holds none."""
    redis = connect(url, cluster=cluster)
    try:
        state: str | None = await redis.hget(keys.chart_state(chart.name), keys.CURRENT_STATE)
        return state
    finally:
        await redis.aclose()


async def reset(
    url: str,
    chart: Chart,
    host: str,
    actor: str,
    *,
    cluster: bool = False,
    wait_replicas: int = 0,
    wait_timeout: float = 1.0,
) -> tuple[str, str]:
    """Reset `chart` to its initial state (recorded in history, cause `reset`, by `actor`). Returns (from, to).

    With `wait_replicas`, as the service's writes: done only once that many replicas have it (else StoreUnavailable).
    """
    redis = connect(url, cluster=cluster)
    try:
        move = await ChartStore(replicated(redis, wait_replicas, wait_timeout)).reset(chart, host, actor=actor)
        return move.from_state, move.to_state
    finally:
        await redis.aclose()
