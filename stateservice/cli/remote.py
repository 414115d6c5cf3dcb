"""Commands that work through a running service: `status --url`, `reset --url`, and the operator commands
(`halt`, `resume`, `advance`, `forget`, `release`).

For an operator whose machine reaches the service but not its Redis (the usual case once
Redis sits on a private network): `GET /charts[/{chart}]` and `POST /charts/{chart}/reset`,
with the token in STATESERVICE_TOKEN (read scope for status, admin for reset and the operator
commands, report for a host releasing its own slot).
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from typing import Any

from stateservice.cli import admin, client


class Refused(Exception):
    """The service answered an error: its explanation (`HTTP 404: no chart named ...`)."""


def views(base: str, chart: str | None, token: str | None) -> list[dict[str, Any]]:
    """The `GET /charts/{chart}` view of one chart, or of every chart the service serves; then each configuration's
    counts (of the one NAME:VERSION, or of every version of NAME: with NAME, the chart NAME too when one is served)."""
    family = None if chart is None else chart.partition(":")[0]
    refs = admin.configurations_named(chart, act(base, "GET", "/configurations", token, name=family)["configurations"])
    if chart is None or (refs and ":" not in chart):  # a chart and a configuration may share a name: show both
        served = [c["name"] for c in act(base, "GET", "/charts", token)["charts"]]
        names = served if chart is None else [chart] if chart in served else []
    else:
        names = [] if ":" in chart else [chart]
    found = [act(base, "GET", f"/charts/{urllib.parse.quote(name)}", token) for name in names]
    for ref in refs:
        counts = act(base, "GET", f"/configurations/{urllib.parse.quote(ref)}/counts", token)["counts"]
        found.append(admin.counted(ref, counts))
    return found


def current(base: str, chart: str, token: str | None) -> str | None:
    found = act(base, "GET", f"/charts/{urllib.parse.quote(chart)}", token).get("current_state")
    return str(found) if found is not None else None


def reset(base: str, chart: str, host: str, token: str | None) -> tuple[str, str]:
    """Reset `chart` through the service (recorded with this token's name as the actor). Returns (from, to)."""
    body = act(base, "POST", f"/charts/{urllib.parse.quote(chart)}/reset", token, host=host)
    return body.get("from") or "", str(body["to"])


def act(base: str, method: str, path: str, token: str | None, **query: str | None) -> dict[str, Any]:
    """One request to the service (`GET /charts`, `POST /charts/{chart}/halt`, ...): its JSON answer.

    Raises Refused for any answer but 200, client.Unreachable when the service cannot be reached.
    """
    given = {k: v for k, v in query.items() if v is not None}
    url = base.rstrip("/") + path + (f"?{urllib.parse.urlencode(given)}" if given else "")
    answer = client.request(method, url, token, timeout=30)
    if answer.status != 200:
        raise Refused(answer.explain())
    return answer.json()


def operate(command: str, base: str, chart: str, token: str | None, **options: str | None) -> str:
    """The operator commands: what each asks of the service, and the line it prints."""
    where = f"/charts/{urllib.parse.quote(chart)}"
    if command == "halt":
        done = run(command, act, base, "POST", where + "/halt", token, reason=options.get("reason"))
        return f"chart {chart!r} halted in {done['state']!r}: {done['reason']}"
    if command == "resume":
        done = run(command, act, base, "POST", where + "/resume", token)
        return f"chart {chart!r} resumed" if done["resumed"] else f"chart {chart!r} was not halted"
    if command == "advance":
        done = run(command, act, base, "POST", where + "/advance", token, reason=options.get("reason"))
        return f"chart {chart!r} advanced: {done['from']} -> {done['to']}"
    host = options["host"] or ""
    if command == "forget":
        done = run(command, act, base, "POST", where + "/forget", token, host=host)
        what = " and ".join(w for w in ("report", "failure") if done[w]) or "nothing"
        return f"forgot {what} of {host} in {done['state']!r}"
    slot = f"{where}/slots/{urllib.parse.quote(host)}"
    done = run(command, act, base, "DELETE", slot, token, state=options.get("state"))
    return f"released {host}'s slot in {done['state']!r}" if done["released"] else f"{host} held no slot"


def run(command: str, action: Any, *args: Any, **kwargs: Any) -> Any:
    """`action(*args)`, with an unreachable or refusing service said on stderr as the clients say it (exit 2)."""
    try:
        return action(*args, **kwargs)
    except client.Unreachable as exc:
        print(f"stateservice {command}: cannot reach {args[0]}: {exc}", file=sys.stderr)
    except Refused as exc:
        print(f"stateservice {command}: {exc}", file=sys.stderr)
    except (KeyError, TypeError, json.JSONDecodeError):
        print(f"stateservice {command}: {args[0]} answered something that is not stateservice's API", file=sys.stderr)
    raise SystemExit(client.ERROR)
