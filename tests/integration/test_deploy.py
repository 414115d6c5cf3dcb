"""deploy/ and examples/chef/ checked against the service: every file parses, and what each one
tells the service (flags, STATESERVICE_* variables, ports, probe paths, chart files) is something
the service accepts. Nothing is deployed: no Docker engine, Kubernetes cluster or Chef is needed.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from stateservice.cli.main import split_command
from stateservice.cli.parser import build_parser
from stateservice.config import SETTINGS, Config
from stateservice.core.parse import parse
from stateservice.security.tokens import parse_tokens
from stateservice.server.supervisor import SHUTDOWN_GRACE
from stateservice.web.app import Loaded, create_app
from tests.support.paths import REPO

ROOT = REPO
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
DOCKER = DEPLOY / "docker"
KUBERNETES = DEPLOY / "kubernetes"
CHEF = ROOT / "examples" / "chef"
EXAMPLE_CHART = ROOT / "examples" / "states.yaml"
PORT = 5000
ENV_NAMES = {declared.env for declared in SETTINGS}


# -- the service's side ----------------------------------------------------------------------


@cache
def routes() -> frozenset[tuple[str, str]]:
    """(method, path) of every route of an application built (not started) on the example chart."""
    chart = parse(EXAMPLE_CHART.read_text(), str(EXAMPLE_CHART)).unwrap()
    app = create_app(Config(redis_url="redis://127.0.0.1:1/0"), Loaded([chart]), scheduler=False)
    return frozenset((route.method, route.resource.canonical) for route in app.router.routes() if route.resource)


def parse_command(argv: list[str]) -> Any:
    """`stateservice ARGV` parsed as the command line would be; fails with argparse's message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            before, command = split_command(argv)  # `run ... -- COMMAND`, as the command line splits it
            args = build_parser().parse_args(before)
            if command is not None:
                args.command_args = command
            return args
    except SystemExit:
        pytest.fail(f"stateservice {shlex.join(argv)}: {stderr.getvalue().strip()}")


def serve_config(args: list[str], environ: Mapping[str, str]) -> Config:
    """The Config `stateservice serve ARGS` would run with in `environ`; its STATESERVICE_* names must exist."""
    unknown = {name for name in environ if name.startswith("STATESERVICE_")} - ENV_NAMES
    assert not unknown, f"not settings of stateservice.config.SETTINGS: {sorted(unknown)}"
    return Config.load(parse_command(["serve", *args]), environ)


# -- systemd ---------------------------------------------------------------------------------


def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a systemd unit file, in order, repeated keys kept."""
    entries, section = [], ""
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


UNIT = SYSTEMD / "stateservice.service"


def unit(key: str) -> list[str]:
    return [value for section, name, value in unit_entries(UNIT) if section == "Service" and name == key]


def unit_environment() -> dict[str, str]:
    """The unit's Environment= assignments, the specifier %S (the state directories' root) as /var/lib."""
    environ = {}
    for value in unit("Environment"):
        for assignment in shlex.split(value):
            name, _, setting = assignment.partition("=")
            environ[name] = setting.replace("%S", "/var/lib")
    return environ


def env_file_examples() -> dict[str, str]:
    """Every assignment of the example /etc/stateservice/env, as if all were uncommented."""
    environ = {}
    for line in (SYSTEMD / "stateservice.env").read_text().splitlines():
        match = re.fullmatch(r"#?\s*(STATESERVICE_\w+)=(.*)", line.strip())
        if match:
            environ[match[1]] = match[2]
    return environ


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("EnvironmentFile", "-/etc/stateservice/env"),
    ],
)
def test_systemd_unit_sets(key: str, expected: str) -> None:
    assert unit(key) == [expected]


def test_systemd_unit_runs_unprivileged_and_writes_only_its_state_dir() -> None:
    assert unit("DynamicUser") == ["yes"] or (unit("User") and unit("User") != ["root"])
    assert "@system-service" in unit("SystemCallFilter")
    (state_dir,) = unit("StateDirectory")
    assert unit("ReadWritePaths") == [f"%S/{state_dir}"]
    config = serve_config([], unit_environment())
    assert config.data_dir == Path("/var/lib") / state_dir


def test_systemd_unit_stops_after_the_service_grace() -> None:
    (timeout,) = unit("TimeoutStopSec")
    assert float(timeout) > SHUTDOWN_GRACE
    assert unit("KillMode") == ["mixed"]  # SIGTERM to the supervisor alone: it stops workers, then Redis


def test_systemd_unit_command_and_settings_are_accepted() -> None:
    (exec_start,) = unit("ExecStart")
    program, *args = shlex.split(exec_start)
    assert Path(program).name == "stateservice" and args[0] == "serve"
    config = serve_config(args[1:], unit_environment())
    assert (config.host, config.port) == ("127.0.0.1", PORT)
    assert config.charts == (Path("/etc/stateservice/charts/states.yaml"),)


def test_systemd_env_file_examples_are_settings() -> None:
    examples = env_file_examples()
    assert "STATESERVICE_REDIS_URL" in examples
    config = serve_config([], unit_environment() | examples)  # every example, uncommented, is a valid value
    assert config.redis_url == examples["STATESERVICE_REDIS_URL"]


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that ExecStart's program exists: point it at this interpreter
    copy = tmp_path / UNIT.name
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={sys.executable} -m stateservice", UNIT.read_text())
    copy.write_text(text)
    verify = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=30, check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    # exposure 2.0 ("OK") or better on systemd's 0-10 scale; --threshold takes tenths
    security = [analyze, "security", "--offline=yes", "--threshold=20", str(copy)]
    exposure = subprocess.run(security, capture_output=True, text=True, timeout=30, check=False)
    assert exposure.returncode == 0, exposure.stdout[-2000:] + exposure.stderr


# -- Docker ----------------------------------------------------------------------------------


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/docker/Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in (DOCKER / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def docker(instruction: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == instruction]


def docker_env() -> dict[str, str]:
    return dict(item.partition("=")[::2] for rest in docker("ENV") for item in shlex.split(rest))


def docker_uid() -> int:
    (user,) = docker("USER")
    return int(user.partition(":")[0])


def test_dockerfile_builds_on_python_slim_and_copies_what_exists() -> None:
    assert docker("FROM") == ["python:3.11-slim"]
    for rest in docker("COPY"):
        *sources, _ = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository (the build context)"
    assert any("pip install ." in run for run in docker("RUN"))


def test_dockerfile_runs_as_a_non_root_user_it_creates() -> None:
    uid = docker_uid()
    assert uid != 0
    assert any(re.search(rf"useradd .*--uid {uid}\b", run) for run in docker("RUN"))
    words = [word for word, _ in dockerfile()]
    assert words.index("USER") < words.index("ENTRYPOINT")


def test_dockerfile_healthcheck_asks_healthz_with_python() -> None:
    (healthcheck,) = docker("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "HEALTHCHECK", "exec")
    (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", argv[2])
    assert int(url[0]) == PORT and ("GET", url[1]) in routes() and url[1] == "/healthz"
    assert "--timeout=" in options


def test_dockerfile_serves_the_exposed_port_on_every_interface() -> None:
    assert docker("EXPOSE") == [str(PORT)]
    (entrypoint,), (cmd,) = docker("ENTRYPOINT"), docker("CMD")
    entry = json.loads(entrypoint)
    assert entry[:2] == ["stateservice", "serve"]
    config = serve_config(entry[2:] + json.loads(cmd), docker_env())
    assert (config.host, config.port) == ("0.0.0.0", PORT)


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"] == "redis:7"
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    (volume,) = redis["volumes"]
    name, _, target = volume.partition(":")
    assert target == "/data" and name in compose()["volumes"]
    assert redis["healthcheck"]["test"]


def test_compose_service_builds_the_image_and_uses_that_redis() -> None:
    service = compose()["services"]["stateservice"]
    context = (DOCKER / service["build"]["context"]).resolve()
    assert context == ROOT and (context / service["build"]["dockerfile"]) == DOCKER / "Dockerfile"
    entry = json.loads(docker("ENTRYPOINT")[0])
    config = serve_config(entry[2:] + service["command"], docker_env())
    assert config.redis_url == "redis://redis:6379/0"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert [port.rsplit(":", 1)[1] for port in service["ports"]] == [str(config.port)]
    assert config.tokens is not None  # it binds 0.0.0.0: without tokens the service refuses to start
    for volume in service["volumes"]:
        source, target, _ = volume.split(":")
        assert (DOCKER / source).exists()
        assert Path(target) in (*config.charts, config.tokens)
    grace = service["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > SHUTDOWN_GRACE


# -- Kubernetes ------------------------------------------------------------------------------


@cache
def manifests() -> dict[str, list[dict[str, Any]]]:
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted(KUBERNETES.glob("*.yaml"))}


def resource(kind: str) -> dict[str, Any]:
    (found,) = [doc for docs in manifests().values() for doc in docs if doc and doc.get("kind") == kind]
    return found


def container() -> dict[str, Any]:
    (only,) = resource("Deployment")["spec"]["template"]["spec"]["containers"]
    return only


def pod_labels() -> dict[str, str]:
    return resource("Deployment")["spec"]["template"]["metadata"]["labels"]


def container_env() -> dict[str, str]:
    """The container's env, secretKeyRef and configMapKeyRef resolved from the manifests."""
    environ = {}
    for item in container()["env"]:
        if "value" in item:
            environ[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"]["configMapKeyRef"]
        kind = "Secret" if "secretKeyRef" in item["valueFrom"] else "ConfigMap"
        source = [doc for doc in named(kind) if doc["metadata"]["name"] == ref["name"]]
        assert source, f"{item['name']}: no {kind} {ref['name']!r} in deploy/kubernetes"
        data = source[0].get("stringData") or source[0].get("data")
        environ[item["name"]] = data[ref["key"]]
    return environ


def named(kind: str) -> list[dict[str, Any]]:
    return [doc for docs in manifests().values() for doc in docs if doc and doc.get("kind") == kind]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = manifests()["kustomization.yaml"][0]
    assert sorted(kustomization["resources"]) == sorted(set(manifests()) - {"kustomization.yaml"})
    (image,) = kustomization["images"]
    assert container()["image"].partition(":")[0] == image["name"]


def test_deployment_runs_replicas_with_the_service_command() -> None:
    deployment = resource("Deployment")
    assert deployment["spec"]["replicas"] >= 3
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels().items()
    assert container()["command"] == ["stateservice", "serve"]
    config = serve_config(container()["args"], container_env())
    assert config.host == "0.0.0.0"
    assert config.tokens is not None and not config.insecure_no_auth  # else it refuses 0.0.0.0
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    volumes = resource("Deployment")["spec"]["template"]["spec"]["volumes"]
    secret = next(v for v in volumes if v["name"] == "tokens")["secret"]["secretName"]
    assert str(config.tokens).startswith(mounts["tokens"] + "/")
    (source,) = [doc for doc in named("Secret") if doc["metadata"]["name"] == secret]
    parse_tokens(source["stringData"][config.tokens.name], "secret.yaml")  # raises if the file is bad
    assert config.redis_url is not None and config.workers == 1
    assert [p["containerPort"] for p in container()["ports"]] == [config.port] == [PORT]


def test_deployment_probes_are_service_routes_on_its_port() -> None:
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container()[probe]["httpGet"]
        assert get["path"] == path and ("GET", path) in routes()
        assert ports.get(get["port"], get["port"]) == PORT


def test_deployment_is_locked_down_and_sized() -> None:
    spec = resource("Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == docker_uid()
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= container()["resources"].keys()
    pre_stop = container().get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert spec["terminationGracePeriodSeconds"] > SHUTDOWN_GRACE + pause


def test_deployment_serves_the_configmap_charts() -> None:
    config = serve_config(container()["args"], container_env())
    volumes = {v["name"]: v for v in resource("Deployment")["spec"]["template"]["spec"]["volumes"]}
    mounts = {Path(m["mountPath"]): volumes[m["name"]] for m in container()["volumeMounts"]}
    configmaps = {doc["metadata"]["name"]: doc for doc in named("ConfigMap")}
    assert config.charts
    for chart in config.charts:
        volume = mounts[chart.parent]
        data = configmaps[volume["configMap"]["name"]]["data"]
        assert parse(data[chart.name], chart.name).problems == []


def test_configmap_chart_is_the_example_chart() -> None:
    (configmap,) = named("ConfigMap")
    assert configmap["data"] == {"states.yaml": EXAMPLE_CHART.read_text()}


def test_service_and_disruption_budget_select_the_pods() -> None:
    service = resource("Service")["spec"]
    assert service["selector"].items() <= pod_labels().items()
    (port,) = service["ports"]
    names = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert port["port"] == PORT and names.get(port["targetPort"], port["targetPort"]) == PORT
    budget = resource("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels().items()
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 2


# -- Chef ------------------------------------------------------------------------------------


def chef_attributes() -> dict[str, str]:
    """default['stateservice'][KEY] = VALUE of attributes/default.rb, values as the recipes interpolate them."""
    found = re.findall(
        r"^default\['stateservice'\]\['(\w+)'\] = (?:'([^']*)'|(\d+))$",
        (CHEF / "attributes" / "default.rb").read_text(),
        re.M,
    )
    return {key: text or number for key, text, number in found}


def chef_commands(recipes: Iterable[Path]) -> list[list[str]]:
    """Every `stateservice ...` command in the recipes' string literals, attributes interpolated."""
    attributes = chef_attributes()
    values = {f"ss['{key}']": value for key, value in attributes.items()} | {"node['fqdn']": "web1.example.internal"}
    commands = []
    for recipe in recipes:
        for literal in re.findall(r'"([^"\n]*)"', recipe.read_text()):
            for part in re.split(r"&&|\|\||;", literal):
                if not part.strip().startswith("stateservice "):
                    continue
                unknown = set(re.findall(r"#\{([^}]*)\}", part)) - values.keys()
                assert not unknown, f"{recipe.name}: interpolates {sorted(unknown)}, not in attributes/default.rb"
                rendered = re.sub(r"#\{([^}]*)\}", lambda m: values[m[1]], part)
                commands.append(shlex.split(rendered)[1:])
    return commands


def test_chef_cookbook_has_its_files() -> None:
    assert re.search(r"^name '\w+'$", (CHEF / "metadata.rb").read_text(), re.M)
    assert {p.name for p in (CHEF / "recipes").glob("*.rb")} >= {"default.rb", "curl.rb"}
    assert {"url", "chart", "state"} <= chef_attributes().keys()


def test_chef_recipe_commands_are_valid_stateservice_commands() -> None:
    commands = chef_commands([CHEF / "recipes" / "default.rb"])
    parsed = [parse_command(argv) for argv in commands]
    assert sorted(args.command for args in parsed) == ["gate", "run"]
    for args in parsed:
        assert args.chart == chef_attributes()["chart"] and args.state == chef_attributes()["state"]
        if args.command == "run":
            assert args.host == "web1.example.internal" and args.wait == float(chef_attributes()["slot_wait"])
    recipe = (CHEF / "recipes" / "default.rb").read_text()
    assert "'STATESERVICE_TOKEN' => ss['token']" in recipe  # the token goes with every request


def test_chef_curl_recipe_asks_a_service_route() -> None:
    text = (CHEF / "recipes" / "curl.rb").read_text()
    (path,) = set(re.findall(r"\}(/charts/#\{ss\['chart'\]\}/state)\?state=", text))
    assert ("GET", path.replace("#{ss['chart']}", "{chart}")) in routes()
    assert ("PUT", path.replace("#{ss['chart']}", "{chart}")) in routes()
    assert "-K canChangeMachine.curl" in text and "-K didChangeMachine.curl" in text
