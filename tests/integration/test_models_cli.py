"""`python -m stateservice` with models: serve --config/--models, or its refusals; validate; docs/models.md."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from stateservice.cli.commands import validate_all
from stateservice.config import Config
from stateservice.errors import StartupError
from tests.support.docs import console_steps
from tests.support.models import Fixed, Layout
from tests.support.service import REPO, Services, http, run_cli

MODELS_PAGE = (REPO / "docs" / "models.md").read_text()  # the models walkthrough lives there
SERVE_EXAMPLE = "--chart examples/states.yaml --config examples/models/conf --models examples/models/models"


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """`colors`, a stand-in model that always predicts index 0 (green): no scikit-learn import in the service."""
    made = Layout.make(tmp_path / "served")
    made.add("colors", Fixed([0]))
    return made


def model_flags(layout: Layout) -> list[str]:
    return ["--config", str(layout.conf), "--models", str(layout.models)]


def post(url: str, body: bytes, accept: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"{url}/state", data=body, method="POST")
    if accept is not None:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as failed:
        with failed:
            return failed.code, failed.read().decode()


def no_traceback(result: Any) -> None:
    assert "Traceback" not in str(result)


# -- serve ----------------------------------------------------------------------------------------


def test_serve_models_alone_answers(services: Services, layout: Layout, redis_url: str) -> None:
    path = layout.models / "team" / "colors.joblib"
    path.chmod(0o646)  # refused, but for the override flag
    service = services.start(redis_url=redis_url, args=[*model_flags(layout), "--allow-writable-models"])

    assert post(service.url, b'{"name": "colors", "values": [[1, 2]]}') == (200, '{"state": ["green"]}')
    assert post(service.url, b'{"name": "colors", "values": [[1, 2]]}', "text/plain") == (200, "green\n")
    status, _, body = http("GET", f"{service.url}/models")
    assert status == 200
    assert [m["name"] for m in json.loads(body)["models"]] == ["colors"]
    status, _, body = http("GET", f"{service.url}/state?state=green_state")
    assert 400 <= status < 500, body  # no chart is served
    assert service.wait_for("writable_models_allowed")["level"] == "warning"
    assert service.wait_for("model_loaded")["model"] == "colors"
    assert service.stop() == 0


def test_serve_refuses_bad_configs_with_file_colon_messages(tmp_path: Path, layout: Layout, redis_url: str) -> None:
    path = layout.models / "team" / "colors.joblib"
    path.chmod(0o646)
    bad = layout.conf / "bad.json"
    bad.write_text(json.dumps({"name": "escape", "team": "../..", "model": "x.pkl", "states": ["a"]}))

    result = run_cli("serve", *model_flags(layout), "--port", "0", "--redis", redis_url, cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}: team '../..' must be a single file or directory name inside the models dir (no '/', '.' or '..')",
        f"{layout.conf / 'colors.json'}: model file {path} is writable by others (mode 0646); loading a model runs "
        f"code from its file, so only its owner may be able to change it (chmod go-w {path}, or start with "
        "--allow-writable-models)",
    ]


def test_serve_nothing_says_what_to_give(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "0", cwd=tmp_path, env={"STATESERVICE_REDIS_URL": "redis://nowhere:1"})

    assert result.returncode == 1
    assert "nothing to serve: give --chart FILE" in result.stderr
    assert "--config DIR --models DIR" in result.stderr
    no_traceback(result)


# -- validate -------------------------------------------------------------------------------------


def test_validate_models_prints_ok_and_file_colon_messages(tmp_path: Path, layout: Layout) -> None:
    (layout.conf / "bad.json").write_text(json.dumps({"name": "bad", "team": "team", "model": "colors.joblib"}))
    corrupt = layout.add("corrupt", Fixed([0]))
    corrupt.write_bytes(b"not a pickle")

    result = run_cli("validate", *model_flags(layout), cwd=tmp_path)

    assert result.returncode == 1
    ok = f"{layout.conf / 'colors.json'}: ok: model 'colors' (team/colors.joblib, joblib), 3 states: green, red, blue"
    assert result.stdout.splitlines() == [ok]
    errors = result.stderr.splitlines()
    assert f"{layout.conf / 'bad.json'}: missing field 'states'" in errors
    assert any(
        line.startswith(f"{layout.conf / 'corrupt.json'}: cannot load model file {corrupt}: ") for line in errors
    )
    assert len(errors) == 2, errors
    no_traceback(result)


def test_validate_charts_and_models_together(layout: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    config = Config(model_config=layout.conf, models=layout.models)

    assert validate_all([REPO / "examples" / "states.yaml"], config) == 0

    out, err = capsys.readouterr()
    assert [line.split(": ok: ")[1].split(" ")[0] for line in out.splitlines()] == ["chart", "model"]
    assert err == ""
    with pytest.raises(StartupError, match="nothing to check"):
        validate_all([], Config())


# -- docs/models.md --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_readme_models_walkthrough_runs_as_written(services: Services, tmp_path: Path, redis_url: str) -> None:
    """Train the example model, serve it as docs/models.md says, and run each `$` line: it prints what the page says."""
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the docs/models.md walkthrough (apt-get install curl)")
    section = MODELS_PAGE
    start = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert start
    train, serve = start.group(1).split(" && ")
    assert serve == f".venv/bin/stateservice serve {SERVE_EXAMPLE}"
    work = tmp_path  # the services' cwd: a checkout of the examples, without trained models
    shutil.copytree(REPO / "examples" / "models", work / "examples" / "models", ignore=shutil.ignore_patterns("models"))
    shutil.copy(REPO / "examples" / "states.yaml", work / "examples" / "states.yaml")
    trained = subprocess.run(
        shlex.split(train.replace(".venv/bin/python", shlex.quote(sys.executable))),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trained.returncode == 0, trained.stderr
    chart, flags = SERVE_EXAMPLE.split(" ", 2)[1:]
    service = services.start(chart, redis_url=redis_url, args=shlex.split(flags))
    block = re.search(r"<!-- models walkthrough:.*?```console\n(.*?)```", section, re.S)
    assert block
    for command, expected in console_steps(block.group(1)):
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command.replace('http://localhost:5000', service.url)}"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout.splitlines() == expected, f"{command}\n{done.stderr}"
    assert service.stop() == 0


@pytest.mark.slow
def test_train_heavy_saves_a_500_tree_forest_that_answers_like_the_example(tmp_path: Path) -> None:
    """docs/models.md's `train.py --heavy`: the same files and answers, from a 500-tree random forest."""
    import joblib
    import skops.io

    trained = subprocess.run(
        [sys.executable, str(REPO / "examples" / "models" / "train.py"), "--heavy", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    team = tmp_path / "state_service"
    assert sorted(p.name for p in team.iterdir()) == ["colors_v1.joblib", "colors_v1.skops"]
    forest = joblib.load(team / "colors_v1.joblib")
    assert type(forest).__name__ == "RandomForestClassifier" and len(forest.estimators_) == 500
    skops_file = team / "colors_v1.skops"
    again = skops.io.load(skops_file, trusted=skops.io.get_untrusted_types(file=skops_file))
    rows = [[500, 0], [650, 20], [470, 90]]
    assert forest.predict(rows).tolist() == again.predict(rows).tolist() == [0, 1, 2]
