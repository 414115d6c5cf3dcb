"""The Ansible example run for real: ansible-playbook (ansible-core) against a live service.

examples/ansible/gate.yml with examples/ansible/inventory.ini (several hosts, all
`ansible_connection=local`) and the chart it rolls through, examples/ansible/fleet.yaml, whose
first state waits for as many reports as the inventory has hosts. What the service was told is
read back from it: the chart's history and view, and its `request` / `report_repeated` log events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stateservice.core.parse import parse
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


def ansible_playbook(service: ServiceProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run gate.yml against `service`, with everything Ansible writes kept under the test's tmp dir."""
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
    )
    argv = [str(command), "-i", str(INVENTORY), str(PLAYBOOK), "-e", f"stateservice_url={service.url}", *extra]
    return subprocess.run(
        argv, cwd=service.cwd, env=env, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT, check=False
    )


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
