"""`stateservice approve ID [--input JSON]` and `stateservice approvals [--chart C]`, through a running service.

For the person a rollout waits for: resume a continuation (approve scope, or admin) and list
the ones waiting (read scope), with the token in STATESERVICE_TOKEN. Exit codes as the other
clients': 0 done, 1 refused as such (used, expired, no choice matched), 2 any other error or an
unreachable service, 64 a mistake in the command line.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from typing import Any

from stateservice.cli import client

REFUSED = frozenset({"continuation_used", "continuation_expired", "no_choice_matched"})


def continuation_id(given: str) -> str:
    """The id in `given`: the id itself, `/continuations/ID`, or a whole continuation_url."""
    path = urllib.parse.urlsplit(given).path if "://" in given else given
    return path.rstrip("/").rsplit("/", 1)[-1]


def parse_input(text: str | None) -> bytes:
    """`--input` as the JSON object to send. Raises UsageError when it is not one."""
    if text is None:
        return b"{}"
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise client.UsageError(f"--input is not JSON ({exc}); write it as '{{\"approved\": true}}'") from None
    except RecursionError:
        raise client.UsageError("--input nests too deeply (the service takes at most 200 levels)") from None
    if not isinstance(value, dict):
        raise client.UsageError("--input must be a JSON object such as '{\"approved\": true}'")
    return json.dumps(value).encode()


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def approve(base: str, given: str, input_text: str | None, token: str | None) -> int:
    """Resume the continuation `given` with `--input`: print where the chart went."""
    body = parse_input(input_text)
    ident = continuation_id(given)
    url = f"{base.rstrip('/')}/continuations/{urllib.parse.quote(ident, safe='')}"
    try:
        answer = client.request("POST", url, token, timeout=30, payload=body)
    except client.Unreachable as exc:
        print(f"stateservice approve: cannot reach {base}: {exc}", file=sys.stderr)
        return client.ERROR
    found = answer.json()
    if answer.status == 200:
        owner = found.get("chart") or found.get("instance")
        print(f"{owner}: {found.get('from')} -> {found.get('to')}")
        return client.YES
    print(f"stateservice approve: {answer.explain()}", file=sys.stderr)
    if found.get("error") == "no_choice_matched":
        for choice in found.get("choices", []):
            print(f"  {_choice(choice)}", file=sys.stderr)
    return client.NO if found.get("error") in REFUSED else client.ERROR


def approvals(base: str, chart: str | None, token: str | None, as_json: bool) -> int:
    """List the continuations waiting now (of `chart`): one line each, or the JSON."""
    query = f"?{urllib.parse.urlencode({'chart': chart})}" if chart else ""
    try:
        answer = client.request("GET", f"{base.rstrip('/')}/approvals{query}", token, timeout=30)
    except client.Unreachable as exc:
        print(f"stateservice approvals: cannot reach {base}: {exc}", file=sys.stderr)
        return client.ERROR
    if answer.status != 200:
        print(f"stateservice approvals: {answer.explain()}", file=sys.stderr)
        return client.ERROR
    waiting: list[dict[str, Any]] = answer.json().get("approvals", [])
    for broken in answer.json().get("unreadable", []):  # the others are still listed
        owner = broken.get("chart") or broken.get("instance")
        print(f"stateservice approvals: {owner} cannot be read: {broken.get('message')}", file=sys.stderr)
    if as_json:
        print(json.dumps(waiting, indent=2))
        return client.YES
    if not waiting:
        print("nothing waits for an approval")
    for item in waiting:
        owner = item.get("chart") or item.get("instance")
        expires = item.get("expires_at") or "never"
        print(f"{item['id']}  {owner}  {item['state']}  since {item['created_at']}  expires {expires}")
        for choice in item.get("choices", []):
            print(f"    {_choice(choice)}")
    return client.YES


def _choice(choice: dict[str, Any]) -> str:
    if "default" in choice:
        return f"otherwise -> {choice['default']}"
    return f"{json.dumps(choice.get('when'))} -> {choice.get('next')}"
