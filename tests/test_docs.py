"""The README is the manual: its tables match the code, its examples parse, its walkthrough runs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from stateservice import config
from stateservice.core.parse import parse
from stateservice.store import keys
from tests.support.service import Services

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def table_after(marker: str) -> list[list[str]]:
    """The rows of the markdown table following `<!-- marker: ... -->`, cells stripped of backticks."""
    lines = README[README.index(f"<!-- {marker}:") :].splitlines()[1:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if not set("".join(cells)) <= set("- "):
            rows.append(cells)
    return rows[1:]  # without the header


def code_block_after(marker: str) -> str:
    rest = README[README.index(f"<!-- {marker}:") :]
    match = re.search(r"```[a-z]*\n(.*?)```", rest, re.S)
    assert match
    return match.group(1)


def test_the_settings_page_is_generated_from_the_settings_table() -> None:
    page = ROOT / "docs" / "settings.md"
    assert page.read_text() == config.page(), (
        "docs/settings.md is stale: run `python -m stateservice.config > docs/settings.md`"
    )


def test_keys_table_names_every_key() -> None:
    documented = {row[0]: row[1] for row in table_after("keys")}
    expected = {
        keys.charts_index(): "set",
        keys.leader(): "string",
        keys.chart_state("CHART"): "hash",
        keys.chart_hosts("CHART", "STATE"): "set",
        keys.chart_history("CHART"): "stream",
        keys.chart_definition("CHART"): "hash",
        keys.chart_channel("CHART"): "pubsub",
    }
    assert documented == expected
    for key in expected:
        assert key in (keys.__doc__ or ""), f"{key} missing from the keys module docstring"


@pytest.mark.parametrize("path", sorted(ROOT.glob("examples/**/*.yaml")), ids=lambda p: p.name)
def test_every_example_chart_parses(path: Path) -> None:
    result = parse(path.read_text(), str(path))
    assert result.problems == []


def test_readme_chart_example_parses() -> None:
    block = README[README.index("## Charts") :]
    text = re.search(r"```yaml\n(.*?)```", block, re.S)
    assert text
    assert parse(text.group(1), "README.yaml").problems == []


def test_quick_start_commands_are_the_ci_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = re.findall(r"```sh\n(.*?)\n```", README, re.S)[1]
    assert test_command in ci


@pytest.mark.slow
def test_walkthrough_runs_as_written() -> None:
    """Each `$ command` of the README walkthrough, pasted into a shell, prints what the README says."""
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the README walkthrough (apt-get install curl)")
    steps: list[tuple[str, list[str]]] = []
    for line in code_block_after("walkthrough").splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    workdir = Path(tempfile.mkdtemp(prefix="ss-", dir="/tmp"))  # short: the embedded Redis's socket is in it
    services = Services(workdir)
    services.watch(workdir / "stateservice-data")
    try:
        (workdir / "examples").mkdir()
        shutil.copy(ROOT / "examples" / "states.yaml", workdir / "examples" / "states.yaml")
        service = services.start("examples/states.yaml")
        cli = f"{shlex.quote(sys.executable)} -m stateservice"
        for command, expected in steps:
            runnable = command.replace("http://localhost:5000", service.url).replace(".venv/bin/stateservice", cli)
            done = subprocess.run(
                ["bash", "-c", f"set -o pipefail; {runnable}"],
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=30,
                env=service.env,
            )
            assert done.stdout.splitlines() == expected, f"{command}\n{done.stderr}"
        assert service.stop() == 0
    finally:
        services.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
