"""The Ansible example run for real: ansible-playbook (ansible-core) against a live service.

examples/ansible/gate.yml with examples/ansible/inventory.ini (several hosts, all
`ansible_connection=local`) and the chart it rolls through, examples/ansible/fleet.yaml, whose
first state waits for as many reports as the inventory has hosts. What the service was told is
read back from it: the chart's history and view, and its `request` / `report_repeated` log events.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stateservice.core.parse import parse
from stateservice.security.tokens import hash_secret
from tests.support.service import REPO, ServiceProcess, Services

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "ansible"
PLAYBOOK = EXAMPLE / "gate.yml"
INVENTORY = EXAMPLE / "inventory.ini"
CHART = EXAMPLE / "fleet.yaml"
PLAYBOOK_TIMEOUT = 60.0


def inventory_hosts() -> list[str]:
    """The host names of inventory.ini's host groups (sections other than `[...:vars]`)."""
    hosts, section = [], ""
    for raw in INVENTORY.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line
        elif line and not section.endswith(":vars]"):
            hosts.append(line.split()[0])
    return hosts


HOSTS = inventory_hosts()


@pytest.fixture
def service(services: Services, redis_url: str) -> ServiceProcess:
    return services.start(CHART, redis_url=redis_url)


def ansible_playbook(
    service: ServiceProcess,
    *extra: str,
    playbook: Path = PLAYBOOK,
    inventory: Path = INVENTORY,
    environ: dict[str, str] | None = None,
    timeout: float = PLAYBOOK_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run `playbook` (gate.yml) against `service`, with everything Ansible writes kept under the test's tmp dir."""
    command = Path(sys.executable).parent / "ansible-playbook"
    if not command.exists():
        pytest.fail(f"{command} not found: install the test extra (pip install -e '.[test]')", pytrace=False)
    home = service.cwd / "ansible"
    home.mkdir(exist_ok=True)
    config = home / "ansible.cfg"
    config.write_text("")  # no ansible.cfg from the working dir, ~ or /etc
    env = {name: value for name, value in os.environ.items() if not name.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_NOCOLOR="true",
        LC_ALL="C.UTF-8",  # ansible-core refuses to run under a non-UTF-8 locale
        **(environ or {}),
    )
    argv = [str(command), "-i", str(inventory), str(playbook), "-e", f"stateservice_url={service.url}", *extra]
    # its own session, so that a run cut off by the timeout takes its forks (one per host) with it
    pipe = subprocess.PIPE
    proc = subprocess.Popen(argv, cwd=service.cwd, env=env, stdout=pipe, stderr=pipe, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"ansible-playbook ran over {timeout:g} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def failing_step(service: ServiceProcess, host: str) -> list[str]:
    """Extra vars making the playbook's step fail on `host` only (the step tests for a marker file)."""
    (service.cwd / f"fail-{host}").touch()
    return ["-e", json.dumps({"step_command": f"test ! -e {service.cwd}/fail-{{{{ inventory_hostname }}}}"})]


def get(service: ServiceProcess, path: str) -> Any:
    with urllib.request.urlopen(f"{service.url}{path}", timeout=10) as response:
        return json.load(response)


def taken(event: dict[str, Any]) -> bool:
    return event.get("method") == "PUT" and event.get("status") == 200


def puts(service: ServiceProcess) -> Counter[str]:
    """How many times each host's report was taken (200), counted or repeated, once the service logged them all."""
    service.wait_for("request", count=len(HOSTS), where=taken)  # its log is read by a thread: let it catch up
    return Counter(e["host"] for e in service.events("request") if taken(e))


def repeats(service: ServiceProcess) -> list[str]:
    """Hosts whose report the service had already counted."""
    return [e["host"] for e in service.events("report_repeated")]


def test_the_chart_waits_for_every_inventory_host() -> None:
    chart = parse(CHART.read_text(), str(CHART)).unwrap()
    first = chart.states[0]
    assert len(HOSTS) >= 3
    assert first.name == chart.initial
    assert first.counter is not None and first.target is not None
    assert first.target.value == first.counter.start + len(HOSTS)


def test_the_play_advances_the_chart_once_counting_each_host_once(service: ServiceProcess) -> None:
    done = ansible_playbook(service)
    assert done.returncode == 0, done.stdout + done.stderr

    history = get(service, "/charts/fleet/history")["history"]
    assert [(h["from"], h["to"], h["cause"]) for h in history] == [("upgrade", "upgraded", "put")]
    assert history[0]["host"] in HOSTS  # the last report moved it
    assert get(service, "/charts/fleet")["current_state"] == "upgraded"
    assert puts(service) == Counter(HOSTS)
    assert repeats(service) == []

    # a second run finds the fleet through: it skips every host, reports nothing, moves nothing
    again = ansible_playbook(service)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(get(service, "/charts/fleet/history")["history"]) == 1
    assert get(service, "/charts/fleet")["current_state"] == "upgraded"
    assert puts(service) == Counter(HOSTS)
    assert repeats(service) == []


def test_a_rerun_after_a_failed_host_counts_only_that_host(service: ServiceProcess) -> None:
    failed, *rest = sorted(HOSTS, reverse=True)
    partial = ansible_playbook(service, *failing_step(service, failed))
    assert partial.returncode == 2, partial.stdout + partial.stderr  # 2: a host failed
    view = get(service, "/charts/fleet")
    assert view["current_state"] == "upgrade"
    assert view["hosts_counted"] == sorted(rest)
    assert get(service, "/charts/fleet/history")["history"] == []

    (service.cwd / f"fail-{failed}").unlink()
    rerun = ansible_playbook(service)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    history = get(service, "/charts/fleet/history")["history"]
    assert [(h["from"], h["to"], h["host"]) for h in history] == [("upgrade", "upgraded", failed)]
    assert puts(service) == Counter(HOSTS)  # the hosts counted in the first run did not report again
    assert repeats(service) == []


# -- rollout.yml: slots, a failure report and the halt it causes ------------------------------------

ROLLOUT_TOKENS = f"""
tokens:
  - {{name: deploy, sha256: {hash_secret("d-secret")}, scopes: [read, report]}}
"""


@pytest.mark.timeout(900)  # 24 hosts of ansible-core on 2 shared cores: minutes, not seconds
def test_the_rolling_restart_keeps_to_three_at_once_and_one_failure_halts_it(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    """The issue's test: 24 hosts, strategy free with forks >= hosts, concurrency 3, one failing step."""
    inventory, chart_file = EXAMPLE / "rollout-inventory.ini", EXAMPLE / "rollout.yaml"
    hosts = [line for line in inventory.read_text().splitlines() if line.startswith("web")]
    chart = parse(chart_file.read_text(), str(chart_file)).unwrap()
    assert len(hosts) >= 20 and chart.states[0].target.value == len(hosts)  # type: ignore[union-attr]
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(ROLLOUT_TOKENS)
    service = services.start(chart_file, redis_url=redis_url, args=["--tokens", str(tokens)])
    failing = hosts[len(hosts) // 3]
    (service.cwd / f"fail-{failing}").touch()
    script = service.cwd / "step.sh"  # the step: half a second of work, failing on the marked host
    script.write_text(f'sleep 0.5\ntest ! -e "{service.cwd}/fail-$1"\n')
    step = f"sh {script} {{{{ inventory_hostname }}}}"
    stateservice = Path(sys.executable).parent / "stateservice"
    done = ansible_playbook(
        service,
        "-e",
        json.dumps({"step_command": step, "stateservice": str(stateservice), "wait": 300}),
        "-f",
        str(len(hosts)),
        playbook=EXAMPLE / "rollout.yml",
        inventory=inventory,
        environ={"STATESERVICE_TOKEN": "d-secret"},
        timeout=600,
    )
    assert done.returncode == 2, done.stdout + done.stderr  # hosts failed: the failing one, and those halted
    records = _authorized(service, "/charts/rollout/history?limit=1000")["history"][::-1]  # oldest first
    assert max_holders(records) <= 3
    assert max_holders(records) >= 2, "the hosts never overlapped: the test proves nothing"
    failures = [(r["host"], r["reason"]) for r in records if r["cause"] == "failure"]
    assert failures == [(failing, "exit 1")]
    assert [r["host"] for r in records if r["cause"] == "halt"] == [failing]
    view = _authorized(service, "/charts/rollout")
    assert view["halted"] is True and view["current_state"] == "restart"
    assert all(r["actor"] == "deploy" for r in records if r["cause"] in ("slot", "failure"))  # the token was sent


def max_holders(records: list[dict[str, Any]]) -> int:
    """The most slots held at once, replaying the history's grants and releases in order."""
    held: set[str] = set()
    most = 0
    for record in records:
        if record["cause"] == "slot":
            held.add(record["host"])
        elif record["cause"] in ("release", "slot_expired", "failure"):
            held.discard(record["host"])
        most = max(most, len(held))
    return most


def _authorized(service: ServiceProcess, path: str) -> Any:
    request = urllib.request.Request(f"{service.url}{path}", headers={"Authorization": "Bearer d-secret"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
