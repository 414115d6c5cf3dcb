"""`stateservice gate` and `stateservice report`: the service's HTTP API as exit codes, for scripts.

Chef `only_if`, Ansible `command` and shell scripts want an exit code, not curl flags:
0 means yes (the gate is open, the report was taken), 1 means no (406: not the current
state), 2 means anything else went wrong (unreachable, another 4xx, a 5xx), with the
reason on stderr. Long waits use the server's long-poll, one request per `--wait` chunk,
never a client-side polling loop. Standard library only, so the commands start fast.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

YES, NO, ERROR = 0, 1, 2
CHUNK = 300.0  # seconds per long-poll request: the server's default --max-wait


def request(method: str, url: str, token: str | None, timeout: float) -> tuple[int, str]:
    """One HTTP request: (status, body). Raises OSError when the service cannot be reached."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode("utf-8", "replace")


def state_url(base: str, state: str, chart: str | None, **params: str) -> str:
    query = {"state": state, **({"chart": chart} if chart else {}), **params}
    return f"{base.rstrip('/')}/state?{urllib.parse.urlencode(query)}"


def explain(status: int, body: str) -> str:
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {status}: {message or body.strip()[:200] or '(no body)'}"


def gate(base: str, state: str, chart: str | None, wait: float, token: str | None) -> int:
    """0 when `state` is current (waiting up to `wait` seconds for it), 1 when not, 2 on any error."""
    deadline = time.monotonic() + wait
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        chunk = min(remaining, CHUNK)
        params = {"wait": f"{chunk:.3f}"} if chunk > 0 else {}
        try:
            status, body = request("GET", state_url(base, state, chart, **params), token, timeout=chunk + 30)
        except OSError as exc:
            print(f"stateservice gate: cannot reach {base}: {exc}", file=sys.stderr)
            return ERROR
        if status == 200:
            return YES
        if status != 406:
            print(f"stateservice gate: {explain(status, body)}", file=sys.stderr)
            return ERROR
        if time.monotonic() >= deadline:
            print(f"stateservice gate: {explain(status, body)}", file=sys.stderr)
            return NO


def report(base: str, state: str, chart: str | None, host: str, token: str | None) -> int:
    """Report `state` done for `host` (idempotent): 0 on 200, 1 on 406, 2 otherwise."""
    try:
        status, body = request("PUT", state_url(base, state, chart, host=host), token, timeout=30)
    except OSError as exc:
        print(f"stateservice report: cannot reach {base}: {exc}", file=sys.stderr)
        return ERROR
    if status == 200:
        return YES
    print(f"stateservice report: {explain(status, body)}", file=sys.stderr)
    return NO if status == 406 else ERROR


def settings(url: str | None, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """The service URL (flag, STATESERVICE_URL, default) and the token (STATESERVICE_TOKEN)."""
    return url or environ.get("STATESERVICE_URL") or "http://127.0.0.1:5000", environ.get("STATESERVICE_TOKEN")
