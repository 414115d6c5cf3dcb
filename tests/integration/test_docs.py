"""The README and docs/ are the manual: their tables match the code, their examples parse, their runnable blocks run.

A block is runnable when the line before its opening fence is `<!-- runnable -->` (see
docs/contributing.md): a `console` block's `$` lines must print what follows them, an `sh`
block must exit 0. Each runs against a fresh service started as the README's quick start does.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

import stateservice
from stateservice import config
from stateservice.core.parse import parse
from stateservice.core.parse_configuration import parse_configuration
from stateservice.store import keys
from tests.support.docs import console_steps
from tests.support.service import REPO, Services

ROOT = REPO
README = (ROOT / "README.md").read_text()
PAGES = sorted((ROOT / "docs").glob("*.md"))
MANUAL = [ROOT / "README.md", *PAGES]  # every file whose blocks may be marked runnable
RUNNABLE = "<!-- runnable -->"  # or `<!-- runnable examples/CHART.yaml [--configuration examples/FILE.yaml] -->`


def page(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


def table_after(text: str, marker: str) -> list[list[str]]:
    """The rows of the markdown table following `<!-- marker: ... -->`, cells stripped of backticks."""
    lines = text[text.index(f"<!-- {marker}:") :].splitlines()[1:]
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


def test_the_settings_page_is_generated_from_the_settings_table() -> None:
    assert page("settings.md") == config.page(), (
        "docs/settings.md is stale: run `python -m stateservice.config > docs/settings.md`"
    )


def test_keys_table_names_every_key() -> None:
    documented = {row[0]: row[1] for row in table_after(page("redis.md"), "keys")}
    expected = {
        keys.charts_index(): "set",
        keys.leader(): "string",
        keys.chart_state("CHART"): "hash",
        keys.chart_hosts("CHART", "STATE"): "set",
        keys.chart_slots("CHART", "STATE"): "hash",
        keys.chart_failed("CHART", "STATE"): "hash",
        keys.chart_expired("CHART", "STATE"): "hash",
        keys.chart_history("CHART"): "stream",
        keys.chart_definition("CHART"): "hash",
        keys.chart_channel("CHART"): "pubsub",
        keys.chart_continuation("CHART", "ID"): "hash",
        keys.continuation_owner("ID"): "string",
        keys.chart_changes("CHART"): "pubsub",
        keys.dashboard_secret(): "string",
        keys.dashboard_watching(): "string",
    }
    assert documented == expected
    for key in expected:
        assert key in (keys.__doc__ or ""), f"{key} missing from the keys module docstring"


def test_machine_keys_table_names_every_machine_key() -> None:
    documented = {row[0]: row[1] for row in table_after(page("redis.md"), "machine-keys")}
    assert documented == {
        keys.configurations(): "hash",
        keys.transitions("REF"): "hash",
        keys.instances(): "hash",
        keys.instance_properties(): "hash",
        keys.instance_context(): "hash",
        keys.instance_counts("REF"): "hash",
        keys.instances_in("REF", "STATE"): "set",
        keys.instances_with("REF", "PROP", "VALUE"): "set",
        keys.instance_history("ID"): "list",
        keys.event_outcome("ID", "EVENT_ID"): "string",
        keys.events_stream(): "stream",
        keys.dead_letters(): "stream",
        keys.buried("ENTRY"): "string",
        keys.machine_moves(): "pubsub",
        keys.instance_continuation("CID"): "hash",
        keys.instance_continuations(): "hash",
        keys.approval_timeouts(): "zset",
        keys.approval_notifications(): "zset",
    }
    approvals = [keys.instance_continuation("CID"), keys.instance_continuations()]
    for key in [*approvals, keys.approval_timeouts(), keys.approval_notifications()]:
        assert key in (keys.__doc__ or ""), f"{key} missing from the keys module docstring"


CONFIGURATIONS = ROOT / "examples" / "configurations"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in ROOT.glob("examples/**/*.yaml") if CONFIGURATIONS not in p.parents),
    ids=lambda p: p.name,
)
def test_every_example_chart_parses(path: Path) -> None:
    result = parse(path.read_text(), str(path))
    assert result.problems == []


@pytest.mark.parametrize("path", sorted(CONFIGURATIONS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_configuration_parses(path: Path) -> None:
    parse_configuration(path.read_text(), str(path))  # raises ChartError with FILE:LINE problems


def test_charts_page_example_parses() -> None:
    text = re.search(r"```yaml\n(.*?)```", page("charts.md"), re.S)
    assert text
    assert parse(text.group(1), "charts.md.yaml").problems == []


def test_quick_start_commands_are_the_ci_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    quick_start = re.findall(r"```sh\n(.*?)\n```", README, re.S)[:2]
    assert quick_start[1] in ci
    assert re.findall(r"```sh\n(.*?)\n```", page("index.md"), re.S)[:2] == quick_start


def test_readme_links_point_at_files_that_exist() -> None:
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert "docs/index.md" in targets
    missing = [target for target in targets if not (ROOT / target).is_file()]
    assert missing == []


def test_versions_agree_with_the_changelog() -> None:
    """pyproject's version, `stateservice.__version__` and the changelog's newest entry are one version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    top = re.search(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d\d-\d\d)$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert top, "CHANGELOG.md has no `## [X.Y.Z] - YYYY-MM-DD` entry"
    assert project == stateservice.__version__ == top.group(1)


# -- runnable blocks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    kind: str  # console or sh
    text: str
    chart: str = "examples/states.yaml"  # what the service the block runs against serves
    configuration: str | None = None  # and the configuration file it serves, if any

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


MARKER = r"^<!-- runnable(?: (examples/[\w./-]+\.yaml))?(?: --configuration (examples/[\w./-]+\.yaml))? -->$"


def runnable_blocks(path: Path) -> tuple[list[Block], list[str]]:
    """Every block of `path` marked runnable, and each marker that is not right before a console or sh fence."""
    text = path.read_text()
    blocks, misplaced = [], []
    for marker in re.finditer(MARKER, text, re.M):
        line = text.count("\n", 0, marker.start()) + 2  # the fence's line
        fence = re.match(r"\n```(console|sh)\n(.*?)^```$", text[marker.end() :], re.S | re.M)
        if fence is None:
            misplaced.append(f"{path.relative_to(ROOT)}:{line - 1}")
        else:
            chart = marker.group(1) or Block.chart
            blocks.append(Block(path, line, fence.group(1), fence.group(2), chart, marker.group(2)))
    return blocks, misplaced


BLOCKS = [block for path in MANUAL for block in runnable_blocks(path)[0]]


def test_every_runnable_marker_is_before_a_console_or_sh_block() -> None:
    assert [where for path in MANUAL for where in runnable_blocks(path)[1]] == []


def test_runnable_blocks_are_found() -> None:
    """The walkthrough and the blocks of the reference pages are marked: a marker lost to an edit fails here."""
    marked = {block.path.name for block in BLOCKS}
    assert {"README.md", "index.md", "cli.md", "http-api.md", "redis.md", "operating.md", "security.md"} <= marked
    assert "instances.md" in marked
    assert any(b.path.name == "approvals.md" and b.chart == "examples/release.yaml" for b in BLOCKS)
    readme = [block for block in BLOCKS if block.path.name == "README.md"]
    assert any("/charts/states/history" in block.text for block in readme)


def shell_command(command: str, url: str) -> str:
    python = shlex.quote(sys.executable)
    command = command.replace("http://localhost:5000", url).replace(".venv/bin/python", python)
    return command.replace(".venv/bin/stateservice", f"{python} -m stateservice")


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_runnable_block_runs_as_written(block: Block) -> None:
    """Each `$ command` of a console block prints what the page says; an sh block exits 0."""
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the docs' examples (apt-get install curl)")
    workdir = Path(tempfile.mkdtemp(prefix="ss-", dir="/tmp"))  # short: the embedded Redis's socket is in it
    services = Services(workdir)
    services.watch(workdir / "stateservice-data")
    try:
        shutil.copytree(ROOT / "examples", workdir / "examples")
        args = ["--configuration", block.configuration] if block.configuration else []
        service = services.start(block.chart, args=args)
        env = {**service.env, "STATESERVICE_URL": service.url}
        if block.kind == "sh":
            script = "\n".join(shell_command(line, service.url) for line in block.text.splitlines())
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
            assert done.returncode == 0, f"{block.name}\n{done.stdout}\n{done.stderr}"
        else:
            steps = console_steps(block.text)
            assert steps, f"{block.name}: a console block without a `$ ` line"
            for command, expected in steps:
                done = subprocess.run(
                    ["bash", "-c", f"set -o pipefail; {shell_command(command, service.url)}"],
                    cwd=workdir,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    env=env,
                )
                assert done.stdout.splitlines() == expected, f"{block.name}: {command}\n{done.stderr}"
        assert service.stop() == 0
    finally:
        services.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
